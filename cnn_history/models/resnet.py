"""Residual networks: one module for ResNet v1 and its plain twins, the CIFAR ResNets,
ResNet-B/C/D, pre-activation ResNet v2, ResNeXt and Wide ResNet (SENet: senet.py).

Papers (papers.md §11-§14, §26):
  He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
    (arXiv 1512.03385, 2015).
  He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016
    (arXiv 1603.05027).
  Xie, Girshick, Dollar, Tu & He, "Aggregated Residual Transformations for Deep Neural Networks"
    (ResNeXt), CVPR 2017 (arXiv 1611.05431, 2016).
  Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv 1605.07146).
  He, Zhang, Zhang, Zhang, Xie & Li, "Bag of Tricks for Image Classification with Convolutional
    Neural Networks", CVPR 2019 (arXiv 1812.01187, 2018).

What the code encodes:
  ImageNet (Table 1): stem 7x7/2 conv 64 -> 3x3/2 max-pool; four stages of 64/128/256/512
    filters (bottlenecks output 4x) at strides 1, 2, 2, 2; global average pool -> FC. The stage
    table below gives the blocks per stage of each depth. BN after every conv, ReLU after the
    addition.
  Bottleneck 1x1 -> 3x3 -> 1x1. The paper (its Caffe models, Keras) downsamples with the FIRST
    1x1; torchvision ("v1.5"), ResNet-B and ResNeXt with the 3x3: 3.86 vs 4.09 GMACs for
    ResNet-50, same parameters. Projection shortcuts where dimensions increase (option B).
  CIFAR (§4.2): 3x3 conv 16, three stages of n blocks of 16/32/64 filters at 32/16/8 pixels,
    d = 6n + 2 with basic blocks, parameter-free option-A shortcuts (subsample, zero channels).
  Pre-activation (Identity Mappings): a unit computes x + F(x), F = (BN-ReLU-conv) x 2 or 3,
    nothing after the addition; a projection reads the pre-activated input; one BN-ReLU follows
    the last unit. The CIFAR pre-act bottleneck nets have d = 9n + 2 and 64/128/256-channel
    stages (16/32/64 inside the bottlenecks).
  ResNeXt: the 3x3 is a grouped conv of `cardinality` groups of `base_width` channels at the
    first stage, doubling per stage: 32x4d has 128/256/512/1024-wide 3x3s.
  Wide ResNet: CIFAR pre-activation basic blocks k times wider (16k/32k/64k), d = 6n + 4 (WRN
    counts its three 1x1 projections); ImageNet WRN-50-2 doubles the bottleneck's inner width.

Switches (module fields), each a paper's ablation one override away:
  shortcut            'projection' (option B; the paper on ImageNet) | 'zero_pad' (option A; on
                      CIFAR) | 'projection_all' (option C) | 'avgpool' (ResNet-D: 2x2 avg-pool/2,
                      then the 1x1) | 'projection_3x3' (SENet-154's 3x3/2 projections) | 'none'
                      (the plain nets of Table 2 / Fig. 4: the degradation problem)
  preactivation       False (v1) | True (v2: Identity Mappings' full pre-activation unit)
  stride_in           '1x1' (paper: a bottleneck's first conv) | '3x3' (ResNet-B, torchvision)
  stride_in_last_block  False (paper) | True (Keras/TF-slim v2: a stage's last unit downsamples
                      for the next stage; its identity shortcut subsamples)
  stem                '7x7' | 'deep' (ResNet-C: three 3x3 convs of `stem_widths`) | '3x3' (CIFAR)
  stem_pool           'pad1' (torchvision: -inf padding) | 'zero_pad1' (Keras' ZeroPadding2D;
                      differs from 'pad1' only on an un-activated stem, i.e. in v2) | 'ceil'
                      (Caffe: no padding, ceil mode; the official SENet models)
  cardinality, base_width   ResNeXt's C x d (Table 2: 1x64d ... 32x4d, cardinality vs width)
  width_factor        WRN's k: widens a block's inner convs (a basic block's output with them;
                      a bottleneck still outputs 4x the stage width)
  se_reduction        SENet's r (16); 0 = no squeeze-and-excitation. Any residual model takes it.
  zero_init_residual  Bag of Tricks' zero gamma in each block's last BN (pre-activation: zero
                      kernel of the last conv, which no BN follows)
  block_dropout_rate  WRN's dropout between the convolutions of a block (0.3 on CIFAR)
  dropout_rate        dropout before the classifier (SENet-154: 0.2)
  conv_bias           Keras ports: v1 gives every conv a bias, v2 the convs no BN follows
  scan_blocks         not an ablation: a stage's identical units run as one lax.scan (parameters
                      stacked), so the 1000-layer CIFAR nets trace and compile in seconds
  bn_momentum, bn_epsilon, bn_batch_span   BatchNorm (the papers: 32 images per GPU)
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register

# ---- The papers' tables ---------------------------------------------------------------------

# Table 1 (and Identity Mappings' ResNet-200): depth -> (block, blocks per stage).
IMAGENET_STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
    200: ('bottleneck', (3, 24, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)   # conv2_x ... conv5_x; a bottleneck outputs 4x
IMAGENET_STRIDES = (1, 2, 2, 2)         # after the stem's /4
CIFAR_WIDTHS = (16, 32, 64)             # §4.2: 32x32, 16x16, 8x8 maps
CIFAR_STRIDES = (1, 2, 2)
BOTTLENECK_EXPANSION = 4
# CIFAR depths count layers, d = a n + b for n blocks per stage: 6n + 2 (basic: 3 stages x 2 convs,
# stem, FC), 9n + 2 (bottleneck); WRN writes 6n + 4, counting its three 1x1 projections instead of
# the FC (WRN-28-10: n = 4). Block kind -> the (a, b) rules.
CIFAR_DEPTH_RULES = {'basic': ((6, 2), (6, 4)), 'bottleneck': ((9, 2),)}

LAYOUTS = ('imagenet', 'cifar')
BLOCKS = ('basic', 'bottleneck')
SHORTCUTS = ('projection', 'zero_pad', 'projection_all', 'avgpool', 'projection_3x3', 'none')
INITIALIZERS = {'he': nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                'xavier_uniform': nn.initializers.xavier_uniform()}
STRIDE_IN = ('1x1', '3x3')
STEMS = ('7x7', 'deep', '3x3')
STEM_POOLS = ('pad1', 'zero_pad1', 'ceil')


def _check(field: str, value: Any, valid: tuple) -> None:
  if value not in valid:
    raise ValueError(f'ResNet: {field}={value!r} is not valid; choose one of '
                     f'{", ".join(map(repr, valid))}.')


def stage_plan(depth: int, layout: str, block: str | None) -> tuple[str, tuple[int, ...]]:
  """(block kind, blocks per stage) of a `depth`-layer network in `layout`."""
  _check('layout', layout, LAYOUTS)
  if block is not None:
    _check('block', block, BLOCKS)
  if layout == 'imagenet':
    if depth not in IMAGENET_STAGES:
      raise ValueError(f'ResNet: depth={depth} is not in the ImageNet stage table; choose one of '
                       f'{", ".join(map(str, IMAGENET_STAGES))}.')
    kind, blocks = IMAGENET_STAGES[depth]
    if block not in (None, kind):
      raise ValueError(f'ResNet: ResNet-{depth} is built from {kind} blocks (Table 1); '
                       f'block={block!r} contradicts depth={depth}.')
    return kind, blocks
  kind = block or 'basic'
  for a, b in CIFAR_DEPTH_RULES[kind]:
    if depth > b and (depth - b) % a == 0:
      return kind, ((depth - b) // a,) * len(CIFAR_WIDTHS)
  rules = ' or '.join(f'{a}n + {b}' for a, b in CIFAR_DEPTH_RULES[kind])
  raise ValueError(f'ResNet: depth={depth} is not {rules} for CIFAR {kind} blocks.')


def zero_pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """Option A: the identity, subsampled by `strides`, with zero channels appended up to
  `features` (parameter-free; fb.resnet.torch's CIFAR shortcut)."""
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


# ---- The residual unit ----------------------------------------------------------------------

class ResidualBlock(nn.Module):
  """A basic (3x3-3x3) or bottleneck (1x1-3x3-1x1) residual unit, post- or pre-activation.

  Post-activation (v1): relu(F(x) + shortcut(x)), F = conv-BN-ReLU, ..., conv-BN.
  Pre-activation (v2):  x + F(x), F = BN-ReLU-conv, ...; a projection reads BN-ReLU(x).
  BatchNorm `bn{i}` normalises the output of `conv{i}` in both orders (`preact_bn` the input).
  The layers are written out rather than taken from layers.ConvBN because one loop builds both
  orders; `conv` and `norm` are the network's nn.Conv and BatchNorm with its shared settings.
  """
  features: int                    # output channels
  width: int                       # channels of the (grouped) 3x3 conv
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  strides: int = 1
  bottleneck: bool = True
  first_width: int | None = None   # a bottleneck's first 1x1 (None: `width`)
  groups: int = 1
  stride_in: str = '1x1'
  preactivation: bool = False
  shortcut: str = 'projection'
  se_reduction: int = 0
  zero_init_residual: bool = False
  dropout_rate: float = 0.0
  conv_bias: bool = False
  dtype: Any = jnp.float32

  def conv_specs(self) -> list[tuple[int, int, int, int]]:
    """(features, kernel, stride, groups) of the residual branch's convolutions."""
    if not self.bottleneck:
      return [(self.width, 3, self.strides, 1), (self.features, 3, 1, 1)]
    first, middle = (self.strides, 1) if self.stride_in == '1x1' else (1, self.strides)
    return [(self.first_width or self.width, 1, first, 1), (self.width, 3, middle, self.groups),
            (self.features, 1, 1, 1)]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    pre = self.preactivation
    zeros = nn.initializers.zeros
    branch_input = self.norm(name='preact_bn')(x, train, relu=True) if pre else x
    specs = self.conv_specs()
    y = branch_input
    for i, (features, kernel, strides, groups) in enumerate(specs, 1):
      last = i == len(specs)
      if pre and i > 1:
        y = self.norm(name=f'bn{i - 1}')(y, train, relu=True)
      if last and self.dropout_rate:
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
      conv = self.conv
      if pre and last and self.zero_init_residual:  # no BN follows it: zero the kernel
        conv = functools.partial(conv, kernel_init=zeros)
      y = conv(features, (kernel, kernel), (strides, strides), kernel // 2,
               feature_group_count=groups, use_bias=self.conv_bias and (last or not pre),
               name=f'conv{i}')(y)
      if not pre:
        zero_gamma = last and self.zero_init_residual
        norm = self.norm(scale_init=zeros if zero_gamma else nn.initializers.ones,
                         name=f'bn{i}')
        if last and not self.se_reduction:  # relu(BN(y) + shortcut), fused where it can be
          return norm(y, train, residual=self._shortcut(x, branch_input, train), relu=True)
        y = norm(y, train, relu=not last)
    if self.se_reduction:
      y = layers.SqueezeExcite(self.features // self.se_reduction, dtype=self.dtype, name='se')(y)
    shortcut = self._shortcut(x, branch_input, train)
    if shortcut is not None:
      y = y + shortcut
    return y if pre else nn.relu(y)

  def _shortcut(self, x: jax.Array, preactivated: jax.Array, train: bool) -> jax.Array | None:
    """The identity where the shapes allow it, else the `shortcut` option (None: a plain unit)."""
    s = self.strides
    if self.shortcut == 'none':
      return None
    if x.shape[-1] == self.features and self.shortcut != 'projection_all':
      return x[:, ::s, ::s, :]  # subsampled where only the size changes (Keras v2's 1x1/2 pool)
    if self.shortcut == 'zero_pad':
      return zero_pad_shortcut(x, self.features, s)
    y = preactivated if self.preactivation else x
    kernel = 3 if self.shortcut == 'projection_3x3' and s > 1 else 1
    if self.shortcut == 'avgpool' and s > 1:  # ResNet-D: the 1x1 then skips no input pixel
      y = layers.avg_pool(y, 2, s, count_include_pad=False, ceil_mode=True)
      s = 1
    y = self.conv(self.features, (kernel, kernel), (s, s), kernel // 2, use_bias=self.conv_bias,
                  name='shortcut_conv')(y)
    return y if self.preactivation else self.norm(name='shortcut_bn')(y, train)


# ---- The network ----------------------------------------------------------------------------

class ResNet(nn.Module):
  """Residual network read from the stage table; the defaults are the 2015 paper's ResNet-50
  (stride in the first 1x1, projection shortcuts). Switches: module docstring."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  depth: int = 50                  # row of the stage table (ImageNet) or d of the CIFAR rule
  layout: str = 'imagenet'         # 'imagenet' (Table 1) | 'cifar' (§4.2: 16/32/64 at 32x32)
  block: str | None = None         # 'basic' | 'bottleneck'; None: Table 1's / CIFAR 'basic'
  preactivation: bool = False      # v2: BN-ReLU-conv units, BN-ReLU before the pool
  shortcut: str = 'projection'     # option 'projection' (B) | 'zero_pad' (A) | 'projection_all'
  #                                  (C) | 'avgpool' (ResNet-D) | 'projection_3x3' | 'none' (plain)
  stride_in: str = '1x1'           # bottleneck conv with the stride: '1x1' (paper) | '3x3' (B)
  stride_in_last_block: bool = False  # Keras/TF-slim v2: the last unit of a stage downsamples
  stem: str | None = None          # '7x7' | 'deep' (ResNet-C) | '3x3'; None: the layout's
  stem_widths: tuple[int, ...] = (32, 32, 64)  # the deep stem's convs (SENet-154: 64, 64, 128)
  stem_pool: str = 'pad1'          # 'pad1' (torchvision) | 'zero_pad1' (Keras v2) | 'ceil' (Caffe)
  cardinality: int = 1             # ResNeXt: groups of the 3x3 conv
  base_width: int = 64             # ResNeXt: channels per group of the first stage's 3x3
  width_factor: int = 1            # WRN's k
  first_conv_ratio: float = 1.0    # bottleneck's first 1x1 / its 3x3 width (SENet-154: 0.5)
  se_reduction: int = 0            # SENet's r (16); 0: no SE
  zero_init_residual: bool = False  # Bag of Tricks: zero gamma of each block's last BN
  block_dropout_rate: float = 0.0  # WRN: dropout between a block's convs
  dropout_rate: float = 0.0        # before the classifier (SENet-154: 0.2)
  conv_bias: bool = False          # Keras ports (v1: every conv; v2: convs no BN follows)
  scan_blocks: bool = False        # each stage's identical units as one lax.scan (fast compile)
  initializer: str = 'he'          # conv kernels: 'he' (MSRA, fan-out normal) | 'xavier_uniform'
                                   # (Bag of Tricks' baseline)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None

  def __post_init__(self):
    self.plan()  # a bad switch is an error at create_model time, not deep inside init
    super().__post_init__()

  def plan(self) -> list[tuple[str, dict[str, Any], int]]:
    """The residual units in order, read from the stage table: (name, ResidualBlock fields,
    repeats). Repeats are 1 unless `scan_blocks` merges a stage's run of identical units."""
    kind, blocks = stage_plan(self.depth, self.layout, self.block)
    _check('shortcut', self.shortcut, SHORTCUTS)
    _check('stride_in', self.stride_in, STRIDE_IN)
    _check('stem', self.stem, STEMS + (None,))
    _check('stem_pool', self.stem_pool, STEM_POOLS)
    _check('initializer', self.initializer, tuple(INITIALIZERS))
    bottleneck = kind == 'bottleneck'
    if not bottleneck and (self.cardinality != 1 or self.base_width != 64):
      raise ValueError('ResNet: cardinality and base_width (ResNeXt) need bottleneck blocks; '
                       f'ResNet-{self.depth} ({self.layout}) has basic blocks.')
    widths, strides = ((IMAGENET_WIDTHS, IMAGENET_STRIDES) if self.layout == 'imagenet'
                       else (CIFAR_WIDTHS, CIFAR_STRIDES))
    units = []
    for s, (n, planes, stride) in enumerate(zip(blocks, widths, strides)):
      width = int(planes * self.width_factor * self.base_width / 64) * self.cardinality
      unit = dict(features=planes * BOTTLENECK_EXPANSION if bottleneck else width, width=width,
                  bottleneck=bottleneck, first_width=int(width * self.first_conv_ratio))
      next_stride = strides[s + 1] if s + 1 < len(strides) else 1
      for b in range(n):
        if self.stride_in_last_block:
          fields = dict(unit, strides=next_stride if b == n - 1 else 1)
        else:
          fields = dict(unit, strides=stride if b == 0 else 1)
        # From a stage's second unit on, equal fields mean the same function of the same shapes:
        # scan_blocks runs such a stretch as one unit 'stage{s}_block{i}to{j}'.
        if self.scan_blocks and b >= 2 and units[-1][1] == fields:
          first = units[-1][0].split('to')[0]
          units[-1] = (f'{first}to{b + 1}', fields, units[-1][2] + 1)
        else:
          units.append((f'stage{s + 1}_block{b + 1}', fields, 1))
    return units

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(layers.Conv, kernel_init=INITIALIZERS[self.initializer], dtype=self.dtype)
    norm = functools.partial(layers.BatchNorm, self.bn_momentum, self.bn_epsilon,
                             self.bn_batch_span, dtype=self.dtype)
    block = functools.partial(
        ResidualBlock, conv=conv, norm=norm, groups=self.cardinality, stride_in=self.stride_in,
        preactivation=self.preactivation, shortcut=self.shortcut, se_reduction=self.se_reduction,
        zero_init_residual=self.zero_init_residual, dropout_rate=self.block_dropout_rate,
        conv_bias=self.conv_bias, dtype=self.dtype)
    units = self.plan()
    x = self._stem(x.astype(self.dtype), conv, norm, train)
    for name, fields, repeats in units:
      if repeats == 1:
        x = block(**fields, name=name)(x, train)
      else:  # one lax.scan over identical units: parameters stacked on a leading axis
        scan = nn.scan(lambda unit, y, _: (unit(y, train), None),
                       variable_axes={'params': 0, 'batch_stats': 0},
                       split_rngs={'params': True, 'dropout': True}, length=repeats)
        x, _ = scan(block(**fields, name=name), x, None)
    if self.preactivation:
      x = norm(name='final_bn')(x, train, relu=True)
    features = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', features)
    if self.dropout_rate:
      features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(features).astype(jnp.float32)

  def _stem(self, x: jax.Array, conv: Callable[..., nn.Module], norm: Callable[..., nn.Module],
            train: bool) -> jax.Array:
    """conv-BN-ReLU (x 3 for 'deep'; the last BN-ReLU left to the first unit in v2), then the
    3x3/2 max-pool on ImageNet."""
    stem = self.stem or ('7x7' if self.layout == 'imagenet' else '3x3')
    if stem == '7x7':
      convs = [(IMAGENET_WIDTHS[0], 7, 2)]
    elif stem == 'deep':
      convs = [(w, 3, 2 if i == 0 else 1) for i, w in enumerate(self.stem_widths)]
    else:
      convs = [(CIFAR_WIDTHS[0] if self.layout == 'cifar' else IMAGENET_WIDTHS[0], 3, 1)]
    for i, (features, kernel, strides) in enumerate(convs, 1):
      x = conv(features, (kernel, kernel), (strides, strides), kernel // 2,
               use_bias=self.conv_bias, name=f'stem_conv{i}')(x)
      if not (self.preactivation and i == len(convs)):  # v2: the first unit normalises it
        x = norm(name=f'stem_bn{i}')(x, train, relu=True)
    if stem == '3x3':
      return x
    if self.stem_pool == 'ceil':
      return layers.max_pool(x, 3, 2, 'VALID', ceil_mode=True)
    if self.stem_pool == 'zero_pad1':
      x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      return layers.max_pool(x, 3, 2, 'VALID')
    return layers.max_pool(x, 3, 2, 1)


# ---- Registry: the papers' networks ---------------------------------------------------------

_RESNET = 'He et al., CVPR 2016'
_PREACT = 'He et al., ECCV 2016'
_RESNEXT = 'Xie et al., CVPR 2017'
_WRN = 'Zagoruyko & Komodakis, BMVC 2016'
_TRICKS = 'He et al. (Bag of Tricks), CVPR 2019'
_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)

# ResNet v1 as the paper built it: stride in the first 1x1, option-B projections (Table 1).
# Parameters are torchvision's (the stride does not change them); MACs count the paper's stride.
for _depth, _params, _macs, _paper_macs in (
    (18, 11_689_512, 1.8141e9, '1.8G'), (34, 21_797_672, 3.6638e9, '3.6G'),
    (50, 25_557_032, 3.8580e9, '3.8G'), (101, 44_549_160, 7.5702e9, '7.6G'),
    (152, 60_192_808, 11.2824e9, '11.3G')):
  register(f'resnet{_depth}', paper=_RESNET, year=2015, input_shape=_IMAGENET,
           expected_params=_params, expected_macs=_macs, paper_macs=_paper_macs,
           source=f'torchvision resnet{_depth}; MACs with the paper\'s stride (papers.md §11)',
           depth=_depth)(ResNet)

# Table 2's plain nets: the same layers without shortcuts (ResNet-18/34 minus the three 1x1
# projections, 173,824 parameters and 19.3M MACs).
for _depth, _params, _macs, _paper_macs in ((18, 11_515_688, 1.7948e9, '1.8G'),
                                            (34, 21_623_848, 3.6445e9, '3.6G')):
  register(f'plain{_depth}', paper=_RESNET, year=2015, input_shape=_IMAGENET,
           expected_params=_params, expected_macs=_macs, paper_macs=_paper_macs,
           source=f'computed: resnet{_depth} without its projections', depth=_depth,
           shortcut='none')(ResNet)

# Bag of Tricks §4 (Fig. 2): each tweak on top of the previous one.
register('resnet50b', paper=_TRICKS, year=2018, input_shape=_IMAGENET, expected_params=25_557_032,
         expected_macs=4.0892e9, source='torchvision resnet50 (v1.5)', paper_macs='4.1G',
         depth=50, stride_in='3x3')(ResNet)
register('resnet50c', paper=_TRICKS, year=2018, input_shape=_IMAGENET, expected_params=25_576_264,
         expected_macs=4.3288e9, source='timm resnet50c', paper_macs='4.3G',
         depth=50, stride_in='3x3', stem='deep')(ResNet)
register('resnet50d', paper=_TRICKS, year=2018, input_shape=_IMAGENET, expected_params=25_576_264,
         expected_macs=4.3288e9, source='timm resnet50d', paper_params='25M', paper_macs='4.3G',
         depth=50, stride_in='3x3', stem='deep', shortcut='avgpool')(ResNet)

# CIFAR-10 (§4.2, Table 6): d = 6n + 2, option-A shortcuts. The 1202-layer net compiles its
# stages as scans (the unrolled graph takes minutes to trace and compile).
for _depth, _params, _macs, _paper_params in (
    (20, 269_722, 40.55e6, '0.27M'), (32, 464_154, 68.86e6, '0.46M'),
    (44, 658_586, 97.17e6, '0.66M'), (56, 853_018, 125.49e6, '0.85M'),
    (110, 1_727_962, 252.89e6, '1.7M'), (1202, 19_421_274, 2.8292e9, '19.4M')):
  register(f'resnet{_depth}', paper=_RESNET, year=2015, input_shape=_CIFAR, num_classes=10,
           expected_params=_params, expected_macs=_macs, paper_params=_paper_params,
           source='papers.md §11 params; MACs computed', depth=_depth, layout='cifar',
           shortcut='zero_pad', scan_blocks=_depth > 110)(ResNet)

# Pre-activation ResNet v2 (Identity Mappings). ImageNet as timm's resnetv2_* (stride in the 3x3
# of a stage's first unit; timm has no -200: same construction, Table 1's [3, 24, 36, 3]).
for _depth, _params, _macs in ((50, 25_549_352, 4.0892e9), (101, 44_541_480, 7.8014e9),
                               (152, 60_185_128, 11.5136e9), (200, 64_666_152, 15.0075e9)):
  register(f'resnetv2_{_depth}', paper=_PREACT, year=2016, input_shape=_IMAGENET,
           expected_params=_params, expected_macs=_macs,
           source=f'timm resnetv2_{_depth}' if _depth < 200 else 'computed (timm resnetv2 rule)',
           depth=_depth, preactivation=True, stride_in='3x3')(ResNet)
# CIFAR as the authors' resnet-pre-act.lua: d = 9n + 2, stride in the first 1x1, 1x1 projections
# of the pre-activated input, no conv biases.
for _depth, _params, _macs, _paper_params in ((164, 1_703_258, 244.50e6, '1.7M'),
                                              (1001, 10_327_706, 1.4878e9, '10.2M')):
  register(f'preact_resnet{_depth}', paper=_PREACT, year=2016, input_shape=_CIFAR,
           num_classes=10, expected_params=_params, expected_macs=_macs,
           paper_params=_paper_params, source='computed (KaimingHe/resnet-1k-layers)',
           depth=_depth, layout='cifar', block='bottleneck', preactivation=True,
           scan_blocks=_depth > 164)(ResNet)

# ResNeXt: grouped 3x3, stride in the 3x3 (fb.resnet.torch). Paper figures: Table 1 (50) and
# the official README (101 32x4d); none checked for 64x4d.
for _name, _depth, _groups, _params, _macs, _paper_params, _paper_macs in (
    ('resnext50_32x4d', 50, 32, 25_028_904, 4.2305e9, '25.0M', '4.2G'),
    ('resnext101_32x4d', 101, 32, 44_177_704, 7.9700e9, '~44M', '~7.8G'),
    ('resnext101_64x4d', 101, 64, 83_455_272, 15.4603e9, '', '')):
  register(_name, paper=_RESNEXT, year=2016, input_shape=_IMAGENET, expected_params=_params,
           expected_macs=_macs, paper_params=_paper_params, paper_macs=_paper_macs,
           source=('timm ' if _name == 'resnext101_32x4d' else 'torchvision ') + _name,
           depth=_depth, stride_in='3x3', cardinality=_groups, base_width=4)(ResNet)

# Wide ResNets: WRN-28-10 on CIFAR (pre-activation basic blocks, 1x1 projections of the
# pre-activated input) and torchvision's WRN-50-2 (ResNet-50-B with twice as wide 3x3s).
register('wide_resnet28_10', paper=_WRN, year=2016, input_shape=_CIFAR, num_classes=10,
         expected_params=36_479_194, expected_macs=5.2433e9, paper_params='36.5M',
         source='papers.md §14 params; MACs computed', depth=28, layout='cifar',
         preactivation=True, width_factor=10)(ResNet)
register('wide_resnet50_2', paper=_WRN, year=2016, input_shape=_IMAGENET,
         expected_params=68_883_240, expected_macs=11.3980e9, paper_params='68.9M',
         source='torchvision wide_resnet50_2', depth=50, stride_in='3x3', width_factor=2)(ResNet)


# ---- Keras Applications ---------------------------------------------------------------------

# Keras names: conv1_* the stem, conv{2..5}_block{i}_{preact|0|1|2|3}_{conv|bn} the units
# (0: the projection), post_bn the v2 network's last BN, predictions the classifier.
_KERAS_OUTSIDE_UNITS = {'conv1_conv': 'stem_conv1', 'conv1_bn': 'stem_bn1', 'post_bn': 'final_bn',
                        'predictions': 'head'}
_KERAS_UNIT = re.compile(r'conv(\d)_block(\d+)_(preact|\d)_(conv|bn)')


def _keras_layer_path(layer_name: str) -> tuple[str, ...]:
  """Our module path of a Keras ResNet layer, e.g. conv3_block2_1_conv -> stage2_block2/conv1."""
  if layer_name in _KERAS_OUTSIDE_UNITS:
    return (_KERAS_OUTSIDE_UNITS[layer_name],)
  match = _KERAS_UNIT.fullmatch(layer_name)
  if not match:
    raise ConversionError(f'Keras layer {layer_name!r} is not part of a Keras ResNet.')
  stage, unit, part, kind = match.groups()
  leaf = {'preact': 'preact_bn', '0': f'shortcut_{kind}'}.get(part, f'{kind}{part}')
  return (f'stage{int(stage) - 1}_block{unit}', leaf)


@keras_converter('resnet50', 'resnet101', 'resnet152', 'resnetv2_50', 'resnetv2_101',
                 'resnetv2_152')
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict:
  """keras.applications ResNet{50,101,152} (v1, a Caffe port) and ResNet{50,101,152}V2.

  Both give convs biases that ours lack (v1: every conv; v2: the stem, each unit's last 1x1 and
  the projections) and use BN epsilon 1.001e-5. v2 also downsamples in the last unit of a stage
  (its identity shortcut subsampled) and zero-pads its un-activated stem max-pool.
  """
  del keras_model
  epsilons = set()
  for layer_name, layer in weights.layers.items():
    if not layer.get_weights():
      continue
    if layer_name.endswith('_bn'):
      epsilons.add(weights.bn(layer_name, _keras_layer_path(layer_name)))
    else:
      weights.conv(layer_name, _keras_layer_path(layer_name))
  if len(epsilons) != 1:
    raise ConversionError(f'{name}: the Keras BatchNorm epsilons differ: {sorted(epsilons)}.')
  options = dict(conv_bias=True, bn_epsilon=epsilons.pop())
  if name.startswith('resnetv2'):
    options.update(stride_in_last_block=True, stem_pool='zero_pad1')
  return options


# ---- torchvision / timm -----------------------------------------------------------------------

# torch names: conv1/bn1 the stem (timm's deep stem: conv1.{0,3,6} and conv1.{1,4}, then bn1;
# timm's legacy SENet: layer0.{conv,bn}{i}), layer{s}.{b}.{conv,bn}{i} the units, their
# downsample.{k} the projection (timm's ResNet-D: downsample.0 is the avg-pool), se_module.fc1/2
# the SE FCs, fc / last_linear the classifier.
_TORCH_UNIT = re.compile(r'layer(\d)\.(\d+)\.(.+)')
_TORCH_DEEP_STEM = {'conv1.0': 'stem_conv1', 'conv1.1': 'stem_bn1', 'conv1.3': 'stem_conv2',
                    'conv1.4': 'stem_bn2', 'conv1.6': 'stem_conv3', 'bn1': 'stem_bn3'}
_TORCH_UNIT_PARTS = {'se_module.fc1': 'se/reduce', 'se_module.fc2': 'se/expand'}


def _torch_module_path(prefix: str, deep_stem: bool) -> tuple[str, ...]:
  """Our module path of a torch ResNet module, e.g. layer2.0.downsample.1 ->
  stage2_block1/shortcut_bn."""
  if prefix in ('fc', 'last_linear'):
    return ('head',)
  if deep_stem and prefix in _TORCH_DEEP_STEM:
    return (_TORCH_DEEP_STEM[prefix],)
  stem = re.fullmatch(r'(?:layer0\.)?(conv|bn)(\d)', prefix)
  if stem:
    return (f'stem_{stem[1]}{stem[2]}',)
  unit = _TORCH_UNIT.fullmatch(prefix)
  if unit:
    stage, block, part = unit.groups()
    if part.startswith('downsample.'):
      leaf = None  # conv or BN: decided by the tensors
    else:
      leaf = _TORCH_UNIT_PARTS.get(part, part)
      if not re.fullmatch(r'(conv|bn)\d|se/\w+', leaf):
        raise ConversionError(f'torch module {prefix!r} is not part of a residual unit.')
    return (f'stage{stage}_block{int(block) + 1}',) + (tuple(leaf.split('/')) if leaf else ())
  raise ConversionError(f'torch module {prefix!r} is not part of a torchvision/timm ResNet.')


def torch_resnet(weights: TorchWeights) -> None:
  """Maps every module of a torchvision/timm ResNet-family state dict (ResNet, ResNeXt, WRN,
  ResNet-D, legacy SENets) onto ResNet's module tree."""
  deep_stem = weights.has('conv1.0.weight')
  prefixes = list(dict.fromkeys(n.rsplit('.', 1)[0] for n in weights.names()))
  for prefix in prefixes:
    path = _torch_module_path(prefix, deep_stem)
    if path == ('head',):
      weights.head(prefix, path)
    elif weights.has(f'{prefix}.running_mean'):
      if '.downsample.' in prefix:
        path += ('shortcut_bn',)
      weights.bn(prefix, path)
    else:
      if '.downsample.' in prefix:
        path += ('shortcut_conv',)
      weights.conv(prefix, path)


@torch_converter('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnet50b',
                 'resnext50_32x4d', 'resnext101_64x4d', 'wide_resnet50_2', source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict:
  """torchvision.models.resnet*/resnext*/wide_resnet50_2: the "v1.5" bottleneck (stride in the
  3x3: our resnet50-152 take stride_in='3x3'); BN epsilon 1e-5 and the -inf padded stem pool
  are our defaults."""
  del name
  torch_resnet(weights)
  return {'stride_in': '3x3'}


@torch_converter('resnet50d', source='timm')
def _from_timm(weights: TorchWeights, name: str) -> dict:
  """timm resnet50d: deep stem, avg-pool projections (ceil mode, padding excluded), stride in
  the 3x3 -- the registry's resnet50d as it is."""
  del name
  torch_resnet(weights)
  return {}
