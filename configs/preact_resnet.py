r"""Pre-activation ResNets (ResNet v2) trained as He, Zhang, Ren & Sun ("Identity Mappings in Deep
Residual Networks", ECCV 2016, arXiv 1603.05027) trained them: ResNet-164/1001 on CIFAR-10/100
and ResNet-50/101/152/200 on ImageNet.

Recipe (papers.md §12 [P?]; the paper's appendix "Implementation details", Tables 2-5; the
1001-layer code's README, KaimingHe/resnet-1k-layers [V:README]):
  * units (Fig. 4(e)): x_{l+1} = x_l + F(x_l), F = (BN-ReLU-conv) x 3 (bottlenecks), nothing
    after the addition; a projection reads the pre-activated input; one BN-ReLU after the last
    unit. CIFAR (models preact_resnet164, preact_resnet1001): 9n + 2 layers, a 16-filter 3x3
    stem, stages of 64/128/256 output channels. ImageNet (models resnetv2_50 ... resnetv2_200):
    Table 1's stages with the pre-activation unit.
  * "The implementation details and hyper-parameters are the same as those in [ResNet v1]":
    CIFAR: batch 128 on 2 GPUs (64 each: bn_batch_span=64), momentum 0.9, weight decay 1e-4,
    learning rate 0.1 divided by 10 at 32k and 48k iterations, stopped at 64k; 0.01 for the
    first 400 iterations; only the translation (pad 4, random 32x32 crop) and flipping
    augmentation of v1; per-pixel mean subtracted.
    ImageNet: batch 256 on 8 GPUs (32 each), momentum 0.9, weight decay 1e-4, learning rate 0.1
    (no warm-up), divided by 10 at epochs 30 and 60; v1's scale augmentation (shorter side
    ~ U[256, 480], 224 crop, flip, PCA lighting, mean subtracted); the best ResNet-200 (Table 5,
    marked with a dagger) with "scale and aspect ratio augmentation" instead (fb.resnet.torch's
    Inception-style crop).
  * the experiments were "conducted in Caffe" (the README): optimizer 'sgd_caffe'
    (v <- 0.9 v + lr g), weight decay as L2 in the gradient, every parameter.
  * evaluation: CIFAR test set, the single 32x32 image; ImageNet validation single crop, 224 and
    320 (Table 5: the 320x320 crop is the `crop320` protocol).

Readings where the paper is ambiguous:
  * The appendix's ImageNet schedule (/10 at epochs 30 and 60) and the CIFAR warm-up "for all
    CIFAR experiments" are recalled from the paper, not checked (papers.md §12 says "ImageNet
    as v1" and puts the warm-up on the 110/1001-layer nets, both [P?]). The ImageNet run length
    is not stated: 90 epochs here (fb.resnet.torch's). The paper remarks the warm-up "is not
    necessary" for the pre-activation unit: warmup=False drops it.
  * The 320x320 test crop: the centre 320x320 square of the image with its shorter side
    resized to 320 (the crop's source scale is not given).
  * augment=inception uses fb.resnet.torch's whole training transform (random-sized crop of
    8-100% of the area, aspect 3/4-4/3; colour jitter 0.4; lighting 0.1; flip; ImageNet
    mean/std), since the dagger model came from that code; optimizer and schedule stay as
    above.
  * The ImageNet models are timm's resnetv2_* (stride in the 3x3 of a stage's first unit, as
    fb.resnet.torch's preresnet.lua); --config.model.overrides.stride_in=1x1 is v1's placement.
  * CIFAR inputs: the per-channel mean subtracted (CIFAR-10: recipes.CIFAR10_MEAN; CIFAR-100:
    fb.resnet.torch's 129.3, 124.1, 112.4), before padding; mean_image=PATH subtracts a
    per-pixel mean image (configs/resnet_cifar.py shows how to compute one).
  * The 45k/5k split: holdout=True, as configs/resnet_cifar.py.
  * BN: moving averages with decay 0.9, epsilon 1e-5 (the models' defaults; not stated).

Variants (`configs/preact_resnet.py:KEY=VALUE,...`):
  model=preact_resnet164|preact_resnet1001|resnetv2_50|resnetv2_101|resnetv2_152|resnetv2_200
                                (default preact_resnet164)
  dataset=cifar10|cifar100      CIFAR models only (default cifar10)
  warmup=True|False             CIFAR: 0.01 for the first 400 iterations (default True)
  holdout=True                  CIFAR: train on 45k, evaluate on the other 5k training images
  mean_image=PATH               CIFAR: per-pixel mean image instead of the channel mean
  augment=scale|inception       ImageNet: v1's scale augmentation (default) or the dagger
                                model's scale + aspect-ratio augmentation

Run:
  python -m cnn_history.main --config=configs/preact_resnet.py:model=preact_resnet1001 \
      --workdir=/tmp/preact1001
  python -m cnn_history.main \
      --config=configs/preact_resnet.py:model=resnetv2_200,augment=inception \
      --workdir=/tmp/resnetv2_200
Hardware: CIFAR on 2 GPUs, ImageNet on 8 GPUs (the appendix; GPU model and time not in
papers.md). The 1001-layer net needed a batch of 64 to fit the README's Torch re-implementation.
Target (papers.md §12 [P?]): CIFAR test error, pre-activation: ResNet-164 5.46% (C10) / 24.33%
(C100), ResNet-1001 4.92% / 22.71% (the README's Torch code with batch 64: 4.62% on C10
[P✓:README]). ImageNet validation top-1 / top-5 error, single 320x320 crop (eval_crop320_*;
Table 5): ResNet-152 21.1 / 5.5, ResNet-200 20.7 / 5.3, ResNet-200 with augment=inception
20.1 / 4.8 [P✓:README, TF-slim "quoted from the paper"].
"""

import os
import runpy

from cnn_history import config as config_lib
from cnn_history import recipes

_HERE = os.path.dirname(os.path.abspath(__file__))
_RESNET = runpy.run_path(os.path.join(_HERE, 'resnet.py'))         # ImageNet v1 pieces
_CIFAR = runpy.run_path(os.path.join(_HERE, 'resnet_cifar.py'))    # the CIFAR recipe

CIFAR_MODELS = ('preact_resnet164', 'preact_resnet1001')
IMAGENET_MODELS = ('resnetv2_50', 'resnetv2_101', 'resnetv2_152', 'resnetv2_200')
DATASETS = ('cifar10', 'cifar100')
AUGMENTATIONS = ('scale', 'inception')
CIFAR_MEANS = {'cifar10': recipes.CIFAR10_MEAN, 'cifar100': (129.3, 124.1, 112.4)}
CIFAR_GPUS = 2
IMAGENET_GPUS = 8


def _check_bool(name: str, value) -> None:
  if not isinstance(value, bool):
    raise ValueError(f'preact_resnet: {name} must be True or False, got {value!r}.')


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'model': 'preact_resnet164', 'dataset': 'cifar10',
                                    'warmup': True, 'holdout': False, 'mean_image': '',
                                    'augment': 'scale'})
  model = args['model']
  if model not in CIFAR_MODELS + IMAGENET_MODELS:
    raise ValueError(f'preact_resnet: model={model!r} is not valid; use one of '
                     f'{", ".join(CIFAR_MODELS + IMAGENET_MODELS)}.')
  for name in ('warmup', 'holdout'):
    _check_bool(name, args[name])
  c = config_lib.default_config()

  if model in CIFAR_MODELS:
    dataset = args['dataset']
    if dataset not in DATASETS:
      raise ValueError(f'preact_resnet: dataset={dataset!r} is not valid; use cifar10 or '
                       'cifar100 (ImageNet: a resnetv2_* model).')
    if args['augment'] != 'scale':
      raise ValueError('preact_resnet: augment= is an ImageNet setting; the CIFAR recipe uses '
                       'translation and flipping only.')
    recipes.cifar(c, dataset)
    config_lib.set_model(c, model, bn_batch_span=128 // CIFAR_GPUS)
    _CIFAR['apply_cifar_recipe'](
        c, mean=_CIFAR['mean_op'](args['mean_image'], CIFAR_MEANS[dataset]),
        warmup=args['warmup'], holdout=args['holdout'])
    return c

  if args['dataset'] != 'cifar10' or args['holdout'] or args['mean_image']:
    raise ValueError(f'preact_resnet: dataset, holdout and mean_image are CIFAR settings; '
                     f'{model} trains on ImageNet.')
  if args['augment'] not in AUGMENTATIONS:
    raise ValueError(f"preact_resnet: augment={args['augment']!r} is not valid; use scale (v1's "
                     'scale augmentation) or inception (scale + aspect ratio).')
  recipes.imagenet(c)
  c.batch_size = 256
  config_lib.set_model(c, model, bn_batch_span=c.batch_size // IMAGENET_GPUS)
  if args['augment'] == 'scale':
    post = recipes.subtract_mean()
    c.data.train_preprocess = _RESNET['scale_augmentation'](post)
  else:
    post = recipes.normalize()
    c.data.train_preprocess = recipes.fb_resnet_torch_train(224, 0.08, post)
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{post}'
  c.data.eval_protocols.crop320 = f'resize_small(320)|center_crop(320)|{post}'
  c.eval_batch_size = 256
  c.num_epochs = 90
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'piecewise'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.1
  c.schedule.boundaries = (30, 60)
  c.schedule.rates = (0.01, 0.001)
  c.eval_every_epochs = 1.0
  c.log_every_steps = 500
  return c
