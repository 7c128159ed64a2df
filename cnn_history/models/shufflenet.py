"""ShuffleNet v1 and v2.

v1 — Zhang, Zhou, Lin & Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network
for Mobile Devices", CVPR 2018 (arXiv 1707.01083). What this file encodes (papers.md §21):
  network  Table 1: 3x3/2 conv 24 - BN - ReLU, 3x3/2 max-pool, Stages 2-4 of 4/8/4 units (the
           first of each stride 2) with the output channels of V1_STAGE_CHANNELS for g groups,
           global pool, FC; 224x224 input
  unit     Fig. 2: 1x1 group conv (out/4) - BN - ReLU - channel shuffle - 3x3 depthwise (stride)
           - BN (no ReLU) - 1x1 group conv - BN; stride 1: add the input, ReLU; stride 2: concat
           a 3x3/2 average-pooled input (the branch makes out - in channels), ReLU. The first 1x1
           of Stage2 is not grouped (24 input channels, §3.3)
  No reference implementation ships one; the counts are our arithmetic (papers.md §21, checked
  in tests/models/test_shufflenet.py). Paddings are symmetric (Megvii's PyTorch release). The
  shuffle is the paper's (reshape to (g, C/g), transpose, flatten); Megvii's release reshapes to
  (C/g, g), the inverse permutation, which matters only when porting its weights.
Switches (v1):
  groups           g of the 1x1 group convs: 1, 2, 3, 4, 8 (Table 2's comparison)
  scale_factor     s of "ShuffleNet s x" (Tables 2 and 5): stage channels times s, in {0.25,
                   0.5, 1, 1.5, 2}; where s x Table 1 does not split into g groups (e.g. g=2 at
                   0.5) the paper leaves the channels undefined and this is an error
  channel_shuffle  False: the same group convs without the shuffle (Table 3's ablation)
  stem_channels    Table 1's conv1 (24), not scaled with s here (papers.md's counts). Megvii's
                   released models change it at 0.5x (12 for g=3, 16 for g=8) and 2x (48, which
                   gives Table 5's 524 MFLOPs for g=3)

v2 — Ma, Zhang, Zheng & Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018 (arXiv 1807.11164). What this file encodes (papers.md §22):
  network  Table 5: 3x3/2 conv 24, 3x3/2 max-pool, Stages 2-4 of 4/8/4 units, 1x1 conv5, global
           pool, FC; channels V2_CHANNELS by width (0.5x, 1x, 1.5x, 2x)
  unit     Fig. 3(c): split the channels in half; one half passes, the other goes 1x1 - BN - ReLU
           - 3x3 depthwise - BN - 1x1 - BN - ReLU; concat, channel shuffle (2 groups).
           Fig. 3(d), stride 2: no split; both branches see the input (left: 3x3/2 depthwise - BN
           - 1x1 - BN - ReLU), so the channels double
  Paddings and layer layout follow torchvision's shufflenet_v2_x*, whose counts these match.

Small inputs (not the papers; the default is the papers'): stem='cifar' makes conv1 3x3/1
without the max-pool, so stage 2 starts at 32x32 for a 32x32 image (at /4 it would start at 8x8).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register

STAGE_REPEATS: tuple[int, ...] = (4, 8, 4)  # units in Stages 2-4, the first strided (both papers)
STEM_CHANNELS = 24                          # conv1 of both papers' tables

# v1, Table 1: output channels of Stages 2-4 at 1x, by the number of groups g.
V1_STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
V1_SCALE_FACTORS = (0.25, 0.5, 1.0, 1.5, 2.0)  # "ShuffleNet s x" (Tables 2 and 5)
V1_BOTTLENECK_RATIO = 4  # bottleneck channels = output channels / 4 (§3.2)

# v2, Table 5: output channels of Stages 2-4 and conv5, by width.
V2_CHANNELS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def _stem(x: jax.Array, channels: int, bn: dict[str, Any], train: bool,
          stem: str = 'imagenet') -> jax.Array:
  """conv1 3x3/2 - BN - ReLU and the 3x3/2 max-pool of both papers: 224 -> 56. stem='cifar'
  (32x32 inputs, not the papers): conv1 3x3/1 and no pool, so stage 2 starts at 32x32."""
  if layers.stem_stride('shufflenet', stem) == 1:
    return layers.ConvBN(channels, 3, 1, 1, name='stem', **bn)(x, train)
  x = layers.ConvBN(channels, 3, 2, 1, name='stem', **bn)(x, train)
  return layers.max_pool(x, 3, 2, 1)


def _head(module: nn.Module, x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
  features = layers.global_avg_pool(x)
  module.sow('intermediates', 'features', features)
  return nn.Dense(num_classes, dtype=dtype, name='classifier')(features).astype(jnp.float32)


# ---- ShuffleNet v1 --------------------------------------------------------------------------

def v1_stage_channels(groups: int, scale_factor: float,
                      stem_channels: int = STEM_CHANNELS) -> tuple[int, int, int]:
  """Stage 2-4 output channels of ShuffleNet s x with g groups, or a ValueError where the paper's
  channels do not exist (a bottleneck or a strided branch that does not split into g groups)."""
  if groups not in V1_STAGE_CHANNELS:
    raise ValueError(f'ShuffleNet v1: groups must be one of {tuple(V1_STAGE_CHANNELS)} '
                     f'(Table 1), got {groups}.')
  if scale_factor not in V1_SCALE_FACTORS:
    raise ValueError(f'ShuffleNet v1: scale_factor must be one of {V1_SCALE_FACTORS} '
                     f'(Tables 2 and 5), got {scale_factor}.')
  channels = _v1_scaled(groups, scale_factor)
  for c_in, c_out in zip((stem_channels,) + channels[:-1], channels):
    if not _v1_unit_splits(c_in, c_out, groups):
      valid = tuple(s for s in V1_SCALE_FACTORS
                    if all(_v1_unit_splits(a, b, groups) for a, b in
                           zip((stem_channels,) + _v1_scaled(groups, s)[:-1],
                               _v1_scaled(groups, s))))
      raise ValueError(
          f'ShuffleNet v1: scale_factor={scale_factor} with groups={groups} (stem_channels='
          f'{stem_channels}) gives a stage of {c_in} -> {c_out} channels whose bottleneck '
          f'({c_out / V1_BOTTLENECK_RATIO:g}) or strided branch ({c_out - c_in}) does not split '
          f'into {groups} groups; the paper does not say how it rounded them. Valid scale '
          f'factors for g={groups}: {valid}.')
  return channels


def _v1_scaled(groups: int, scale_factor: float) -> tuple[int, ...]:
  return tuple(int(c * scale_factor) for c in V1_STAGE_CHANNELS[groups])


def _v1_unit_splits(c_in: int, c_out: int, groups: int) -> bool:
  """Whether a stage c_in -> c_out has whole bottleneck and branch channels per group."""
  bottleneck, rest = divmod(c_out, V1_BOTTLENECK_RATIO)
  return not rest and not bottleneck % groups and not (c_out - c_in) % groups and c_out > c_in


class ShuffleUnitV1(nn.Module):
  """Fig. 2(b) (stride 1, residual add) and 2(c) (stride 2, concat with an avg-pooled input)."""
  features: int                  # output channels of the unit
  groups: int
  strides: int
  group_first_conv: bool         # False in Stage2's first unit
  channel_shuffle: bool
  bn: dict[str, Any]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c_in = x.shape[-1]
    bottleneck = self.features // V1_BOTTLENECK_RATIO
    branch_out = self.features - c_in if self.strides == 2 else self.features
    y = layers.ConvBN(bottleneck, 1, 1, 'VALID', groups=self.groups if self.group_first_conv else 1,
                      name='group_conv1', **self.bn)(x, train)
    if self.channel_shuffle and self.groups > 1:
      y = layers.channel_shuffle(y, self.groups)
    y = layers.ConvBN(bottleneck, 3, self.strides, 1, groups=bottleneck, act=None,
                      name='depthwise', **self.bn)(y, train)
    y = layers.ConvBN(branch_out, 1, 1, 'VALID', groups=self.groups, act=None,
                      name='group_conv2', **self.bn)(y, train)
    if self.strides == 2:
      return nn.relu(jnp.concatenate([layers.avg_pool(x, 3, 2, 1), y], axis=-1))
    return nn.relu(x + y)


def _register_v1(groups: int, params: int, macs: int, paper_macs: str):
  return register(f'shufflenet_v1_g{groups}', paper='Zhang et al., CVPR 2018', year=2018,
                  input_shape=(224, 224, 3), expected_params=params, expected_macs=macs,
                  source='arithmetic from Table 1 (papers.md §21; test_shufflenet.py)',
                  paper_macs=paper_macs, groups=groups)


@_register_v1(1, 1_531_936, 143_078_976, '143M')
@_register_v1(2, 1_733_848, 140_836_512, '140M')
@_register_v1(3, 1_865_728, 137_460_672, '137M')
@_register_v1(4, 1_968_344, 134_339_776, '133M')
@_register_v1(8, 2_434_768, 138_365_952, '137M')
class ShuffleNetV1(nn.Module):
  """ShuffleNet v1 (Table 1): group convs and channel shuffles; see the module docstring."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  groups: int = 3                  # g in {1, 2, 3, 4, 8}
  scale_factor: float = 1.0        # s in {0.25, 0.5, 1, 1.5, 2}
  channel_shuffle: bool = True     # False: Table 3's no-shuffle ablation
  stem_channels: int = STEM_CHANNELS  # conv1 (not scaled; Megvii's 2x uses 48)
  bn_momentum: float = 0.9         # PyTorch momentum 0.1
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  stem: str = 'imagenet'           # 'imagenet': conv1 3x3/2 + max-pool; 'cifar': conv1 3x3/1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    channels = v1_stage_channels(self.groups, self.scale_factor, self.stem_channels)
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    x = _stem(x.astype(self.dtype), self.stem_channels, bn, train, self.stem)
    for stage, (features, repeats) in enumerate(zip(channels, STAGE_REPEATS), start=2):
      for unit in range(1, repeats + 1):
        x = ShuffleUnitV1(features, self.groups, 2 if unit == 1 else 1,
                          group_first_conv=(stage, unit) != (2, 1),
                          channel_shuffle=self.channel_shuffle, bn=bn,
                          name=f'stage{stage}_unit{unit}')(x, train)
    return _head(self, x, self.num_classes, self.dtype)


# ---- ShuffleNet v2 --------------------------------------------------------------------------

class ShuffleUnitV2(nn.Module):
  """Fig. 3(c) (stride 1: channel split) and 3(d) (stride 2: two branches), concat, shuffle."""
  features: int
  strides: int
  bn: dict[str, Any]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    half = self.features // 2
    if self.strides == 1:
      if x.shape[-1] != self.features:
        raise ValueError(f'ShuffleNet v2: a stride-1 unit keeps its {self.features} channels; '
                         f'got {x.shape[-1]} in.')
      passed, x = jnp.split(x, 2, axis=-1)
    else:
      passed = layers.ConvBN(x.shape[-1], 3, self.strides, 1, groups=x.shape[-1], act=None,
                             name='left_depthwise', **self.bn)(x, train)
      passed = layers.ConvBN(half, 1, 1, 'VALID', name='left_conv', **self.bn)(passed, train)
    y = layers.ConvBN(half, 1, 1, 'VALID', name='right_conv1', **self.bn)(x, train)
    y = layers.ConvBN(half, 3, self.strides, 1, groups=half, act=None, name='right_depthwise',
                      **self.bn)(y, train)
    y = layers.ConvBN(half, 1, 1, 'VALID', name='right_conv2', **self.bn)(y, train)
    return layers.channel_shuffle(jnp.concatenate([passed, y], axis=-1), 2)


def _register_v2(width: float, params: int, macs: int, paper_params: str, paper_macs: str):
  suffix = str(width).replace('.', '_')
  return register(f'shufflenet_v2_x{suffix}', paper='Ma et al., ECCV 2018', year=2018,
                  input_shape=(224, 224, 3), expected_params=params, expected_macs=macs,
                  source=f'torchvision shufflenet_v2_x{suffix}', paper_params=paper_params,
                  paper_macs=paper_macs, width_multiplier=width)


@_register_v2(0.5, 1_366_792, 40_476_448, '1.4M', '41M')
@_register_v2(1.0, 2_278_604, 144_907_992, '2.3M', '146M')
@_register_v2(1.5, 3_503_624, 295_759_392, '3.5M', '299M')
@_register_v2(2.0, 7_393_996, 583_253_464, '7.4M', '591M')
class ShuffleNetV2(nn.Module):
  """ShuffleNet v2 (Table 5): channel split, concat, shuffle; see the module docstring."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  width_multiplier: float = 1.0    # 0.5, 1.0, 1.5 or 2.0 (Table 5's columns)
  bn_momentum: float = 0.9         # PyTorch momentum 0.1
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  stem: str = 'imagenet'           # 'imagenet': conv1 3x3/2 + max-pool; 'cifar': conv1 3x3/1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.width_multiplier not in V2_CHANNELS:
      raise ValueError(f'ShuffleNet v2: width_multiplier must be one of {tuple(V2_CHANNELS)} '
                       f'(Table 5), got {self.width_multiplier}.')
    *stages, conv5 = V2_CHANNELS[self.width_multiplier]
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    x = _stem(x.astype(self.dtype), STEM_CHANNELS, bn, train, self.stem)
    for stage, (features, repeats) in enumerate(zip(stages, STAGE_REPEATS), start=2):
      for unit in range(1, repeats + 1):
        x = ShuffleUnitV2(features, 2 if unit == 1 else 1, bn,
                          name=f'stage{stage}_unit{unit}')(x, train)
    x = layers.ConvBN(conv5, 1, 1, 'VALID', name='conv5', **bn)(x, train)
    return _head(self, x, self.num_classes, self.dtype)


@torch_converter('shufflenet_v2_x0_5', 'shufflenet_v2_x1_0', 'shufflenet_v2_x1_5',
                 'shufflenet_v2_x2_0', source='torchvision')
def _v2_from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.shufflenet_v2_*: conv1, stage{2,3,4}.{u}.branch1 (our left branch:
  depthwise .0/.1, 1x1 .2/.3) and branch2 (our right: .0/.1, depthwise .3/.4, .5/.6), conv5, fc.
  Its concat order (branch1, branch2) and shuffle are ours."""
  del name
  weights.conv_bn('conv1.0', 'conv1.1', ('stem',))
  for stage, repeats in enumerate(STAGE_REPEATS, start=2):
    for unit in range(repeats):
      theirs, ours = f'stage{stage}.{unit}', f'stage{stage}_unit{unit + 1}'
      if weights.has(f'{theirs}.branch1.0.weight'):
        weights.conv_bn(f'{theirs}.branch1.0', f'{theirs}.branch1.1', (ours, 'left_depthwise'))
        weights.conv_bn(f'{theirs}.branch1.2', f'{theirs}.branch1.3', (ours, 'left_conv'))
      for part, (conv, bn) in zip(('right_conv1', 'right_depthwise', 'right_conv2'),
                                  ((0, 1), (3, 4), (5, 6))):
        weights.conv_bn(f'{theirs}.branch2.{conv}', f'{theirs}.branch2.{bn}', (ours, part))
  weights.conv_bn('conv5.0', 'conv5.1', ('conv5',))
  weights.head('fc', ('classifier',))
  return {}
