r"""BN-Inception and the other networks of Table 2 of Ioffe & Szegedy ("Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift", ICML 2015, arXiv
1502.03167), trained as the paper describes.

Recipe (papers.md §7; the paper §4.2, §4.2.1 "Accelerating BN networks", §4.2.2, Table 2):
  * network: the Inception variant of Fig. 5 (model `bn_inception`): 5x5 convs replaced by two
    3x3, 28x28 modules 3a-3c, stride-2 modules 3c and 4e, a depthwise-separable stem; BN before
    every nonlinearity.
  * "Inception" baseline: SGD with momentum, mini-batch 32 (DistBelief), initial learning rate
    0.0015; BN-Baseline: the same with BN before each nonlinearity.
  * the accelerated BN networks change (§4.2.1): higher learning rate -- BN-x5 0.0075,
    BN-x30 0.045; dropout removed; L2 weight regularisation reduced by a factor of 5; learning
    rate decay accelerated 6 times ("we trained our network 6 times faster than Inception, so
    we lowered the learning rate 6 times faster"); LRN removed; training examples shuffled
    more thoroughly (within shards); photometric distortions reduced. BN-x5-Sigmoid: BN-x5
    with sigmoid nonlinearities.
  * BN statistics over each mini-batch of 32 (one replica); inference with population
    statistics.
  * evaluation: single crop (Table 2: the maximum validation accuracy and the steps to reach
    Inception's 72.2%).

The paper inherits the rest from GoogLeNet without restating it; readings:
  * Inception's schedule: GoogLeNet's 4% decrease every 8 epochs (configs/googlenet.py);
    accelerated: 4% every 8/6 epochs. Its weight decay: GoogLeNet's replication value 0.0002
    (BVLC, verified in configs/googlenet.py) on the weights only; accelerated: 0.00004, which is
    also the value TF-slim's Inception models use (inception_utils.inception_arg_scope
    weight_decay=0.00004).
  * Training length, in the paper's unit (steps of 32): Inception and BN-Baseline 31.0M steps
    (Table 2: Inception reached its maximum, 72.2%, after 31.0M); the accelerated nets 31.0M / 6
    = 5.17M (their schedule runs 6 times faster; BN-x5 passed 72.2% at 2.1M, BN-x30 at 2.7M).
  * Augmentation: GoogLeNet's 8%-100% crops, flips, Howard's distortions (color_jitter 0.5 +
    lighting 0.1, as configs/googlenet.py); "reduced" for the accelerated nets: every
    magnitude halved (color_jitter 0.25, lighting 0.05), our choice. Input standardised with the
    ImageNet mean/std (the network's He init expects unit variance; the paper is silent).
  * Shuffling: this pipeline always shuffles files and a 16K-example buffer, so the baseline's
    weaker shuffling is not reproduced.
  * Dropout in Inception and BN-Baseline: GoogLeNet's 40% (the model's switch doc).
  * Optimizer form 'momentum' (rate outside the momentum); synchronous data parallelism with
    BN statistics over groups of 32 (bn_batch_span=32) whatever the device count; the BN
    running averages use momentum 0.9 per step and epsilon 1e-3 (not in the paper).
  * Polyak averaging is not mentioned in the BN paper: off.

Variants (`configs/bn_inception.py:variant=NAME`), one per row of Table 2:
  inception      no BN, LRN, dropout 0.4, lr 0.0015, wd 2e-4, 4% every 8 epochs, 31.0M steps
  bn_baseline    the same with BN
  bn_x5          BN + the accelerations, lr 0.0075 (the default)
  bn_x30         BN + the accelerations, lr 0.045
  bn_x5_sigmoid  bn_x5 with sigmoid nonlinearities

Run:
  python -m cnn_history.main --config=configs/bn_inception.py:variant=bn_x30 \
      --workdir=/tmp/bn_x30
Hardware: DistBelief, many asynchronous replicas (the paper gives no count or time).
Target (Table 2, ILSVRC-2012 validation, single crop, max top-1 accuracy; papers.md: 74.8% for
BN-x30 [P✓], the others [P?]): Inception 72.2%; BN-Baseline 72.7%; BN-x5 73.0%; BN-x30 74.8%;
BN-x5-Sigmoid 69.8%.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

BASE_STEPS = 31_000_000      # Table 2: Inception's steps to its maximum accuracy
BASE_WEIGHT_DECAY = 2e-4     # GoogLeNet's (BVLC replication)
BASE_DECAY_EVERY = 8.0       # epochs per 4% decrease (GoogLeNet)
ACCELERATION = 6             # §4.2.1: learning-rate decay 6x faster
L2_REDUCTION = 5             # §4.2.1: L2 weight regularisation / 5
IMAGENET_TRAIN = 1_281_167   # training images (for the epochs equivalent of the steps)

VARIANTS = {  # name: (use_bn, accelerated, initial learning rate, activation)
    'inception': (False, False, 0.0015, 'relu'),
    'bn_baseline': (True, False, 0.0015, 'relu'),
    'bn_x5': (True, True, 0.0075, 'relu'),
    'bn_x30': (True, True, 0.045, 'relu'),
    'bn_x5_sigmoid': (True, True, 0.0075, 'sigmoid'),
}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'variant': 'bn_x5'})
  if args['variant'] not in VARIANTS:
    raise ValueError(f"bn_inception: unknown variant {args['variant']!r}; choose one of "
                     f'{", ".join(VARIANTS)} (Table 2).')
  use_bn, accelerated, learning_rate, activation = VARIANTS[args['variant']]

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'bn_inception', use_bn=use_bn, activation=activation,
                       lrn=not accelerated, dropout_rate=0.0 if accelerated else 0.4,
                       bn_batch_span=32)

  norm = recipes.normalize()
  jitter, lighting = (0.25, 0.05) if accelerated else (0.5, 0.1)
  c.data.train_preprocess = (f'inception_crop(224, area_min=0.08, area_max=1.0)|flip_lr|'
                             f'color_jitter({jitter}, {jitter}, {jitter})|lighting({lighting})|'
                             f'{norm}')
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{norm}'

  c.batch_size = 32
  c.num_steps = BASE_STEPS // ACCELERATION if accelerated else BASE_STEPS
  c.num_epochs = round(c.num_steps * c.batch_size / IMAGENET_TRAIN)  # readers only: steps govern
  c.optimizer.name = 'momentum'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = BASE_WEIGHT_DECAY / (L2_REDUCTION if accelerated else 1)
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = learning_rate
  c.schedule.decay_factor = 0.96
  c.schedule.decay_every = BASE_DECAY_EVERY / (ACCELERATION if accelerated else 1)
  c.schedule.staircase = True
  c.eval_every_epochs = 1.0
  c.log_every_steps = 500
  return c
