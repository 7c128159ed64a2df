r"""ResNet-18/34/50/101/152 and the plain-18/34 nets trained on ImageNet as He, Zhang, Ren & Sun
("Deep Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385) trained them.

Recipe (papers.md §11; the paper §3.4 "Implementation", §4.1, Tables 1-4 [P?]; batch per GPU,
optimizer form and BN statistics from the authors' README, KaimingHe/deep-residual-networks
[V:README]):
  * networks: Table 1 (models resnet18 ... resnet152): 7x7/2 stem, 3x3/2 max-pool, four stages
    of basic (18, 34) or bottleneck (50, 101, 152) blocks, BN after every conv and before its
    ReLU, the stride of a bottleneck on its first 1x1 (the paper's Caffe models); He (MSRA)
    initialisation; no dropout. plain18/plain34: the same layers without shortcuts (Table 2,
    Fig. 4: the degradation problem).
  * shortcuts (§3.3, §4.1): identity where the shapes match; where dimensions increase, option A
    (zero-padded identity, no parameters) in the Table 2 / Fig. 4 comparison of ResNet-18/34
    with the plain nets, option B (1x1 projections) for 50/101/152; Table 3 compares A, B and
    C (projections everywhere) on ResNet-34.
  * SGD, mini-batch 256 on 8 GPUs (32 per GPU: bn_batch_span=32); momentum 0.9 with Caffe's
    update v <- 0.9 v + lr g (the README: "We use Caffe's implementation of SGD with
    momentum"), optimizer 'sgd_caffe'; weight decay 1e-4 as L2 in the gradient, every
    parameter.
  * learning rate 0.1, "divided by 10 when the error plateaus"; trained "for up to 60 x 10^4
    iterations" (600,000 x 256 images = 120 epochs of 1,281,167).
  * augmentation (§3.4, after AlexNet and VGG): the shorter side resized to a random
    S in [256, 480] (scale augmentation), a random 224x224 crop of it or of its horizontal
    flip, the per-pixel mean subtracted, AlexNet's standard colour augmentation (PCA lighting,
    alpha ~ N(0, 0.1^2)).
  * evaluation: "standard 10-crop testing" for the comparisons (Tables 2, 3: protocol
    `ten_crop`, the corners and centre of the 256-scaled image and their flips); the best
    results "fully-convolutional ... average the scores at multiple scales (images are resized
    such that the shorter side is in {224, 256, 384, 480, 640})" (Table 4: `dense_multiscale`).
    eval_preprocess is the single 224 centre crop of the 256-scaled image (the README's
    protocol for the released models).

Readings where the paper is ambiguous:
  * The plateau rule: the paper lowered the rate by hand. Here: evaluate every epoch on the
    ILSVRC-2012 validation set (single crop) and divide by 10 after more than 3 evaluations
    without a 0.1% (relative) improvement of the top-1 error (plateau_patience=3, our choice,
    as configs/alexnet.py and configs/vgg.py), at most 3 times (our limit: 0.1 -> 1e-4; Fig. 4
    shows two drops in the first 50 x 10^4 iterations). schedule=step is the fixed schedule of
    the common reproductions instead (fb.resnet.torch, torchvision's reference recipe):
    divided by 10 at epochs 30 and 60, 90 epochs.
  * Per-pixel mean: with crops from randomly rescaled images, a per-pixel mean over the crops
    is nearly uniform in space; the input is the image minus the per-channel ImageNet mean
    (recipes.subtract_mean(): RGB order, no division by the std), as for VGG.
  * Shortcut option for ResNet-18/34: A by default (the paper's Table 2 / Fig. 4 nets, whose
    numbers the targets quote); shortcut=B is Table 3's ResNet-34 B and torchvision's
    resnet18/34, shortcut=C Table 3's C.
  * BatchNorm: the README's released models hold statistics "computed using average (not
    moving average) on a sufficiently large training batch after the training procedure"; this
    config evaluates with moving averages (decay 0.9, epsilon 1e-5: the model's defaults). The
    BN momentum the authors trained with is not stated.
  * Colour augmentation uses fb.resnet.torch's ImageNet PCA constants (augment.lighting's
    default, papers.md §3 [R?]).
  * Dense multi-scale evaluation runs on the centre Q x Q square of each rescaled image, flip
    averaged (recipes.dense_multiscale: VGG's dense evaluation, which the paper cites; a batch
    needs one shape), not on the whole non-square image.

Variants (`configs/resnet.py:KEY=VALUE,...`):
  depth=18|34|50|101|152   Table 1 column (default 50)
  plain=True               depth 18/34 only: the plain net of Table 2 (model plain18/plain34)
  shortcut=A|B|C           where dimensions increase: zero padding, projections, or projections
                           on every shortcut (default: A for 18/34, B for 50/101/152)
  schedule=plateau|step    the paper's plateau rule over 60 x 10^4 iterations (default), or
                           /10 at epochs 30 and 60 over 90 epochs

Run (ImageNet through TFDS, manual download):
  python -m cnn_history.main --config=configs/resnet.py:depth=50 --workdir=/tmp/resnet50
  python -m cnn_history.main --config=configs/resnet.py:depth=34,plain=True --workdir=/tmp/plain34
Hardware: 8 GPUs, 32 images each (the README; GPU model and training time not in papers.md).
Target (ILSVRC-2012 validation, top-1 / top-5 error, papers.md §11):
  10-crop (eval_ten_crop_*; Tables 2, 3 [P?], 50/101/152 [P✓:README]): plain-18 27.94 top-1,
    plain-34 28.54 / 10.02, ResNet-18 (A) 27.88 top-1, ResNet-34 A 25.03 / 7.76, B 24.52 / 7.46,
    C 24.19 / 7.40, ResNet-50 22.85 / 6.71, ResNet-101 21.75 / 6.05, ResNet-152 21.43 / 5.71.
  multi-scale fully convolutional (eval_dense_multiscale_*; Table 4 [P?]): ResNet-34 B 21.84 /
    5.71, C 21.53 / 5.60, ResNet-50 20.74 / 5.25, ResNet-101 19.87 / 4.60, ResNet-152 19.38 /
    4.49.
  single 224 crop of the released models [V:README]: ResNet-50 24.7 / 7.8, ResNet-101 23.6 /
    7.1, ResNet-152 23.0 / 6.7.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

DEPTHS = (18, 34, 50, 101, 152)
PLAIN_DEPTHS = (18, 34)
SHORTCUTS = {'A': 'zero_pad', 'B': 'projection', 'C': 'projection_all'}
SCHEDULES = ('plateau', 'step')
GPUS = 8                           # the README: 256 images on 8 GPUs
TRAIN_SCALES = (256, 480)          # §3.4: shorter side ~ U[256, 480]
CROP = 224
TEST_SCALES = (224, 256, 384, 480, 640)  # Table 4's fully-convolutional multi-scale testing
PAPER_STEPS = 600_000              # "up to 60 x 10^4 iterations"
IMAGENET_TRAIN = 1_281_167


def scale_augmentation(post: str, scales: tuple[int, int] = TRAIN_SCALES) -> str:
  """§3.4: shorter side ~ U[scales], a random 224 crop or its flip, AlexNet's PCA lighting."""
  return (f'resize_small_random({scales[0]}, {scales[1]})|random_crop({CROP})|flip_lr|'
          f'lighting(0.1)|{post}')


def set_evaluation(c, post: str) -> None:
  """Single centre crop; the paper's 10-crop and fully-convolutional multi-scale protocols."""
  c.data.eval_preprocess = f'resize_small(256)|center_crop({CROP})|{post}'
  c.data.eval_protocols.ten_crop = recipes.ten_crop(CROP, 256, post)
  c.data.eval_protocols.dense_multiscale = recipes.dense_multiscale(TEST_SCALES, post)
  # One batch size serves every protocol: 256 images = 2,560 crops, or 512 views up to 640^2.
  c.eval_batch_size = 256


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'depth': 50, 'plain': False, 'shortcut': '',
                                    'schedule': 'plateau'})
  depth, plain, shortcut, schedule = (args[k] for k in ('depth', 'plain', 'shortcut', 'schedule'))
  if depth not in DEPTHS:
    raise ValueError(f'resnet: depth={depth!r} is not a Table 1 column; use one of '
                     f'{", ".join(map(str, DEPTHS))}.')
  if not isinstance(plain, bool):
    raise ValueError(f'resnet: plain must be True or False, got {plain!r}.')
  if plain and depth not in PLAIN_DEPTHS:
    raise ValueError(f'resnet: the paper trains plain nets of depth 18 and 34 (Table 2), not '
                     f'{depth}.')
  if shortcut and shortcut not in SHORTCUTS:
    raise ValueError(f'resnet: shortcut={shortcut!r} is not valid; use A (zero padding), '
                     'B (projections where dimensions increase) or C (all projections).')
  if plain and shortcut:
    raise ValueError('resnet: a plain net has no shortcuts; drop shortcut= or plain=True.')
  if schedule not in SCHEDULES:
    raise ValueError(f"resnet: schedule={schedule!r} is not valid; use 'plateau' (the paper) or "
                     "'step' (/10 at epochs 30 and 60, 90 epochs).")

  c = config_lib.default_config()
  recipes.imagenet(c)
  c.batch_size = 256
  bn = dict(bn_batch_span=c.batch_size // GPUS)
  if plain:
    config_lib.set_model(c, f'plain{depth}', **bn)
  else:
    option = shortcut or ('A' if depth in PLAIN_DEPTHS else 'B')
    config_lib.set_model(c, f'resnet{depth}', shortcut=SHORTCUTS[option], **bn)

  # ---- Data (§3.4) -------------------------------------------------------------------------------
  mean = recipes.subtract_mean()
  c.data.train_preprocess = scale_augmentation(mean)
  set_evaluation(c, mean)

  # ---- Optimisation (§3.4) -----------------------------------------------------------------------
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.learning_rate = 0.1
  c.schedule.unit = 'epochs'
  if schedule == 'plateau':
    c.num_steps = PAPER_STEPS
    c.num_epochs = round(PAPER_STEPS * c.batch_size / IMAGENET_TRAIN)  # readers only: 120
    c.schedule.name = 'constant'
    c.schedule.plateau_factor = 0.1
    c.schedule.plateau_patience = 3
    c.schedule.plateau_max_reductions = 3
  else:
    c.num_epochs = 90
    c.schedule.name = 'piecewise'
    c.schedule.boundaries = (30, 60)
    c.schedule.rates = (0.01, 0.001)
  c.eval_every_epochs = 1.0
  c.log_every_steps = 500
  return c
