r"""Wide Residual Networks trained as Zagoruyko & Komodakis ("Wide Residual Networks", BMVC 2016,
arXiv 1605.07146) trained them: WRN-28-10 on CIFAR-10/100 (with and without dropout) and
WRN-50-2-bottleneck on ImageNet.

Recipe (papers.md §14 [P?]; the authors' code, szagoruyko/wide-residual-networks: train.lua,
scripts/train_cifar.sh, pytorch/main.py ("reproduces *exactly* its lua version") and the
README, read [V]):
  CIFAR (model `wide_resnet28_10`)
  * network: WRN-28-10: pre-activation basic blocks (BN-ReLU-3x3 conv, twice) with 160/320/640
    filters, 4 blocks per group, 1x1 projections where the width changes; 36.5M parameters.
    Dropout 0.3 between the two convolutions of every block (dropout=True: the
    "WRN-28-10-dropout" rows).
  * SGD with Nesterov momentum 0.9, dampening 0 (train_cifar.sh: nesterov=true; Torch's form,
    the rate outside the momentum: optimizer 'nesterov'), batch 128, weight decay 5e-4 as L2 in
    the gradient on every parameter (Torch's flat parameter vector).
  * learning rate 0.1, multiplied by 0.2 at epochs 60, 120 and 160; 200 epochs.
  * augmentation: horizontal flips and random 32x32 crops of the image padded by 4 pixels with
    reflection (randomcrop_type=reflection); "meanstd" normalisation (pytorch/main.py: mean
    (125.3, 123.0, 113.9), std (63.0, 62.1, 66.7) on 0-255 pixels; the README's corrected
    numbers use it rather than ZCA whitening).
  * one GPU (a Titan X, the README): the BN statistics span the whole batch of 128.
  ImageNet (model `wide_resnet50_2`: ResNet-50 with the bottleneck's 3x3 twice as wide; stride
  in the 3x3, as fb.resnet.torch, on which the authors built it)
  * fb.resnet.torch's ImageNet training (the paper gives no separate recipe): SGD with Nesterov
    momentum 0.9, batch 256, weight decay 1e-4, learning rate 0.1 divided by 10 every 30
    epochs, 90 epochs; random-sized crop (8-100%, aspect 3/4-4/3) to 224, colour jitter 0.4,
    lighting 0.1, flip, ImageNet mean/std; evaluation on the 224 centre crop of the 256-scaled
    image.

Readings:
  * Learning-rate steps: the code multiplies the rate at the start of epochs 60, 120, 160
    counted from 1 (after 59, 119, 159 finished epochs); we take the paper's 60, 120, 160.
  * Reflection padding: pad(4, mode="reflect") (the edge pixel not repeated, tf.pad REFLECT).
  * CIFAR-100 uses the same mean/std as CIFAR-10 (pytorch/main.py does).
  * ImageNet: fb.resnet.torch's defaults (90 epochs, /10 every 30; recalled [R?], the WRN
    paper does not print them); BN statistics per 64 images, fb.resnet.torch's example of 256
    images on 4 GPUs (the WRN authors' GPU count is not given).
  * BN: Torch's momentum 0.1 (decay 0.9), epsilon 1e-5.

Variants (`configs/wide_resnet.py:KEY=VALUE,...`):
  model=wide_resnet28_10|wide_resnet50_2   (default wide_resnet28_10)
  dataset=cifar10|cifar100                 CIFAR only (default cifar10)
  dropout=True|False                       CIFAR: dropout 0.3 inside each block (default True)

Run:
  python -m cnn_history.main --config=configs/wide_resnet.py:dataset=cifar10 --workdir=/tmp/wrn28_10
  python -m cnn_history.main --config=configs/wide_resnet.py:model=wide_resnet50_2 \
      --workdir=/tmp/wrn50_2
Hardware: CIFAR on one Titan X ("about a day" for WRN-28-10 on CIFAR-100, the README);
ImageNet on the authors' clusters (GPU count not given).
Target: CIFAR test error, meanstd preprocessing, median of 5 runs [P✓:README]: WRN-28-10 4.00%
(C10) / 19.25% (C100), with dropout 3.89% / 18.85% (the paper's first version, with ZCA
whitening: 4.17 / 20.50 without dropout, papers.md §14 [P?]). ImageNet WRN-50-2-bottleneck, single
224 crop: 21.9% top-1 / 6.03% top-5 error (pretrained/README.md).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

MODELS = ('wide_resnet28_10', 'wide_resnet50_2')
DATASETS = ('cifar10', 'cifar100')
WRN_MEAN = (125.3, 123.0, 113.9)   # pytorch/main.py, 0-255 scale
WRN_STD = (63.0, 62.1, 66.7)
IMAGENET_GPUS = 4


def _optimizer(c, weight_decay: float) -> None:
  c.optimizer.name = 'nesterov'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = weight_decay
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'piecewise'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.1
  c.eval_every_epochs = 1.0


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'model': 'wide_resnet28_10', 'dataset': 'cifar10',
                                    'dropout': True})
  model, dataset, dropout = args['model'], args['dataset'], args['dropout']
  if model not in MODELS:
    raise ValueError(f'wide_resnet: model={model!r} is not valid; use one of {", ".join(MODELS)}.')
  if not isinstance(dropout, bool):
    raise ValueError(f'wide_resnet: dropout must be True or False, got {dropout!r}.')
  c = config_lib.default_config()

  if model == 'wide_resnet50_2':
    if dataset != 'cifar10' or not dropout:
      raise ValueError('wide_resnet: dataset and dropout are CIFAR settings; wide_resnet50_2 '
                       'trains on ImageNet without dropout.')
    recipes.imagenet(c)
    c.batch_size = 256
    config_lib.set_model(c, model, bn_momentum=0.9, bn_epsilon=1e-5,
                         bn_batch_span=c.batch_size // IMAGENET_GPUS)
    norm = recipes.normalize()
    c.data.train_preprocess = recipes.fb_resnet_torch_train(224, 0.08, norm)
    c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{norm}'
    _optimizer(c, 1e-4)
    c.num_epochs = 90
    c.schedule.boundaries = (30, 60)
    c.schedule.rates = (0.01, 0.001)
    c.log_every_steps = 500
    return c

  if dataset not in DATASETS:
    raise ValueError(f'wide_resnet: dataset={dataset!r} is not valid; use cifar10 or cifar100 '
                     '(ImageNet: model=wide_resnet50_2).')
  recipes.cifar(c, dataset)
  norm = recipes.normalize(WRN_MEAN, WRN_STD)
  c.data.train_preprocess = f'pad(4, mode="reflect")|random_crop(32)|flip_lr|{norm}'
  c.data.eval_preprocess = norm
  config_lib.set_model(c, model, block_dropout_rate=0.3 if dropout else 0.0, bn_momentum=0.9,
                       bn_epsilon=1e-5)
  c.batch_size = 128
  c.num_epochs = 200
  _optimizer(c, 5e-4)
  c.schedule.boundaries = (60, 120, 160)
  c.schedule.rates = (0.02, 0.004, 0.0008)
  c.log_every_steps = 100
  return c
