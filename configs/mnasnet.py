r"""MnasNet-A1 and -B1 trained as Tan, Chen, Pang, Vasudevan, Sandler, Howard & Le ("MnasNet:
Platform-Aware Neural Architecture Search for Mobile", CVPR 2019, arXiv 1807.11626) trained
them.

Recipe (papers.md §24; the paper §4 "Experimental Setup": optimiser, BN, warm-up and schedule
[P✓:web summary], weight decay and batch [P?]):
  * network: MnasNet-A1 (Figure 7(a), model `mnasnet_a1`) or -B1 (arXiv v1, model
    `mnasnet_b1`), 224x224 input, dropout 0.2 before the classifier.
  * RMSProp with decay 0.9 and momentum 0.9; batch norm after every convolution with momentum
    0.99; weight decay 1e-5.
  * learning rate increased linearly from 0 to 0.256 over the first 5 epochs (Goyal et al.),
    then decayed by 0.97 every 2.4 epochs; batch size 4K.
  * Inception preprocessing at 224x224.
  * evaluation: single crop.

Readings, where the paper is silent (the authors' TPU trainer, tensorflow/tpu
models/official/mnasnet, is the reference; papers.md §24 [V:README] for its batch 1024 on one
TPU; the rest recalled from that code, [R?]):
  * Batch 4096 and the rate 0.256 given for it, with the linear scaling rule so that other
    batches keep the rate per example (the TPU code: 0.016 x batch / 256, = 0.256 at 4096).
  * RMSProp in TensorFlow's form with epsilon 1e-3 (that code's value).
  * Length: 350 epochs (that code's default train_steps 437,898 at batch 1024).
  * Moving average of the weights, decay 0.9999 (that code's default); evaluated beside the
    raw weights (eval_ema_*), it changes no training step.
  * Weight decay: coupled L2 on conv and FC kernels (that code excludes BN variables only).
  * BN statistics: the paper does not say how the 4K batch was split; global-batch statistics
    here (bn_batch_span=None; set it, e.g. 128 per core as MobileNetV3's pod, to match a
    device split).
  * "Inception preprocessing" as that code does it: a crop covering >= 10% of the image
    (area 8-100% with min_object_covered 0.1, aspect 3/4-4/3), a flip, no colour distortion,
    the ImageNet mean/std normalisation (0-255 pixels, mean 255 x (0.485, 0.456, 0.406), std
    255 x (0.229, 0.224, 0.225)). Evaluation: the central 224 / (224 + 32) of the shorter
    side resized to 224 (bicubic) = shorter side 256, centre 224 crop.
  * Label smoothing: none (the paper lists none; that code has a label_smoothing flag).

Variants (`configs/mnasnet.py:variant=b1`):
  variant=a1|b1

Run:
  python -m cnn_history.main --config=configs/mnasnet.py:variant=a1 --workdir=/tmp/mnasnet_a1
Hardware: TPUs (the training hardware and time are not in papers.md).
Target (ImageNet validation, single crop, papers.md §24): A1 75.2% top-1 / 92.5% top-5
[P✓:README]; B1 74.0% top-1 [P✓:Megvii README, 26.0% error].
"""

from cnn_history import config as config_lib
from cnn_history import recipes

VARIANTS = {'a1': 'mnasnet_a1', 'b1': 'mnasnet_b1'}
SIZE = 224
CROP_PADDING = 32  # the TPU code's evaluation crop: SIZE / (SIZE + 32) of the shorter side
TARGET_TOP1 = {'a1': 75.2, 'b1': 74.0}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'variant': 'a1'})
  if args['variant'] not in VARIANTS:
    raise ValueError(f"mnasnet: variant={args['variant']!r} is not one of "
                     f"{', '.join(VARIANTS)}.")

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, VARIANTS[args['variant']], dropout_rate=0.2, padding='same',
                       bn_momentum=0.99, bn_epsilon=1e-3)

  norm = recipes.normalize()
  c.data.train_preprocess = (f'inception_crop({SIZE}, area_min=0.1, area_max=1.0, '
                             f'aspect_min=0.75, aspect_max=1.33, method="bicubic")|flip_lr|'
                             f'{norm}')
  c.data.eval_preprocess = (f'resize_small({SIZE + CROP_PADDING}, method="bicubic")|'
                            f'center_crop({SIZE})|{norm}')

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
  return c
