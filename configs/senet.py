r"""Squeeze-and-Excitation networks (SE-ResNet-50/101/152, SE-ResNeXt-50/101 32x4d, SENet-154)
trained on ImageNet as Hu, Shen & Sun ("Squeeze-and-Excitation Networks", CVPR 2018, arXiv
1709.01507) trained them.

Recipe (papers.md §17 [P?; batch, learning rate and servers P✓:README]; the paper's
implementation section and the SENet-154 appendix; the authors' README, hujie-frank/SENet [V]):
  * networks (models seresnet50 ... senet154): the residual branch of every block rescaled by
    an SE block (global average pool -> FC C/16 -> ReLU -> FC C -> sigmoid) before the identity
    is added, r = 16; SE-ResNets keep the Caffe stride on the first 1x1, SE-ResNeXts and
    SENet-154 put it in the 3x3. SENet-154 (appendix): SE-ResNeXt-152 (64x4d) with each
    bottleneck's first 1x1 halved, a stem of three 3x3 convs, 3x3/2 downsampling projections,
    dropout 0.2 before the classifier.
  * synchronous SGD, momentum 0.9, mini-batch 1024 "across 4 servers" of 8 GPUs each
    (32 images per GPU: bn_batch_span=32); MSRA initialisation; trained from scratch.
  * learning rate 0.6, "decreased by a factor of 10 every 30 epochs", 100 epochs.
  * augmentation: random-size cropping (GoogLeNet's: 8-100% of the area, aspect 3/4-4/3, the
    ranges the README lists) to 224x224, random horizontal flip; inputs normalised by mean
    channel subtraction; "balanced data sampling" for the mini-batches.
  * SENet-154 extras (appendix): label smoothing; the BN layers' parameters frozen for the last
    few epochs.
  * evaluation: the centre 224x224 crop of the image resized to shorter side 256 (the README's
    Table 1 protocol); SENet-154 also at 320x320 (protocol `crop320`).

Readings where the paper is ambiguous or the codebase differs:
  * The optimizer form: the networks are Caffe models (the README), so Caffe's momentum update
    (v <- 0.9 v + lr g, optimizer 'sgd_caffe'), as the ResNets they build on; weight decay is
    not stated: 1e-4 (the ResNet/ResNeXt value the "re-implementation" baselines of Table 2
    need), as L2 in the gradient on every parameter.
  * "Every 30 epochs": an exponential staircase (x0.1 at epochs 30, 60, 90).
  * Label smoothing for SENet-154: epsilon 0.1 with the uniform prior (Inception-v3's
    regularisation, which the appendix cites; the value is not stated).
  * Not expressible here and left out: the balanced sampling of classes within a mini-batch,
    and freezing BN in the last epochs (SENet-154).
  * The README's re-trained models (batch 256, rate 0.1, more epochs, rotation +-10 degrees,
    pixel jitter +-20) are not the paper's recipe and are not encoded.
  * Mean subtraction uses the per-channel ImageNet mean (recipes.IMAGENET_MEAN, RGB order).
  * The 320x320 crop: the centre 320 square of the image resized to shorter side 320.
  * BN: moving averages with decay 0.9, epsilon 1e-5 (the model's defaults; not stated).

Variants (`configs/senet.py:KEY=VALUE,...`):
  model=seresnet50|seresnet101|seresnet152|seresnext50_32x4d|seresnext101_32x4d|senet154
                       (default seresnet50)
  reduction=16         the SE reduction ratio r (the paper's ablation: 2 ... 32); 0 removes
                       the SE blocks: the "re-implementation" baselines of Table 2

Run (ImageNet through TFDS, manual download):
  python -m cnn_history.main --config=configs/senet.py:model=seresnet50 --workdir=/tmp/seresnet50
  python -m cnn_history.main --config=configs/senet.py:model=seresnet50,reduction=0 \
      --workdir=/tmp/resnet50_reimpl
Hardware: 4 servers x 8 GPUs on the authors' distributed system (ROCS); time not in papers.md.
Target (ILSVRC-2012 validation, single 224 crop, top-1 / top-5 error, Table 2 [P?]):
  SE-ResNet-50 23.29 / 6.62 (re-implemented ResNet-50 24.80 / 7.48), SE-ResNet-101 22.38 / 6.07
  (23.17 / 6.52), SE-ResNet-152 21.57 / 5.73 (22.42 / 6.34), SE-ResNeXt-50 21.10 / 5.49
  (22.11 / 5.90), SE-ResNeXt-101 20.70 / 5.01 (21.18 / 5.57); SENet-154 18.68 / 4.47
  [P✓:README], 17.28 / 3.79 at 320x320 (eval_crop320_*; [P?]).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

MODELS = ('seresnet50', 'seresnet101', 'seresnet152', 'seresnext50_32x4d', 'seresnext101_32x4d',
          'senet154')
GPUS = 32                     # 4 servers x 8 GPUs


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'model': 'seresnet50', 'reduction': 16})
  model, reduction = args['model'], args['reduction']
  if model not in MODELS:
    raise ValueError(f'senet: model={model!r} is not valid; use one of {", ".join(MODELS)}.')
  if not (isinstance(reduction, int) and not isinstance(reduction, bool) and reduction >= 0):
    raise ValueError(f'senet: reduction must be an integer >= 0 (0: no SE blocks), got '
                     f'{reduction!r}.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  c.batch_size = 1024
  config_lib.set_model(c, model, se_reduction=reduction, bn_batch_span=c.batch_size // GPUS)

  mean = recipes.subtract_mean()
  c.data.train_preprocess = f'inception_crop(224, area_min=0.08, area_max=1.0)|flip_lr|{mean}'
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{mean}'
  if model == 'senet154':
    c.data.eval_protocols.crop320 = f'resize_small(320)|center_crop(320)|{mean}'
    c.loss.label_smoothing = 0.1
    c.loss.label_smoothing_form = 'uniform'
  c.eval_batch_size = 1024

  c.num_epochs = 100
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.6
  c.schedule.decay_factor = 0.1
  c.schedule.decay_every = 30
  c.schedule.staircase = True
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
