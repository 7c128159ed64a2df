r"""The CNN-history benchmark: every family in a small-input form, trained on Fashion-MNIST with
ONE shared budget and recipe, on a CPU.

Not a paper recipe: a controlled comparison. Each family is its registry network with the
fewest changes that make it fit 32x32 grey images and a few CPU minutes (`FAMILIES` below: the
registry name, the model switches, and a note of what differs from the paper's ImageNet form).
Everything else is shared:

  * data: Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey) from Debian's
    dataset-fashion-mnist IDX files; every image scaled to [0, 1], zero-padded to 32x32
    (LeNet-5's input convention, and what the CIFAR-style stems expect), normalised with the
    training set's mean/std (0.2860, 0.3530); training adds a random 32x32 crop of the image
    padded by 2 more pixels and a horizontal flip.
  * optimiser: SGD with Nesterov momentum 0.9, weight decay 5e-4 (L2 in the gradient, every
    parameter), batch 64, softmax cross-entropy without label smoothing.
  * schedule: base rate 0.05, linear warm-up over the first 5% of the steps, cosine decay to 0.
  * budget: STEPS steps of 64 images (the same images, in the same order, for every family),
    test accuracy on all 10,000 test images at the end. The budget is small (100 steps = 6,400
    images, 0.11 epoch) because the benchmark has to fit about an hour of a 2-core machine
    shared with other jobs, with each network's compilation and a 10,000-image evaluation on
    top: the table ranks how far each architecture gets on an equal, short budget, not how
    far it gets when trained to convergence.
  * BatchNorm: momentum 0.9 for every network that has BN (the papers' 0.99-0.9997 average over
    hundreds of thousands of steps; over a few hundred the running statistics would still be
    near their initial values). Dropout and stochastic depth stay at each paper's rate.

Families (`configs/fashion_mnist_history.py:family=NAME`): the keys of FAMILIES.
Variant arguments: family=NAME (default lenet5, the first row), steps=N (the shared budget).

Run one family, or all of them and the table (results/fashion_mnist/README.md):
  python -m cnn_history.main --config=configs/fashion_mnist_history.py:family=resnet \
      --workdir=workdirs/fmnist/resnet --config.progress_bar=False
  scripts/fashion_mnist_history.sh [FAMILY ...]
Hardware: a 2-core CPU shared with other jobs. Results: results/fashion_mnist/README.md.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cnn_history import config as config_lib
from cnn_history.data import sources


class Family(NamedTuple):
  """One row of the benchmark: a registry model, its switches, and what they change."""
  model: str                    # registry name (cnn_history.models.list_models())
  overrides: dict[str, Any]     # the model's own switches (create_model(model, **overrides))
  note: str                     # what differs from the paper's ImageNet form
  year: int = 0                 # the family's paper year (0: the registry model's)


# The table: one small-input network per family, in historical order.
FAMILIES: dict[str, Family] = {
    'lenet5': Family(
        'lenet5', dict(head='dense'),
        "the 1998 network (scaled tanh, trainable subsampling, Table I's C3) with a dense "
        'softmax layer in place of the RBF output (the shared loss is cross-entropy)'),
    'alexnet': Family(
        'alexnet', dict(stem='cifar', widths=(24, 64, 96, 96, 64), fc_widths=(256, 256),
                        initializer='he'),
        'conv1 5x5/1 (was 11x11/4); 1/4 of the maps (24-64-96-96-64); FC 256-256 (was '
        "4096); He init (the paper's N(0, 0.01^2) suits its widths); LRN, two towers, "
        'overlapping pools and dropout kept'),
    'vgg': Family(
        'vgg11', dict(width_multiplier=0.25, fc_widths=(256, 256), fc6_window=1,
                      initializer='he'),
        'VGG-11 (config A) with 1/4 of the maps (16-32-64-128); FC6 reads the 1x1 map the five '
        'pools leave of 32x32; FC 256-256 (was 4096); He init; no BN (as the paper)'),
    'googlenet': Family(
        'googlenet', dict(stem='cifar', width_multiplier=0.25, aux_logits=False),
        'conv1 3x3/1 and no stem max-pool (stages 3/4/5 at 16/8/4); 1/4 of the filters; no '
        'auxiliary classifiers; LRN and dropout 0.4 kept'),
    'bn_inception': Family(
        'bn_inception', dict(stem='cifar', width_multiplier=0.25),
        'conv1 a plain 3x3/1 conv (was separable 7x7/2), no stem max-pool; 1/4 of the filters'),
    'resnet': Family(
        'resnet20', {},
        "the paper's own CIFAR ResNet-20 (Sec. 4.2: 16/32/64 filters, option-A shortcuts), "
        'unchanged'),
    'preact_resnet': Family(
        'resnet20', dict(preactivation=True),
        'ResNet-20 with the full pre-activation unit of Identity Mappings (the paper trains '
        'pre-act ResNet-110/164 on CIFAR): same size as the ResNet row', 2016),
    'resnext': Family(
        'resnext50_32x4d', dict(depth=11, layout='cifar', block='bottleneck', cardinality=4,
                                base_width=16),
        "ResNeXt-11 on the paper's CIFAR template (3x3 stem, 3 stages), one bottleneck per stage "
        '(paper: ResNeXt-29, 3), cardinality 4 with 4/8/16-wide groups (paper: 8x64d / 16x64d), '
        '64/128/256 outputs (paper: 256/512/1024): grouped convs run ~10x slower per MAC than '
        'dense ones on XLA:CPU'),
    'senet': Family(
        'resnet20', dict(se_reduction=4),
        'SE-ResNet-20: an SE block in every ResNet-20 unit, r=4 (paper r=16, which would leave '
        '1 unit for the 16-channel stage)', 2017),
    'densenet': Family(
        'densenet_bc_100_12', dict(block_sizes=(3, 3, 3)),
        "DenseNet-BC-22 (k=12) on the paper's CIFAR template (3x3 stem, 3 dense blocks): 3 "
        'bottleneck layers per block (BC-100: 16)'),
    'xception': Family(
        'xception', dict(stem='cifar', width_multiplier=0.25, middle_repeats=2),
        "stem convs 3x3/1 'SAME' (was 3x3/2 VALID); 1/4 of the filters; 2 middle-flow modules "
        '(was 8); dropout 0.5 kept'),
    'mobilenet_v1': Family(
        'mobilenet_v1', dict(stem='cifar', width_multiplier=0.5),
        'stem conv stride 1 (was 2): 32 -> 2x2 at the last layers; width multiplier 0.5'),
    'mobilenet_v2': Family(
        'mobilenet_v2', dict(stem='cifar', width_multiplier=0.5),
        'stem conv stride 1 (was 2); width multiplier 0.5 (the 1280-wide last conv kept)'),
    'mobilenet_v3': Family(
        'mobilenet_v3_large', dict(stem='cifar', width_multiplier=0.5),
        'MobileNetV3-Large, stem conv stride 1 (was 2); width multiplier 0.5'),
    'shufflenet_v1': Family(
        'shufflenet_v1_g3', dict(stem='cifar', scale_factor=0.5),
        'g=3; conv1 3x3/1 and no max-pool (was 3x3/2 + pool: stage 2 starts at 32x32); '
        'scale factor 0.5x'),
    'shufflenet_v2': Family(
        'shufflenet_v2_x0_5', dict(stem='cifar'),
        '0.5x; conv1 3x3/1 and no max-pool (was 3x3/2 + pool)'),
    'mnasnet': Family(
        'mnasnet_a1', dict(stem='cifar', depth_multiplier=0.5),
        'MnasNet-A1, stem conv stride 1 (was 2); depth multiplier 0.5'),
    'efficientnet': Family(
        'efficientnet_b0', dict(stem='cifar', width_coefficient=0.5, depth_coefficient=0.5),
        'B0 with stem stride 1 (was 2) scaled down by its own rule: width 0.5, depth 0.5 '
        '(stage repeats ceil(0.5 n)); dropout 0.2, stochastic depth 0.2 kept'),
}

STEPS = 100                    # the shared budget in steps of BATCH_SIZE images
BATCH_SIZE = 64
LEARNING_RATE = 0.05
WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 5e-4
BN_MOMENTUM = 0.9
# Fashion-MNIST training-set pixel mean and std on [0, 1] (python -m cnn_history.data.stats).
MEAN, STD = 0.2860, 0.3530
EVAL_OPS = f'scale(0, 1)|pad(2)|normalize({MEAN}, {STD})'
TRAIN_OPS = f'scale(0, 1)|pad(2)|random_crop(32, padding=2)|flip_lr|normalize({MEAN}, {STD})'


def family_spec(family: str) -> Family:
  """The FAMILIES row of `family`; an unknown name is an error listing the valid ones."""
  if family not in FAMILIES:
    raise ValueError(f'fashion_mnist_history: unknown family {family!r}; valid families: '
                     f'{", ".join(FAMILIES)}.')
  return FAMILIES[family]


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'family': 'lenet5', 'steps': STEPS})
  spec = family_spec(args['family'])
  steps = args['steps']
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f'fashion_mnist_history: steps must be a positive integer, got {steps!r}.')

  c = config_lib.default_config()
  overrides = dict(spec.overrides)
  from cnn_history import models  # pylint: disable=g-import-not-at-top
  if 'bn_momentum' in models.registry.module_fields(models.get_spec(spec.model).module):
    overrides['bn_momentum'] = BN_MOMENTUM
  config_lib.set_model(c, spec.model, **overrides)
  c.model.num_classes = 10

  c.data.source = 'idx'
  c.data.path = sources.DEBIAN_FASHION_MNIST
  c.data.train_preprocess = TRAIN_OPS
  c.data.eval_preprocess = EVAL_OPS
  c.data.synthetic_shape = (28, 28, 1)  # what the IDX files hold (for synthetic smoke tests)

  c.batch_size = BATCH_SIZE
  c.num_steps = steps
  c.num_epochs = round(steps * BATCH_SIZE / 60_000, 3)  # readers only: num_steps decides
  c.eval_every_epochs = 0.0        # evaluate the test set once, at the end
  c.checkpoint_every_epochs = 0.0  # one checkpoint, at the end
  c.log_every_steps = 5

  c.loss.name = 'softmax_xent'
  c.loss.label_smoothing = 0.0
  c.optimizer.name = 'nesterov'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = WEIGHT_DECAY
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'cosine'
  c.schedule.unit = 'steps'
  c.schedule.learning_rate = LEARNING_RATE
  c.schedule.warmup = max(1, round(WARMUP_FRACTION * steps))
  c.schedule.end_learning_rate = 0.0
  return c
