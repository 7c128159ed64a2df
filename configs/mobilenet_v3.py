r"""MobileNetV3-Large and -Small trained as Howard et al. ("Searching for MobileNetV3", ICCV 2019,
arXiv 1905.02244) trained them.

Recipe (papers.md §20, all [P?]; the paper §6.1.1 "Training setup", Table 3):
  * network: Table 1 (Large) or Table 2 (Small) (models `mobilenet_v3_large`,
    `mobilenet_v3_small`) at width multiplier 1.0 or 0.75 (Table 3); 224x224 input.
  * synchronous training on a 4x4 TPU Pod, standard TensorFlow RMSPropOptimizer with momentum
    0.9; initial learning rate 0.1, batch size 4096 (128 images per chip), "learning rate decay
    rate of 0.01 every 3 epochs".
  * dropout 0.8 (a keep probability: rate 0.2), L2 weight decay 1e-5, the same image
    preprocessing as Inception, an exponential moving average with decay 0.9999.
  * every convolution has batch normalisation with average decay 0.99.
  * evaluation: single crop (Table 3).

Readings, where the paper is silent or ambiguous:
  * "Decay rate of 0.01 every 3 epochs" -> the rate is multiplied by 1 - 0.01 = 0.99 every 3
    epochs (staircase); x0.01 every 3 epochs would end training within a few epochs.
  * Length: not stated; 350 epochs, the length of the same group's TPU trainer for MnasNet and
    EfficientNet (tensorflow/tpu mnasnet/efficientnet: 350 epochs at their default batch),
    whose RMSProp this recipe shares. At 0.99 per 3 epochs the rate ends at 0.1 x 0.99^116.
  * RMSProp: TensorFlow's form ('rmsprop_tf'), decay 0.9 (the optimizer's default); epsilon
    1e-3, that TPU trainer's value (TensorFlow's own default 1e-10 would be "standard" too).
    No warm-up (none is mentioned).
  * BN statistics per TPU core: "128 images per chip" (4096 / 128 = 32 cores, a 4x4 slice of
    two-core chips) -> bn_batch_span=128.
  * Weight decay: coupled L2 on all kernels (TensorFlow's regularisers on conv and FC weights).
  * "Inception preprocessing": TF-slim's in training mode (fast_mode), in which the MobileNet
    checkpoints were released: a crop covering >= 10% of the image (aspect 3/4-4/3) resized
    bilinearly, a flip, brightness +-32/255 (a factor 1 +- 0.25) and saturation x[0.5, 1.5],
    pixels in [-1, 1] (also Keras's MobileNetV3 preprocessing). Evaluation: shorter side 256,
    centre 224 crop (Inception's central 87.5%).
  * The EMA is evaluated beside the raw weights (eval_ema_* is the paper's number).

Variants (`configs/mobilenet_v3.py:size=small,width=0.75`):
  size=large|small      Table 1 / Table 2
  width=1.0|0.75        Table 3's multipliers

Run:
  python -m cnn_history.main --config=configs/mobilenet_v3.py:size=large --workdir=/tmp/mnv3_l
Hardware: a 4x4 TPU Pod, TensorFlow, synchronous (time not given).
Target (Table 3, ImageNet validation top-1, single crop, papers.md §20 [P?]): Large 1.0 75.2%,
Large 0.75 73.3%, Small 1.0 67.4%, Small 0.75 65.4% (TARGET_TOP1; the released Small
checkpoint: 67.5% [V:README]).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

SIZES = ('large', 'small')
WIDTHS = (1.0, 0.75)
PER_CORE_BATCH = 128
TARGET_TOP1 = {('large', 1.0): 75.2, ('large', 0.75): 73.3, ('small', 1.0): 67.4,
               ('small', 0.75): 65.4}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'size': 'large', 'width': 1.0})
  size, width = args['size'], args['width']
  if size not in SIZES:
    raise ValueError(f"mobilenet_v3: size={size!r} is not one of {', '.join(SIZES)}.")
  if width not in WIDTHS:
    raise ValueError(f'mobilenet_v3: width={width!r} is not one of Table 3\'s multipliers '
                     f'{", ".join(map(str, WIDTHS))}.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, f'mobilenet_v3_{size}', width_multiplier=float(width),
                       dropout_rate=0.2, bn_momentum=0.99, bn_epsilon=1e-3,
                       bn_batch_span=PER_CORE_BATCH)

  unit = recipes.to_unit_range()
  c.data.train_preprocess = recipes.slim_inception_train(224, post=unit)
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{unit}'

  c.batch_size = 4096
  c.num_epochs = 350
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.decay = 0.9
  c.optimizer.momentum = 0.9
  c.optimizer.eps = 1e-3
  c.optimizer.weight_decay = 1e-5
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.1
  c.schedule.decay_factor = 0.99
  c.schedule.decay_every = 3.0
  c.schedule.staircase = True
  c.ema_decay = 0.9999
  c.eval_every_epochs = 1.0
  c.log_every_steps = 100
  return c
