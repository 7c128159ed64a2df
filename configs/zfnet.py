r"""ZFNet trained as Zeiler & Fergus ("Visualizing and Understanding Convolutional Networks",
ECCV 2014, arXiv 1311.2901) trained it.

Recipe (papers.md §4, every number [P?]; the paper §3, "Training Details"):
  * network: Fig. 3 (model `zfnet`): AlexNet on one GPU with conv1 7x7/2 and conv2 stride 2,
    dense layers 3-5, 224x224 input, 96-256-384-384-256 maps, FC 4096-4096-1000, contrast
    normalisation across maps after layers 1 and 2, dropout 0.5 on FC6/FC7.
  * data: ImageNet 2012 training set (1.3M images); shorter side resized to 256, the central
    256x256 region cropped, the per-pixel mean (over all images) subtracted; ten 224x224
    sub-crops (corners + centre, with horizontal flips) drawn in training.
  * SGD, mini-batch 128, learning rate 1e-2, momentum 0.9; the rate annealed by hand when the
    validation error plateaued; 70 epochs.
  * init: weights 1e-2 (read as N(0, 0.01^2), as AlexNet), biases 0.
  * any conv filter whose RMS exceeds 0.1 is renormalised back to 0.1 after each update.
  * evaluation: as AlexNet (10 patches: corners + centre and their flips).

Readings where the paper is ambiguous or the codebase cannot follow it:
  * Weight decay: the paper names none. Zeiler & Fergus first replicated Krizhevsky et al.'s
    result with their own setup (to within 0.1%, recalled), so AlexNet's 0.0005 (coupled, every
    weight) and its update form ('sgd_caffe', the rate inside the momentum) are used.
  * Training crops: "ten different sub-crops" reads as AlexNet's random 224x224 windows of the
    256x256 image plus flips (random_crop + flip_lr); drawing only the ten fixed windows would
    need a 'random one of ten crops' op.
  * Annealing: the plateau rule as in configs/alexnet.py (patience 3 evaluations, x0.1); the
    paper gives no count, so at most 3 reductions (AlexNet's).
  * The filter-RMS renormalisation is optimizer.max_filter_rms = 0.1: after each update, every
    conv filter (one output channel over h, w, inputs) whose RMS exceeds 0.1 is scaled back to it.
  * Mean image: `mean_image=PATH` as in configs/alexnet.py (written by
    `python -m cnn_history.data.stats --config=configs/zfnet.py --out=DIR`); default fallback
    per-channel ImageNet mean subtraction. No PCA lighting: the paper lists none.

Variants (`configs/zfnet.py:KEY=VALUE`):
  mean_image=PATH   the per-pixel mean image (DIR/mean.npy)
  lrn=False         no contrast normalisation after layers 1-2

Run:
  python -m cnn_history.main --config=configs/zfnet.py:mean_image=DIR/mean.npy \
      --workdir=/tmp/zfnet
Hardware: one GTX 580, 12 days for 70 epochs.
Target (paper Table 2, ILSVRC-2012 validation, one net, papers.md §4 [P?]): 38.4% top-1 /
16.5% top-5 error (the AlexNet-style 10-patch protocol: eval_ten_crop_*).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

SIZE = 224
RESIZE = 256


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'mean_image': '', 'lrn': True})
  if not isinstance(args['lrn'], bool):
    raise ValueError(f"zfnet: lrn must be True or False, got {args['lrn']!r}.")

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'zfnet', lrn=args['lrn'], dropout_rate=0.5, initializer='paper')

  square = f'resize_small({RESIZE})|center_crop({RESIZE})'
  if args['mean_image']:
    mean = f"subtract_mean_image({args['mean_image']!r})"
    c.data.train_preprocess = f'{square}|{mean}|random_crop({SIZE})|flip_lr'
    c.data.eval_preprocess = f'{square}|{mean}|center_crop({SIZE})'
    c.data.eval_protocols.ten_crop = f'{square}|{mean}|ten_crop({SIZE})'
  else:
    mean = recipes.subtract_mean()
    c.data.train_preprocess = f'{square}|random_crop({SIZE})|flip_lr|{mean}'
    c.data.eval_preprocess = f'{square}|center_crop({SIZE})|{mean}'
    c.data.eval_protocols.ten_crop = f'{square}|ten_crop({SIZE})|{mean}'
  c.eval_batch_size = 250          # x10 views in the ten-crop protocol

  c.batch_size = 128
  c.num_epochs = 70
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.optimizer.max_filter_rms = 0.1
  c.schedule.name = 'constant'
  c.schedule.learning_rate = 0.01
  c.schedule.plateau_factor = 0.1
  c.schedule.plateau_patience = 3
  c.schedule.plateau_max_reductions = 3
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
