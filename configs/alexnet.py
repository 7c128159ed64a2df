r"""AlexNet trained as Krizhevsky, Sutskever & Hinton (NIPS 2012) trained it.

Recipe (papers.md §3; the paper §2, §3.2-§3.4, §4.1, §4.2, §5, §6):
  * network: the two-GPU net of Fig. 2 (model `alexnet`): 5 conv + 3 FC layers, LRN after the
    ReLUs of conv1/conv2 (k=2, n=5, alpha=1e-4, beta=0.75), overlapping 3x3/2 max-pools, two
    towers (conv2/4/5 grouped), dropout 0.5 after FC6/FC7; weights N(0, 0.01^2), biases 1 in
    conv2/4/5 and FC6/FC7, 0 elsewhere.
  * batch 128; momentum 0.9; weight decay 0.0005, written (§5) as
      v <- 0.9 v - 0.0005 eps w - eps dL/dw;  w <- w + v
    i.e. the rate inside the momentum and L2 in the gradient: optimizer 'sgd_caffe', coupled
    decay on every weight (the equation names no exemption).
  * learning rate 0.01, equal for all layers, divided by 10 "when the validation error rate
    stopped improving with the current learning rate", three times before termination;
    "roughly 90 cycles" through the 1.2M training images.
  * input (§2): shorter side rescaled to 256, central 256x256 patch, the mean activity over the
    training set subtracted from each pixel (a per-pixel mean image).
  * augmentation (§4.1): random 224x224 patches (227 here, see below) and their horizontal
    reflections; PCA colour augmentation ("lighting"): add sum_i alpha_i lambda_i p_i to every
    RGB pixel, alpha_i ~ N(0, 0.1^2) once per image; dropout (§4.2).
  * evaluation: the softmax averaged over ten 224x224 patches (four corners + centre of the
    256x256 image, and their reflections).

Readings where the paper is ambiguous:
  * Input size 227 (papers.md §3, alexnet.py): an 11x11/4 conv gives the paper's 55x55 maps only
    from 227x227, as Caffe's reference model used; crops and the 10 patches are 227x227.
  * Mean image: `mean_image=PATH` subtracts the per-pixel mean image written by
      python -m cnn_history.data.stats --config=configs/alexnet.py --out=DIR
    (DIR/mean.npy, the mean 256x256x3 image of the training set after resize_small(256)|
    center_crop(256)); it is subtracted from the 256x256 image before cropping, so each crop
    gets the matching window of the mean. Without it (the default, so the config runs without a
    pass over the data) the fallback is per-channel mean subtraction with the ImageNet RGB mean
    (recipes.subtract_mean), which differs from the paper's mean only in its spatial structure.
  * PCA constants: `pca=PATH` reads eigenvalues/vectors from the pca.json that the same stats
    command writes; the default is the widely copied fb.resnet.torch ImageNet constants
    (augment.IMAGENET_PCA_EIGVAL/EIGVEC), which papers.md marks [R?]. The lighting shift is a
    constant per image, so it commutes with the mean subtraction and the crop.
  * The plateau rule: the paper lowered the rate by hand. Here: evaluate every epoch on the
    ILSVRC-2012 validation set, divide by 10 after the top-1 error has not improved by 0.1%
    (relative) for more than 3 evaluations (plateau_patience=3, our choice), at most 3 times.
  * Dropout: the paper scales outputs by 0.5 at test time; Flax's dropout is inverted. Same
    expected activations (alexnet.py explains the reparametrisation).
  * The paper does not say how the PCA alphas and crops interact with its data loader's
    epochs; here every image gets fresh draws each epoch.

Variants (`configs/alexnet.py:KEY=VALUE,...`), the paper's ablations through model switches:
  lrn=False               §3.3: no LRN (the paper: +1.4% top-1, +1.2% top-5 error)
  overlapping_pool=False  §3.4: 2x2/2 pools (+0.4% / +0.3%)
  towers=1                §3.2: one tower with half the kernels in conv1-conv4 (groups=1,
                          widths 48-128-192-192-256; conv5 and FC unchanged, the paper's
                          footnote): +1.7% / +1.2% against the two-tower net
  dropout=False           §4.2: no dropout ("substantial overfitting")
  lighting=False          §4.1: no PCA colour augmentation (+1% top-1)
  mean_image=PATH         the paper's per-pixel mean image (above)
  pca=PATH                eigen-decomposition from `cnn_history.data.stats` (above)

Run (ImageNet through TFDS, manual download):
  python -m cnn_history.main --config=configs/alexnet.py:mean_image=DIR/mean.npy \
      --workdir=/tmp/alexnet
Hardware: two GTX 580 3GB GPUs, "between five and six days" for ~90 epochs.
Target (paper, 10-patch average): ILSVRC-2010 test 37.5% top-1 / 17.0% top-5 error; on
ILSVRC-2012 validation (what this config evaluates), one CNN 40.7% / 18.2% (Table 2, papers.md
[P?]) -- compare eval_ten_crop_top1/top5.
"""

import json

from cnn_history import config as config_lib
from cnn_history import recipes

SIZE = 227          # crop size (see the docstring)
RESIZE = 256        # shorter side, then the central 256x256 patch


def lighting_op(pca_path: str) -> str:
  """AlexNet's PCA colour augmentation, with the eigen-decomposition of `pca_path` (pca.json
  from `python -m cnn_history.data.stats`) or the standard ImageNet constants."""
  if not pca_path:
    return 'lighting(0.1)'
  with open(pca_path) as f:
    pca = json.load(f)
  eigval = tuple(round(float(v), 6) for v in pca['eigval'])
  eigvec = tuple(tuple(round(float(v), 6) for v in row) for row in pca['eigvec'])
  return f'lighting(0.1, eigval={eigval}, eigvec={eigvec})'


def _check_bool(name: str, value) -> None:
  if not isinstance(value, bool):
    raise ValueError(f'alexnet: {name} must be True or False, got {value!r}.')


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'lrn': True, 'overlapping_pool': True, 'towers': 2,
                                    'dropout': True, 'lighting': True, 'mean_image': '',
                                    'pca': ''})
  for name in ('lrn', 'overlapping_pool', 'dropout', 'lighting'):
    _check_bool(name, args[name])
  if args['towers'] not in (1, 2):
    raise ValueError(f"alexnet: towers={args['towers']!r} is not valid; use 2 (the paper's "
                     'two-GPU net) or 1 (its one-tower control net, §3.2).')

  c = config_lib.default_config()
  recipes.imagenet(c)
  tower_switches = {} if args['towers'] == 2 else {'groups': 1,
                                                   'widths': (48, 128, 192, 192, 256)}
  config_lib.set_model(c, 'alexnet', lrn=args['lrn'], overlapping_pool=args['overlapping_pool'],
                       dropout_rate=0.5 if args['dropout'] else 0.0, initializer='paper',
                       **tower_switches)

  # ---- Data: the 256x256 image, mean subtraction, 227 crops, flips, PCA lighting ----------
  square = f'resize_small({RESIZE})|center_crop({RESIZE})'
  lighting = lighting_op(args['pca']) + '|' if args['lighting'] else ''
  if args['mean_image']:
    mean = f"subtract_mean_image({args['mean_image']!r})"
    c.data.train_preprocess = f'{square}|{lighting}{mean}|random_crop({SIZE})|flip_lr'
    c.data.eval_preprocess = f'{square}|{mean}|center_crop({SIZE})'
    c.data.eval_protocols.ten_crop = f'{square}|{mean}|ten_crop({SIZE})'
  else:  # fallback: the per-channel ImageNet mean
    mean = recipes.subtract_mean()
    c.data.train_preprocess = f'{square}|random_crop({SIZE})|flip_lr|{lighting}{mean}'
    c.data.eval_preprocess = f'{square}|center_crop({SIZE})|{mean}'
    c.data.eval_protocols.ten_crop = f'{square}|ten_crop({SIZE})|{mean}'
  c.eval_batch_size = 250          # x10 views in the ten-crop protocol

  # ---- Optimisation (§5) --------------------------------------------------------------------
  c.batch_size = 128
  c.num_epochs = 90
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'constant'
  c.schedule.learning_rate = 0.01
  c.schedule.plateau_factor = 0.1
  c.schedule.plateau_patience = 3
  c.schedule.plateau_max_reductions = 3
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
