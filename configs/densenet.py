r"""DenseNet(-BC) trained as Huang, Liu, van der Maaten & Weinberger ("Densely Connected
Convolutional Networks", CVPR 2017, arXiv 1608.06993) trained it.

Recipe (papers.md §15; the paper §4.2 "Training", §4.4 / Table 3 for ImageNet, Table 2 for
CIFAR; the recipe text is [P?] there, the commands and CIFAR dropout [V:README]):
  ImageNet (`dataset=imagenet`, DenseNet-BC with k = 32: depth 121, 169, 201, 264)
  * SGD, batch 256, 90 epochs; learning rate 0.1, divided by 10 at epochs 30 and 60.
  * weight decay 1e-4, Nesterov momentum 0.9 without dampening; He initialisation; no dropout.
  * augmentation: fb.resnet.torch's (the code is built on it): random-sized crop (8-100% of the
    area, aspect 3/4-4/3) to 224, colour jitter (brightness, contrast, saturation 0.4), AlexNet
    lighting noise 0.1, horizontal flip; ImageNet mean/std normalisation (the 0-1 pixel
    (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)).
  * BatchNorm: Torch's (momentum 0.1 = decay 0.9, eps 1e-5), statistics per GPU: the authors'
    ImageNet command `th main.lua -netType densenet -dataset imagenet -batchSize 256 -nEpochs 90
    -depth 121 -growthRate 32 -nGPU 4` (liuzhuang13/DenseNet README, read) splits 256 over 4
    GPUs, so bn_batch_span=64.
  * evaluation: shorter side 256, centre 224 crop (single crop); 10-crop (Table 3).
  CIFAR (`dataset=cifar10|cifar100`, DenseNet-BC L = 100, k = 12: model `densenet_bc_100_12`)
  * SGD, batch 64, 300 epochs; learning rate 0.1, divided by 10 at 50% and 75% of training
    (epochs 150 and 225); weight decay 1e-4, Nesterov momentum 0.9 without dampening.
  * "+" (augment=True): zero-pad 4 and random 32x32 crop, horizontal flip; channel mean/std
    normalisation (fb.resnet.torch's CIFAR statistics). Without augmentation (augment=False:
    the C10 / C100 columns) only the normalisation, and dropout 0.2 after every convolution
    but the first.
  * one GPU (a 64-image batch: the BN statistics span the whole batch).

Readings:
  * Weight decay on every parameter (coupled L2, 'all'): Torch's optim.sgd decays the flat
    parameter vector, BN scales and shifts and the classifier bias included.
  * The 10-crop protocol sums softmax over the crops (fb.resnet.torch's TenCrop: the four
    corners, the centre and their mirrors of the 256-scaled image); our protocol averages,
    which ranks classes the same.
  * CIFAR learning-rate steps: the Torch code switches at epoch >= 0.5 * 300 counting from 1,
    i.e. after 149 finished epochs; we take the paper's 50% and 75% (epochs 150 and 225).
  * The colour jitter applies its three factors in a fixed order (Torch: a random order).
  * CIFAR crops: fb.resnet.torch normalises before padding, so its padding is the mean colour;
    ours pads the raw image with zeros (black) and normalises after (recipes.cifar).
  * CIFAR-100 uses fb.resnet.torch's CIFAR-100 statistics (mean 129.3, 124.1, 112.4; std 68.2,
    65.4, 70.4); CIFAR-10 recipes.cifar's.
  * Recalled, not in papers.md and unchecked: the paper trains its largest ImageNet model with
    batch 128 for 100 epochs (a third drop at epoch 90) for lack of GPU memory. Not encoded:
    every depth uses the batch-256 recipe; `--config.model.overrides.remat=True` recomputes the
    dense layers in the backward pass if memory is short.

Variants (`configs/densenet.py:KEY=VALUE,...`):
  depth=121|169|201|264   ImageNet DenseNet-BC (k = 32), default 121
  dataset=imagenet|cifar10|cifar100
  augment=True|False      CIFAR only: the "+" columns (default) or no augmentation + dropout 0.2

Run:
  python -m cnn_history.main --config=configs/densenet.py:depth=121 --workdir=/tmp/densenet121
  python -m cnn_history.main --config=configs/densenet.py:dataset=cifar10 --workdir=/tmp/dn_c10
Hardware: Torch, 4 GPUs for ImageNet (the authors' command; model and time not given); CIFAR
on one GPU (the README: DenseNet-BC-100 at 0.156 s per batch-64 iteration on a TITAN X, about
10 h for 300 epochs).
Target (papers.md §15): ImageNet validation, top-1 / top-5 error, single 224 crop [P?]:
121 25.02/7.71, 169 23.80/6.85, 201 22.58/6.34, 264 22.15/6.12; 10-crop 23.61/6.66,
22.08/5.92, 21.46/5.54, 20.80/5.29 (eval_ten_crop_*). The authors' Torch models, 1 crop
[V:README]: 121 25.0, 169 23.6, 201 22.5. CIFAR test error of DenseNet-BC (L=100, k=12)
[V:README]: C10 5.92, C10+ 4.51, C100 24.15, C100+ 22.27.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

IMAGENET_DEPTHS = (121, 169, 201, 264)
DATASETS = ('imagenet', 'cifar10', 'cifar100')
IMAGENET_GPUS = 4      # -nGPU 4 in the authors' ImageNet command
CIFAR100_MEAN = (129.3, 124.1, 112.4)  # fb.resnet.torch datasets/cifar100.lua
CIFAR100_STD = (68.2, 65.4, 70.4)


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'depth': 121, 'dataset': 'imagenet', 'augment': True})
  dataset, depth, augment = args['dataset'], args['depth'], args['augment']
  if dataset not in DATASETS:
    raise ValueError(f'densenet: dataset={dataset!r} is not one of {", ".join(DATASETS)}.')
  if not isinstance(augment, bool):
    raise ValueError(f'densenet: augment must be True or False, got {augment!r}.')

  c = config_lib.default_config()
  c.optimizer.name = 'nesterov'    # Torch optim.sgd, nesterov=true, dampening 0
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'piecewise'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.1
  c.eval_every_epochs = 1.0

  if dataset == 'imagenet':
    if depth not in IMAGENET_DEPTHS:
      raise ValueError(f'densenet: depth={depth!r} is not an ImageNet DenseNet of Table 1; '
                       f'use one of {", ".join(map(str, IMAGENET_DEPTHS))}.')
    if not augment:
      raise ValueError('densenet: augment=False is a CIFAR setting (the C10/C100 columns).')
    recipes.imagenet(c)
    c.batch_size = 256
    config_lib.set_model(c, f'densenet{depth}', bn_momentum=0.9, bn_epsilon=1e-5,
                         bn_batch_span=c.batch_size // IMAGENET_GPUS)
    norm = recipes.normalize()
    c.data.train_preprocess = recipes.fb_resnet_torch_train(224, 0.08, norm)
    c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{norm}'
    c.data.eval_protocols.ten_crop = recipes.ten_crop(224, 256, norm)
    c.eval_batch_size = 250        # x10 views in the ten-crop protocol
    c.num_epochs = 90
    c.schedule.boundaries = (30, 60)
    c.schedule.rates = (0.01, 0.001)
    c.log_every_steps = 500
    return c

  if depth not in (121, 100):      # 121: the argument's default, not given
    raise ValueError(f'densenet: on CIFAR the recipe is DenseNet-BC L=100, k=12 (Table 2); '
                     f'depth={depth!r} is not available (use depth=100 or leave it out).')
  recipes.cifar(c, dataset)
  if dataset == 'cifar100':
    norm = recipes.normalize(CIFAR100_MEAN, CIFAR100_STD)
    c.data.train_preprocess = f'random_crop(32, padding=4)|flip_lr|{norm}'
    c.data.eval_preprocess = norm
  if not augment:
    c.data.train_preprocess = c.data.eval_preprocess
  config_lib.set_model(c, 'densenet_bc_100_12', dropout_rate=0.0 if augment else 0.2,
                       bn_momentum=0.9, bn_epsilon=1e-5)
  c.batch_size = 64
  c.num_epochs = 300
  c.schedule.boundaries = (150, 225)
  c.schedule.rates = (0.01, 0.001)
  c.log_every_steps = 200
  return c
