"""Xception — François Chollet, "Xception: Deep Learning with Depthwise Separable
Convolutions", CVPR 2017 (arXiv 1610.02357).

What this file encodes (papers.md §16; Fig. 5 and the author's Keras implementation):
  entry flow   3x3/2 conv 32 and 3x3 conv 64 (VALID, each BN-ReLU), then three modules of two
               separable convs (128, 256, 728) closed by a 3x3/2 max-pool, each added to a 1x1/2
               conv (+ BN) shortcut of the module input
  middle flow  8 modules of three ReLU - separable conv 728 - BN, each with an identity shortcut
  exit flow    one module (separable 728, 1024; max-pool; 1x1/2 conv shortcut), separable 1536
               and 2048 (each BN-ReLU), global average pool, dropout 0.5 (the ImageNet runs'
               regularisation), FC
  36 convolutions in 14 modules; 22,855,952 parameters; 299x299 input in [-1, 1].
A separable conv is a depthwise 3x3 then a pointwise 1x1 with no nonlinearity between them (the
paper's Fig. 10 finds that best) and no biases; BN follows every conv. Modules start with ReLU,
except the first, whose input is already ReLU'd; the shortcut sees the module input before that
ReLU. Paddings are TF 'SAME' (asymmetric for stride 2 on even inputs), BN epsilon 1e-3 (Keras).

Switch:
  separable   True: depthwise separable convs (Xception). False: every separable conv becomes a
              full 3x3 conv with the same input and output channels (+ BN): the "regular
              convolution" end of the continuum of §1.3 — the same 36-layer residual net without
              the Xception hypothesis (the paper does not train it): 179,071,688 parameters and
              68.8G multiply-adds at 299 (7.8x and 8.2x Xception's).

Port: pool_padding='symmetric' pads the modules' 3x3/2 max-pools by 1 on each side (PyTorch, as
timm's legacy_xception), which differs from TF 'SAME' on even maps; its importer sets it.

Small inputs (not the paper; defaults are the paper's): stem='cifar' makes the two stem convs
3x3/1 'SAME' (a 32x32 image reaches the exit flow at 4x4 instead of 1x1 from 19x19 at 299);
width_multiplier scales every conv's filters; middle_repeats sets the middle flow's 8 modules.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register

# Fig. 5 as data. Stem: (channels, stride) of the entry flow's two 3x3 VALID convs.
STEM: tuple[tuple[int, int], ...] = ((32, 2), (64, 1))
# Modules: (flow, separable conv widths, repeats, downsample). downsample: a 3x3/2 max-pool ends
# the module and a 1x1/2 conv + BN is the shortcut; otherwise the shortcut is the identity.
MODULES: tuple[tuple[str, tuple[int, ...], int, bool], ...] = (
    ('entry', (128, 128), 1, True),
    ('entry', (256, 256), 1, True),
    ('entry', (728, 728), 1, True),
    ('middle', (728, 728, 728), 8, False),
    ('exit', (728, 1024), 1, True),
)
# The exit flow's last separable convs, each followed by BN - ReLU.
HEAD: tuple[int, ...] = (1536, 2048)


def module_names(middle_repeats: int = 8) -> list[tuple[str, tuple[int, ...], bool]]:
  """(name, widths, downsample) of every module in network order: entry_module1..3,
  middle_module1..8 (`middle_repeats` of them), exit_module1."""
  out, count = [], {}
  for flow, widths, repeats, downsample in MODULES:
    for _ in range(middle_repeats if flow == 'middle' else repeats):
      count[flow] = count.get(flow, 0) + 1
      out.append((f'{flow}_module{count[flow]}', widths, downsample))
  return out


def _conv(features: int, separable: bool, bn: dict[str, Any], name: str) -> nn.Module:
  """Xception's 3x3 'SAME' conv + BN, no activation: separable, or full for the ablation."""
  if separable:
    return layers.SeparableConv(features, 3, 1, 'SAME', act=None, name=name, **bn)
  return layers.ConvBN(features, 3, 1, 'SAME', act=None, name=name, **bn)


class XceptionModule(nn.Module):
  """[ReLU] - conv - BN per width, [3x3/2 max-pool], + shortcut (1x1/2 conv + BN, or identity)."""
  widths: tuple[int, ...]
  downsample: bool
  relu_first: bool                 # False for the first module (its input is post-ReLU)
  separable: bool
  bn: dict[str, Any]
  pool_padding: Any = 'SAME'       # of the 3x3/2 max-pool: 'SAME' (TF) | 1 (PyTorch ports)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    shortcut = x
    if self.downsample:
      shortcut = layers.ConvBN(self.widths[-1], 1, 2, 'SAME', act=None, name='shortcut',
                               **self.bn)(x, train)
    for i, width in enumerate(self.widths, start=1):
      if i > 1 or self.relu_first:
        x = nn.relu(x)
      x = _conv(width, self.separable, self.bn, f'conv{i}')(x, train)
    if self.downsample:
      x = layers.max_pool(x, 3, 2, self.pool_padding)
    return x + shortcut


@register('xception', paper='Chollet, CVPR 2017', year=2017, input_shape=(299, 299, 3),
          expected_params=22_855_952, expected_macs=8_357_403_496,
          source='keras Xception trainable = timm legacy_xception', paper_params='22,855,952')
class Xception(nn.Module):
  """Xception: entry, middle and exit flows of residual separable-conv modules (Fig. 5)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  separable: bool = True           # False: full 3x3 convs in place of separable ones (ablation)
  dropout_rate: float = 0.5        # before the logistic regression (ImageNet runs)
  bn_momentum: float = 0.99        # Keras default
  bn_epsilon: float = 1e-3         # Keras default
  bn_batch_span: int | None = None
  stem: str = 'imagenet'           # 'imagenet': entry conv1 3x3/2 VALID; 'cifar': 3x3/1 and
                                   # 'SAME' stem convs for 32x32 inputs
  width_multiplier: float = 1.0    # every conv's filters x this (small-input variants)
  middle_repeats: int = 8          # modules of the middle flow
  pool_padding: str = 'same'       # the modules' 3x3/2 max-pools: 'same' (TF 'SAME', Keras) |
                                   # 'symmetric' (pad 1 each side: timm's legacy_xception; the
                                   # windows differ on even maps)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.middle_repeats < 0:
      raise ValueError(f'xception: middle_repeats must be >= 0, got {self.middle_repeats}.')
    if self.pool_padding not in ('same', 'symmetric'):
      raise ValueError(f"xception: pool_padding must be 'same' or 'symmetric', got "
                       f'{self.pool_padding!r}.')
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    width = functools.partial(layers.scale_width, multiplier=self.width_multiplier)
    small = layers.stem_stride('xception', self.stem) == 1
    x = x.astype(self.dtype)
    for i, (channels, stride) in enumerate(STEM, start=1):
      x = layers.ConvBN(width(channels), 3, 1 if small else stride, 'SAME' if small else 'VALID',
                        name=f'entry_conv{i}', **bn)(x, train)
    for i, (name, widths, downsample) in enumerate(module_names(self.middle_repeats)):
      x = XceptionModule(tuple(map(width, widths)), downsample, i > 0, self.separable, bn,
                         'SAME' if self.pool_padding == 'same' else 1, name=name)(x, train)
    for i, channels in enumerate(HEAD, start=1):
      x = nn.relu(_conv(width(channels), self.separable, bn, f'exit_conv{i}')(x, train))
    features = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', features)
    features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(features)
    return logits.astype(jnp.float32)


@keras_converter('xception')
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """tf.keras.applications.Xception (include_top=True). Keras names the modules block2..block13
  and the head block14; the four 1x1 shortcut convs and their BNs are unnamed (conv2d, ...,
  batch_normalization, ...), so they are taken in network order."""
  del name
  unnamed = [l.name for l in keras_model.layers if not l.name.startswith('block')]
  shortcut_convs = [n for n in unnamed if type(weights.layer(n)).__name__ == 'Conv2D']
  shortcut_bns = [n for n in unnamed if type(weights.layer(n)).__name__ == 'BatchNormalization']
  epsilons = set()

  def conv_bn(keras: str, ours: tuple[str, ...], separable: bool = True):
    if separable:
      weights.separable(keras, ours + ('depthwise', 'conv'), ours + ('pointwise', 'conv'))
      epsilons.add(weights.bn(f'{keras}_bn', ours + ('pointwise', 'bn')))
    else:
      weights.conv(keras, ours + ('conv',))
      epsilons.add(weights.bn(f'{keras}_bn', ours + ('bn',)))

  for i in range(1, len(STEM) + 1):
    conv_bn(f'block1_conv{i}', (f'entry_conv{i}',), separable=False)
  downsampling = [(n, w) for n, w, down in module_names() if down]
  if len(shortcut_convs) != len(downsampling) or len(shortcut_bns) != len(downsampling):
    raise ConversionError(f'Expected {len(downsampling)} unnamed shortcut convs and BNs in the '
                          f'Keras Xception, found {shortcut_convs} and {shortcut_bns}.')
  for (module, _), conv, bn in zip(downsampling, shortcut_convs, shortcut_bns):
    weights.conv(conv, (module, 'shortcut', 'conv'))
    epsilons.add(weights.bn(bn, (module, 'shortcut', 'bn')))
  for block, (module, widths, _) in enumerate(module_names(), start=2):
    for i in range(1, len(widths) + 1):
      conv_bn(f'block{block}_sepconv{i}', (module, f'conv{i}'))
  head_block = len(module_names()) + 2
  for i in range(1, len(HEAD) + 1):
    conv_bn(f'block{head_block}_sepconv{i}', (f'exit_conv{i}',))
  weights.dense('predictions', ('classifier',))
  if len(epsilons) != 1:
    raise ConversionError(f'Keras Xception mixes BatchNorm epsilons {sorted(epsilons)}.')
  return {'bn_epsilon': epsilons.pop()}


@torch_converter('xception', source='timm')
def _from_timm(weights: TorchWeights, name: str) -> dict[str, Any]:
  """timm legacy_xception (Cadene's port of the Keras weights): conv1/bn1, conv2/bn2, block1-12
  (rep.{k}: a SeparableConv2d -- conv1 depthwise, pointwise -- then its BN at k + 1; skip and
  skipbn the shortcut), conv3/bn3 and conv4/bn4 (separable), fc. PyTorch's BN epsilon 1e-5 and
  max-pools padded 1 on each side."""
  del name

  def separable(prefix: str, bn: str, ours: tuple[str, ...]) -> None:
    weights.conv(f'{prefix}.conv1', ours + ('depthwise', 'conv'))
    weights.conv(f'{prefix}.pointwise', ours + ('pointwise', 'conv'))
    weights.bn(bn, ours + ('pointwise', 'bn'))

  for i in range(1, len(STEM) + 1):
    weights.conv_bn(f'conv{i}', f'bn{i}', (f'entry_conv{i}',))
  for b, (ours, _, downsample) in enumerate(module_names(), start=1):
    if downsample:
      weights.conv_bn(f'block{b}.skip', f'block{b}.skipbn', (ours, 'shortcut'))
    reps = sorted({int(n.split('.')[2]) for n in weights.names(f'block{b}.rep.')
                   if n.endswith('.conv1.weight')})
    for i, k in enumerate(reps, start=1):
      separable(f'block{b}.rep.{k}', f'block{b}.rep.{k + 1}', (ours, f'conv{i}'))
  for i in range(1, len(HEAD) + 1):
    separable(f'conv{i + 2}', f'bn{i + 2}', (f'exit_conv{i}',))
  weights.head('fc', ('classifier',))
  return {'bn_epsilon': 1e-5, 'pool_padding': 'symmetric'}
