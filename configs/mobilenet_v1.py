r"""MobileNet (v1) trained as Howard et al. ("MobileNets: Efficient Convolutional Neural Networks
for Mobile Vision Applications", arXiv 1704.04861, 2017) trained it.

Recipe (papers.md §18, all [P?]; the paper §3.4 "Training", §4.2, Tables 6-8):
  * network: Table 1 (model `mobilenet_v1`) at width multiplier alpha (Table 6: 1.0, 0.75,
    0.5, 0.25) and input resolution rho (Table 7: 224, 192, 160, 128); ReLU, BN after every
    layer.
  * TensorFlow, "RMSprop with asynchronous gradient descent similar to Inception V3".
  * less regularisation and augmentation than large models: no side heads, no label smoothing,
    fewer image distortions "by limiting the size of small crops that are used in large
    Inception training".
  * "very little or no weight decay (l2 regularization) on the depthwise filters".
  * the learning rate, its schedule, the batch and the length are not stated.

Readings, each where the paper is silent:
  * "Similar to Inception V3" is Inception V3's optimiser (papers.md §8 [P?]; the readings of
    configs/inception_v3.py): RMSProp in TensorFlow's form, decay 0.9, momentum 0.9, epsilon
    1.0, learning rate 0.045 x 0.94 every 2 epochs, gradient clipping at global norm 2.0,
    100 epochs, 50 replicas of batch 32 -> batch_size 1600 with BN statistics per replica
    (bn_batch_span=32), the rate kept as stated. The per-update averages of the asynchronous
    original keep their horizon in examples: BN decay 0.9997 (TF-slim's mobilenet_v1 arg
    scope) -> 0.9997^50; the weight average 0.9999 -> 0.9999^50 (Inception V3's Polyak
    averaging; eval_* and eval_ema_* both reported).
  * Weight decay 4e-5 (TF-slim's mobilenet_v1_arg_scope default), coupled L2 on kernels.
    TF-slim exempts the depthwise kernels (regularize_depthwise=False), as the paper asks;
    optim.py's weight_decay_on has no such mask yet, so here the depthwise kernels ARE decayed
    (a deviation, reported to the lead: a 'kernels_except_depthwise' mask would fix it).
  * Preprocessing: TF-slim's Inception preprocessing in its training mode (fast_mode):
    a crop of aspect 3/4-4/3 resized bilinearly, a flip, brightness +-32/255 and saturation
    x[0.5, 1.5] (brightness as a factor 1 +- 0.25, the reading of configs/inception_v3.py),
    pixels in [-1, 1]. "Limiting the size of small crops": the paper gives no bound; the
    smallest crop covers SMALLEST_CROP = 25% of the image (Inception: 10%).
  * Evaluation: shorter side round(rho / 0.875), centre rho crop (Inception's central 87.5%).
  * Dropout before the classifier: the model's 1e-3 (TF-slim keep_prob 0.999).

Variants (`configs/mobilenet_v1.py:width=0.75,resolution=192`):
  width=1.0|0.75|0.5|0.25           alpha (Table 6)
  resolution=224|192|160|128        rho (Table 7): the training and evaluation crop

Run:
  python -m cnn_history.main --config=configs/mobilenet_v1.py --workdir=/tmp/mobilenet_v1
Hardware: TensorFlow, asynchronous replicas (number and time not given).
Target (Table 8 / papers.md §18, ImageNet validation top-1, single crop): 1.0 MobileNet-224
70.6% [P✓]; 0.75: 68.4%, 0.5: 63.7%, 0.25: 50.6% [P✓]; 1.0 at 192 / 160 / 128: 69.1 / 67.2 /
64.4% [P?]. TARGET_TOP1 below holds them.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

WIDTHS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)
REPLICAS = 50          # Inception V3's replica count (papers.md §8)
PER_REPLICA_BATCH = 32
SMALLEST_CROP = 0.25   # our bound for "limiting the size of small crops" (Inception: 0.1)
TARGET_TOP1 = {(1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6,
               (1.0, 192): 69.1, (1.0, 160): 67.2, (1.0, 128): 64.4}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'width': 1.0, 'resolution': 224})
  width, size = args['width'], args['resolution']
  if width not in WIDTHS:
    raise ValueError(f'mobilenet_v1: width={width!r} is not a width multiplier of Table 6; '
                     f'use one of {", ".join(map(str, WIDTHS))}.')
  if size not in RESOLUTIONS:
    raise ValueError(f'mobilenet_v1: resolution={size!r} is not one of Table 7; use one of '
                     f'{", ".join(map(str, RESOLUTIONS))}.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'mobilenet_v1', width_multiplier=float(width), activation='relu',
                       dropout_rate=1e-3, bn_momentum=0.9997 ** REPLICAS, bn_epsilon=1e-3,
                       bn_batch_span=PER_REPLICA_BATCH)

  unit = recipes.to_unit_range()
  c.data.train_preprocess = recipes.slim_inception_train(size, SMALLEST_CROP,
                                                          post=unit)
  c.data.eval_preprocess = f'resize_small({round(size / 0.875)})|center_crop({size})|{unit}'

  c.batch_size = REPLICAS * PER_REPLICA_BATCH
  c.num_epochs = 100
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.decay = 0.9
  c.optimizer.momentum = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.grad_clip_norm = 2.0
  c.optimizer.weight_decay = 4e-5
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.045
  c.schedule.decay_factor = 0.94
  c.schedule.decay_every = 2.0
  c.schedule.staircase = True
  c.ema_decay = 0.9999 ** REPLICAS
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
