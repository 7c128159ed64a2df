"""DenseNet — Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional
Networks", CVPR 2017 (arXiv 1608.06993).

What this file encodes (papers.md §15):
  dense layer   BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k); its k output maps are concatenated
                to its input, so layer l of a block sees C0 + (l - 1) k maps (§3, "Bottleneck")
  transition    BN-ReLU-1x1 conv (floor(theta * C)) - 2x2 average pool, stride 2 (§3,
                "Compression")
  ImageNet      Table 1: 7x7/2 conv (2k = 64) - BN - ReLU - 3x3/2 max-pool, four dense blocks
                (DENSENET_BLOCKS) joined by three transitions, BN - ReLU - global pool - FC;
                k = 32, theta = 0.5 (DenseNet-BC); 224x224 input
  CIFAR         §3 "Implementation Details": 3x3 conv (2k maps for BC, 16 otherwise), three dense
                blocks of (L - 4) / 6 bottleneck layers each ((L - 4) / 3 plain layers) on 32x32,
                16x16 and 8x8 maps, BN - ReLU - global pool - FC; `densenet_bc_100_12` is L = 100,
                k = 12, theta = 0.5 (Table 2: 0.8M parameters)
Convolutions have no biases; paddings are symmetric (torchvision's layout: the stem conv pads 3,
the max-pool 1, the 3x3 convs 1). Keras pads the stem with ZeroPadding2D layers before VALID
conv/pool: the same conv, and for the max-pool zeros equal -inf padding because its input is
post-ReLU (>= 0). Keras uses BN epsilon 1.001e-5 (its converter sets it).

Switches (the paper's ablation axes, Table 2 and §3):
  growth_rate   k, the maps each dense layer adds (ImageNet 32; CIFAR 12, 24, 40)
  compression   theta of the transitions (0.5: the "C" of DenseNet-BC; 1.0: no compression)
  bottleneck    the 1x1 (4k) conv before each 3x3 (the "B"); False is the plain DenseNet layer
                BN-ReLU-3x3 conv (k). On CIFAR the plain net of depth L has twice the layers per
                block: `block_sizes=cifar_block_sizes(L, bottleneck=False)`, `stem_channels=16`
  dropout_rate  dropout after every convolution but the first (the paper's 0.2 on CIFAR
                without data augmentation)
  remat         recompute each dense layer in the backward pass: the concatenations make
                activation memory grow with L^2 (torchvision's memory_efficient)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import get_spec, register

# Table 1: dense layers in blocks 1-4 of the ImageNet DenseNet-BC (k = 32), by depth.
DENSENET_BLOCKS: dict[int, tuple[int, ...]] = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
    264: (6, 12, 64, 48),
}

BOTTLENECK_WIDTH = 4  # the 1x1 conv of a bottleneck layer makes 4k maps (§3)
STEMS = ('imagenet', 'cifar')

_he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')  # He et al. 2015


def cifar_block_sizes(depth: int, bottleneck: bool = True) -> tuple[int, int, int]:
  """Layers per block of the CIFAR DenseNet of depth L (§3): L counts the first conv, the two
  transitions, the classifier and every conv in the 3 blocks (two per bottleneck layer)."""
  convs_per_layer = 2 if bottleneck else 1
  layers_per_block, rest = divmod(depth - 4, 3 * convs_per_layer)
  if rest or layers_per_block < 1:
    raise ValueError(f'DenseNet: CIFAR depth {depth} is not 4 + {3 * convs_per_layer}n '
                     f'(bottleneck={bottleneck}); e.g. 40, 100, 190, 250.')
  return (layers_per_block,) * 3


class BNReLUConv(nn.Module):
  """The pre-activation composite H of the paper: BN - ReLU - conv (no bias) - [dropout]."""
  features: int
  kernel_size: int
  padding: int
  dropout_rate: float = 0.0
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.BatchNorm(self.bn_momentum, self.bn_epsilon, self.bn_batch_span, dtype=self.dtype,
                         name='bn')(x, train)
    x = nn.relu(x)
    x = nn.Conv(self.features, (self.kernel_size,) * 2,
                padding=layers.explicit_padding(self.padding), use_bias=False,
                kernel_init=_he_normal, dtype=self.dtype, name='conv')(x)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class DenseLayer(nn.Module):
  """[BN-ReLU-1x1 (4k)] - BN-ReLU-3x3 (k), concatenated to the input."""
  growth_rate: int
  bottleneck: bool
  composite: dict[str, Any]  # BNReLUConv's BN/dropout/dtype fields

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = x
    if self.bottleneck:
      y = BNReLUConv(BOTTLENECK_WIDTH * self.growth_rate, 1, 0, **self.composite,
                     name='bottleneck')(y, train)
    y = BNReLUConv(self.growth_rate, 3, 1, **self.composite, name='conv')(y, train)
    return jnp.concatenate([x, y], axis=-1)


@register('densenet121', paper='Huang et al., CVPR 2017', year=2017, input_shape=(224, 224, 3),
          expected_params=7_978_856, expected_macs=2_834_161_664, source='torchvision densenet121',
          paper_params='Fig. 3 (plot)', paper_macs='Fig. 3 (plot)',
          block_sizes=DENSENET_BLOCKS[121])
@register('densenet169', paper='Huang et al., CVPR 2017', year=2017, input_shape=(224, 224, 3),
          expected_params=14_149_480, expected_macs=3_359_843_328, source='torchvision densenet169',
          paper_params='Fig. 3 (plot)', paper_macs='Fig. 3 (plot)',
          block_sizes=DENSENET_BLOCKS[169])
@register('densenet201', paper='Huang et al., CVPR 2017', year=2017, input_shape=(224, 224, 3),
          expected_params=20_013_928, expected_macs=4_291_365_888, source='torchvision densenet201',
          paper_params='Fig. 3 (plot)', paper_macs='Fig. 3 (plot)',
          block_sizes=DENSENET_BLOCKS[201])
@register('densenet264', paper='Huang et al., CVPR 2017', year=2017, input_shape=(224, 224, 3),
          expected_params=33_337_704, expected_macs=5_751_653_376,
          source='arithmetic from Table 1 (papers.md §15; test_densenet.py)',
          paper_params='Fig. 3 (plot)', paper_macs='Fig. 3 (plot)',
          block_sizes=DENSENET_BLOCKS[264])
@register('densenet_bc_100_12', paper='Huang et al., CVPR 2017', year=2017,
          input_shape=(32, 32, 3), num_classes=10, expected_params=769_162,
          expected_macs=287_929_692,
          source='arithmetic from §3 (test_densenet.py)', paper_params='0.8M',
          block_sizes=cifar_block_sizes(100), growth_rate=12, stem='cifar')
class DenseNet(nn.Module):
  """DenseNet(-BC): dense blocks of `block_sizes` layers joined by compressing transitions."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  block_sizes: tuple[int, ...] = DENSENET_BLOCKS[121]  # dense layers per block (Table 1)
  growth_rate: int = 32            # k
  compression: float = 0.5         # theta in (0, 1]; 1.0: no compression (not "C")
  bottleneck: bool = True          # 1x1 (4k) conv before each 3x3 (the "B")
  stem: str = 'imagenet'           # 'imagenet': 7x7/2 conv-BN-ReLU + 3x3/2 max-pool; 'cifar': 3x3
  stem_channels: int | None = None  # None: 2k (the paper's BC nets); 16 for plain CIFAR nets
  dropout_rate: float = 0.0        # after every conv but the first (CIFAR without augmentation)
  remat: bool = False              # recompute dense layers in the backward pass (saves memory)
  bn_momentum: float = 0.9         # PyTorch/Torch momentum 0.1
  bn_epsilon: float = 1e-5         # Keras: 1.001e-5
  bn_batch_span: int | None = None

  def _check(self) -> None:
    if self.stem not in STEMS:
      raise ValueError(f'DenseNet: unknown stem {self.stem!r}; use one of {STEMS}.')
    if not 0.0 < self.compression <= 1.0:
      raise ValueError(f'DenseNet: compression (theta) must be in (0, 1], got {self.compression}.')
    if self.growth_rate < 1 or not self.block_sizes or min(self.block_sizes) < 1:
      raise ValueError(f'DenseNet: growth_rate ({self.growth_rate}) and every entry of '
                       f'block_sizes ({self.block_sizes}) must be positive.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check()
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    composite = dict(dropout_rate=self.dropout_rate, **bn)
    stem_channels = self.stem_channels or 2 * self.growth_rate
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = layers.ConvBN(stem_channels, 7, 2, 3, kernel_init=_he_normal, name='stem', **bn)(x, train)
      x = layers.max_pool(x, 3, 2, 1)
    else:  # the first BN-ReLU is the first dense layer's
      x = nn.Conv(stem_channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=_he_normal, dtype=self.dtype, name='stem')(x)

    layer_cls = nn.remat(DenseLayer, static_argnums=(2,)) if self.remat else DenseLayer
    for b, num_layers in enumerate(self.block_sizes, start=1):
      for i in range(1, num_layers + 1):
        x = layer_cls(self.growth_rate, self.bottleneck, composite,
                      name=f'block{b}_layer{i}')(x, train)
      if b < len(self.block_sizes):
        x = BNReLUConv(int(x.shape[-1] * self.compression), 1, 0, **composite,
                       name=f'transition{b}')(x, train)
        x = layers.avg_pool(x, 2, 2)

    x = nn.relu(layers.BatchNorm(self.bn_momentum, self.bn_epsilon, self.bn_batch_span,
                                 dtype=self.dtype, name='final_bn')(x, train))
    features = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(features)
    return logits.astype(jnp.float32)


@keras_converter('densenet121', 'densenet169', 'densenet201')
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """tf.keras.applications.DenseNet121/169/201 (include_top=True)."""
  block_sizes = get_spec(name).kwargs['block_sizes']
  keras_blocks = tuple(
      sum(1 for n in weights.layers if n.startswith(f'conv{b + 2}_block') and n.endswith('_1_conv'))
      for b in range(len(block_sizes)))
  if keras_blocks != block_sizes:
    raise ConversionError(f'{name} has dense blocks {block_sizes}; the Keras model has '
                          f'{keras_blocks}.')
  epsilons = {weights.bn('conv1_bn', ('stem', 'bn'))}
  weights.conv('conv1_conv', ('stem', 'conv'))
  for b, num_layers in enumerate(block_sizes, start=1):
    for i in range(1, num_layers + 1):
      theirs, ours = f'conv{b + 1}_block{i}', f'block{b}_layer{i}'
      epsilons.add(weights.bn(f'{theirs}_0_bn', (ours, 'bottleneck', 'bn')))
      weights.conv(f'{theirs}_1_conv', (ours, 'bottleneck', 'conv'))
      epsilons.add(weights.bn(f'{theirs}_1_bn', (ours, 'conv', 'bn')))
      weights.conv(f'{theirs}_2_conv', (ours, 'conv', 'conv'))
    if b < len(block_sizes):
      epsilons.add(weights.bn(f'pool{b + 1}_bn', (f'transition{b}', 'bn')))
      weights.conv(f'pool{b + 1}_conv', (f'transition{b}', 'conv'))
  epsilons.add(weights.bn('bn', ('final_bn',)))
  weights.dense('predictions', ('classifier',))
  if len(epsilons) != 1:
    raise ConversionError(f'Keras {name} mixes BatchNorm epsilons {sorted(epsilons)}.')
  return {'bn_epsilon': epsilons.pop()}


@torch_converter('densenet121', 'densenet169', 'densenet201', source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.densenet*: features.{conv0,norm0} the stem,
  features.denseblock{b}.denselayer{i}.{norm1,conv1,norm2,conv2} the layers,
  features.transition{b}.{norm,conv}, features.norm5 and the classifier."""
  block_sizes = get_spec(name).kwargs['block_sizes']
  theirs_blocks = tuple(len({n.split('.')[2] for n in weights.names(f'features.denseblock{b}.')})
                        for b in range(1, len(block_sizes) + 1))
  if theirs_blocks != block_sizes:
    raise ConversionError(f'{name} has dense blocks {block_sizes}; the state dict has '
                          f'{theirs_blocks}.')
  weights.conv_bn('features.conv0', 'features.norm0', ('stem',))
  for b, num_layers in enumerate(block_sizes, start=1):
    for i in range(1, num_layers + 1):
      theirs, ours = f'features.denseblock{b}.denselayer{i}', f'block{b}_layer{i}'
      weights.conv_bn(f'{theirs}.conv1', f'{theirs}.norm1', (ours, 'bottleneck'))
      weights.conv_bn(f'{theirs}.conv2', f'{theirs}.norm2', (ours, 'conv'))
    if b < len(block_sizes):
      weights.conv_bn(f'features.transition{b}.conv', f'features.transition{b}.norm',
                      (f'transition{b}',))
  weights.bn('features.norm5', ('final_bn',))
  weights.head('classifier', ('classifier',))
  return {}
