"""MobileNets v1, v2 and v3.

  v1  Andrew G. Howard, Menglong Zhu, Bo Chen, Dmitry Kalenichenko, Weijun Wang, Tobias Weyand,
      Marco Andreetto, Hartwig Adam, "MobileNets: Efficient Convolutional Neural Networks for
      Mobile Vision Applications", arXiv 1704.04861, 2017.
  v2  Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh Chen,
      "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
  v3  Andrew Howard, Mark Sandler, Grace Chu, Liang-Chieh Chen, Bo Chen, Mingxing Tan, Weijun Wang,
      Yukun Zhu, Ruoming Pang, Vijay Vasudevan, Quoc V. Le, Hartwig Adam, "Searching for
      MobileNetV3", ICCV 2019.

What this file encodes (papers.md §18-20):
  v1  Table 1 (`V1_BODY`): a 3x3 stride-2 conv of 32 channels, 13 depthwise-separable layers
      (3x3 depthwise -> BN -> ReLU -> 1x1 pointwise -> BN -> ReLU), global average pooling, FC.
      The width multiplier alpha gives every layer int(c * alpha) channels (Table 6: alpha 1,
      0.75, 0.5, 0.25 -> 4,231,976 / 2,585,560 / 1,331,592 / 470,072 parameters); the
      resolution multiplier rho is the input size (224, 192, 160, 128: Table 7), which the
      network takes as it is fully convolutional up to the pooling. Table 1 prints stride 2 for
      the last depthwise layer, a misprint (tensorflow/models#1997): its own sizes (7x7 in,
      7x7 out) and every release say 1.
  v2  Table 2 (`V2_BODY`, the (t, c, n, s) rows): inverted residual bottlenecks
      (`layers.InvertedResidual`: 1x1 expansion by t -> 3x3 depthwise -> linear 1x1 projection,
      ReLU6, identity shortcut when stride 1 and c_in = c_out; no expansion conv when t = 1),
      then a 1x1 conv to 1280, pooling, FC. The width multiplier rounds every layer to
      make_divisible(c * alpha, 8); the last conv stays 1280 for alpha <= 1 and becomes
      make_divisible(1280 * alpha, 8) above (1.4: 1792), as the paper's TF code does.
  v3  Tables 1 and 2 (`V3_LARGE`, `V3_SMALL`): the bottlenecks of v2 with the columns the search
      chose per block: kernel 3 or 5, expansion width ("exp size"), squeeze-and-excitation
      (squeeze make_divisible(exp / 4, 8), ReLU, hard-sigmoid gate), and the nonlinearity RE
      (ReLU) or HS (h-swish(x) = x ReLU6(x + 3) / 6). The stem is 16 channels with h-swish;
      the efficient last stage pools BEFORE the last 1x1 convolutions: 1x1 conv to 960 (Large)
      / 576 (Small) + BN + h-swish -> pool -> 1x1 "conv" to 1280 / 1024 with h-swish and no BN
      (a Dense on the pooled vector) -> dropout -> classifier. The width multiplier follows the
      paper's TF code (TF-slim, also Keras): outputs make_divisible(c * alpha, 8), each
      expansion width make_divisible(scaled input * exp / input, 8), the 1280/1024 layer scaled
      only above 1. This reproduces Table 3's 0.75 rows (Large 3,993,528 ~ "4.0M", Small
      2,041,872 ~ "2.0M"); torchvision instead scales the exp sizes and the 1280 directly, a
      different network for alpha != 1.

Padding: TF 'SAME' by default (the papers' TF code and the Keras models; Flax's 'SAME' is TF's
rule: stride-2 layers pad one more row/column at the bottom/right on even inputs); 'symmetric'
pads k // 2 on each side as the PyTorch ports (torchvision, timm) do. Keras's MobileNet (v1)
pads stride-2 depthwise inputs by ((0, 1), (0, 1)) before a VALID conv, TF 'SAME' on the even
sizes every standard resolution gives.

Switches (module fields), each an ablation or a port:
  v1  width_multiplier alpha (Table 6); the input size is rho (Table 7); depthwise=False
      replaces each depthwise-separable layer by a full 3x3 convolution, the "Conv MobileNet"
      of Table 4 (29.3M parameters, 4866M mult-adds: 6.9x and 8.6x the separable net's);
      activation 'relu' (the paper) | 'relu6' (TF-slim and Keras releases: their weights
      need it).
  v2  width_multiplier (the paper's 0.35 ... 1.4 sweep).
  v3  width_multiplier (Table 3: 0.75 and 1.0); input_mean/input_std fold a per-channel
      (x - mean) / std into the network (Keras's include_preprocessing=True: 0-255 pixels,
      mean = std = 127.5); off by default, the data pipeline normalises.
  all dropout_rate before the classifier; padding 'same' | 'symmetric'; BatchNorm momentum
      (decay of the running averages: v1 0.9997 and v2 0.997 as TF-slim trained them, v3 the
      paper's 0.99; Keras's models use 0.99 / 0.999), epsilon (TF's 1e-3) and batch span.

Small inputs (not the papers; the default is the papers'): stem='cifar' gives the stem conv of
v1, v2 and v3 stride 1, so a 32x32 image ends at 2x2 (not 1x1 at /32) with the paper's strides.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import register

PADDINGS = ('same', 'symmetric')
CHANNEL_DIVISOR = 8
# torchvision's MobileNets: classifier weights N(0, 0.01), zero biases.
_CLASSIFIER_INIT = nn.initializers.normal(0.01)


def _conv_padding(padding: str, kernel_size: int):
  return 'SAME' if padding == 'same' else kernel_size // 2


def _check_common(model: nn.Module, family: str) -> None:
  if model.padding not in PADDINGS:
    raise ValueError(f"{family}: padding must be 'same' (TF) or 'symmetric' (PyTorch), "
                     f'got {model.padding!r}.')
  if not model.width_multiplier > 0:
    raise ValueError(f'{family}: width_multiplier must be positive, got {model.width_multiplier}.')
  if not 0.0 <= model.dropout_rate < 1.0:
    raise ValueError(f'{family}: dropout_rate must be in [0, 1), got {model.dropout_rate}.')


def _classify(model: nn.Module, features: jax.Array, train: bool) -> jax.Array:
  """Sows the pooled features, then dropout -> FC -> float32 logits."""
  model.sow('intermediates', 'features', features)
  x = nn.Dropout(model.dropout_rate, deterministic=not train)(features)
  logits = nn.Dense(model.num_classes, dtype=model.dtype, kernel_init=_CLASSIFIER_INIT,
                    name='classifier')(x)
  return logits.astype(jnp.float32)


def last_layer_width(channels: int, width_multiplier: float) -> int:
  """v2's 1280 and v3's 1280/1024: kept for alpha <= 1 (small models keep a wide classifier
  input), make_divisible(c * alpha, 8) above."""
  if width_multiplier <= 1.0:
    return channels
  return layers.make_divisible(channels * width_multiplier, CHANNEL_DIVISOR)


# ---- MobileNet v1 ------------------------------------------------------------------------------

class SeparableRow(NamedTuple):
  """Rows of Table 1: `repeats` x (3x3 depthwise at `stride`, 1x1 pointwise to `channels`)."""
  channels: int
  stride: int
  repeats: int


V1_STEM_CHANNELS = 32  # Table 1's first row: Conv / s2, 3x3x3x32 (224x224 input)
V1_BODY: tuple[SeparableRow, ...] = (
    #            c    s  n       Table 1 (input size)
    SeparableRow(64, 1, 1),    # Conv dw / s1, Conv / s1 1x1x32x64        (112x112)
    SeparableRow(128, 2, 1),   # Conv dw / s2, Conv / s1 1x1x64x128       (112x112)
    SeparableRow(128, 1, 1),   # Conv dw / s1, Conv / s1 1x1x128x128      (56x56)
    SeparableRow(256, 2, 1),   # Conv dw / s2, Conv / s1 1x1x128x256      (56x56)
    SeparableRow(256, 1, 1),   # Conv dw / s1, Conv / s1 1x1x256x256      (28x28)
    SeparableRow(512, 2, 1),   # Conv dw / s2, Conv / s1 1x1x256x512      (28x28)
    SeparableRow(512, 1, 5),   # 5x Conv dw / s1, Conv / s1 1x1x512x512   (14x14)
    SeparableRow(1024, 2, 1),  # Conv dw / s2, Conv / s1 1x1x512x1024     (14x14)
    SeparableRow(1024, 1, 1),  # Conv dw / s1 (printed s2), Conv / s1      (7x7)
)
V1_ACTIVATIONS = ('relu', 'relu6')


class V1Layer(NamedTuple):
  """One depthwise-separable layer of a MobileNet v1 at some width multiplier."""
  index: int  # 1 ... 13, Keras's block_id
  in_channels: int
  out_channels: int
  stride: int

  @property
  def name(self) -> str:
    return f'block{self.index}'


def v1_layers(width_multiplier: float = 1.0) -> list[V1Layer]:
  """Table 1 expanded into its 13 separable layers, with int(c * alpha) channels."""
  out = []
  in_channels = int(V1_STEM_CHANNELS * width_multiplier)
  for row in V1_BODY:
    for j in range(row.repeats):
      channels = int(row.channels * width_multiplier)
      out.append(V1Layer(len(out) + 1, in_channels, channels, row.stride if j == 0 else 1))
      in_channels = channels
  return out


@register('mobilenet_v1', paper='Howard et al., arXiv 1704.04861', year=2017,
          input_shape=(224, 224, 3), expected_params=4_231_976, expected_macs=568.7e6,
          source='Keras MobileNet (trainable) = timm mobilenetv1_100; MACs papers.md §18',
          paper_params='4.2M', paper_macs='569M')
class MobileNetV1(nn.Module):
  """MobileNet (v1) at any width multiplier and input size (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  width_multiplier: float = 1.0  # alpha: int(c * alpha) channels everywhere (Table 6)
  depthwise: bool = True         # False: full 3x3 convs, Table 4's "Conv MobileNet"
  activation: str = 'relu'       # 'relu' (paper) | 'relu6' (TF-slim and Keras releases)
  dropout_rate: float = 1e-3     # before the classifier (TF-slim keep_prob 0.999, Keras)
  padding: str = 'same'          # 'same' (TF) | 'symmetric' (PyTorch ports, timm)
  bn_momentum: float = 0.9997    # TF-slim's decay for MobileNet v1
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  stem: str = 'imagenet'         # 'imagenet': stem conv stride 2; 'cifar': stride 1 (32x32 in)

  def _check(self) -> None:
    _check_common(self, 'mobilenet_v1')
    if self.activation not in V1_ACTIVATIONS:
      raise ValueError(f"mobilenet_v1: activation must be 'relu' (paper) or 'relu6' (TF-slim/"
                       f'Keras), got {self.activation!r}.')
    if int(V1_STEM_CHANNELS * self.width_multiplier) < 1:
      raise ValueError(f'mobilenet_v1: width_multiplier {self.width_multiplier} leaves the '
                       f'{V1_STEM_CHANNELS}-channel stem with no channels.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check()
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    pad3 = _conv_padding(self.padding, 3)
    x = layers.ConvBN(int(V1_STEM_CHANNELS * self.width_multiplier), 3,
                      layers.stem_stride('mobilenet_v1', self.stem), pad3,
                      act=self.activation, name='stem', **bn)(x, train)
    for layer in v1_layers(self.width_multiplier):
      if self.depthwise:
        x = layers.SeparableConv(layer.out_channels, 3, layer.stride, pad3, depthwise_bn_act=True,
                                 act=self.activation, name=layer.name, **bn)(x, train)
      else:
        x = layers.ConvBN(layer.out_channels, 3, layer.stride, pad3, act=self.activation,
                          name=layer.name, **bn)(x, train)
    return _classify(self, layers.global_avg_pool(x), train)


# ---- MobileNet v2 ------------------------------------------------------------------------------

class BottleneckRow(NamedTuple):
  """A row of Table 2: `repeats` bottlenecks; the first has the stride."""
  expand_ratio: int  # t
  channels: int      # c
  repeats: int       # n
  stride: int        # s


V2_STEM_CHANNELS = 32  # conv2d 3x3, stride 2 (224x224)
V2_BODY: tuple[BottleneckRow, ...] = (
    #             t    c  n  s      Table 2 (input size)
    BottleneckRow(1, 16, 1, 1),   # bottleneck (112x112)
    BottleneckRow(6, 24, 2, 2),   # bottleneck (112x112)
    BottleneckRow(6, 32, 3, 2),   # bottleneck (56x56)
    BottleneckRow(6, 64, 4, 2),   # bottleneck (28x28)
    BottleneckRow(6, 96, 3, 1),   # bottleneck (14x14)
    BottleneckRow(6, 160, 3, 2),  # bottleneck (14x14)
    BottleneckRow(6, 320, 1, 1),  # bottleneck (7x7)
)
V2_LAST_CHANNELS = 1280  # conv2d 1x1 (7x7), then avgpool 7x7 and conv2d 1x1 k (the classifier)


class Bottleneck(NamedTuple):
  """One inverted-residual block of a MobileNet v2 or v3 as the module builds it."""
  name: str
  in_channels: int
  expanded_channels: int
  out_channels: int
  kernel_size: int
  stride: int
  se_channels: int = 0           # 0: no squeeze-and-excitation
  activation: str = 'relu6'


def v2_blocks(width_multiplier: float = 1.0) -> list[Bottleneck]:
  """Table 2 expanded into its 17 bottlenecks, named stage{2..8}_block{j} after its rows
  (row 1 is the stem conv)."""
  def scaled(c):
    return layers.make_divisible(c * width_multiplier, CHANNEL_DIVISOR)

  out = []
  in_channels = scaled(V2_STEM_CHANNELS)
  for stage, row in enumerate(V2_BODY, start=2):
    for j in range(row.repeats):
      channels = scaled(row.channels)
      out.append(Bottleneck(f'stage{stage}_block{j + 1}', in_channels,
                            in_channels * row.expand_ratio, channels, 3,
                            row.stride if j == 0 else 1))
      in_channels = channels
  return out


def _bottleneck(block: Bottleneck, padding: str, bn: dict[str, Any], x: jax.Array,
                train: bool) -> jax.Array:
  """`block` as layers.InvertedResidual; its SE (v3's) squeezes with ReLU, gates with
  hard-sigmoid."""
  return layers.InvertedResidual(
      block.out_channels, kernel_size=block.kernel_size, strides=block.stride,
      act=block.activation, se_channels=block.se_channels, se_act='relu',
      se_gate='hard_sigmoid', padding=_conv_padding(padding, block.kernel_size),
      expanded_channels=block.expanded_channels, name=block.name, **bn)(x, train)


@register('mobilenet_v2', paper='Sandler et al., CVPR 2018', year=2018, input_shape=(224, 224, 3),
          expected_params=3_504_872, expected_macs=300.8e6,
          source='torchvision mobilenet_v2 (= Keras trainable = timm mobilenetv2_100)',
          paper_params='3.4M', paper_macs='300M')
class MobileNetV2(nn.Module):
  """MobileNetV2 at any width multiplier (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  width_multiplier: float = 1.0  # make_divisible(c * alpha, 8); last conv 1280 up to alpha 1
  dropout_rate: float = 0.2      # before the classifier (TF-slim keep_prob 0.8, torchvision)
  padding: str = 'same'          # 'same' (TF, Keras) | 'symmetric' (torchvision)
  bn_momentum: float = 0.997     # TF-slim's decay; Keras 0.999, torchvision 0.9 (PyTorch 0.1)
  bn_epsilon: float = 1e-3       # TF; torchvision 1e-5
  bn_batch_span: int | None = None
  stem: str = 'imagenet'         # 'imagenet': stem conv stride 2; 'cifar': stride 1 (32x32 in)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_common(self, 'mobilenet_v2')
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    stem = layers.make_divisible(V2_STEM_CHANNELS * self.width_multiplier, CHANNEL_DIVISOR)
    x = layers.ConvBN(stem, 3, layers.stem_stride('mobilenet_v2', self.stem),
                      _conv_padding(self.padding, 3), act='relu6', name='stem', **bn)(x, train)
    for block in v2_blocks(self.width_multiplier):
      x = _bottleneck(block, self.padding, bn, x, train)
    x = layers.ConvBN(last_layer_width(V2_LAST_CHANNELS, self.width_multiplier), 1, 1, 'VALID',
                      act='relu6', name='head', **bn)(x, train)
    return _classify(self, layers.global_avg_pool(x), train)


# ---- MobileNet v3 ------------------------------------------------------------------------------

RE, HS = 'relu', 'hard_swish'  # the tables' NL column


class V3Row(NamedTuple):
  """A bneck row of Tables 1 and 2 (input size in the comments)."""
  kernel_size: int
  expanded: int   # "exp size"
  channels: int   # "#out"
  se: bool        # "SE"
  nonlinearity: str  # "NL": RE or HS
  stride: int     # "s"


class V3Spec(NamedTuple):
  stem: int        # conv2d 3x3, stride 2, h-swish (224x224)
  rows: tuple[V3Row, ...]
  last_conv: int   # conv2d 1x1 + BN + h-swish (7x7)
  head: int        # pool 7x7 -> conv2d 1x1, NBN, h-swish (1x1); then conv2d 1x1, NBN, k


V3_LARGE = V3Spec(stem=16, last_conv=960, head=1280, rows=(   # Table 1
    #     k  exp  #out  SE     NL  s     (input)
    V3Row(3, 16, 16, False, RE, 1),    # 112x112x16
    V3Row(3, 64, 24, False, RE, 2),    # 112x112x16
    V3Row(3, 72, 24, False, RE, 1),    # 56x56x24
    V3Row(5, 72, 40, True, RE, 2),     # 56x56x24
    V3Row(5, 120, 40, True, RE, 1),    # 28x28x40
    V3Row(5, 120, 40, True, RE, 1),    # 28x28x40
    V3Row(3, 240, 80, False, HS, 2),   # 28x28x40
    V3Row(3, 200, 80, False, HS, 1),   # 14x14x80
    V3Row(3, 184, 80, False, HS, 1),   # 14x14x80
    V3Row(3, 184, 80, False, HS, 1),   # 14x14x80
    V3Row(3, 480, 112, True, HS, 1),   # 14x14x80
    V3Row(3, 672, 112, True, HS, 1),   # 14x14x112
    V3Row(5, 672, 160, True, HS, 2),   # 14x14x112
    V3Row(5, 960, 160, True, HS, 1),   # 7x7x160
    V3Row(5, 960, 160, True, HS, 1),   # 7x7x160
))
V3_SMALL = V3Spec(stem=16, last_conv=576, head=1024, rows=(   # Table 2
    V3Row(3, 16, 16, True, RE, 2),     # 112x112x16
    V3Row(3, 72, 24, False, RE, 2),    # 56x56x16
    V3Row(3, 88, 24, False, RE, 1),    # 28x28x24
    V3Row(5, 96, 40, True, HS, 2),     # 28x28x24
    V3Row(5, 240, 40, True, HS, 1),    # 14x14x40
    V3Row(5, 240, 40, True, HS, 1),    # 14x14x40
    V3Row(5, 120, 48, True, HS, 1),    # 14x14x40
    V3Row(5, 144, 48, True, HS, 1),    # 14x14x48
    V3Row(5, 288, 96, True, HS, 2),    # 14x14x48
    V3Row(5, 576, 96, True, HS, 1),    # 7x7x96
    V3Row(5, 576, 96, True, HS, 1),    # 7x7x96
))
V3_SPECS = {'large': V3_LARGE, 'small': V3_SMALL}
V3_SE_DIVISOR = 4  # squeeze = make_divisible(expanded / 4, 8)


def v3_blocks(size: str = 'large', width_multiplier: float = 1.0) -> list[Bottleneck]:
  """Table 1 (large) or 2 (small) as bottlenecks block1 ... blockN at width alpha (TF-slim's
  rule: each expansion is the table's ratio exp / input applied to the scaled input)."""
  spec = V3_SPECS[size]

  def scaled(c):
    return layers.make_divisible(c * width_multiplier, CHANNEL_DIVISOR)

  out = []
  table_in, in_channels = spec.stem, scaled(spec.stem)
  for i, row in enumerate(spec.rows, start=1):
    expanded = layers.make_divisible(in_channels * row.expanded / table_in, CHANNEL_DIVISOR)
    se = layers.make_divisible(expanded / V3_SE_DIVISOR, CHANNEL_DIVISOR) if row.se else 0
    out.append(Bottleneck(f'block{i}', in_channels, expanded, scaled(row.channels),
                          row.kernel_size, row.stride, se, row.nonlinearity))
    table_in, in_channels = row.channels, scaled(row.channels)
  return out


@register('mobilenet_v3_large', paper='Howard et al., ICCV 2019', year=2019,
          input_shape=(224, 224, 3), expected_params=5_483_032, expected_macs=216.6e6,
          source='torchvision mobilenet_v3_large (= Keras trainable = timm)',
          paper_params='5.4M', paper_macs='219M', size='large')
@register('mobilenet_v3_small', paper='Howard et al., ICCV 2019', year=2019,
          input_shape=(224, 224, 3), expected_params=2_542_856, expected_macs=56.5e6,
          source='torchvision mobilenet_v3_small (= Keras trainable = timm)',
          paper_params='2.5M', paper_macs='56M', size='small')
class MobileNetV3(nn.Module):
  """MobileNetV3-Large or -Small at any width multiplier (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  size: str = 'large'            # 'large' (Table 1) | 'small' (Table 2)
  width_multiplier: float = 1.0  # Table 3: 1.0 and 0.75 (TF-slim's rounding, docstring)
  dropout_rate: float = 0.2      # before the classifier (keep_prob 0.8)
  padding: str = 'same'          # 'same' (TF, Keras) | 'symmetric' (torchvision, timm)
  input_mean: tuple[float, ...] | None = None  # (x - mean) / std first (Keras: 127.5, 127.5)
  input_std: tuple[float, ...] | None = None
  bn_momentum: float = 0.99      # the paper's "average decay 0.99" (= torchvision's 0.01)
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  stem: str = 'imagenet'         # 'imagenet': stem conv stride 2; 'cifar': stride 1 (32x32 in)

  def _check(self, x: jax.Array) -> None:
    _check_common(self, 'mobilenet_v3')
    if self.size not in V3_SPECS:
      raise ValueError(f"mobilenet_v3: size must be 'large' or 'small', got {self.size!r}.")
    if (self.input_mean is None) != (self.input_std is None):
      raise ValueError('mobilenet_v3: set both input_mean and input_std, or neither.')
    if self.input_mean is not None and not (len(self.input_mean) == len(self.input_std)
                                            == x.shape[-1]):
      raise ValueError(f'mobilenet_v3: input_mean and input_std need one value per input '
                       f'channel ({x.shape[-1]}), got {self.input_mean} and {self.input_std}.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check(x)
    spec = V3_SPECS[self.size]
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    if self.input_mean is not None:
      x = (x - jnp.asarray(self.input_mean, x.dtype)) / jnp.asarray(self.input_std, x.dtype)
    stem = layers.make_divisible(spec.stem * self.width_multiplier, CHANNEL_DIVISOR)
    x = layers.ConvBN(stem, 3, layers.stem_stride('mobilenet_v3', self.stem),
                      _conv_padding(self.padding, 3), act=HS, name='stem', **bn)(x, train)
    for block in v3_blocks(self.size, self.width_multiplier):
      x = _bottleneck(block, self.padding, bn, x, train)
    last_conv = layers.make_divisible(spec.last_conv * self.width_multiplier, CHANNEL_DIVISOR)
    x = layers.ConvBN(last_conv, 1, 1, 'VALID', act=HS, name='head', **bn)(x, train)
    # The efficient last stage: pool first, so the 1280-wide layer costs 1.2M MACs, not 60M.
    x = nn.Dense(last_layer_width(spec.head, self.width_multiplier), dtype=self.dtype,
                 name='pre_logits')(layers.global_avg_pool(x))
    return _classify(self, layers.hard_swish(x), train)


# ---- Keras Applications: MobileNet, MobileNetV2, MobileNetV3Large/Small --------------------------

def _dense_from_1x1_conv(weights: KerasWeights, keras_name: str, path: tuple[str, ...]) -> None:
  """A Keras 1x1 Conv2D applied to the pooled [N, 1, 1, C] map is our Dense on [N, C]."""
  kernel, bias = weights.take(keras_name)
  weights.put('params', path, 'kernel', kernel.reshape(kernel.shape[-2:]))
  weights.put('params', path, 'bias', bias)


def _bn(weights: KerasWeights, keras_name: str, path: tuple[str, ...],
        found: set[tuple[float, float]]) -> None:
  """Maps a BatchNormalization layer, collecting its (epsilon, momentum)."""
  epsilon = weights.bn(keras_name, path)
  found.add((epsilon, float(weights.layer(keras_name).momentum)))


def _bn_options(found: set[tuple[float, float]], name: str) -> dict[str, Any]:
  if len(found) != 1:
    raise ConversionError(f'{name}: the Keras BatchNorm layers differ in (epsilon, momentum): '
                          f'{sorted(found)}.')
  epsilon, momentum = found.pop()
  return {'bn_epsilon': epsilon, 'bn_momentum': momentum, 'padding': 'same'}


def _width_from(weights: KerasWeights, keras_name: str, table_channels: int) -> float:
  """The width multiplier, read off a layer whose table width is a multiple of 8 (the
  rounding keeps those exact); the shape check catches any other reading."""
  return int(weights.layer(keras_name).get_weights()[0].shape[-1]) / table_channels


@keras_converter('mobilenet_v1')
def _mobilenet_v1_from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """keras.applications.MobileNet: ReLU6, BN epsilon 1e-3, Keras's conv_dw_i/conv_pw_i are our
  block{i}, and its head's 1x1 conv `conv_preds` our Dense. Needs depth_multiplier=1."""
  del keras_model
  alpha = _width_from(weights, 'conv_pw_13', V1_BODY[-1].channels)
  if weights.layer('conv_dw_1').get_weights()[0].shape[-1] != 1:
    raise ConversionError(f'{name}: Keras depth_multiplier != 1 has no counterpart here.')
  found = set()
  weights.conv('conv1', ('stem', 'conv'))
  _bn(weights, 'conv1_bn', ('stem', 'bn'), found)
  for layer in v1_layers(alpha):
    i = layer.index
    weights.depthwise(f'conv_dw_{i}', (layer.name, 'depthwise', 'conv'))
    _bn(weights, f'conv_dw_{i}_bn', (layer.name, 'depthwise', 'bn'), found)
    weights.conv(f'conv_pw_{i}', (layer.name, 'pointwise', 'conv'))
    _bn(weights, f'conv_pw_{i}_bn', (layer.name, 'pointwise', 'bn'), found)
  _dense_from_1x1_conv(weights, 'conv_preds', ('classifier',))
  return {**_bn_options(found, name), 'width_multiplier': alpha, 'activation': 'relu6'}


def _keras_bottleneck(weights: KerasWeights, prefix: str, block: Bottleneck,
                      found: set[tuple[float, float]], bn_suffix: str) -> None:
  """Keras's {prefix}expand / depthwise / [squeeze_excite_conv(_1)] / project (+ BN)."""
  if block.expanded_channels != block.in_channels:
    weights.conv(f'{prefix}expand', (block.name, 'expand', 'conv'))
    _bn(weights, f'{prefix}expand_{bn_suffix}', (block.name, 'expand', 'bn'), found)
  weights.depthwise(f'{prefix}depthwise', (block.name, 'depthwise', 'conv'))
  _bn(weights, f'{prefix}depthwise_{bn_suffix}', (block.name, 'depthwise', 'bn'), found)
  if block.se_channels:
    weights.conv(f'{prefix}squeeze_excite_conv', (block.name, 'se', 'reduce'))
    weights.conv(f'{prefix}squeeze_excite_conv_1', (block.name, 'se', 'expand'))
  weights.conv(f'{prefix}project', (block.name, 'project', 'conv'))
  _bn(weights, f'{prefix}project_{bn_suffix}', (block.name, 'project', 'bn'), found)


@keras_converter('mobilenet_v2')
def _mobilenet_v2_from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """keras.applications.MobileNetV2: Keras's block_{i} (expanded_conv for i = 0) is our i-th
  bottleneck; Keras has no dropout (inference is the same)."""
  del keras_model
  alpha = _width_from(weights, 'block_16_project', V2_BODY[-1].channels)
  found = set()
  weights.conv('Conv1', ('stem', 'conv'))
  _bn(weights, 'bn_Conv1', ('stem', 'bn'), found)
  for i, block in enumerate(v2_blocks(alpha)):
    _keras_bottleneck(weights, f'block_{i}_' if i else 'expanded_conv_', block, found, 'BN')
  weights.conv('Conv_1', ('head', 'conv'))
  _bn(weights, 'Conv_1_bn', ('head', 'bn'), found)
  weights.dense('predictions', ('classifier',))
  return {**_bn_options(found, name), 'width_multiplier': alpha}


def _keras_v3_preprocessing(weights: KerasWeights, channels: int) -> dict[str, Any]:
  """include_preprocessing=True adds Rescaling(1 / 127.5, offset -1): (x - 127.5) / 127.5."""
  rescaling = [l for l in weights.layers.values() if type(l).__name__ == 'Rescaling']
  if not rescaling:
    return {}
  if len(rescaling) > 1:
    raise ConversionError(f'Expected one Rescaling layer, found {len(rescaling)}.')
  scale, offset = float(rescaling[0].scale), float(rescaling[0].offset)
  return {'input_mean': (-offset / scale,) * channels, 'input_std': (1.0 / scale,) * channels}


@keras_converter('mobilenet_v3_large', 'mobilenet_v3_small')
def _mobilenet_v3_from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """keras.applications.MobileNetV3Large/Small (not minimalistic): Keras's expanded_conv_{i}
  (expanded_conv for i = 0) is our block{i+1}; conv_2 and logits, 1x1 convs on the pooled map,
  are our pre_logits and classifier Dense layers."""
  size = name.rsplit('_', 1)[-1]
  rows = V3_SPECS[size].rows

  def prefix(i):
    return f'expanded_conv_{i}_' if i else 'expanded_conv_'

  first_se = next(i for i, row in enumerate(rows) if row.se)
  if f'{prefix(first_se)}squeeze_excite_conv' not in weights.layers:
    raise ConversionError(f'{name}: the Keras model has no squeeze-and-excitation layers '
                          '(minimalistic=True), a network this model does not build.')
  alpha = _width_from(weights, f'{prefix(len(rows) - 1)}project', rows[-1].channels)
  found = set()
  weights.conv('conv', ('stem', 'conv'))
  _bn(weights, 'conv_bn', ('stem', 'bn'), found)
  for i, block in enumerate(v3_blocks(size, alpha)):
    _keras_bottleneck(weights, prefix(i), block, found, 'bn')
  weights.conv('conv_1', ('head', 'conv'))
  _bn(weights, 'conv_1_bn', ('head', 'bn'), found)
  _dense_from_1x1_conv(weights, 'conv_2', ('pre_logits',))
  _dense_from_1x1_conv(weights, 'logits', ('classifier',))
  channels = int(keras_model.inputs[0].shape[-1])
  return {**_bn_options(found, name), **_keras_v3_preprocessing(weights, channels),
          'width_multiplier': alpha}


# ---- torchvision: mobilenet_v2, mobilenet_v3_large/small ----------------------------------

def _torch_bottleneck(weights: TorchWeights, prefix: str, block: Bottleneck) -> None:
  weights.inverted_residual(prefix, (block.name,), block.expanded_channels != block.in_channels,
                            bool(block.se_channels))


@torch_converter('mobilenet_v2', source='torchvision')
def _mobilenet_v2_from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.mobilenet_v2: features.0 the stem, features.{1..17}.conv the
  bottlenecks, features.18 the 1x1 to 1280, classifier.1 the FC; symmetric padding and
  PyTorch's BN epsilon 1e-5."""
  del name
  weights.conv_bn('features.0.0', 'features.0.1', ('stem',))
  blocks = v2_blocks()
  for i, block in enumerate(blocks, start=1):
    _torch_bottleneck(weights, f'features.{i}.conv', block)
  last = len(blocks) + 1
  weights.conv_bn(f'features.{last}.0', f'features.{last}.1', ('head',))
  weights.head('classifier.1', ('classifier',))
  return {'padding': 'symmetric', 'bn_epsilon': 1e-5, 'bn_momentum': 0.9}


@torch_converter('mobilenet_v3_large', 'mobilenet_v3_small', source='torchvision')
def _mobilenet_v3_from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.mobilenet_v3_*: features.0 the stem, features.{i}.block the bnecks,
  then the last 1x1 conv, classifier.0 (our pre_logits) and classifier.3; symmetric padding,
  BN epsilon 1e-3 (torchvision's choice for v3, as TF)."""
  size = name.rsplit('_', 1)[-1]
  weights.conv_bn('features.0.0', 'features.0.1', ('stem',))
  blocks = v3_blocks(size)
  for i, block in enumerate(blocks, start=1):
    _torch_bottleneck(weights, f'features.{i}.block', block)
  last = len(blocks) + 1
  weights.conv_bn(f'features.{last}.0', f'features.{last}.1', ('head',))
  weights.dense('classifier.0', ('pre_logits',))
  weights.head('classifier.3', ('classifier',))
  return {'padding': 'symmetric', 'bn_epsilon': 1e-3}
