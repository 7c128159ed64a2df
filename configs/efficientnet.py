r"""EfficientNet-B0 ... B7 trained as Tan & Le ("EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019, arXiv 1905.11946) trained them.

Recipe (papers.md §25, [P?]; the paper §5.2 "ImageNet Results for EfficientNet", Table 2):
  * network: EfficientNet-B0 (Table 1) and its compound-scaled B1-B7 (models
    `efficientnet_b0` ... `_b7`) at their resolutions 224, 240, 260, 300, 380, 456, 528, 600.
  * "similar settings as (Tan et al., 2019)" (MnasNet): RMSProp with decay 0.9 and momentum
    0.9; batch norm momentum 0.99; weight decay 1e-5; initial learning rate 0.256 that decays
    by 0.97 every 2.4 epochs.
  * SiLU (Swish-1), AutoAugment, stochastic depth with survival probability 0.8; dropout
    increasing linearly from 0.2 (B0) to 0.5 (B7): 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5.
  * 25K training images held out as "minival" for early stopping; the early-stopped checkpoint
    is evaluated on the validation set.
  * evaluation: single crop at each model's resolution (Table 2).
From MnasNet's recipe (papers.md §24, configs/mnasnet.py) and the EfficientNetV2 paper's
restatement (papers.md §25 [web]): batch 4096, a linear warm-up to 0.256, a moving average of
the weights with decay 0.9999.

Readings, where the paper is silent (the authors' TPU trainer, tensorflow/tpu
models/official/efficientnet, papers.md §25 [R?] and recalled):
  * The rate 0.256 at batch 4096 with the linear scaling rule (the TPU code: 0.016 x batch /
    256), so that other batches keep the rate per example; warm-up 5 epochs (MnasNet's; the
    TPU code's default).
  * RMSProp in TensorFlow's form ('rmsprop_tf': the rate inside the momentum, the mean square
    starting at 1) with epsilon 1e-3.
  * Length: 350 epochs (the TPU code's default train_steps 218,949 at batch 2048; the
    EfficientNetV2 paper's 350). No early stopping: the trainer trains to the end and
    evaluates the validation split every epoch; hold out a minival with
    --config.data.train_split='train[25000:]' if the data source supports TFDS slicing.
  * The moving average is evaluated beside the raw weights (eval_ema_* is the paper's number).
  * Weight decay: coupled L2 on conv and FC kernels (the TPU code decays every non-BN
    variable, so also the SE and classifier biases; ours spares all 1-D parameters).
  * BatchNorm statistics: the paper does not say how the batch was split over TPU cores (the
    TPU code averages statistics over groups of cores); global-batch statistics here
    (bn_batch_span=None).
  * Label smoothing: none (the paper lists none; the TPU code's default is 0.1 [R?]:
    --config.loss.label_smoothing=0.1 adds it).
  * Augmentation as the TPU code: a crop covering >= 10% of the image (area 8-100% with
    min_object_covered 0.1, aspect 3/4-4/3) resized to the model's resolution, a flip, then
    AutoAugment's ImageNet policy (the 'autoaugment' op: tensorflow/tpu policy_v0), then
    normalisation. The TPU code resizes bicubically and rounds to uint8 before AutoAugment; we
    resize bilinearly, which keeps pixels inside [0, 255] as AutoAugment's histogram ops need.
  * Input normalisation: the ImageNet mean/std on 0-255 pixels (mean 255 x (0.485, 0.456,
    0.406), std 255 x (0.229, 0.224, 0.225)), as the TPU code and Keras's EfficientNet.
  * Evaluation: the TPU code's crop-and-resize -- the central r / (r + 32) of the shorter side
    resized (bicubic) to r -- which is the same window as shorter side r + 32, centre r crop.

Variants (`configs/efficientnet.py:variant=b3`, or just `:b3`):
  variant=b0|b1|b2|b3|b4|b5|b6|b7

Run:
  python -m cnn_history.main --config=configs/efficientnet.py:variant=b0 --workdir=/tmp/effnet_b0
Hardware: TPUs (type and time not given in the paper).
Target (Table 2, ImageNet validation, single crop, top-1 / top-5, papers.md §25): B0 77.1/93.3,
B1 79.1/94.4, B2 80.1/94.9, B3 81.6/95.7, B4 82.9/96.4 [P✓ top-1], B5 83.6/96.7, B6 84.0/96.8
[P?], B7 84.3/97.0 [P✓ top-1] (TARGET_TOP1).
"""

from cnn_history import config as config_lib
from cnn_history import recipes
from cnn_history.models import efficientnet

VARIANTS = tuple(f'b{i}' for i in range(8))
CROP_PADDING = 32  # the TPU code's evaluation crop: r / (r + 32) of the shorter side
TARGET_TOP1 = {'b0': 77.1, 'b1': 79.1, 'b2': 80.1, 'b3': 81.6, 'b4': 82.9, 'b5': 83.6,
               'b6': 84.0, 'b7': 84.3}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'variant': 'b0'})
  variant = args['variant']
  if variant not in VARIANTS:
    raise ValueError(f"efficientnet: variant={variant!r} is not one of {', '.join(VARIANTS)}.")
  name = f'efficientnet_{variant}'
  v = efficientnet.VARIANTS[name]   # width, depth, resolution, dropout of the released model
  size = v.resolution

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, name, dropout_rate=v.dropout, stochastic_depth_rate=0.2,
                       activation='swish', padding='same', bn_momentum=0.99, bn_epsilon=1e-3)

  norm = recipes.normalize()
  c.data.train_preprocess = (f'inception_crop({size}, area_min=0.1, area_max=1.0, '
                             'aspect_min=0.75, aspect_max=1.33)|flip_lr|'
                             f'autoaugment("imagenet")|{norm}')
  c.data.eval_preprocess = (f'resize_small({size + CROP_PADDING}, method="bicubic")|'
                            f'center_crop({size})|{norm}')

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
  c.schedule.learning_rate = 0.256
  c.schedule.reference_batch_size = 4096
  c.schedule.decay_factor = 0.97
  c.schedule.decay_every = 2.4
  c.schedule.staircase = True
  c.schedule.warmup = 5.0
  c.ema_decay = 0.9999
  c.eval_every_epochs = 1.0
  c.log_every_steps = 100
  if size >= 456:                  # B5-B7: large images
    c.eval_batch_size = 250
  return c
