r"""MobileNetV2 trained as Sandler, Howard, Zhu, Zhmoginov & Chen ("MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018, arXiv 1801.04381) trained it.

Recipe (papers.md §19; the paper §6.1 "ImageNet Classification: Training setup", Table 4 and
Fig. 5; the recipe text is [P?], partly matching TF-slim's published flags [V:README]):
  * network: Table 2 (model `mobilenet_v2`) at width multiplier alpha and input resolution
    (the 0.35-1.4 x 96-224 sweep of Fig. 5); BN after every layer, ReLU6.
  * TensorFlow, RMSPropOptimizer with decay and momentum both 0.9; standard weight decay 4e-5.
  * initial learning rate 0.045, learning-rate decay rate 0.98 per epoch.
  * 16 GPU asynchronous workers, batch size 96.
  * evaluation: single crop (Table 4).

Readings, where the paper is silent or ambiguous:
  * "16 workers, batch size 96" -> 96 per worker (TF-slim's --batch_size is per clone):
    batch_size = 16 x 96 = 1536, BN statistics per worker (bn_batch_span=96), the rate 0.045
    kept as stated (the readings of configs/inception_v3.py for asynchronous replicas). The
    per-update averages keep their horizon in examples: BN decay 0.997 (TF-slim's
    mobilenet_v2 training_scope) -> 0.997^16, the weight average 0.9999 -> 0.9999^16.
  * Length: not stated; 300 epochs (torchvision's reproduction of this schedule, papers.md
    §19 [V:README(tv)]), where 0.98 per epoch has brought the rate down to 1e-4.
  * RMSProp epsilon: not stated; TF-slim train_image_classifier's default 1.0 (the Inception
    trainers' value), TensorFlow's form ('rmsprop_tf').
  * Weight decay: coupled L2 on all kernels (depthwise included; the paper says "standard").
  * TF-slim's flags also use a moving average of the weights (0.9999) and label smoothing 0.1
    (papers.md §19 [V:README]). The average is kept (evaluated beside the raw weights as
    eval_ema_*, it changes no training step); label smoothing is not (the paper lists its
    settings without it): --config.loss.label_smoothing=0.1 adds it.
  * Preprocessing: TF-slim's Inception preprocessing in training mode (fast_mode), which
    TF-slim maps mobilenet_v2 to: a crop covering >= 10% of the image (aspect 3/4-4/3) resized
    bilinearly, a flip, brightness +-32/255 (a factor 1 +- 0.25 here) and saturation
    x[0.5, 1.5], pixels in [-1, 1]. Evaluation: shorter side round(r / 0.875), centre r crop.
  * Dropout before the classifier: the model's 0.2 (TF-slim keep_prob 0.8; not in the paper).

Variants (`configs/mobilenet_v2.py:width=1.4,resolution=224`):
  width=0.35|0.5|0.75|1.0|1.3|1.4     alpha
  resolution=96|128|160|192|224       input size

Run:
  python -m cnn_history.main --config=configs/mobilenet_v2.py --workdir=/tmp/mobilenet_v2
Hardware: 16 asynchronous GPU workers, TensorFlow (time not given).
Target (Table 4, ImageNet validation top-1, single crop, papers.md §19 [P✓:README]): 1.0:
72.0% (3.4M parameters, 300M multiply-adds); 1.4: 74.7%.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
RESOLUTIONS = (96, 128, 160, 192, 224)
WORKERS = 16
PER_WORKER_BATCH = 96
TARGET_TOP1 = {(1.0, 224): 72.0, (1.4, 224): 74.7}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'width': 1.0, 'resolution': 224})
  width, size = args['width'], args['resolution']
  if width not in WIDTHS:
    raise ValueError(f'mobilenet_v2: width={width!r} is not one of the paper\'s multipliers '
                     f'{", ".join(map(str, WIDTHS))}.')
  if size not in RESOLUTIONS:
    raise ValueError(f'mobilenet_v2: resolution={size!r} is not one of the paper\'s '
                     f'{", ".join(map(str, RESOLUTIONS))}.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'mobilenet_v2', width_multiplier=float(width), dropout_rate=0.2,
                       bn_momentum=0.997 ** WORKERS, bn_epsilon=1e-3,
                       bn_batch_span=PER_WORKER_BATCH)

  unit = recipes.to_unit_range()
  c.data.train_preprocess = recipes.slim_inception_train(size, post=unit)
  c.data.eval_preprocess = f'resize_small({round(size / 0.875)})|center_crop({size})|{unit}'

  c.batch_size = WORKERS * PER_WORKER_BATCH
  c.num_epochs = 300
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.decay = 0.9
  c.optimizer.momentum = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.weight_decay = 4e-5
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.045
  c.schedule.decay_factor = 0.98
  c.schedule.decay_every = 1.0
  c.schedule.staircase = True
  c.ema_decay = 0.9999 ** WORKERS
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
