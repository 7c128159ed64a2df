"""GoogLeNet (Inception-v1) and BN-Inception.

GoogLeNet — Christian Szegedy, Wei Liu, Yangqing Jia, Pierre Sermanet, Scott Reed, Dragomir
Anguelov, Dumitru Erhan, Vincent Vanhoucke & Andrew Rabinovich, "Going Deeper with
Convolutions", CVPR 2015 (arXiv 1409.4842, ILSVRC 2014). BN-Inception — Sergey Ioffe & Christian
Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate
Shift", ICML 2015 (arXiv 1502.03167), §4.2 and Figure 5. Facts from papers.md §6, §7, §27.

The Inception module (`Inception`, GoogLeNet Fig. 2b) concatenates four branches over one
input: a 1x1 conv; a 1x1 reduction then a 3x3 conv; a 1x1 reduction then the "wide" convs (one
5x5 in GoogLeNet, two stacked 3x3 in BN-Inception); a 3x3 pooling then a 1x1 projection. Each
network below is its paper's module table (`GOOGLENET_MODULES`, `BN_INCEPTION_MODULES`), read
row by row.

`googlenet` — the paper's network (Table 1):
  stem      conv 7x7/2 64 -> max-pool 3x3/2 -> LRN -> conv 1x1 64 -> conv 3x3 192 -> LRN
  stages    3x3/2 max-pool, then 3a 3b | 3x3/2 max-pool, 4a-4e | 3x3/2 max-pool, 5a 5b:
            224 -> 112 -> 56 -> 28 -> 14 -> 7; outputs 256, 480 | 512, 512, 512, 528, 832 |
            832, 1024 channels.
  head      avg-pool 7x7 (the whole 7x7 map; written as a global mean so the network also
            runs at other sizes) -> dropout 40% -> linear -> softmax.
  layers    every conv has a bias and a ReLU; no BatchNorm (it came a year later). LRN is
            AlexNet's (layers.LRN: k=2, n=5, alpha=1e-4, beta=0.75); the paper gives no
            constants (the BVLC Caffe reproduction uses k=1 and alpha/n).
  padding   'SAME' everywhere (TF's rule, as Google's own TF-slim inception_v1): the paper
            specifies none, and this gives Table 1's sizes.
  aux       two auxiliary classifiers (§5) on the outputs of 4a and 4d: avg-pool 5x5/3
            (14x14 -> 4x4) -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU -> dropout 70% -> linear.
            They exist only for training: computed with train=True and sown, in network order,
            as 'intermediates'/'aux_logits'. The paper adds their losses with weight 0.3 each:
            that weight belongs to the recipe (config.loss.aux_weights = (0.3, 0.3)).
  counts    6,998,552 parameters and 1.58G multiply-adds without the heads; the heads add
            3,188,840 (on 4a's 512 channels) + 3,190,888 (on 4d's 528): 13,378,280 in all
            (papers.md §6). The paper's Table 1 sums to ~6.8M / ~1.5G because of its conv1 row,
            inconsistent with the text: it lists 2.7K parameters / 34M ops, but a 7x7 conv from
            3 to 64 channels at 112x112 has 9,408 / 118M. The row's numbers are exactly those of
            a depthwise-separable 7x7 conv with depth multiplier 8 (49*3*8 + 24*64 = 2,712
            parameters; 14.8M + 19.3M = 34.0M multiply-adds) — the stem the BN paper
            describes. We build the plain conv the text and Table 1's other columns describe.
  switches  aux_logits (default True: the paper trains with them); lrn; dropout_rate.

`googlenet_tv` — torchvision's `googlenet`, the network its ImageNet weights (ported from
TF-slim) load into; it differs from the paper in ways that change what the weights compute:
  - the "5x5" branch is a 3x3 conv (torchvision's "known bug", pytorch/vision#906);
  - every conv is conv (no bias) + BatchNorm (eps 1e-3, PyTorch momentum 0.1) + ReLU; no LRN;
  - the max-pool before stage 5 is 2x2/2; all max-pools round up (ceil_mode=True), and conv1
    pads 3 on every side (PyTorch's symmetric padding);
  - dropout 20% before the classifier;
  - the aux heads pool adaptively to 4x4 (PyTorch's adaptive_avg_pool2d), which at 14x14
    averages 4x4 windows starting at rows/columns 0, 3, 7, 10 — not the paper's 5x5/3 windows
    at 0, 3, 6, 9 (papers.md §6 calls them the same; they are not) — and their 1x1 conv has
    BatchNorm too.
  aux_logits defaults to False: torchvision's pretrained weights come without trained aux
  heads (6,624,904 parameters, 1.50G multiply-adds; 13,004,888 with the heads).
  Preprocessing: with pretrained weights torchvision forces `transform_input=True`, which maps
  ImageNet mean/std-normalised input to the [-1, 1] scaling of the TF-slim original
  (x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5). That is a data-pipeline step, not a layer here:
  feed this network [-1, 1]-scaled images. A weight importer must also permute the aux
  heads' fc1 input rows from PyTorch's (C, H, W) flattening to our (H, W, C).

`bn_inception` — the BN paper's Inception variant (Fig. 5, appendix), as papers.md §7
reconstructs it:
  - every 5x5 conv becomes two stacked 3x3 convs (the "double 3x3" branch);
  - three 28x28 modules, 3a 3b 3c; 4a-4e; 5a 5b. No pooling layers between modules: 3c and
    4e stride 2 (28 -> 14 -> 7) in their last convs, have no 1x1 branch, and pass their 3x3/2
    max-pooled input through unprojected;
  - average or max pooling inside the modules, per row (5b: max);
  - BatchNorm before every nonlinearity (convs then have no bias);
  - conv1 is a depthwise-separable 7x7/2 conv with depth multiplier 8 (3 -> 24 depthwise,
    then 1x1 to 64; one BN + ReLU after the pointwise conv);
  - 'SAME' padding (TF's rule; stride-2 layers pad the extra row/column at the end) and
    average pooling that excludes the padding, as Google's TF code.
  Counts (papers.md, [V:calc]): 11,188,288 parameters / 1.93G multiply-adds with the separable
  stem; 11,194,984 / 2.02G with a plain 7x7 stem. The paper states 13.6M parameters.
  Reconstruction caveat: papers.md's 4c and 4d project their pooling branch to 96 channels so
  that every 14x14 module outputs 576 channels. The Caffe BN-Inception port (TSN,
  pretrainedmodels' `bninception`) reads 128 there, giving 608 channels after 4c/4d and 1,056
  after 4e; we follow papers.md (the table is data: change two numbers to get the port's).
  BN momentum and epsilon are not in the paper: 0.9 and TF-slim's 1e-3.
  Switches, one per network of the paper's Table 2 (recipes in configs; the learning-rate
  multipliers, weight decay and schedule are the config's):
    Inception       use_bn=False, lrn=True, dropout_rate=0.4 (GoogLeNet's rate; the BN
                    paper keeps its baseline's dropout without restating the rate)
    BN-Baseline     lrn=True, dropout_rate=0.4: BN added, nothing else changed
    BN-x5, BN-x30   the defaults: the accelerated nets removed LRN and dropout
    BN-x5-Sigmoid   activation='sigmoid'
  separable_stem=False gives the plain 7x7 stem (Caffe ports).

Small inputs (not in the papers; defaults are the papers'), both networks: stem='cifar' makes
conv1 a plain 3x3/1 conv and drops the max-pool after it, so a 32x32 image enters the stage-3
modules at 16x16 (stages 4 and 5 at 8x8 and 4x4) instead of a 1x1 map by stage 5;
width_multiplier scales every conv's filters (stem and every column of the module table).

Initialisation: He normal with the fan-in (variance 2/fan_in) for every conv and hidden FC;
LeCun normal for the classifiers; zero biases. None of the papers states theirs (DistBelief).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register

HE_NORMAL = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


class InceptionRow(NamedTuple):
  """One row of an Inception table: the filters of each branch (0: the branch is absent)."""
  name: str          # '3a' ... '5b'; its first character is the stage
  branch_1x1: int
  reduce_3x3: int
  branch_3x3: int
  reduce_wide: int   # '#5x5 reduce' (GoogLeNet) / 'double #3x3 reduce' (BN-Inception)
  branch_wide: int   # '#5x5' / 'double #3x3' (each of the two convs)
  pool_proj: int     # 0: the pooled input passes through unprojected
  pool: str = 'max'  # pooling of the pool branch: 'max' | 'avg'
  strides: int = 1   # 2: the module halves the map (BN-Inception 3c, 4e)

  @property
  def stage(self) -> str:
    return self.name[0]


# GoogLeNet Table 1 (torchvision's table is the same).
GOOGLENET_MODULES: tuple[InceptionRow, ...] = (
    #           name  #1x1 #3x3red #3x3 #5x5red #5x5 pool-proj
    InceptionRow('3a',  64,    96,  128,    16,   32,    32),
    InceptionRow('3b', 128,   128,  192,    32,   96,    64),
    InceptionRow('4a', 192,    96,  208,    16,   48,    64),
    InceptionRow('4b', 160,   112,  224,    24,   64,    64),
    InceptionRow('4c', 128,   128,  256,    24,   64,    64),
    InceptionRow('4d', 112,   144,  288,    32,   64,    64),
    InceptionRow('4e', 256,   160,  320,    32,  128,   128),
    InceptionRow('5a', 256,   160,  320,    32,  128,   128),
    InceptionRow('5b', 384,   192,  384,    48,  128,   128),
)
AUX_AFTER = ('4a', '4d')  # GoogLeNet's auxiliary classifiers read these modules' outputs

# BN-Inception, BN paper Figure 5 (papers.md §7's reconstruction).
BN_INCEPTION_MODULES: tuple[InceptionRow, ...] = (
    #           name  #1x1 #3x3red #3x3 dbl-red dbl-3x3 proj  pool  stride
    InceptionRow('3a',  64,    64,   64,    64,    96,   32, 'avg'),
    InceptionRow('3b',  64,    64,   96,    64,    96,   64, 'avg'),
    InceptionRow('3c',   0,   128,  160,    64,    96,    0, 'max', 2),
    InceptionRow('4a', 224,    64,   96,    96,   128,  128, 'avg'),
    InceptionRow('4b', 192,    96,  128,    96,   128,  128, 'avg'),
    InceptionRow('4c', 160,   128,  160,   128,   160,   96, 'avg'),
    InceptionRow('4d',  96,   128,  192,   160,   192,   96, 'avg'),
    InceptionRow('4e',   0,   128,  192,   192,   256,    0, 'max', 2),
    InceptionRow('5a', 352,   192,  320,   160,   224,  128, 'avg'),
    InceptionRow('5b', 352,   192,  320,   192,   224,  128, 'max'),
)


def scaled_rows(rows: tuple[InceptionRow, ...], multiplier: float) -> tuple[InceptionRow, ...]:
  """`rows` with every branch's filters x `multiplier` (layers.scale_width; absent stay 0)."""
  fields = ('branch_1x1', 'reduce_3x3', 'branch_3x3', 'reduce_wide', 'branch_wide', 'pool_proj')
  return tuple(row._replace(**{f: layers.scale_width(getattr(row, f), multiplier)
                               for f in fields}) for row in rows)


def _check_rate(model: str, field: str, rate: float) -> None:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'{model}: {field} must be in [0, 1), got {rate!r}.')


class Inception(nn.Module):
  """One Inception module: four branches over the same input, concatenated on channels.

    branch_1x1   1x1 conv                                          (absent when 0)
    branch_3x3   1x1 reduction -> 3x3 conv
    wide         1x1 reduction -> one conv per entry of `wide_kernels`: (5,) GoogLeNet,
                 (3, 3) BN-Inception's double 3x3, (3,) torchvision's "5x5"
    pool         3x3 max/avg pooling -> 1x1 projection             (pass-through when 0)

  With `row.strides` = 2 the last layer of every branch strides. `conv` builds each conv block
  (layers.ConvBN with the network's bias/BN/activation/init settings); padding is 'SAME'.
  """
  row: InceptionRow
  wide_kernels: tuple[int, ...]
  conv: Callable[..., nn.Module] = layers.ConvBN

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    row, strides = self.row, self.row.strides
    branches = []
    if row.branch_1x1:
      branches.append(self.conv(row.branch_1x1, 1, name='branch_1x1')(x, train))
    y = self.conv(row.reduce_3x3, 1, name='reduce_3x3')(x, train)
    branches.append(self.conv(row.branch_3x3, 3, strides, name='branch_3x3')(y, train))
    y = self.conv(row.reduce_wide, 1, name='reduce_wide')(x, train)
    for i, kernel in enumerate(self.wide_kernels, 1):
      last = i == len(self.wide_kernels)
      y = self.conv(row.branch_wide, kernel, strides if last else 1, name=f'wide_{i}')(y, train)
    branches.append(y)
    if row.pool == 'max':
      y = layers.max_pool(x, 3, strides, 'SAME')
    elif row.pool == 'avg':
      y = layers.avg_pool(x, 3, strides, 'SAME', count_include_pad=False)
    else:
      raise ValueError(f"Inception {row.name}: pool must be 'max' or 'avg', got {row.pool!r}.")
    if row.pool_proj:
      y = self.conv(row.pool_proj, 1, name='pool_proj')(y, train)
    branches.append(y)
    return jnp.concatenate(branches, axis=-1)


class InceptionAux(nn.Module):
  """GoogLeNet's auxiliary classifier (§5): average pooling -> 1x1 conv 128 -> FC 1024 + ReLU
  -> dropout -> linear. `adaptive_size` None pools 5x5/3 (the paper); 4 pools adaptively to
  4x4 (torchvision). Returns float32 logits."""
  num_classes: int
  conv: Callable[..., nn.Module] = layers.ConvBN
  adaptive_size: int | None = None
  dropout_rate: float = 0.7
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.adaptive_size:
      x = layers.adaptive_avg_pool(x, self.adaptive_size)
    else:
      if min(x.shape[1:3]) < 5:
        raise ValueError(f'The auxiliary classifier pools 5x5 windows but its input map is '
                         f'{x.shape[1]}x{x.shape[2]}: use inputs of at least 65x65 pixels or '
                         'aux_logits=False.')
      x = layers.avg_pool(x, 5, 3)
    x = self.conv(128, 1, name='conv')(x, train)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(1024, kernel_init=HE_NORMAL, dtype=self.dtype, name='fc1')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc2')(x).astype(jnp.float32)


@register('googlenet', paper='Szegedy et al., CVPR 2015', year=2014, input_shape=(224, 224, 3),
          expected_params=13_378_280,  # 6,998,552 + aux heads 3,188,840 + 3,190,888
          expected_macs=1.58e9,        # inference: the aux heads are not computed
          source='papers.md §6: paper-faithful rebuild [V:calc]',
          paper_params='~6.8M (Table 1, without aux heads)', paper_macs='~1.5G')
class GoogLeNet(nn.Module):
  """GoogLeNet as the paper built it (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  aux_logits: bool = True     # the two auxiliary classifiers (training only; loss weight 0.3
                              # each is config.loss.aux_weights = (0.3, 0.3))
  lrn: bool = True            # LocalRespNorm after the first max-pool and after conv2 (Table 1)
  dropout_rate: float = 0.4   # before the classifier (§5)
  stem: str = 'imagenet'      # 'imagenet': conv1 7x7/2 + max-pool 3x3/2; 'cifar': conv1 3x3/1,
                              # no pool (32x32 in: stages 3/4/5 at 16/8/4)
  width_multiplier: float = 1.0  # every conv's filters x this (small-input variants)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_rate('googlenet', 'dropout_rate', self.dropout_rate)
    conv = functools.partial(layers.ConvBN, use_bias=True, use_bn=False, kernel_init=HE_NORMAL,
                             dtype=self.dtype)
    width = functools.partial(layers.scale_width, multiplier=self.width_multiplier)
    if layers.stem_stride('googlenet', self.stem) == 2:
      x = conv(width(64), 7, 2, name='conv1')(x.astype(self.dtype))
      x = layers.max_pool(x, 3, 2, 'SAME')
    else:
      x = conv(width(64), 3, 1, name='conv1')(x.astype(self.dtype))
    if self.lrn:
      x = layers.LRN(name='lrn1')(x)
    x = conv(width(64), 1, name='conv2_reduce')(x)
    x = conv(width(192), 3, name='conv2')(x)
    if self.lrn:
      x = layers.LRN(name='lrn2')(x)
    stage = None
    for row in scaled_rows(GOOGLENET_MODULES, self.width_multiplier):
      if row.stage != stage:  # a 3x3/2 max-pool starts each stage: 56 -> 28 -> 14 -> 7
        x, stage = layers.max_pool(x, 3, 2, 'SAME'), row.stage
      x = Inception(row, (5,), conv, name=f'inception_{row.name}')(x, train)
      # Built at init (their parameters belong to the model), run and reported in training.
      if self.aux_logits and row.name in AUX_AFTER and (train or self.is_initializing()):
        aux = InceptionAux(self.num_classes, conv, dtype=self.dtype,
                           name=f'aux_{AUX_AFTER.index(row.name) + 1}')(x, train)
        if train:
          self.sow('intermediates', 'aux_logits', aux)
    x = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x).astype(jnp.float32)


@register('googlenet_tv', paper='Szegedy et al., CVPR 2015 (torchvision port)', year=2014,
          input_shape=(224, 224, 3), expected_params=6_624_904, expected_macs=1.50e9,
          source='torchvision googlenet (aux_logits=False; 13,004,888 with aux)',
          paper_params='~6.8M (Table 1)', paper_macs='~1.5G')
class GoogLeNetTorchvision(nn.Module):
  """torchvision's GoogLeNet, for its ImageNet weights (module docstring lists the differences
  from the paper). Expects [-1, 1]-scaled input (torchvision's transform_input)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  aux_logits: bool = False    # torchvision's pretrained weights have no trained aux heads
  dropout_rate: float = 0.2
  bn_momentum: float = 0.9    # PyTorch momentum 0.1
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_rate('googlenet_tv', 'dropout_rate', self.dropout_rate)
    conv = functools.partial(layers.ConvBN, bn_momentum=self.bn_momentum,
                             bn_epsilon=self.bn_epsilon, bn_batch_span=self.bn_batch_span,
                             kernel_init=HE_NORMAL, dtype=self.dtype)
    x = conv(64, 7, 2, padding=3, name='conv1')(x.astype(self.dtype), train)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    x = conv(64, 1, name='conv2')(x, train)
    x = conv(192, 3, name='conv3')(x, train)
    stage = None
    for row in GOOGLENET_MODULES:
      if row.stage != stage:  # 3x3/2 before stages 3 and 4, 2x2/2 before stage 5
        window = 2 if row.stage == '5' else 3
        x, stage = layers.max_pool(x, window, 2, ceil_mode=True), row.stage
      x = Inception(row, (3,), conv, name=f'inception_{row.name}')(x, train)
      if self.aux_logits and row.name in AUX_AFTER and (train or self.is_initializing()):
        aux = InceptionAux(self.num_classes, conv, adaptive_size=4, dtype=self.dtype,
                           name=f'aux_{AUX_AFTER.index(row.name) + 1}')(x, train)
        if train:
          self.sow('intermediates', 'aux_logits', aux)
    x = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x).astype(jnp.float32)


ACTIVATIONS = ('relu', 'sigmoid')


@register('bn_inception', paper='Ioffe & Szegedy, ICML 2015', year=2015,
          input_shape=(224, 224, 3), expected_params=11_188_288, expected_macs=1.93e9,
          source='papers.md §7: Fig. 5 rebuild [V:calc]', paper_params='13.6M')
class BNInception(nn.Module):
  """BN-Inception (BN paper Fig. 5); the switches give the other networks of its Table 2."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  separable_stem: bool = True  # conv1 depthwise-separable, depth multiplier 8 (paper); False:
                               # a plain 7x7 conv (Caffe ports)
  use_bn: bool = True          # False: the 'Inception' baseline (conv biases, no BN)
  activation: str = 'relu'     # 'sigmoid': BN-x5-Sigmoid
  lrn: bool = False            # True: Inception and BN-Baseline kept GoogLeNet's stem LRN
  dropout_rate: float = 0.0    # 0.4: Inception and BN-Baseline; the accelerated nets removed it
  bn_momentum: float = 0.9     # not in the paper
  bn_epsilon: float = 1e-3     # not in the paper; TF-slim's
  bn_batch_span: int | None = None
  stem: str = 'imagenet'       # 'imagenet': conv1 7x7/2 + max-pool 3x3/2; 'cifar': conv1 a plain
                               # 3x3/1 conv, no pool (32x32 in: modules at 16/8/4)
  width_multiplier: float = 1.0  # every conv's filters x this (small-input variants)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"bn_inception: activation must be one of {ACTIVATIONS} ('sigmoid' is "
                       f'BN-x5-Sigmoid), got {self.activation!r}.')
    _check_rate('bn_inception', 'dropout_rate', self.dropout_rate)
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    conv = functools.partial(layers.ConvBN, use_bias=not self.use_bn, use_bn=self.use_bn,
                             act=self.activation, kernel_init=HE_NORMAL, **bn)
    x = x.astype(self.dtype)
    width = functools.partial(layers.scale_width, multiplier=self.width_multiplier)
    if layers.stem_stride('bn_inception', self.stem) == 1:
      x = conv(width(64), 3, 1, name='conv1')(x, train)
    elif self.separable_stem:
      x = layers.SeparableConv(width(64), 7, 2, depth_multiplier=8, use_bn=self.use_bn,
                               use_bias=not self.use_bn, act=self.activation, name='conv1',
                               **bn)(x, train)
    else:
      x = conv(width(64), 7, 2, name='conv1')(x, train)
    if self.stem == 'imagenet':
      x = layers.max_pool(x, 3, 2, 'SAME')
    if self.lrn:
      x = layers.LRN(name='lrn1')(x)
    x = conv(width(64), 1, name='conv2_reduce')(x, train)
    x = conv(width(192), 3, name='conv2')(x, train)
    if self.lrn:
      x = layers.LRN(name='lrn2')(x)
    x = layers.max_pool(x, 3, 2, 'SAME')
    for row in scaled_rows(BN_INCEPTION_MODULES, self.width_multiplier):  # no pooling between modules: 3c and 4e stride
      x = Inception(row, (3, 3), conv, name=f'inception_{row.name}')(x, train)
    x = layers.global_avg_pool(x)  # avg-pool 7x7 at 224
    self.sow('intermediates', 'features', x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x).astype(jnp.float32)


@torch_converter('googlenet_tv', source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.googlenet: BasicConv2d (conv, bn) modules conv1-conv3; inception{row}
  branch1, branch2.{0,1}, branch3.{0,1} (the "5x5", a 3x3) and branch4.1 (branch4.0 is the
  pool); aux{1,2}.conv and fc1 (reading the 4x4x128 map in torch's C, H, W order)/fc2 when the
  state dict has them (aux_logits=True); fc. transform_input (on with the pretrained weights)
  is not a layer here: feed (x - 0.5) / 0.5 (torch_preprocessing says so)."""
  del name
  for i in (1, 2, 3):
    weights.conv_bn(f'conv{i}.conv', f'conv{i}.bn', (f'conv{i}',))
  parts = (('branch1', 'branch_1x1'), ('branch2.0', 'reduce_3x3'), ('branch2.1', 'branch_3x3'),
           ('branch3.0', 'reduce_wide'), ('branch3.1', 'wide_1'), ('branch4.1', 'pool_proj'))
  for row in GOOGLENET_MODULES:
    for theirs, ours in parts:
      theirs = f'inception{row.name}.{theirs}'
      weights.conv_bn(f'{theirs}.conv', f'{theirs}.bn', (f'inception_{row.name}', ours))
  aux_logits = weights.has('aux1.fc2.weight')
  if aux_logits:
    for i in (1, 2):
      weights.conv_bn(f'aux{i}.conv.conv', f'aux{i}.conv.bn', (f'aux_{i}', 'conv'))
      weights.dense_from_map(f'aux{i}.fc1', (f'aux_{i}', 'fc1'), 128)
      weights.dense(f'aux{i}.fc2', (f'aux_{i}', 'fc2'))
  weights.head('fc', ('classifier',))
  return {'aux_logits': aux_logits}
