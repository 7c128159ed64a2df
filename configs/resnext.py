r"""ResNeXt-50 (32x4d), ResNeXt-101 (32x4d) and ResNeXt-101 (64x4d) trained on ImageNet as Xie,
Girshick, Dollar, Tu & He ("Aggregated Residual Transformations for Deep Neural Networks", CVPR
2017, arXiv 1611.05431) trained them.

Recipe (papers.md §13 [P?]; the paper §4 "Implementation details"; the authors' Torch code,
facebookresearch/ResNeXt, built on fb.resnet.torch: opts.lua, train.lua, datasets/imagenet.lua
and the README's command, read [V]):
  * networks (models resnext50_32x4d, resnext101_32x4d, resnext101_64x4d): ResNet-50/101 with
    the bottleneck's 3x3 a grouped conv of C groups of d channels at the first stage (C x d),
    doubling per stage; form (c) of Fig. 3; the stride in the 3x3; BN after every conv, ReLU
    after each BN except the block's output, where it follows the addition; option-B
    projections; He initialisation.
  * SGD, mini-batch 256 on 8 GPUs (32 per GPU: bn_batch_span=32; the README's command
    `-batchSize 256 -nGPU 8`); Torch's optim.sgd with nesterov=true, dampening 0 (train.lua):
    optimizer 'nesterov', momentum 0.9; weight decay 1e-4 on the flat parameter vector (every
    parameter, L2 in the gradient).
  * learning rate 0.1, "divided by 10 for three times using the schedule in [fb.resnet.torch]":
    0.1 x 0.1^floor((epoch - 1) / 30) with 1-based epochs, i.e. /10 after epochs 30, 60 and 90;
    100 epochs (opts.lua's ImageNet default).
  * augmentation (datasets/imagenet.lua): random-sized crop (8-100% of the area, aspect
    3/4-4/3) resized to 224, colour jitter (brightness, contrast, saturation 0.4), AlexNet
    lighting 0.1 with fb.resnet.torch's PCA constants, ImageNet mean/std normalisation
    ((0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) on 0-1 pixels), horizontal flip.
  * BatchNorm: Torch's (momentum 0.1 = decay 0.9, epsilon 1e-5).
  * evaluation: "the single 224x224 center crop from an image whose shorter side is 256"
    (eval_preprocess); Table 5 also tests a 320x320 crop (protocol `crop320`).

Readings:
  * The 320x320 test crop: the centre 320x320 square after resizing the shorter side to 320
    (the paper does not say from which scale it is cut).
  * The colour jitter applies brightness, contrast and saturation in a fixed order (Torch: a
    random order); fb.resnet.torch falls back to a centre crop after 10 failed crop draws, TF's
    sampler to the whole image.
  * Table 3's cardinality-vs-width ablation (the same complexity: 1x64d, 2x40d, 4x24d, 8x14d,
    32x4d) is cardinality=C,base_width=d on resnext50_32x4d or resnext101_32x4d; 1x64d is
    ResNet-50/101 with the stride in the 3x3 (ResNet-50-B, the paper's baseline).

Variants (`configs/resnext.py:KEY=VALUE,...`):
  model=resnext50_32x4d|resnext101_32x4d|resnext101_64x4d   (default resnext50_32x4d)
  cardinality=C, base_width=d   the template C x d (Table 3; default: the model's)

Run (ImageNet through TFDS, manual download):
  python -m cnn_history.main --config=configs/resnext.py:model=resnext50_32x4d \
      --workdir=/tmp/resnext50
  python -m cnn_history.main --config=configs/resnext.py:cardinality=8,base_width=14 \
      --workdir=/tmp/resnext50_8x14d
Hardware: 8 GPUs (the README's command; model and time not in papers.md).
Target (ILSVRC-2012 validation, single 224 crop, top-1 error [P✓:README]): ResNeXt-50 (32x4d)
22.2, ResNeXt-101 (32x4d) 21.2, ResNeXt-101 (64x4d) 20.4 (top-5 5.3 [P?]); their baselines
ResNet-50 23.9, ResNet-101 22.0. 64x4d at the 320 crop (eval_crop320_*): 19.1 / 4.4 [P?].
Table 3 (50 layers, recalled, not in papers.md): 1x64d 23.9, 2x40d 23.0, 4x24d 22.6, 8x14d
22.3, 32x4d 22.2.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

MODELS = ('resnext50_32x4d', 'resnext101_32x4d', 'resnext101_64x4d')
GPUS = 8
EPOCHS = 100                   # opts.lua: nEpochs defaults to 100 on ImageNet
DROPS = (30, 60, 90)           # train.lua: LR * 0.1^floor((epoch - 1) / 30)


def _positive_int_or_none(name: str, value) -> None:
  if value is not None and not (isinstance(value, int) and value > 0):
    raise ValueError(f'resnext: {name} must be a positive integer, got {value!r}.')


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'model': 'resnext50_32x4d', 'cardinality': None,
                                    'base_width': None})
  model = args['model']
  if model not in MODELS:
    raise ValueError(f'resnext: model={model!r} is not valid; use one of {", ".join(MODELS)}.')
  template = {}
  for name in ('cardinality', 'base_width'):
    _positive_int_or_none(name, args[name])
    if args[name] is not None:
      template[name] = args[name]

  c = config_lib.default_config()
  recipes.imagenet(c)
  c.batch_size = 256
  config_lib.set_model(c, model, bn_momentum=0.9, bn_epsilon=1e-5,
                       bn_batch_span=c.batch_size // GPUS, **template)

  norm = recipes.normalize()
  c.data.train_preprocess = recipes.fb_resnet_torch_train(224, 0.08, norm)
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{norm}'
  c.data.eval_protocols.crop320 = f'resize_small(320)|center_crop(320)|{norm}'
  c.eval_batch_size = 256

  c.num_epochs = EPOCHS
  c.optimizer.name = 'nesterov'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'piecewise'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.1
  c.schedule.boundaries = DROPS
  c.schedule.rates = (0.01, 0.001, 0.0001)
  c.eval_every_epochs = 1.0
  c.log_every_steps = 500
  return c
