"""MnasNet — Mingxing Tan, Bo Chen, Ruoming Pang, Vijay Vasudevan, Mark Sandler, Andrew Howard,
Quoc V. Le, "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019
(arXiv 1807.11626, 2018).

What this file encodes (papers.md §24):
  A1   Figure 7(a), the final paper's model (`A1_BODY`): a 3x3 stride-2 conv of 32 channels,
       SepConv (3x3 depthwise -> BN -> ReLU -> linear 1x1 to 16 + BN), six stages of MBConv
       blocks (`layers.InvertedResidual`: 1x1 expansion -> k x k depthwise -> [SE] -> linear
       1x1 projection, ReLU, identity shortcut when stride 1 and c_in = c_out) of which three
       carry squeeze-and-excitation, a 1x1 conv to 1280, global pooling, dropout, FC.
       SE squeeze width int(0.25 x the block's INPUT channels) with ReLU and a sigmoid gate
       (the TF reference mnasnet_model.py; timm semnasnet_100: 3,887,038 parameters).
  B1   the no-SE model of arXiv v1 (`B1_BODY`; torchvision mnasnet1_0 = timm mnasnet_100:
       4,383,312 parameters).
  The SepConv is an MBConv with expansion 1 (no expansion conv), so each body is one table of
  (t, k, c, n, s, SE) rows, t = 1 in the first.
  BN   decay 0.99 (the paper) and TF's epsilon 1e-3. torchvision's mnasnet uses epsilon 1e-5
       and PyTorch momentum 0.0003 (bn_momentum=0.9997 here).

Switches (module fields):
  variant          'a1' | 'b1' (the registry names set it).
  depth_multiplier the paper's channel multiplier (§5.1, README: 0.35 ... 1.4): every layer
                   make_divisible(c * m, 8) except the 1280-wide last conv, as the TF
                   reference and torchvision keep it.
  dropout_rate     before the classifier (0.2, the TF reference and torchvision).
  padding          'same' (TF, the paper's code and its TF-ported weights) | 'symmetric'
                   (torchvision, timm's non-tf_ models).

Small inputs (not the paper; the default is the paper's): stem='cifar' gives the stem conv
stride 1, so a 32x32 image ends at 2x2 instead of 1x1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import get_spec, register


class Row(NamedTuple):
  """A stage of Figure 7: `repeats` blocks; the first has the stride."""
  expand_ratio: int  # t of MBConv-t; 1: SepConv
  kernel_size: int
  channels: int
  repeats: int
  stride: int
  se: bool


STEM_CHANNELS = 32   # Conv 3x3, stride 2 (224x224x3)
HEAD_CHANNELS = 1280  # Conv 1x1 before Pooling, FC (not scaled by the depth multiplier)
SE_RATIO = 0.25      # of the block's input channels
CHANNEL_DIVISOR = 8

A1_BODY: tuple[Row, ...] = (  # Figure 7(a)
    # t  k    c  n  s  SE        (input)
    Row(1, 3, 16, 1, 1, False),   # SepConv (k3x3)          112x112x32
    Row(6, 3, 24, 2, 2, False),   # MBConv6 (k3x3)          112x112x16
    Row(3, 5, 40, 3, 2, True),    # MBConv3 (k5x5), SE      56x56x24
    Row(6, 3, 80, 4, 2, False),   # MBConv6 (k3x3)          28x28x40
    Row(6, 3, 112, 2, 1, True),   # MBConv6 (k3x3), SE      14x14x80
    Row(6, 5, 160, 3, 2, True),   # MBConv6 (k5x5), SE      14x14x112
    Row(6, 3, 320, 1, 1, False),  # MBConv6 (k3x3)          7x7x160
)
B1_BODY: tuple[Row, ...] = (  # arXiv v1's MnasNet (papers.md §24)
    Row(1, 3, 16, 1, 1, False),   # SepConv (k3x3)          112x112x32
    Row(3, 3, 24, 3, 2, False),   # MBConv3 (k3x3)          112x112x16
    Row(3, 5, 40, 3, 2, False),   # MBConv3 (k5x5)          56x56x24
    Row(6, 5, 80, 3, 2, False),   # MBConv6 (k5x5)          28x28x40
    Row(6, 3, 96, 2, 1, False),   # MBConv6 (k3x3)          14x14x80
    Row(6, 5, 192, 4, 2, False),  # MBConv6 (k5x5)          14x14x96
    Row(6, 3, 320, 1, 1, False),  # MBConv6 (k3x3)          7x7x192
)
BODIES = {'a1': A1_BODY, 'b1': B1_BODY}
PADDINGS = ('same', 'symmetric')


class Block(NamedTuple):
  """One block of a MnasNet at some depth multiplier, as the module builds it."""
  stage: int        # 2 ... 8: Figure 7's stages after the stem conv
  index: int        # 1 ... repeats
  in_channels: int
  out_channels: int
  expand_ratio: int
  kernel_size: int
  stride: int
  se_channels: int  # 0: no SE

  @property
  def name(self) -> str:
    return f'stage{self.stage}_block{self.index}'


def scaled_channels(channels: int, depth_multiplier: float) -> int:
  return layers.make_divisible(channels * depth_multiplier, CHANNEL_DIVISOR)


def blocks(variant: str = 'a1', depth_multiplier: float = 1.0) -> list[Block]:
  """Every block of MnasNet-`variant` in order, named stage{2..8}_block{j}."""
  out = []
  in_channels = scaled_channels(STEM_CHANNELS, depth_multiplier)
  for stage, row in enumerate(BODIES[variant], start=2):
    channels = scaled_channels(row.channels, depth_multiplier)
    for j in range(row.repeats):
      se = max(1, int(in_channels * SE_RATIO)) if row.se else 0
      out.append(Block(stage, j + 1, in_channels, channels, row.expand_ratio, row.kernel_size,
                       row.stride if j == 0 else 1, se))
      in_channels = channels
  return out


_MNASNET = dict(paper='Tan et al., CVPR 2019 (arXiv 1807.11626)', year=2018,
                input_shape=(224, 224, 3))


@register('mnasnet_a1', expected_params=3_887_038, expected_macs=311.6e6,
          source='timm semnasnet_100', paper_params='3.9M', paper_macs='312M', variant='a1',
          **_MNASNET)
@register('mnasnet_b1', expected_params=4_383_312, expected_macs=314.4e6,
          source='torchvision mnasnet1_0 = timm mnasnet_100', paper_params='4.2M',
          paper_macs='317M', variant='b1', **_MNASNET)
class MnasNet(nn.Module):
  """MnasNet-A1 or -B1 at any depth multiplier (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  variant: str = 'a1'            # 'a1' (Figure 7(a), with SE) | 'b1' (arXiv v1, no SE)
  depth_multiplier: float = 1.0  # make_divisible(c * m, 8) everywhere but the 1280 conv
  dropout_rate: float = 0.2      # before the classifier
  padding: str = 'same'          # 'same' (TF) | 'symmetric' (torchvision, timm)
  bn_momentum: float = 0.99      # the paper's BN momentum (TF decay)
  bn_epsilon: float = 1e-3       # TF; torchvision 1e-5
  bn_batch_span: int | None = None
  stem: str = 'imagenet'         # 'imagenet': stem conv stride 2; 'cifar': stride 1 (32x32 in)

  def _check(self) -> None:
    if self.variant not in BODIES:
      raise ValueError(f"mnasnet: variant must be 'a1' or 'b1', got {self.variant!r}.")
    if self.padding not in PADDINGS:
      raise ValueError(f"mnasnet: padding must be 'same' (TF) or 'symmetric' (PyTorch), "
                       f'got {self.padding!r}.')
    if not self.depth_multiplier > 0:
      raise ValueError(f'mnasnet: depth_multiplier must be positive, got '
                       f'{self.depth_multiplier}.')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'mnasnet: dropout_rate must be in [0, 1), got {self.dropout_rate}.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check()
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    tf_same = self.padding == 'same'
    x = layers.ConvBN(scaled_channels(STEM_CHANNELS, self.depth_multiplier), 3,
                      layers.stem_stride('mnasnet', self.stem),
                      'SAME' if tf_same else 1, act='relu', name='stem', **bn)(x, train)
    for block in blocks(self.variant, self.depth_multiplier):
      x = layers.InvertedResidual(
          block.out_channels, block.expand_ratio, block.kernel_size, block.stride, act='relu',
          se_channels=block.se_channels, se_act='relu', se_gate='sigmoid',
          padding='SAME' if tf_same else block.kernel_size // 2, name=block.name,
          **bn)(x, train)
    x = layers.ConvBN(HEAD_CHANNELS, 1, 1, 'VALID', act='relu', name='head', **bn)(x, train)
    features = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', features)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier',
                      kernel_init=nn.initializers.normal(0.01))(x)
    return logits.astype(jnp.float32)


@torch_converter('mnasnet_b1', source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.mnasnet1_0: one `layers` Sequential -- stem conv/BN at 0/1, the SepConv
  at 3/4 (depthwise) and 6/7 (1x1), the MBConv stages at 8-13 ({stage}.{j}.layers: expansion
  0/1, depthwise 3/4, projection 6/7), the 1280 conv at 14/15 -- and classifier.1. Symmetric
  padding and BN epsilon 1e-5."""
  weights.conv_bn('layers.0', 'layers.1', ('stem',))
  for block in blocks(get_spec(name).kwargs['variant']):
    if block.stage == 2:
      weights.conv_bn('layers.3', 'layers.4', (block.name, 'depthwise'))
      weights.conv_bn('layers.6', 'layers.7', (block.name, 'project'))
      continue
    theirs = f'layers.{block.stage + 5}.{block.index - 1}.layers'
    for part, (conv, bn) in zip(('expand', 'depthwise', 'project'), ((0, 1), (3, 4), (6, 7))):
      weights.conv_bn(f'{theirs}.{conv}', f'{theirs}.{bn}', (block.name, part))
  weights.conv_bn('layers.14', 'layers.15', ('head',))
  weights.head('classifier.1', ('classifier',))
  return {'padding': 'symmetric', 'bn_epsilon': 1e-5, 'bn_momentum': 0.9997}
