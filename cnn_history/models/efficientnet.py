"""EfficientNet-B0 ... B7 — Mingxing Tan & Quoc V. Le, "EfficientNet: Rethinking Model Scaling
for Convolutional Neural Networks", ICML 2019 (arXiv 1905.11946).

What this file encodes (papers.md §25):
  B0        Table 1, below as `B0_STAGES`: a 3x3 stride-2 stem of 32 channels, seven stages of
            MBConv blocks, a 1x1 conv to 1280 channels, global pooling, dropout, FC.
  MBConv    `layers.InvertedResidual`: [1x1 expand x t] -> k x k depthwise -> SE -> 1x1 linear
            projection, swish everywhere; identity shortcut when stride 1 and c_in = c_out.
  SE        squeeze width max(1, int(0.25 x the block's INPUT channels)) — not the expanded
            width, unlike MobileNetV3 — with swish and a sigmoid gate.
  drop      stochastic depth ("drop connect") on each residual branch: block i of N (counted
            from 0 over the whole network) drops with p_i = 0.2 * i / N; dropout before the FC,
            0.2 (B0) ... 0.5 (B7).
  scaling   depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi with alpha = 1.2,
            beta = 1.1, gamma = 1.15 (alpha * beta^2 * gamma^2 ~ 2, so FLOPs ~ 2^phi before
            rounding; the ceil on repeats makes phi = 1 cost 2.57x B0's MACs).
            Channels become round_filters(c) = make_divisible(c * w, 8) (never 10% below c * w),
            stage repeats ceil(d * n); the stem and the head conv (round_filters(1280): 2560 for
            B7) scale too. Any (w, d) builds: `scale_stages` turns Table 1 into the table of
            the scaled network, and the module reads that.
  B1-B7     The released models use ROUNDED coefficients (papers.md §25 table, `VARIANTS`),
            not alpha^phi exactly: B1 is (w 1.0, d 1.1, 240 px), while phi = 1 gives (1.1, 1.2,
            258 px) — B2's network at 258 px. The registry names are the released networks,
            whose counts torchvision, Keras and timm share: 5,288,548 ... 66,347,960 params.
  BN        TF's epsilon 1e-3 and decay 0.99 (the paper's TF code).
  padding   TF 'SAME' (Flax 'SAME' is TF's rule: stride-2 layers pad one more row/column at
            the bottom/right on even inputs), as the paper's TF code and the Keras models.

Switches (module fields), each reproducing an ablation or a port:
  width_coefficient, depth_coefficient   w and d of the compound-scaling rule; the input size
      is r. Scaling one of w, d, r of B0 alone is Figure 3's ablation; `compound_scaling(phi)`
      gives (w, d, r) of the compound rule (Eq. 3) at any phi (Figure 8 compares the two).
  padding   'same' (TF, default) | 'symmetric' (PyTorch: torchvision's efficientnet_b*).
  bn_epsilon   1e-3 (TF); torchvision's efficientnet_b0 ... b4 use PyTorch's 1e-5 (with
      momentum 0.1, i.e. bn_momentum=0.9 here); its b5 ... b7 use 1e-3.
  dropout_rate, stochastic_depth_rate   the classifier dropout and the drop-connect rate.
  input_mean, input_std   per-channel (x - mean) / std applied to the input; None (default:
      the data pipeline normalises). The Keras models embed their preprocessing and take 0-255
      pixels; the Keras converter sets these so the Flax network takes the same input (with
      Keras' ImageNet weights: mean 255 * (0.485, 0.456, 0.406), std 255 * (0.229, 0.224,
      0.225)).

Small inputs (not the paper; the default is the paper's): stem='cifar' gives the stem conv
stride 1, so a 32x32 image ends at 2x2 instead of 1x1.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register


class Stage(NamedTuple):
  """One row of Table 1: `layers` MBConv blocks; the first has the stride."""
  expand_ratio: int   # t of MBConv-t
  kernel_size: int
  stride: int
  channels: int       # output channels
  layers: int


# Table 1: EfficientNet-B0. Stage 1 is the stem, stage 9 the head (HEAD_CHANNELS below).
B0_STAGES: tuple[Stage, ...] = (
    # t  k  s    c   n       stage (input resolution)
    Stage(1, 3, 1, 16, 1),   # 2  MBConv1, k3x3 (112x112)
    Stage(6, 3, 2, 24, 2),   # 3  MBConv6, k3x3 (112x112)
    Stage(6, 5, 2, 40, 2),   # 4  MBConv6, k5x5 (56x56)
    Stage(6, 3, 2, 80, 3),   # 5  MBConv6, k3x3 (28x28)
    Stage(6, 5, 1, 112, 3),  # 6  MBConv6, k5x5 (14x14)
    Stage(6, 5, 2, 192, 4),  # 7  MBConv6, k5x5 (14x14)
    Stage(6, 3, 1, 320, 1),  # 8  MBConv6, k3x3 (7x7)
)
STEM_CHANNELS = 32      # stage 1: conv 3x3, stride 2 (224x224)
HEAD_CHANNELS = 1280    # stage 9: conv 1x1 & pooling & FC (7x7)
SE_RATIO = 0.25         # of the block's input channels
BASE_RESOLUTION = 224
CHANNEL_DIVISOR = 8


class Variant(NamedTuple):
  """A released model: its rounded coefficients and the counts it must have."""
  width: float
  depth: float
  resolution: int
  dropout: float
  params: int          # torchvision = Keras trainable = timm
  macs: float          # at `resolution`: torchvision's figure (its "GFLOPS" are GMACs)
  paper_params: str
  paper_macs: str


# papers.md §25: the coefficients of the released B1-B7 (Keras / torchvision / TF-TPU code).
VARIANTS: dict[str, Variant] = {
    'efficientnet_b0': Variant(1.0, 1.0, 224, 0.2, 5_288_548, 0.386e9, '5.3M', '0.39B'),
    'efficientnet_b1': Variant(1.0, 1.1, 240, 0.2, 7_794_184, 0.687e9, '7.8M', '0.70B'),
    'efficientnet_b2': Variant(1.1, 1.2, 260, 0.3, 9_109_994, 0.994e9, '9.2M', '1.0B'),
    'efficientnet_b3': Variant(1.2, 1.4, 300, 0.3, 12_233_232, 1.827e9, '12M', '1.8B'),
    'efficientnet_b4': Variant(1.4, 1.8, 380, 0.4, 19_341_616, 4.394e9, '19M', '4.2B'),
    'efficientnet_b5': Variant(1.6, 2.2, 456, 0.4, 30_389_784, 10.27e9, '30M', '9.9B'),
    'efficientnet_b6': Variant(1.8, 2.6, 528, 0.5, 43_040_704, 19.07e9, '43M', '19B'),
    'efficientnet_b7': Variant(2.0, 3.1, 600, 0.5, 66_347_960, 37.75e9, '66M', '37B'),
}


class CompoundScaling(NamedTuple):
  width: float        # w = beta^phi
  depth: float        # d = alpha^phi
  resolution: float   # r = gamma^phi, a multiple of BASE_RESOLUTION

  @property
  def input_size(self) -> int:
    """The input side in pixels, round(224 * r)."""
    return int(round(BASE_RESOLUTION * self.resolution))


def compound_scaling(phi: float, alpha: float = 1.2, beta: float = 1.1,
                     gamma: float = 1.15) -> CompoundScaling:
  """(w, d, r) of the compound rule (Eq. 3) at `phi`, with the grid-searched alpha, beta, gamma.

  The released B1-B7 do not use these exact values (see `VARIANTS`); use them for networks
  of any phi, e.g. create_model('efficientnet_b0', width_coefficient=s.width,
  depth_coefficient=s.depth) on inputs of s.input_size.
  """
  return CompoundScaling(width=beta ** phi, depth=alpha ** phi, resolution=gamma ** phi)


def round_filters(channels: int, width_coefficient: float) -> int:
  """Channels scaled by w, rounded to a multiple of 8 and never 10% below c * w."""
  return layers.make_divisible(channels * width_coefficient, CHANNEL_DIVISOR)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
  return int(math.ceil(depth_coefficient * repeats))


def scale_stages(width_coefficient: float, depth_coefficient: float,
                 stages: tuple[Stage, ...] = B0_STAGES) -> tuple[Stage, ...]:
  """Table 1 scaled by (w, d): the stage table of the scaled network."""
  return tuple(s._replace(channels=round_filters(s.channels, width_coefficient),
                          layers=round_repeats(s.layers, depth_coefficient)) for s in stages)


class Block(NamedTuple):
  """One MBConv block of a scaled network, as the module builds it."""
  stage: int          # Table 1's stage number, 2 ... 8
  index: int          # 1 ... layers of the stage
  in_channels: int
  out_channels: int
  expand_ratio: int
  kernel_size: int
  stride: int
  se_channels: int
  drop_path_rate: float

  @property
  def name(self) -> str:
    return f'stage{self.stage}_block{self.index}'


def blocks(width_coefficient: float, depth_coefficient: float,
           stochastic_depth_rate: float = 0.2) -> list[Block]:
  """Every MBConv block in order, named stage{2..8}_block{1..n} after Table 1's stages."""
  stages = scale_stages(width_coefficient, depth_coefficient)
  total = sum(s.layers for s in stages)
  in_channels = round_filters(STEM_CHANNELS, width_coefficient)
  out = []
  for stage_number, stage in enumerate(stages, start=2):
    for j in range(stage.layers):
      out.append(Block(
          stage=stage_number, index=j + 1, in_channels=in_channels,
          out_channels=stage.channels, expand_ratio=stage.expand_ratio,
          kernel_size=stage.kernel_size, stride=stage.stride if j == 0 else 1,
          se_channels=max(1, int(in_channels * SE_RATIO)),
          drop_path_rate=stochastic_depth_rate * len(out) / total))
      in_channels = stage.channels
  return out


PADDINGS = ('same', 'symmetric')


class EfficientNet(nn.Module):
  """EfficientNet at any width/depth coefficient; the registry names are B0-B7."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  width_coefficient: float = 1.0     # w: channels round_filters(c * w)
  depth_coefficient: float = 1.0     # d: stage repeats ceil(d * n)
  dropout_rate: float = 0.2          # before the classifier (B0 0.2 ... B7 0.5)
  stochastic_depth_rate: float = 0.2  # block i of N drops its residual branch with rate * i / N
  padding: str = 'same'              # 'same' (TF) | 'symmetric' (PyTorch, torchvision)
  activation: str = 'swish'
  input_mean: tuple[float, ...] | None = None  # (x - mean) / std on the input (Keras: 0-255 px)
  input_std: tuple[float, ...] | None = None
  bn_momentum: float = 0.99          # TF decay of the running averages
  bn_epsilon: float = 1e-3           # TF; torchvision b0-b4: 1e-5
  bn_batch_span: int | None = None
  stem: str = 'imagenet'             # 'imagenet': stem conv stride 2; 'cifar': stride 1 (32x32)

  def _check(self, x: jax.Array) -> None:
    if self.padding not in PADDINGS:
      raise ValueError(f"efficientnet: padding must be 'same' (TF) or 'symmetric' (PyTorch), "
                       f'got {self.padding!r}.')
    for field in ('width_coefficient', 'depth_coefficient'):
      if not getattr(self, field) > 0:
        raise ValueError(f'efficientnet: {field} must be positive, got {getattr(self, field)}.')
    for field in ('dropout_rate', 'stochastic_depth_rate'):
      if layers.is_static(getattr(self, field)) and not 0.0 <= getattr(self, field) < 1.0:
        raise ValueError(f'efficientnet: {field} must be in [0, 1), got {getattr(self, field)}.')
    layers.activation(self.activation)  # raises for an unknown name
    if (self.input_mean is None) != (self.input_std is None):
      raise ValueError('efficientnet: set both input_mean and input_std, or neither.')
    if self.input_mean is not None and not (len(self.input_mean) == len(self.input_std)
                                            == x.shape[-1]):
      raise ValueError(f'efficientnet: input_mean and input_std need one value per input channel '
                       f'({x.shape[-1]}), got {self.input_mean} and {self.input_std}.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check(x)
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    tf_same = self.padding == 'same'
    if self.input_mean is not None:
      x = (x.astype(jnp.float32) - jnp.asarray(self.input_mean)) / jnp.asarray(self.input_std)
    x = layers.ConvBN(round_filters(STEM_CHANNELS, self.width_coefficient), 3,
                      layers.stem_stride('efficientnet', self.stem),
                      'SAME' if tf_same else 1, act=self.activation, name='stem', **bn)(x, train)
    for block in blocks(self.width_coefficient, self.depth_coefficient,
                        self.stochastic_depth_rate):
      x = layers.InvertedResidual(
          block.out_channels, block.expand_ratio, block.kernel_size, block.stride,
          act=self.activation, se_channels=block.se_channels, se_act=self.activation,
          drop_path_rate=block.drop_path_rate,
          padding='SAME' if tf_same else (block.kernel_size - 1) // 2,
          name=block.name, **bn)(x, train)
    x = layers.ConvBN(round_filters(HEAD_CHANNELS, self.width_coefficient), 1, 1, 'VALID',
                      act=self.activation, name='head', **bn)(x, train)
    features = layers.global_avg_pool(x)
    self.sow('intermediates', 'features', features)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    # Keras and torchvision: uniform in +-1/sqrt(num_classes).
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier',
                      kernel_init=nn.initializers.variance_scaling(1 / 3, 'fan_out', 'uniform'))(x)
    return logits.astype(jnp.float32)


for _name, _v in VARIANTS.items():
  register(_name, paper='Tan & Le, ICML 2019', year=2019,
           input_shape=(_v.resolution, _v.resolution, 3), expected_params=_v.params,
           expected_macs=_v.macs, source=f'torchvision {_name} (= Keras trainable = timm)',
           paper_params=_v.paper_params, paper_macs=_v.paper_macs,
           width_coefficient=_v.width, depth_coefficient=_v.depth,
           dropout_rate=_v.dropout)(EfficientNet)
del _name, _v


# ---- Keras Applications: EfficientNetB0 ... B7 ----------------------------------------------

def keras_preprocessing(keras_model, weights: KerasWeights) -> dict[str, Any]:
  """Folds the layers before the stem (Rescaling(1/255), Normalization, and with ImageNet
  weights Rescaling(1/sqrt(std))) into the options input_mean, input_std: (x - mean) / std."""
  channels = int(keras_model.inputs[0].shape[-1])
  scale, offset = np.ones(channels), np.zeros(channels)  # the layers so far: x * scale + offset
  for name, layer in weights.layers.items():
    kind = type(layer).__name__
    if name == 'stem_conv_pad':
      break
    if kind == 'Rescaling':
      s, o = (np.broadcast_to(np.asarray(v, np.float64), channels) for v in (layer.scale,
                                                                           layer.offset))
      scale, offset = scale * s, offset * s + o
    elif kind == 'Normalization':
      if layer.get_weights():
        weights.take(name)  # adapt()'s mean, variance and count, read below as layer constants
      mean = np.asarray(layer.mean, np.float64).reshape(channels)
      std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64).reshape(channels)), 1e-7)
      scale, offset = scale / std, (offset - mean) / std
    elif kind != 'InputLayer':
      raise ConversionError(f'Unexpected Keras layer {name!r} ({kind}) before the stem.')
  if np.all(scale == 1) and np.all(offset == 0):
    return {}
  return {'input_mean': tuple((-offset / scale).tolist()), 'input_std': tuple((1 / scale).tolist())}


@keras_converter(*VARIANTS)
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """keras.applications.EfficientNetB{0..7}. Keras blocks are block{1..7}{a, b, ...}: Keras
  block i is Table 1's stage i + 1, our stage{i+1}_block{j}."""
  options = keras_preprocessing(keras_model, weights)
  epsilons = {weights.bn('stem_bn', ('stem', 'bn'))}
  weights.conv('stem_conv', ('stem', 'conv'))
  v = VARIANTS[name]
  for block in blocks(v.width, v.depth):
    k = f'block{block.stage - 1}{chr(ord("a") + block.index - 1)}_'
    if block.expand_ratio != 1:
      weights.conv(k + 'expand_conv', (block.name, 'expand', 'conv'))
      epsilons.add(weights.bn(k + 'expand_bn', (block.name, 'expand', 'bn')))
    weights.depthwise(k + 'dwconv', (block.name, 'depthwise', 'conv'))
    epsilons.add(weights.bn(k + 'bn', (block.name, 'depthwise', 'bn')))
    weights.conv(k + 'se_reduce', (block.name, 'se', 'reduce'))
    weights.conv(k + 'se_expand', (block.name, 'se', 'expand'))
    weights.conv(k + 'project_conv', (block.name, 'project', 'conv'))
    epsilons.add(weights.bn(k + 'project_bn', (block.name, 'project', 'bn')))
  weights.conv('top_conv', ('head', 'conv'))
  epsilons.add(weights.bn('top_bn', ('head', 'bn')))
  weights.dense('predictions', ('classifier',))
  if len(epsilons) != 1:
    raise ConversionError(f'{name}: the Keras BatchNorm layers use several epsilons {epsilons}.')
  return {**options, 'bn_epsilon': epsilons.pop(), 'padding': 'same'}


@torch_converter(*VARIANTS, source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.efficientnet_b*: features.0 the stem, features.{stage - 1}.{j}.block the
  MBConvs, features.8 the head conv, classifier.1 the FC. Symmetric padding; BN epsilon 1e-5
  for b0-b4 and 1e-3 for b5-b7 (torchvision's choice)."""
  variant = VARIANTS[name]
  weights.conv_bn('features.0.0', 'features.0.1', ('stem',))
  for block in blocks(variant.width, variant.depth):
    weights.inverted_residual(f'features.{block.stage - 1}.{block.index - 1}.block',
                              (block.name,), block.expand_ratio != 1, True)
  weights.conv_bn('features.8.0', 'features.8.1', ('head',))
  weights.head('classifier.1', ('classifier',))
  late = name in ('efficientnet_b5', 'efficientnet_b6', 'efficientnet_b7')
  return {'padding': 'symmetric', 'bn_epsilon': 1e-3 if late else 1e-5,
          'bn_momentum': 0.99 if late else 0.9}
