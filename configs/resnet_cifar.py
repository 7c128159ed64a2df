r"""The CIFAR-10 ResNets (20, 32, 44, 56, 110, 1202 layers) trained as He, Zhang, Ren & Sun ("Deep
Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385, §4.2) trained them.

Recipe (papers.md §11 "CIFAR-10 recipe" [P?]; the paper §4.2, Table 6, Fig. 6):
  * networks (models resnet20 ... resnet1202): a 3x3 conv of 16 filters, then three stages of
    n basic blocks with 16/32/64 filters on 32x32/16x16/8x8 maps, global average pooling and a
    10-way FC: 6n + 2 layers; parameter-free option-A shortcuts (zero-padded identity with
    subsampling) everywhere; He initialisation, BN after every conv, no dropout.
  * SGD, mini-batch 128 on two GPUs (BN statistics per 64 images: bn_batch_span=64); momentum
    0.9, weight decay 1e-4.
  * learning rate 0.1, divided by 10 at 32k and 48k iterations, training stopped at 64k
    iterations (schedule.unit='steps'; 64k x 128 = 164 epochs of 50k), "determined on a 45k/5k
    train/val split".
  * ResNet-110: "the initial learning rate of 0.1 is slightly too large to start converging",
    so 0.01 "until the training error is below 80% (about 400 iterations)", then back to 0.1.
  * input: 32x32 images "with the per-pixel mean subtracted"; training: 4 pixels padded on each
    side and a random 32x32 crop of the padded image or its horizontal flip; testing: the
    single view of the original 32x32 image.

Readings where the paper is ambiguous:
  * The optimizer: 'sgd_caffe' (v <- 0.9 v + lr g, the rate inside the momentum), the update
    the authors' README names for their ImageNet models (KaimingHe/deep-residual-networks
    [V:README]; their CIFAR code is not released, and the Identity Mappings code's README says
    that paper's experiments "were conducted in Caffe"). Weight decay as L2 in the gradient on
    every parameter.
  * The warm-up is a fixed 400 iterations at 0.01 (piecewise), not a watch on the training
    error. ResNet-1202 is "trained as described above", which we read as including the
    110-layer net's warm-up: warmup defaults to True for depth >= 110 (override with
    warmup=True|False).
  * The 45k/5k split chose the schedule; the reported test errors come from nets trained on
    all 50k images, we read, so the default trains on 'train' and evaluates on 'test'.
    holdout=True trains on 'train[:45000]' and evaluates on 'train[45000:]' (TFDS slicing:
    the first 45k images, not a random 45k).
  * Per-pixel mean: the default subtracts the per-channel training mean (recipes.CIFAR10_MEAN)
    from every pixel, without dividing by the std; mean_image=PATH subtracts the per-pixel mean
    image the paper describes, written by
      python -m cnn_history.data.stats --config=configs/resnet_cifar.py --out=DIR --preprocess=''
    (DIR/mean.npy). The mean is subtracted before padding, so the 4 padded pixels are zero in
    mean-subtracted units (the mean colour), as in fb.resnet.torch's CIFAR pipeline.
  * BN statistics: moving averages with decay 0.9, epsilon 1e-5 (the model's defaults; the
    paper does not state them).

Variants (`configs/resnet_cifar.py:KEY=VALUE,...`):
  depth=20|32|44|56|110|1202   6n + 2 (default 110)
  warmup=True|False            0.01 for the first 400 iterations (default: depth >= 110)
  holdout=True                 the 45k/5k train/val split instead of train/test
  mean_image=PATH              the per-pixel mean image (above) instead of the channel mean

Run (CIFAR-10 through TFDS, downloaded on first use):
  python -m cnn_history.main --config=configs/resnet_cifar.py:depth=110 --workdir=/tmp/resnet110
Hardware: two GPUs (model and time not in papers.md).
Target (CIFAR-10 test error, Table 6 [P?]): ResNet-20 8.75%, 32 7.51, 44 7.17, 56 6.97, 110
6.43 (best of 5 runs; mean 6.61 +- 0.16), 1202 7.93.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

DEPTHS = (20, 32, 44, 56, 110, 1202)
GPUS = 2                      # "a mini-batch size of 128 on two GPUs"
WARMUP_STEPS = 400            # "about 400 iterations" at 0.01 (ResNet-110)
BOUNDARIES = (32_000, 48_000)  # /10 at 32k and 48k iterations ...
TOTAL_STEPS = 64_000          # ... stop at 64k
CIFAR10_TRAIN = 50_000


def _check_bool(name: str, value) -> None:
  if not isinstance(value, bool):
    raise ValueError(f'{name} must be True or False, got {value!r}.')


def apply_cifar_recipe(c, *, mean: str, warmup: bool, holdout: bool) -> None:
  """§4.2's training of the CIFAR ResNets (shared with configs/preact_resnet.py: the Identity
  Mappings paper keeps it): batch 128, Caffe momentum 0.9, weight decay 1e-4, 0.1 /10 at 32k
  and 48k, 64k iterations (0.01 for the first 400 with `warmup`); pad-4 crops and flips of the
  mean-subtracted image (`mean`: the op that subtracts it)."""
  if holdout:
    c.data.train_split = f'train[:{CIFAR10_TRAIN - 5000}]'
    c.data.eval_split = f'train[{CIFAR10_TRAIN - 5000}:]'
  c.data.train_preprocess = f'{mean}|random_crop(32, padding=4)|flip_lr'
  c.data.eval_preprocess = mean
  c.batch_size = 128
  c.num_steps = TOTAL_STEPS
  c.num_epochs = round(TOTAL_STEPS * c.batch_size / CIFAR10_TRAIN)  # readers only: 164
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'piecewise'
  c.schedule.unit = 'steps'
  if warmup:
    c.schedule.learning_rate = 0.01
    c.schedule.boundaries = (WARMUP_STEPS,) + BOUNDARIES
    c.schedule.rates = (0.1, 0.01, 0.001)
  else:
    c.schedule.learning_rate = 0.1
    c.schedule.boundaries = BOUNDARIES
    c.schedule.rates = (0.01, 0.001)
  c.eval_every_epochs = 1.0
  c.log_every_steps = 100


def mean_op(mean_image: str, channel_mean=recipes.CIFAR10_MEAN) -> str:
  """The per-pixel mean image of `mean_image` (an .npy path), else the per-channel mean."""
  if mean_image:
    return f'subtract_mean_image({mean_image!r})'
  return recipes.subtract_mean(channel_mean)


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'depth': 110, 'warmup': None, 'holdout': False,
                                    'mean_image': ''})
  depth = args['depth']
  if depth not in DEPTHS:
    raise ValueError(f'resnet_cifar: depth={depth!r} is not a CIFAR-10 ResNet of Table 6; use '
                     f'one of {", ".join(map(str, DEPTHS))}.')
  warmup = depth >= 110 if args['warmup'] is None else args['warmup']
  _check_bool('resnet_cifar: warmup', warmup)
  _check_bool('resnet_cifar: holdout', args['holdout'])

  c = config_lib.default_config()
  recipes.cifar(c, 'cifar10')
  config_lib.set_model(c, f'resnet{depth}', bn_batch_span=128 // GPUS)
  apply_cifar_recipe(c, mean=mean_op(args['mean_image']), warmup=warmup,
                     holdout=args['holdout'])
  return c
