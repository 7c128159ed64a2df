"""AlexNet (2012), its single-tower 2014 layout, and ZFNet (2013); the FC6-FC7-FC8 head that
VGG and SPPNet reuse.

Papers:
  Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NIPS 2012, §3-§5, Fig. 2 (papers.md §3).
  Krizhevsky, "One weird trick for parallelizing convolutional neural networks", arXiv
    1404.5997, 2014: the single-tower layout that torchvision ships as `alexnet`.
  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014 (arXiv
    1311.2901, 2013), Fig. 3 (papers.md §4).

`alexnet`, the paper's two-GPU network (ALEXNET):
  conv1 96 11x11/4 -> ReLU -> LRN -> max-pool 3x3/2                            227 -> 55 -> 27
  conv2 256 5x5 pad 2, one half per GPU (groups=2) -> ReLU -> LRN -> max-pool          -> 13
  conv3 384 3x3 pad 1, reading both GPUs' maps (the only conv layer where they talk)
  conv4 384, conv5 256, 3x3 pad 1, one half per GPU; conv5 -> max-pool                 -> 6
  FC6 4096, FC7 4096 (ReLU, dropout 0.5 after each), FC8: 60,965,224 parameters, 724.4M MACs.
  Input: the paper says 224x224, but an 11x11/4 conv makes 55x55 maps only from 227x227 (224
    gives 54x54 and a 5x5x256 FC6 input). We take 227, as Caffe's reference model did; a
    224 input is refused by name at FC6.
  LRN (§3.3): b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, k=2, n=5,
    alpha=1e-4, beta=0.75 (layers.LRN), after the ReLUs of conv1 and conv2. With two GPUs each
    normalises its own 48 (128) maps, as cuda-convnet's per-GPU rnorm1a/rnorm1b layers did, so
    no window crosses the split; with groups=1 the window runs over all maps.
  Init (§5): weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5 and FC6/FC7 (the ReLUs start
    with positive inputs), 0 elsewhere.
  Dropout (§4.2): the paper zeroes half the units in training and multiplies the outputs by 0.5
    at test time. Flax's dropout is inverted (survivors x2 in training, identity at test). The
    expected activations are the same; the two differ by a reparametrisation: the paper's
    test-time network is ours with the FC7 and FC8 kernels halved (so weights trained the
    paper's way port by halving those kernels).

Switches (the paper's ablations; registry defaults are the paper's):
  lrn               False: §3.3's ablation (LRN cut top-1/top-5 error by 1.4%/1.2%).
  overlapping_pool  False: 2x2/2 pools instead of 3x3/2, §3.4's ablation (0.4%/0.3%). At 227
                    the maps are the same size (55->27->13->6: "output of equivalent
                    dimensions", as §3.4 says), so FC6 still reads 6x6x256 and the parameters
                    and MACs do not change; only the pooled windows do.
  groups            2: the two GPU towers; 1: one tower with every connection (62,378,344
                    params, 1,135M MACs). §3.2's control net was one tower with half the
                    kernels in conv1-conv4 (FC6 unchanged): groups=1, widths=(48, 128, 192,
                    192, 256); the towers cut top-1/top-5 error by 1.7%/1.2% against it.
  widths            conv1-conv5 output maps (None: the table's 96-256-384-384-256).
  dropout_rate      0.0: without dropout ("substantial overfitting", §4.2).
  initializer       'paper' (above) | 'he' (He normal weights, zero biases).
  stem, fc_widths   not the paper: small inputs. stem='cifar' makes conv1 a 5x5/1 conv (pad 2)
                    so a 32x32 image keeps 32x32 maps until the first pool (32 -> 15 -> 7 -> 3
                    through the three 3x3/2 pools) and FC6 reads the 3x3 map; fc_widths sets
                    FC6/FC7 (4096, 4096 in the paper). Defaults are the paper's.

`alexnet_owt` (ONE_WEIRD_TRICK) is torchvision's `alexnet`: one tower of 64-192-384-256-256
maps, conv1 padded by 2, no LRN, no groups, an adaptive 6x6 average pool (so any input of at
least 63x63 runs) and dropout *before* FC6 and FC7; 61,100,840 parameters, 714M MACs at 224.
Krizhevsky's cuda-convnet2 layer file of the same layout (layers-223-1gpu.cfg) differs: LRN
after conv1 and conv2 (lrn=True here), and dropout after the FC layers.

`zfnet` (ZFNET), Fig. 3: AlexNet on one GPU with conv1 7x7/2 (was 11x11/4) and conv2 stride 2,
dense layers 3-5, 224x224 input, maps 110 -> 55 -> 26 -> 13 -> 6: conv1 pads 1, and the pools
round up (ceil mode, Caffe's rule), which gives exactly the sizes of Fig. 3; 62,357,608
parameters, 1.17G MACs (papers.md §4). Layers 1 and 2 are "contrast normalized across feature
maps"; the paper gives no constants, so AlexNet's LRN is used. Init: weights N(0, 0.01^2),
biases 0. Not encoded: the paper renormalises any conv filter whose RMS exceeds 0.1 back to 0.1
after each update, a training-time projection rather than a layer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register


class ConvLayer(NamedTuple):
  """One row of a conv-pool stack table."""
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  towers: bool = False  # one half per GPU: a grouped conv when the model has groups=2
  lrn: bool = False     # LRN after the ReLU (when the model's lrn is on)
  pool: bool = False    # max-pool after
  bias: float = 0.0     # the paper's initial bias


# Fig. 2: the two-GPU network.
ALEXNET = (
    ConvLayer(96, 11, stride=4, lrn=True, pool=True),
    ConvLayer(256, 5, padding=2, towers=True, lrn=True, pool=True, bias=1.0),
    ConvLayer(384, 3, padding=1),
    ConvLayer(384, 3, padding=1, towers=True, bias=1.0),
    ConvLayer(256, 3, padding=1, towers=True, pool=True, bias=1.0),
)

# "One weird trick" (2014), as torchvision builds it; biases as cuda-convnet2's layer file.
ONE_WEIRD_TRICK = (
    ConvLayer(64, 11, stride=4, padding=2, lrn=True, pool=True),
    ConvLayer(192, 5, padding=2, lrn=True, pool=True, bias=1.0),
    ConvLayer(384, 3, padding=1),
    ConvLayer(256, 3, padding=1, bias=1.0),
    ConvLayer(256, 3, padding=1, pool=True, bias=1.0),
)

# Zeiler & Fergus, Fig. 3.
ZFNET = (
    ConvLayer(96, 7, stride=2, padding=1, lrn=True, pool=True),
    ConvLayer(256, 5, stride=2, lrn=True, pool=True),
    ConvLayer(384, 3, padding=1),
    ConvLayer(384, 3, padding=1),
    ConvLayer(256, 3, padding=1, pool=True),
)

FC_HIDDEN = (4096, 4096)  # FC6, FC7

KERNEL_INITS = {
    'paper': nn.initializers.normal(0.01),         # N(0, 0.01^2): AlexNet §5, ZFNet, VGG §3.1
    'he': nn.initializers.he_normal(),             # He et al. 2015 (fan-in)
    'glorot': nn.initializers.glorot_uniform(),    # Glorot & Bengio 2010 (VGG §3.1's note)
}


def check_choice(model: str, field: str, value: Any, choices: tuple[Any, ...]) -> None:
  """A clear error for a switch outside its valid values."""
  if value not in choices:
    raise ValueError(f'{model}: {field}={value!r} is not valid; choose one of '
                     f'{", ".join(map(repr, choices))}.')


def conv_stack(x: jax.Array, table: tuple[ConvLayer, ...], *, lrn: bool, pool_window: int,
               pool_stride: int, pool_ceil_mode: bool = False, groups: int = 1,
               kernel_init: Any, paper_biases: bool, dtype: Any) -> jax.Array:
  """The conv layers of `table` (conv -> ReLU [-> LRN] [-> max-pool]) as submodules conv1,
  conv2, ... of the calling module. Call it inside a compact method.

  groups=2 splits the `towers` rows into two groups and normalises each group's maps on its
  own (every layer's maps are split between the GPUs; only the `towers` convs are cut off from
  the other GPU's inputs).
  """
  for i, row in enumerate(table, start=1):
    row_groups = groups if row.towers else 1
    bias = row.bias if paper_biases else 0.0
    x = nn.Conv(row.features, (row.kernel,) * 2, (row.stride,) * 2,
                layers.explicit_padding(row.padding), feature_group_count=row_groups,
                kernel_init=kernel_init, bias_init=nn.initializers.constant(bias), dtype=dtype,
                name=f'conv{i}')(x)
    x = nn.relu(x)
    if lrn and row.lrn:
      # Each GPU normalises its own maps: the channel window never crosses the split.
      n, h, w, c = x.shape
      x = layers.LRN(name=f'lrn{i}')(x.reshape(n, h, w, groups, c // groups)).reshape(x.shape)
    if row.pool:
      x = layers.max_pool(x, pool_window, pool_stride, ceil_mode=pool_ceil_mode)
  return x


def with_widths(table: tuple[ConvLayer, ...], widths: tuple[int, ...] | None,
                model: str) -> tuple[ConvLayer, ...]:
  """`table` with the output maps of its rows replaced by `widths` (None: unchanged)."""
  if widths is None:
    return table
  if len(widths) != len(table) or min(widths) < 1:
    raise ValueError(f'{model}: widths must give {len(table)} positive map counts (conv1-conv'
                     f'{len(table)}), got {widths}.')
  return tuple(row._replace(features=int(f)) for row, f in zip(table, widths))


def require_map(x: jax.Array, size: int, model: str, advice: str) -> None:
  """FC6 reads a fixed size x size map: name the problem when another size arrives."""
  if x.shape[1:3] != (size, size):
    raise ValueError(f'{model}: FC6 reads a {size}x{size} feature map, but this input gives '
                     f'{x.shape[1]}x{x.shape[2]}. {advice}')


class ConvertibleDense(nn.Module):
  """A fully-connected layer on a window x window x C map that can also slide over a larger map
  as a window x window convolution with the same kernel (VGG §3.2's dense evaluation).

  The kernel is Dense's (window * window * C, features) with rows in (H, W, C) order, the order
  in which NHWC maps flatten (and Keras's Flatten), so one checkpoint serves both uses.
  """
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, window: int | None = None) -> jax.Array:
    """window=None: x is flattened and multiplied; an int: x [N, H, W, C] is convolved."""
    n, c = x.shape[0], x.shape[-1]
    fan_in = window * window * c if window else x[0].size
    kernel = self.param('kernel', self.kernel_init, (fan_in, self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    if window is None:
      return x.reshape(n, -1) @ kernel + bias
    y = jax.lax.conv_general_dilated(x, kernel.reshape(window, window, c, self.features), (1, 1),
                                     'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias


def classifier_head(x: jax.Array, num_classes: int, *, train: bool, dropout_rate: float,
                    kernel_init: Any, hidden_bias: float = 0.0, dropout_before: bool = False,
                    window: int | None = None, hidden: tuple[int, ...] = FC_HIDDEN,
                    dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
  """FC6-FC7 (ReLU, dropout) and FC8 as submodules fc6, fc7, fc8 of the calling module.

  Dropout follows each hidden layer's ReLU (AlexNet 2012, ZFNet, VGG, SPPNet), or precedes
  each hidden layer with dropout_before=True (torchvision's AlexNet). `window`: the head slides
  over x [N, H, W, C] as convolutions (FC6 window x window, FC7/FC8 1x1) and the class-score map
  is averaged over space (VGG's dense evaluation); None: x is flattened. `hidden`: the widths of
  FC6 and FC7 (4096 in the papers). Returns (float32 logits, the FC7 features).
  """
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'dropout_rate={dropout_rate!r} is not valid; it is the probability of '
                     'dropping a unit, in [0, 1).')
  hidden_init = nn.initializers.constant(hidden_bias)
  if len(hidden) != len(FC_HIDDEN) or min(hidden) < 1:
    raise ValueError(f'fc_widths must give the {len(FC_HIDDEN)} positive widths of FC6 and FC7, '
                     f'got {hidden}.')
  for i, features in enumerate(hidden):
    if dropout_before:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    if i == 0:
      x = ConvertibleDense(features, kernel_init, hidden_init, dtype, name='fc6')(x, window)
    else:
      x = nn.Dense(features, kernel_init=kernel_init, bias_init=hidden_init, dtype=dtype,
                   name=f'fc{6 + i}')(x)
    x = nn.relu(x)
    if not dropout_before:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  logits = nn.Dense(num_classes, kernel_init=kernel_init, dtype=dtype, name='fc8')(x)
  if window is not None:  # average the class-score map (and the features) over space
    logits, x = logits.mean(axis=(1, 2)), x.mean(axis=(1, 2))
  return logits.astype(jnp.float32), x


@register('alexnet', paper='Krizhevsky, Sutskever & Hinton, NIPS 2012', year=2012,
          input_shape=(227, 227, 3), fixed_input=True,
          expected_params=60_965_224, expected_macs=724_406_816,
          source='papers.md §3 (arithmetic of Fig. 2)', paper_params='60 million',
          paper_macs='not given')
class AlexNet(nn.Module):
  """The 2012 two-GPU AlexNet; switches are the paper's ablations (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  lrn: bool = True                 # LRN after conv1 and conv2 (§3.3)
  overlapping_pool: bool = True    # 3x3/2 pools (§3.4); False: 2x2/2
  groups: int = 2                  # 2: the two GPU towers (§3.2); 1: one tower
  widths: tuple[int, ...] | None = None  # conv1-5 maps; None: 96-256-384-384-256
  dropout_rate: float = 0.5        # after the ReLUs of FC6 and FC7 (§4.2)
  initializer: str = 'paper'       # 'paper': N(0, 0.01^2), biases of §5 | 'he'
  stem: str = 'imagenet'           # 'imagenet': conv1 11x11/4 (227x227 in); 'cifar': conv1
                                   # 5x5/1 pad 2 for 32x32 inputs (FC6 reads the 3x3 map left)
  fc_widths: tuple[int, ...] = FC_HIDDEN  # FC6, FC7 (the paper's 4096, 4096)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    check_choice('alexnet', 'groups', self.groups, (1, 2))
    check_choice('alexnet', 'initializer', self.initializer, ('paper', 'he'))
    table = with_widths(ALEXNET, self.widths, 'alexnet')
    if layers.stem_stride('alexnet', self.stem) == 1:
      table = (table[0]._replace(kernel=5, stride=1, padding=2),) + table[1:]
    if any(row.features % self.groups for row in table):
      raise ValueError(f'alexnet: widths {tuple(r.features for r in table)} do not split '
                       f'into groups={self.groups} towers.')
    paper = self.initializer == 'paper'
    x = conv_stack(x.astype(self.dtype), table, lrn=self.lrn,
                   pool_window=3 if self.overlapping_pool else 2, pool_stride=2,
                   groups=self.groups, kernel_init=KERNEL_INITS[self.initializer],
                   paper_biases=paper, dtype=self.dtype)
    if self.stem == 'imagenet':
      require_map(x, 6, 'alexnet', 'Feed 227x227 images: the paper\'s "224x224" only gives '
                  '55x55 conv1 maps with 3 more pixels (module docstring).')
    logits, features = classifier_head(x, self.num_classes, train=train,
                                       dropout_rate=self.dropout_rate,
                                       kernel_init=KERNEL_INITS[self.initializer],
                                       hidden_bias=1.0 if paper else 0.0,
                                       hidden=tuple(self.fc_widths), dtype=self.dtype)
    self.sow('intermediates', 'features', features)
    return logits


@register('alexnet_owt', paper='Krizhevsky, arXiv 1404.5997 (2014)', year=2014,
          input_shape=(224, 224, 3), expected_params=61_100_840, expected_macs=714_188_480,
          source='torchvision alexnet', paper_params='not given', paper_macs='not given')
class AlexNetOWT(nn.Module):
  """The single-tower "one weird trick" AlexNet as torchvision builds it (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  lrn: bool = False                # True: LRN after conv1/conv2, as cuda-convnet2's layer file
  dropout_rate: float = 0.5        # before FC6 and FC7 (torchvision)
  initializer: str = 'he'          # 'he' | 'paper' (AlexNet 2012's N(0, 0.01^2) and biases)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    check_choice('alexnet_owt', 'initializer', self.initializer, ('paper', 'he'))
    paper = self.initializer == 'paper'
    x = conv_stack(x.astype(self.dtype), ONE_WEIRD_TRICK, lrn=self.lrn, pool_window=3,
                   pool_stride=2, kernel_init=KERNEL_INITS[self.initializer],
                   paper_biases=paper, dtype=self.dtype)
    if min(x.shape[1:3]) < 1:
      raise ValueError('alexnet_owt needs inputs of at least 63x63.')
    x = layers.adaptive_avg_pool(x, 6)
    logits, features = classifier_head(x, self.num_classes, train=train,
                                       dropout_rate=self.dropout_rate, dropout_before=True,
                                       kernel_init=KERNEL_INITS[self.initializer],
                                       hidden_bias=1.0 if paper else 0.0, dtype=self.dtype)
    self.sow('intermediates', 'features', features)
    return logits


@register('zfnet', paper='Zeiler & Fergus, ECCV 2014 (arXiv 2013)', year=2013,
          input_shape=(224, 224, 3), fixed_input=True, expected_params=62_357_608,
          expected_macs=1_168_032_896, source='papers.md §4 (arithmetic of Fig. 3)',
          paper_params='not given', paper_macs='not given')
class ZFNet(nn.Module):
  """Zeiler & Fergus's network of Fig. 3 (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  lrn: bool = True                 # contrast normalisation across maps after layers 1 and 2
  dropout_rate: float = 0.5        # after the ReLUs of FC6 and FC7
  initializer: str = 'paper'       # 'paper': N(0, 0.01^2), zero biases | 'he'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    check_choice('zfnet', 'initializer', self.initializer, ('paper', 'he'))
    x = conv_stack(x.astype(self.dtype), ZFNET, lrn=self.lrn, pool_window=3, pool_stride=2,
                   pool_ceil_mode=True, kernel_init=KERNEL_INITS[self.initializer],
                   paper_biases=False, dtype=self.dtype)
    require_map(x, 6, 'zfnet', 'Feed 224x224 images (Fig. 3).')
    logits, features = classifier_head(x, self.num_classes, train=train,
                                       dropout_rate=self.dropout_rate,
                                       kernel_init=KERNEL_INITS[self.initializer],
                                       dtype=self.dtype)
    self.sow('intermediates', 'features', features)
    return logits


@torch_converter('alexnet_owt', source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.alexnet: features.{0,3,6,8,10} the convs, classifier.{1,4,6} FC6-FC8
  (FC6 reads the 6x6x256 map flattened in torch's C, H, W order)."""
  del name
  for i, index in enumerate((0, 3, 6, 8, 10), start=1):
    weights.conv(f'features.{index}', (f'conv{i}',))
  weights.dense_from_map('classifier.1', ('fc6',), ONE_WEIRD_TRICK[-1].features)
  weights.dense('classifier.4', ('fc7',))
  weights.head('classifier.6', ('fc8',))
  return {}
