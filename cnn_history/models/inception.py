"""Inception-v3, Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2.

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016 (arXiv 1512.00567, 2015).
Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017 (arXiv 1602.07261, 2016).

What the tables below encode (papers.md §8, §9):
  inception_v3         the released topology (TF-slim = Keras = torchvision), not the paper's
                       Table 1: stem 32-32-64, max-pool, 80, 192, max-pool (35x35x192);
                       Mixed_5b-5d (35x35, a 5x5 branch beside the two 3x3s), Mixed_6a (grid
                       reduction, Fig. 10), Mixed_6b-6e (17x17, n=7 factorised into 1x7 and
                       7x1, Fig. 6), Mixed_7a, Mixed_7b-7c (8x8, the expanded 1x3 | 3x1 forks of
                       Fig. 7). The auxiliary head on Mixed_6e: avg 5x5/3 -> 1x1 128 -> 5x5 768
                       (both conv-BN-ReLU) -> FC; the paper's "BN-auxiliary" also normalises the
                       FC, the released code does not. 23,834,568 params without the head,
                       27,161,264 with it (torchvision); 5.71G MACs at 299.
  inception_v4         Figs. 3-9: the stem of Fig. 3, 4 x Inception-A, Reduction-A with Table 1's
                       k, l, m, n = 192, 224, 256, 384, 7 x Inception-B, Reduction-B,
                       3 x Inception-C (timm inception_v4: 42,679,816 params, 12.25G MACs).
  inception_resnet_v1  the paper's figures (no reference implementation): the stem of Fig. 14,
                       5 x Inception-ResNet-A (Fig. 10), Reduction-A with k, l, m, n = 192, 192,
                       256, 384 (Fig. 7, Table 1), 10 x Inception-ResNet-B (Fig. 11), Reduction-B
                       (Fig. 12), 5 x Inception-ResNet-C (Fig. 13): 35x35x256 -> 17x17x896 ->
                       8x8x1792, every block with ReLU. The paper prints no residual scales for
                       v1: we use v2's released ones. Its count is worked out by hand in
                       tests/models/test_inception.py.
  inception_resnet_v2  the released topology (TF-slim = Keras = timm), which differs from the
                       paper's Figs. 16-19: the Inception-v3 stem + Mixed_5b (35x35x320),
                       10 x Block35 (scale 0.17), Mixed_6a (Reduction-A, k, l, m, n = 256, 256,
                       384, 384), 20 x Block17 (0.10), Mixed_7a, 9 x Block8 (0.20) and a last
                       Block8 with scale 1 and no ReLU, 1x1 conv to 1536 (timm: 55,843,464 params,
                       13.16G MACs).
Every residual block is x + scale * (1x1 linear conv with bias, no BN)(concat(branches)), then
ReLU: BN only on the ordinary layers, none on the sums (§3.2). Grid reductions are 'VALID'
3x3/2 convs and max-pools, everything else TF 'SAME', giving 299 -> 35 -> 17 -> 8. The 3x3/1
average pools exclude the padding from the mean, as TF 'SAME' pooling does (torchvision's
Inception-v3 counts it: a border difference only, no parameters). Concatenation order is the
released code's, so TF-slim/Keras/timm weights map one to one.

Defaults are those of the expected counts: BN with a learned scale (gamma) as torchvision/timm
have it, epsilon 1e-3; TF-slim's decay 0.9997 for the running averages; dropout before the FC
with keep probability 0.8 (TF-slim; Figs. 9 and 15 of the v4 paper); He (fan-in, truncated
normal) initialisation, the variance_scaling_initializer of TF-slim's inception_v3/v4.

Switches:
  aux_logits         (v3) the BN-auxiliary head of Table 3's last row, computed only when
                     train=True and sown as 'aux_logits'; its parameters exist either way.
  residual_scaling   (Inception-ResNet) False adds the branches unscaled: the ablation of §3.3,
                     where nets with over 1000 filters "died" early in training without it.
  bn_scale           False: BN without gamma, as TF-slim and Keras build their Inceptions
                     (Keras InceptionV3 23,817,352 and InceptionResNetV2 55,813,192 trainable).
  pool_count_padding (v3) True: the modules' 3x3/1 average pools count the zero padding, as
                     torchvision's Inception3 (F.avg_pool2d) does; the torchvision importer sets it.
  dropout_rate, bn_momentum, bn_epsilon, bn_batch_span: the recipe's numbers.
The Keras importer (bottom) maps keras.applications InceptionV3 and InceptionResNetV2 onto
inception_v3 (aux_logits=False, bn_scale=False) and inception_resnet_v2 (bn_scale=False).
"""

from __future__ import annotations

import functools
import re
import string
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers, registry
from cnn_history.models.registry import register

# ---- The tables' vocabulary -------------------------------------------------------------------


class Conv(NamedTuple):
  """conv (no bias) -> BN -> ReLU: the "traditional layer" of every figure."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: str = 'SAME'


class Pool(NamedTuple):
  kind: str          # 'max' | 'avg'
  window: int
  stride: int
  padding: str
  count_padding: bool = False  # avg: the zero padding counts in the mean (PyTorch's default)


class Fork(NamedTuple):
  """Layers applied side by side to one map and concatenated: the 1x3 | 3x1 split ends of
  Inception-v3's Fig. 7 and Inception-v4's Inception-C."""
  layers: tuple[Conv, ...]


class Residual(NamedTuple):
  """An Inception-ResNet block: x + scale * linear_1x1(concat(branches)), then [ReLU]."""
  branches: tuple
  scale: float
  relu: bool = True


class Repeat(NamedTuple):
  """`count` copies of one block in a row, as the figures' "4 x Inception-A"."""
  count: int
  layer: Any


# An Inception module is a plain tuple of branches, a branch a tuple of layers run in sequence.

V = 'VALID'
MAX_POOL = Pool('max', 3, 2, V)        # the 3x3/2 max-pool of every grid reduction
AVG_POOL = Pool('avg', 3, 1, 'SAME')   # the pool branch of the modules (padding not averaged)


def conv(features: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
         padding: str = 'SAME') -> Conv:
  """The figures' "kxk Conv (features stride s V)": kernel k or (height, width)."""
  return Conv(features, (kernel, kernel) if isinstance(kernel, int) else tuple(kernel), stride,
              padding)


def fork(*convs: Conv) -> Fork:
  return Fork(tuple(convs))


# ---- Inception-v3 as released (TF-slim inception_v3.py; papers.md §8) ------------------------

RELEASED_STEM = (                      # 299 -> 35x35x192; also the stem of released IR-v2
    ('Conv2d_1a_3x3', conv(32, 3, 2, V)),
    ('Conv2d_2a_3x3', conv(32, 3, 1, V)),
    ('Conv2d_2b_3x3', conv(64, 3)),
    ('MaxPool_3a_3x3', MAX_POOL),
    ('Conv2d_3b_1x1', conv(80, 1, 1, V)),
    ('Conv2d_4a_3x3', conv(192, 3, 1, V)),
    ('MaxPool_5a_3x3', MAX_POOL),
)


def v3_module_35(pool_features: int) -> tuple:
  """Mixed_5b-5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-1x1."""
  return ((conv(64),),
          (conv(48), conv(64, 5)),
          (conv(64), conv(96, 3), conv(96, 3)),
          (AVG_POOL, conv(pool_features)))


def v3_module_17(c7: int) -> tuple:
  """Mixed_6b-6e (Fig. 6, n = 7): 7x7 convolutions factorised into 1x7 and 7x1."""
  return ((conv(192),),
          (conv(c7), conv(c7, (1, 7)), conv(192, (7, 1))),
          (conv(c7), conv(c7, (7, 1)), conv(c7, (1, 7)), conv(c7, (7, 1)), conv(192, (1, 7))),
          (AVG_POOL, conv(192)))


V3_MODULE_8 = (                        # Mixed_7b-7c (Fig. 7): the expanded filter bank
    (conv(320),),
    (conv(384), fork(conv(384, (1, 3)), conv(384, (3, 1)))),
    (conv(448), conv(384, 3), fork(conv(384, (1, 3)), conv(384, (3, 1)))),
    (AVG_POOL, conv(192)),
)

INCEPTION_V3 = RELEASED_STEM + (
    ('Mixed_5b', v3_module_35(32)),                    # 35x35x256
    ('Mixed_5c', v3_module_35(64)),                    # 35x35x288
    ('Mixed_5d', v3_module_35(64)),                    # 35x35x288
    ('Mixed_6a', ((conv(384, 3, 2, V),),               # 17x17x768 (Fig. 10)
                  (conv(64), conv(96, 3), conv(96, 3, 2, V)),
                  (MAX_POOL,))),
    ('Mixed_6b', v3_module_17(128)),
    ('Mixed_6c', v3_module_17(160)),
    ('Mixed_6d', v3_module_17(160)),
    ('Mixed_6e', v3_module_17(192)),                   # 17x17x768: the auxiliary head reads it
    ('Mixed_7a', ((conv(192), conv(320, 3, 2, V)),     # 8x8x1280
                  (conv(192), conv(192, (1, 7)), conv(192, (7, 1)), conv(192, 3, 2, V)),
                  (MAX_POOL,))),
    ('Mixed_7b', V3_MODULE_8),                         # 8x8x2048
    ('Mixed_7c', V3_MODULE_8),
)
V3_AUX_INPUT = 'Mixed_6e'
V3_AUX_INPUT_INDEX = [n for n, _ in INCEPTION_V3].index(V3_AUX_INPUT) + 1

# ---- Inception-v4 and Inception-ResNet (arXiv 1602.07261) ----------------------------------

# Table 1: the filter counts of Reduction-A (Fig. 7) in each network.
REDUCTION_A_KLMN = {
    'inception_v4': (192, 224, 256, 384),
    'inception_resnet_v1': (192, 192, 256, 384),
    'inception_resnet_v2': (256, 256, 384, 384),
}


def reduction_a(k: int, l: int, m: int, n: int) -> tuple:
  """Fig. 7: 35x35 -> 17x17 with a 3x3/2 conv (n), 1x1 (k)-3x3 (l)-3x3/2 (m), and max-pool."""
  return ((conv(n, 3, 2, V),), (conv(k), conv(l, 3), conv(m, 3, 2, V)), (MAX_POOL,))


INCEPTION_V4 = (
    # Fig. 3, the stem: 299 -> 35x35x384.
    ('stem_conv_1', conv(32, 3, 2, V)),
    ('stem_conv_2', conv(32, 3, 1, V)),
    ('stem_conv_3', conv(64, 3)),
    ('stem_mixed_3a', ((MAX_POOL,), (conv(96, 3, 2, V),))),
    ('stem_mixed_4a', ((conv(64), conv(96, 3, 1, V)),
                       (conv(64), conv(64, (1, 7)), conv(64, (7, 1)), conv(96, 3, 1, V)))),
    ('stem_mixed_5a', ((conv(192, 3, 2, V),), (MAX_POOL,))),
    # Fig. 4, 4 x Inception-A: 35x35x384.
    ('inception_a', Repeat(4, ((conv(96),),
                               (conv(64), conv(96, 3)),
                               (conv(64), conv(96, 3), conv(96, 3)),
                               (AVG_POOL, conv(96))))),
    ('reduction_a', reduction_a(*REDUCTION_A_KLMN['inception_v4'])),   # 17x17x1024
    # Fig. 5, 7 x Inception-B: 17x17x1024.
    ('inception_b', Repeat(7, ((conv(384),),
                               (conv(192), conv(224, (1, 7)), conv(256, (7, 1))),
                               (conv(192), conv(192, (7, 1)), conv(224, (1, 7)),
                                conv(224, (7, 1)), conv(256, (1, 7))),
                               (AVG_POOL, conv(128))))),
    # Fig. 8, Reduction-B: 8x8x1536.
    ('reduction_b', ((conv(192), conv(192, 3, 2, V)),
                     (conv(256), conv(256, (1, 7)), conv(320, (7, 1)), conv(320, 3, 2, V)),
                     (MAX_POOL,))),
    # Fig. 6, 3 x Inception-C: 8x8x1536 (the 3x1 | 1x3 order of branch 2 is the code's).
    ('inception_c', Repeat(3, ((conv(256),),
                               (conv(384), fork(conv(256, (1, 3)), conv(256, (3, 1)))),
                               (conv(384), conv(448, (3, 1)), conv(512, (1, 3)),
                                fork(conv(256, (1, 3)), conv(256, (3, 1)))),
                               (AVG_POOL, conv(256))))),
)

# Residual scales: the released Inception-ResNet-v2's (§3.3 gives the range 0.1-0.3). The paper
# prints none for v1; we use the same three, one per grid size.
RESIDUAL_SCALES = {'35x35': 0.17, '17x17': 0.10, '8x8': 0.20}

INCEPTION_RESNET_V1 = (
    # Fig. 14, the stem: 299 -> 35x35x256.
    ('stem_conv_1', conv(32, 3, 2, V)),
    ('stem_conv_2', conv(32, 3, 1, V)),
    ('stem_conv_3', conv(64, 3)),
    ('stem_pool', MAX_POOL),
    ('stem_conv_4', conv(80, 1)),
    ('stem_conv_5', conv(192, 3, 1, V)),
    ('stem_conv_6', conv(256, 3, 2, V)),
    # Fig. 10, 5 x Inception-ResNet-A: 35x35x256.
    ('inception_resnet_a', Repeat(5, Residual(((conv(32),),
                                               (conv(32), conv(32, 3)),
                                               (conv(32), conv(32, 3), conv(32, 3))),
                                              RESIDUAL_SCALES['35x35']))),
    ('reduction_a', reduction_a(*REDUCTION_A_KLMN['inception_resnet_v1'])),   # 17x17x896
    # Fig. 11, 10 x Inception-ResNet-B: 17x17x896.
    ('inception_resnet_b', Repeat(10, Residual(((conv(128),),
                                                (conv(128), conv(128, (1, 7)), conv(128, (7, 1)))),
                                               RESIDUAL_SCALES['17x17']))),
    # Fig. 12, Reduction-B: 8x8x1792.
    ('reduction_b', ((conv(256), conv(384, 3, 2, V)),
                     (conv(256), conv(256, 3, 2, V)),
                     (conv(256), conv(256, 3), conv(256, 3, 2, V)),
                     (MAX_POOL,))),
    # Fig. 13, 5 x Inception-ResNet-C: 8x8x1792.
    ('inception_resnet_c', Repeat(5, Residual(((conv(192),),
                                               (conv(192), conv(192, (1, 3)), conv(192, (3, 1)))),
                                              RESIDUAL_SCALES['8x8']))),
)

BLOCK8 = ((conv(192),), (conv(192), conv(224, (1, 3)), conv(256, (3, 1))))

INCEPTION_RESNET_V2 = RELEASED_STEM + (
    ('mixed_5b', ((conv(96),),                                           # 35x35x320
                  (conv(48), conv(64, 5)),
                  (conv(64), conv(96, 3), conv(96, 3)),
                  (AVG_POOL, conv(64)))),
    ('block35', Repeat(10, Residual(((conv(32),),
                                     (conv(32), conv(32, 3)),
                                     (conv(32), conv(48, 3), conv(64, 3))),
                                    RESIDUAL_SCALES['35x35']))),
    ('mixed_6a', reduction_a(*REDUCTION_A_KLMN['inception_resnet_v2'])),  # 17x17x1088
    ('block17', Repeat(20, Residual(((conv(192),),
                                     (conv(128), conv(160, (1, 7)), conv(192, (7, 1)))),
                                    RESIDUAL_SCALES['17x17']))),
    ('mixed_7a', ((conv(256), conv(384, 3, 2, V)),                       # 8x8x2080
                  (conv(256), conv(288, 3, 2, V)),
                  (conv(256), conv(288, 3), conv(320, 3, 2, V)),
                  (MAX_POOL,))),
    ('block8', Repeat(9, Residual(BLOCK8, RESIDUAL_SCALES['8x8']))),
    ('block8_10', Residual(BLOCK8, 1.0, relu=False)),                    # the code's last block
    ('conv_7b', conv(1536)),                                             # 8x8x1536
)

INCEPTION_RESNET = {'v1': INCEPTION_RESNET_V1, 'v2': INCEPTION_RESNET_V2}

MIN_INPUT = 75  # the smallest square input whose 8x8 grid is still 1x1 (Keras's minimum too)

# TF-slim's variance_scaling_initializer: He et al. 2015 with fan-in, truncated normal.
HE_INIT = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


# ---- Running the tables -------------------------------------------------------------------------


def apply_layer(layer: Any, x: jax.Array, train: bool, conv_bn: Callable, name: str) -> jax.Array:
  """One table entry on `x`. Flax modules made here belong to the module that calls it."""
  if isinstance(layer, Conv):
    return conv_bn(layer.features, layer.kernel, layer.stride, layer.padding, name=name)(x, train)
  if isinstance(layer, Pool):
    if layer.kind == 'max':
      return layers.max_pool(x, layer.window, layer.stride, layer.padding)
    return layers.avg_pool(x, layer.window, layer.stride, layer.padding,
                           count_include_pad=layer.count_padding)
  if isinstance(layer, Fork):
    return jnp.concatenate([apply_layer(sub, x, train, conv_bn, name + letter)
                            for sub, letter in zip(layer.layers, string.ascii_lowercase)], -1)
  if isinstance(layer, Repeat):
    for i in range(layer.count):
      x = apply_layer(layer.layer, x, train, conv_bn, f'{name}_{i + 1}')
    return x
  if isinstance(layer, Residual):
    block = InceptionResNetBlock(layer.branches, layer.scale, layer.relu, conv_bn, name=name)
    return block(x, train)
  return InceptionModule(layer, conv_bn, name=name)(x, train)


def concat_branches(branches: tuple, x: jax.Array, train: bool, conv_bn: Callable) -> jax.Array:
  outs = []
  for i, branch in enumerate(branches):
    y = x
    for j, layer in enumerate(branch):
      y = apply_layer(layer, y, train, conv_bn, f'branch{i}_{j}')
    outs.append(y)
  return jnp.concatenate(outs, axis=-1)


class InceptionModule(nn.Module):
  """Parallel branches on one input, concatenated along channels in table order."""
  branches: tuple
  conv_bn: Callable

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return concat_branches(self.branches, x, train, self.conv_bn)


class InceptionResNetBlock(nn.Module):
  """x + scale * up(concat(branches)) -> [ReLU]; `up` is the figures' "1x1 Conv (Linear)"
  back to x's width, with a bias and no BN (BN never sits on the sums, §3.2)."""
  branches: tuple
  scale: float
  relu: bool
  conv_bn: Callable

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    mixed = concat_branches(self.branches, x, train, self.conv_bn)
    up = self.conv_bn(x.shape[-1], 1, use_bias=True, use_bn=False, act=None, name='up')
    up = up(mixed, train)
    y = x + self.scale * up
    return nn.relu(y) if self.relu else y


class AuxHead(nn.Module):
  """Inception-v3's auxiliary classifier on the 17x17x768 map (§4, Table 3's "BN-auxiliary"):
  avg 5x5/3 -> 1x1 128 -> 5x5 768 -> global pool -> FC, the convs with BN. The paper's
  BN-auxiliary also normalises the FC; no released copy does, and neither do we."""
  num_classes: int
  conv_bn: Callable
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if min(x.shape[1:3]) < 17:
      raise ValueError(f'inception_v3: the auxiliary head needs the 17x17 map to be at least '
                       f'17x17 (inputs of 299x299 or more), got {x.shape[1]}x{x.shape[2]}; pass '
                       'aux_logits=False to train at a smaller resolution.')
    x = layers.avg_pool(x, 5, 3, 'VALID')
    x = self.conv_bn(128, 1, name='conv0')(x, train)
    x = self.conv_bn(768, 5, padding='VALID', kernel_init=nn.initializers.truncated_normal(0.01),
                     name='conv1')(x, train)
    x = layers.global_avg_pool(x)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(0.001),
                    dtype=self.dtype, name='fc')(x)


# ---- The networks -------------------------------------------------------------------------------


def _conv_bn(net: nn.Module) -> Callable:
  return functools.partial(layers.ConvBN, bn_momentum=net.bn_momentum, bn_epsilon=net.bn_epsilon,
                           bn_batch_span=net.bn_batch_span, bn_scale=net.bn_scale,
                           kernel_init=HE_INIT, dtype=net.dtype)


def _check_common(net: nn.Module, name: str, x: jax.Array) -> None:
  if not 0.0 <= net.dropout_rate < 1.0:
    raise ValueError(f'{name}: dropout_rate must be in [0, 1), got {net.dropout_rate}.')
  if min(x.shape[1:3]) < MIN_INPUT:
    raise ValueError(f'{name} needs inputs of at least {MIN_INPUT}x{MIN_INPUT} (its VALID grid '
                     f'reductions leave nothing of smaller ones), got {x.shape[1]}x{x.shape[2]}.')


def _classify(net: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """Global average pool -> dropout -> FC (the figures' "Avg Pooling, Dropout, Softmax")."""
  features = layers.global_avg_pool(x)
  net.sow('intermediates', 'features', features)
  features = nn.Dropout(net.dropout_rate, deterministic=not train)(features)
  return nn.Dense(net.num_classes, dtype=net.dtype, name='head')(features).astype(jnp.float32)


@register('inception_v3', paper='Szegedy et al., CVPR 2016', year=2015, input_shape=(299, 299, 3),
          expected_params=27_161_264, expected_macs=5.71e9,
          source='torchvision inception_v3 (aux_logits=True; 23,834,568 without)',
          paper_params='< 25M', paper_macs='5 billion')
class InceptionV3(nn.Module):
  """Inception-v3 as released, with the BN-auxiliary head (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  aux_logits: bool = True          # the BN-auxiliary head on Mixed_6e (training only)
  dropout_rate: float = 0.2        # before the FC (TF-slim keep_prob 0.8)
  bn_scale: bool = True            # BN gamma (torchvision); TF-slim/Keras: False
  bn_momentum: float = 0.9997      # TF-slim batch_norm_decay
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  pool_count_padding: bool = False  # True: the modules' 3x3/1 avg-pools average the zero
                                    # padding too (torchvision's F.avg_pool2d; TF 'SAME' does not)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_common(self, 'inception_v3', x)
    if not isinstance(self.aux_logits, bool):
      raise ValueError(f'inception_v3: aux_logits must be True or False, got {self.aux_logits!r}.')
    conv_bn = _conv_bn(self)
    x = x.astype(self.dtype)
    for name, layer in INCEPTION_V3:
      if self.pool_count_padding:
        layer = _counting_padding(layer)
      x = apply_layer(layer, x, train, conv_bn, name)
      # Built at init so the parameter set does not depend on `train`; run only in training.
      if name == V3_AUX_INPUT and self.aux_logits and (train or self.is_initializing()):
        aux = AuxHead(self.num_classes, conv_bn, self.dtype, name='AuxLogits')(x, train)
        self.sow('intermediates', 'aux_logits', aux.astype(jnp.float32))
    return _classify(self, x, train)


@register('inception_v4', paper='Szegedy et al., AAAI 2017', year=2016, input_shape=(299, 299, 3),
          expected_params=42_679_816, expected_macs=12.25e9, source='timm inception_v4',
          paper_params='not given', paper_macs='not given')
class InceptionV4(nn.Module):
  """Inception-v4, Figs. 3-9 of the paper (= TF-slim / timm)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  dropout_rate: float = 0.2        # Fig. 9: "Dropout (keep 0.8)"
  bn_scale: bool = True            # BN gamma (timm); TF-slim: False
  bn_momentum: float = 0.9997      # TF-slim batch_norm_decay
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_common(self, 'inception_v4', x)
    conv_bn = _conv_bn(self)
    x = x.astype(self.dtype)
    for name, layer in INCEPTION_V4:
      x = apply_layer(layer, x, train, conv_bn, name)
    return _classify(self, x, train)


@register('inception_resnet_v1', paper='Szegedy et al., AAAI 2017', year=2016,
          input_shape=(299, 299, 3), expected_params=22_756_328, expected_macs=6_206_361_696,
          source='paper Figs. 7, 10-14 + Table 1 (hand count in tests/models/test_inception.py)',
          paper_params='not given', paper_macs='about Inception-v3', version='v1')
@register('inception_resnet_v2', paper='Szegedy et al., AAAI 2017', year=2016,
          input_shape=(299, 299, 3), expected_params=55_843_464, expected_macs=13.16e9,
          source='timm inception_resnet_v2', paper_params='not given',
          paper_macs='about Inception-v4', version='v2')
class InceptionResNet(nn.Module):
  """Inception-ResNet-v1 (the paper's figures) or -v2 (the released code); docstring above."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  version: str = 'v2'              # 'v1' | 'v2'
  residual_scaling: bool = True    # False: branches added unscaled (§3.3's dying wide nets)
  dropout_rate: float = 0.2        # Fig. 15: "Dropout (keep 0.8)"
  bn_scale: bool = True            # BN gamma (timm); TF-slim/Keras: False
  bn_momentum: float = 0.9997      # TF-slim batch_norm_decay
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    name = f'inception_resnet_{self.version}'
    if self.version not in INCEPTION_RESNET:
      raise ValueError(f"InceptionResNet: unknown version {self.version!r}; use 'v1' (the paper's "
                       "figures) or 'v2' (the released network).")
    if not isinstance(self.residual_scaling, bool):
      raise ValueError(f'{name}: residual_scaling must be True or False, got '
                       f'{self.residual_scaling!r}.')
    _check_common(self, name, x)
    conv_bn = _conv_bn(self)
    x = x.astype(self.dtype)
    for layer_name, layer in INCEPTION_RESNET[self.version]:
      if not self.residual_scaling:
        layer = _unscaled(layer)
      x = apply_layer(layer, x, train, conv_bn, layer_name)
    return _classify(self, x, train)


def _counting_padding(layer: Any) -> Any:
  """`layer` (a table entry) with its average pools counting the padding."""
  if isinstance(layer, Pool):
    return layer._replace(count_padding=True) if layer.kind == 'avg' else layer
  if isinstance(layer, tuple) and not isinstance(layer, Conv):  # a module, a branch, a Fork
    mapped = tuple(_counting_padding(l) for l in layer)
    return type(layer)(*mapped) if hasattr(layer, '_fields') else mapped
  return layer


def _unscaled(layer: Any) -> Any:
  if isinstance(layer, Residual):
    return layer._replace(scale=1.0)
  if isinstance(layer, Repeat):
    return layer._replace(layer=_unscaled(layer.layer))
  return layer


# ---- Keras Applications -> Flax -----------------------------------------------------------------


def conv_bn_call_order(module: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, ...]]:
  """The paths of `module`'s ConvBN layers in the order the forward pass runs them."""
  order = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.ConvBN) and context.method_name == '__call__':
      order.append(tuple(context.module.scope.path))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1,) + tuple(input_shape)),
                                       train=False))
  return order


def _creation_order(keras_layers: list, kind: str, auto_name: str) -> list:
  """Keras layers of class `kind` in the order they were built: auto-named ones ('conv2d',
  'conv2d_1', ...; conv2d_bn gives most layers no name) by their counter, then named ones."""
  of_kind = [l for l in keras_layers if type(l).__name__ == kind]
  pattern = re.compile(rf'{auto_name}(?:_(\d+))?')
  auto = [l for l in of_kind if pattern.fullmatch(l.name)]
  auto.sort(key=lambda l: int(pattern.fullmatch(l.name).group(1) or 0))
  return auto + [l for l in of_kind if not pattern.fullmatch(l.name)]


@keras_converter('inception_v3', 'inception_resnet_v2')
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """keras.applications InceptionV3 / InceptionResNetV2 (include_top=True). Their conv-BN layers
  are mostly unnamed, so they are matched in build order against our forward order; the
  residual blocks' biased 1x1 convs are named '<block>_conv' in both."""
  all_layers = list(weights.layers.values())
  bns = _creation_order(all_layers, 'BatchNormalization', 'batch_normalization')
  convs = [l for l in _creation_order(all_layers, 'Conv2D', 'conv2d') if not l.use_bias]
  options = {'bn_scale': bool(bns[0].scale), 'bn_epsilon': float(bns[0].epsilon),
             'bn_momentum': float(bns[0].momentum)}
  if any((bool(l.scale), float(l.epsilon)) != (options['bn_scale'], options['bn_epsilon'])
         for l in bns):
    raise ConversionError('The Keras BatchNorm layers differ in scale/epsilon; one model option '
                          'cannot express that.')
  if name == 'inception_v3':
    options['aux_logits'] = False  # Keras has no auxiliary head
  module = registry.create_model(name, num_classes=int(keras_model.outputs[0].shape[-1]), **options)
  paths = conv_bn_call_order(module, tuple(int(d) for d in keras_model.inputs[0].shape[1:]))
  conv_bn_paths = [p for p in paths if p[-1] != 'up']
  if not len(conv_bn_paths) == len(convs) == len(bns):
    raise ConversionError(f'{name}: {len(conv_bn_paths)} conv-BN layers in Flax, {len(convs)} '
                          f'bias-free Conv2D and {len(bns)} BatchNormalization layers in Keras.')
  for path, keras_conv, keras_bn in zip(conv_bn_paths, convs, bns):
    weights.conv(keras_conv.name, path + ('conv',))
    weights.bn(keras_bn.name, path + ('bn',))
  for path in paths:
    if path[-1] == 'up':
      weights.conv(f'{path[-2]}_conv', path + ('conv',))
  weights.dense('predictions', ('head',))
  return options


# ---- torchvision / timm -> Flax -----------------------------------------------------------------


def _natural_key(name: str) -> list:
  """'features.10.branch1_1a' sorts after 'features.9...': digit runs compare as numbers."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


# The torch modules' registration (= forward) order, which state-dict names alone do not carry
# (a .safetensors file stores them sorted). torchvision's Inception3: top-level modules, and
# one order of the children of its InceptionA-E and InceptionAux that agrees with each.
_TORCHVISION_V3_TOP = tuple(n for n, _ in INCEPTION_V3[:V3_AUX_INPUT_INDEX]) + (
    'AuxLogits',) + tuple(n for n, _ in INCEPTION_V3[V3_AUX_INPUT_INDEX:])
_TORCHVISION_V3_CHILDREN = (
    'branch1x1', 'branch5x5_1', 'branch5x5_2', 'branch3x3', 'branch3x3_1', 'branch3x3_2',
    'branch3x3_2a', 'branch3x3_2b', 'branch7x7_1', 'branch7x7_2', 'branch7x7_3',
    'branch7x7x3_1', 'branch7x7x3_2', 'branch7x7x3_3', 'branch7x7x3_4', 'branch3x3dbl_1',
    'branch3x3dbl_2', 'branch3x3dbl_3', 'branch3x3dbl_3a', 'branch3x3dbl_3b', 'branch7x7dbl_1',
    'branch7x7dbl_2', 'branch7x7dbl_3', 'branch7x7dbl_4', 'branch7x7dbl_5', 'branch_pool',
    'conv0', 'conv1')
# timm's inception_resnet_v2: top-level modules (inside them, branch{i}[.{j}] then 'conv2d').
_TIMM_IRV2_TOP = ('conv2d_1a', 'conv2d_2a', 'conv2d_2b', 'conv2d_3b', 'conv2d_4a', 'mixed_5b',
                  'repeat', 'mixed_6a', 'repeat_1', 'mixed_7a', 'repeat_2', 'block8', 'conv2d_7b')


def _torchvision_v3_order(prefix: str) -> tuple:
  top, _, rest = prefix.partition('.')
  child = rest.split('.')[0]
  return (_TORCHVISION_V3_TOP.index(top),
          _TORCHVISION_V3_CHILDREN.index(child) if child in _TORCHVISION_V3_CHILDREN else -1)


def _timm_irv2_order(prefix: str) -> tuple:
  top, _, rest = prefix.partition('.')
  return (_TIMM_IRV2_TOP.index(top), _natural_key(rest))


def _torch_by_call_order(weights: TorchWeights, name: str, options: dict[str, Any],
                         head: str, order: Callable[[str], Any]) -> None:
  """Maps a torch Inception's convolutions, put in forward order by the sort key `order` of
  their module names, onto our conv layers in call order (of `name` built with `options`):
  conv-BN pairs ('<m>.conv' + '<m>.bn') onto ConvBN layers, a residual block's biased conv
  without BN ('conv2d') onto 'up'; then the classifier `head`. The shape check catches a
  misalignment; the parity tests the rest."""
  convs = sorted((n[:-len('.weight')] for n in weights.names() if n.endswith('.weight')
                  and weights.tensors[n].ndim == 4), key=order)
  paths = conv_bn_call_order(registry.create_model(name, **options),
                             registry.get_spec(name).input_shape)
  if len(convs) != len(paths):
    raise ConversionError(f'{len(convs)} convolutions in the state dict, {len(paths)} conv '
                          'layers in the Flax model.')
  for prefix, path in zip(convs, paths):
    if path[-1] == 'up':
      weights.conv(prefix, path + ('conv',))
    else:
      if not prefix.endswith('.conv'):
        raise ConversionError(f'torch conv {prefix!r} meets our conv-BN layer {"/".join(path)}.')
      weights.conv_bn(prefix, prefix[:-len('conv')] + 'bn', path)
  weights.head(head, ('head',))


@torch_converter('inception_v3', source='torchvision')
def _v3_from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.inception_v3: BasicConv2d modules (conv, bn; epsilon 1e-3, our
  default), AuxLogits when the state dict has it, fc. Its module avg-pools count the padding.
  Its transform_input (on with the pretrained weights) is not a layer here: feed (x - 0.5) / 0.5
  (torch_preprocessing says so)."""
  options = {'aux_logits': weights.has('AuxLogits.fc.weight'), 'pool_count_padding': True}
  _torch_by_call_order(weights, name, options, 'fc', _torchvision_v3_order)
  if options['aux_logits']:
    weights.dense('AuxLogits.fc', ('AuxLogits', 'fc'))
  return options


@torch_converter('inception_v4', source='timm')
def _v4_from_timm(weights: TorchWeights, name: str) -> dict[str, Any]:
  """timm inception_v4: features.{i} (ConvNormAct: conv, bn with epsilon 1e-3, our default),
  last_linear. Its avg-pools exclude the padding, as ours."""
  _torch_by_call_order(weights, name, {}, 'last_linear', _natural_key)
  return {}


@torch_converter('inception_resnet_v2', source='timm')
def _resnet_v2_from_timm(weights: TorchWeights, name: str) -> dict[str, Any]:
  """timm inception_resnet_v2: conv2d_* / mixed_* / repeat* / block8 (each residual block's
  biased 'conv2d' is our 'up'), classif."""
  _torch_by_call_order(weights, name, {}, 'classif', _timm_irv2_order)
  return {}
