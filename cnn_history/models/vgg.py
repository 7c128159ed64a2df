"""VGG — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (arXiv 1409.1556, 2014); papers.md §5.

What this file encodes:
  Table 1, the configurations A, A-LRN, B, C, D, E (VGG_CONFIGS, in the paper's notation):
    'conv<receptive field>-<channels>' is a stride-1 convolution padded to keep the size
    (3x3 pad 1; config C's 1x1 convs pad 0), followed by ReLU; 'maxpool' is 2x2 stride 2;
    'LRN' is AlexNet's normalisation (k=2, n=5, alpha=1e-4, beta=0.75; A-LRN only).
    Then FC-4096, FC-4096 (ReLU, dropout 0.5 after each) and FC-1000 (AlexNet's head).
  Weight layers 11/11/13/16/16/19; parameters 132,863,336 / 132,863,336 / 133,047,848 /
    133,638,952 / 138,357,544 / 143,667,240 (Table 2: 133/133/133/134/138/144M); MACs at 224
    7.61/7.61/11.31/11.77/15.47/19.63G. Layer names follow the authors' Caffe release:
    conv<block>_<index>, fc6, fc7, fc8.
  Dense evaluation (§3.2): FC6 becomes a 7x7 convolution and FC7/FC8 1x1 convolutions, the
    network runs on the whole image of any size (at least 224x224), and the class-score map is
    averaged over space. `fully_convolutional=True` does that with the same parameters (one
    checkpoint serves both modes); at 224 the two modes compute the same logits.
  The `_bn` names (BatchNorm after each conv, before its ReLU; the conv keeps its bias) are
    torchvision's, not the paper's (BN came in 2015). BN defaults are PyTorch's (momentum
    0.1, i.e. 0.9 here; epsilon 1e-5).

Initialisation (§3.1). Net A was trained from random init ("a normal distribution with the zero
mean and 10^-2 variance", zero biases), and the deeper nets started from A's first four conv
layers and three FC layers. N(0, 0.01^2) alone does not let 16-19 ReLU layers train: each 3x3
layer scales the activations' variance by fan_in x 1e-4 / 2 (0.03 with 64 input maps, 0.23
with 512). The paper adds that Glorot & Bengio's (2010) init trains the deep nets without
pre-training, so that is the default ('glorot'); 'he' is He et al. (2015); 'paper' is
N(0, 0.01^2), the reading of "10^-2 variance" that Caffe reproductions used (taken literally,
std 0.1, the variance instead grows 3-23x per layer).

Switches:
  config               'A' | 'A-LRN' | 'B' | 'C' | 'D' | 'E'
  batch_norm           BatchNorm after every conv (torchvision's vgg*_bn)
  fully_convolutional  §3.2's dense evaluation (above)
  dropout_rate         after the ReLUs of FC6 and FC7 (§3.1: 0.5)
  initializer          'glorot' | 'he' | 'paper' (above)
  width_multiplier, fc_widths, fc6_window   not the paper: small inputs. Every conv's maps x
                       width_multiplier (rounded); FC6/FC7 widths (4096, 4096); the map FC6
                       reads (7 at 224; 1 for 32x32 inputs, which the five 2x2 pools take to
                       1x1 — the CIFAR VGGs' head). Defaults are the paper's.

Keras: tf.keras.applications.VGG16/VGG19 are configs D/E with the same layer order, 'same'
padding (= pad 1 for 3x3/1), and a Flatten of NHWC maps in (H, W, C) order, the order of FC6's
rows here; the converter maps block<b>_conv<i> -> conv<b>_<i>, fc1/fc2/predictions -> fc6-fc8.
Keras's preprocessing ("caffe" mode: RGB->BGR, mean subtraction) stays outside the model.
"""

from __future__ import annotations

from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.alexnet import KERNEL_INITS, check_choice, classifier_head, require_map
from cnn_history.models.registry import get_spec, register

# Table 1 of the paper, one configuration per entry (columns A-E of the table).
VGG_CONFIGS: dict[str, tuple[str, ...]] = {
    'A': ('conv3-64', 'maxpool',
          'conv3-128', 'maxpool',
          'conv3-256', 'conv3-256', 'maxpool',
          'conv3-512', 'conv3-512', 'maxpool',
          'conv3-512', 'conv3-512', 'maxpool'),
    'A-LRN': ('conv3-64', 'LRN', 'maxpool',
              'conv3-128', 'maxpool',
              'conv3-256', 'conv3-256', 'maxpool',
              'conv3-512', 'conv3-512', 'maxpool',
              'conv3-512', 'conv3-512', 'maxpool'),
    'B': ('conv3-64', 'conv3-64', 'maxpool',
          'conv3-128', 'conv3-128', 'maxpool',
          'conv3-256', 'conv3-256', 'maxpool',
          'conv3-512', 'conv3-512', 'maxpool',
          'conv3-512', 'conv3-512', 'maxpool'),
    'C': ('conv3-64', 'conv3-64', 'maxpool',
          'conv3-128', 'conv3-128', 'maxpool',
          'conv3-256', 'conv3-256', 'conv1-256', 'maxpool',
          'conv3-512', 'conv3-512', 'conv1-512', 'maxpool',
          'conv3-512', 'conv3-512', 'conv1-512', 'maxpool'),
    'D': ('conv3-64', 'conv3-64', 'maxpool',
          'conv3-128', 'conv3-128', 'maxpool',
          'conv3-256', 'conv3-256', 'conv3-256', 'maxpool',
          'conv3-512', 'conv3-512', 'conv3-512', 'maxpool',
          'conv3-512', 'conv3-512', 'conv3-512', 'maxpool'),
    'E': ('conv3-64', 'conv3-64', 'maxpool',
          'conv3-128', 'conv3-128', 'maxpool',
          'conv3-256', 'conv3-256', 'conv3-256', 'conv3-256', 'maxpool',
          'conv3-512', 'conv3-512', 'conv3-512', 'conv3-512', 'maxpool',
          'conv3-512', 'conv3-512', 'conv3-512', 'conv3-512', 'maxpool'),
}

FC6_WINDOW = 7  # 224 / 2^5: the map FC6 reads, and the size of its convolution in §3.2


def layer_sequence(config: str) -> Iterator[tuple[str, str, int, int]]:
  """(kind, name, kernel, features) for each entry of VGG_CONFIGS[config] in order: kind is
  'conv' (named conv<block>_<index>), 'LRN' (lrn<block>) or 'maxpool' (pool<block>)."""
  block, index = 1, 0
  for entry in VGG_CONFIGS[config]:
    if entry == 'maxpool':
      yield 'maxpool', f'pool{block}', 2, 0
      block, index = block + 1, 0
    elif entry == 'LRN':
      yield 'LRN', f'lrn{block}', 0, 0
    elif entry.startswith('conv'):
      kernel, features = entry[len('conv'):].split('-')
      index += 1
      yield 'conv', f'conv{block}_{index}', int(kernel), int(features)
    else:
      raise ValueError(f'VGG config {config}: unknown entry {entry!r}.')


def weight_layers(config: str) -> int:
  """The depth the paper names a configuration by: conv layers + 3 FC layers."""
  return sum(kind == 'conv' for kind, *_ in layer_sequence(config)) + 3


_PAPER = dict(paper='Simonyan & Zisserman, ICLR 2015', year=2014, input_shape=(224, 224, 3),
              fixed_input=True, paper_macs='not given')
_TABLE = 'papers.md §5 (arithmetic of Table 1)'


@register('vgg11', **_PAPER, expected_params=132_863_336, expected_macs=7_609_090_048,
          source='torchvision vgg11', paper_params='133M', config='A')
@register('vgg11_lrn', **_PAPER, expected_params=132_863_336, expected_macs=7_609_090_048,
          source=_TABLE, paper_params='133M', config='A-LRN')
@register('vgg13', **_PAPER, expected_params=133_047_848, expected_macs=11_308_466_176,
          source='torchvision vgg13', paper_params='133M', config='B')
@register('vgg16_c', **_PAPER, expected_params=133_638_952, expected_macs=11_770_888_192,
          source=_TABLE, paper_params='134M', config='C')
@register('vgg16', **_PAPER, expected_params=138_357_544, expected_macs=15_470_264_320,
          source='torchvision vgg16 = keras VGG16', paper_params='138M', config='D')
@register('vgg19', **_PAPER, expected_params=143_667_240, expected_macs=19_632_062_464,
          source='torchvision vgg19 = keras VGG19', paper_params='144M', config='E')
@register('vgg11_bn', **_PAPER, expected_params=132_868_840, expected_macs=7_609_090_048,
          source='torchvision vgg11_bn', paper_params='— (BN: not in the paper)', config='A',
          batch_norm=True)
@register('vgg13_bn', **_PAPER, expected_params=133_053_736, expected_macs=11_308_466_176,
          source='torchvision vgg13_bn', paper_params='— (BN: not in the paper)', config='B',
          batch_norm=True)
@register('vgg16_bn', **_PAPER, expected_params=138_365_992, expected_macs=15_470_264_320,
          source='torchvision vgg16_bn', paper_params='— (BN: not in the paper)', config='D',
          batch_norm=True)
@register('vgg19_bn', **_PAPER, expected_params=143_678_248, expected_macs=19_632_062_464,
          source='torchvision vgg19_bn', paper_params='— (BN: not in the paper)', config='E',
          batch_norm=True)
class VGG(nn.Module):
  """VGG configuration `config` of Table 1 (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  config: str = 'D'                   # a column of Table 1: A, A-LRN, B, C, D, E
  batch_norm: bool = False            # BN after every conv (torchvision's _bn; not the paper)
  fully_convolutional: bool = False   # §3.2's dense evaluation: any input size >= 224
  dropout_rate: float = 0.5           # after the ReLUs of FC6 and FC7
  initializer: str = 'glorot'         # 'glorot' (§3.1's note) | 'he' | 'paper' (N(0, 0.01^2))
  width_multiplier: float = 1.0       # every conv's maps x this (small-input variants)
  fc_widths: tuple[int, ...] = (4096, 4096)  # FC6, FC7
  fc6_window: int = FC6_WINDOW        # the map FC6 reads: 7 at 224x224, 1 at 32x32
  bn_momentum: float = 0.9            # PyTorch momentum 0.1
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    check_choice('VGG', 'config', self.config, tuple(VGG_CONFIGS))
    check_choice('VGG', 'initializer', self.initializer, tuple(KERNEL_INITS))
    kernel_init = KERNEL_INITS[self.initializer]
    x = x.astype(self.dtype)
    for kind, name, kernel, features in layer_sequence(self.config):
      if kind == 'maxpool':
        x = layers.max_pool(x, kernel, kernel)
      elif kind == 'LRN':
        x = layers.LRN(name=name)(x)
      else:
        features = layers.scale_width(features, self.width_multiplier)
        x = nn.Conv(features, (kernel, kernel), padding=layers.explicit_padding(kernel // 2),
                    kernel_init=kernel_init, dtype=self.dtype, name=name)(x)
        if self.batch_norm:
          x = layers.BatchNorm(self.bn_momentum, self.bn_epsilon, self.bn_batch_span,
                               dtype=self.dtype, name=name.replace('conv', 'bn'))(x, train)
        x = nn.relu(x)
    where = f'VGG config {self.config}'
    window = self.fc6_window
    if self.fully_convolutional:
      if min(x.shape[1:3]) < window:
        raise ValueError(f'{where}: dense evaluation needs inputs of at least 224x224 (a '
                         f'{window}x{window} map for FC6), got {x.shape[1]}x{x.shape[2]} '
                         'maps.')
    else:
      require_map(x, window, where, 'Feed 224x224 crops, or set fully_convolutional=True '
                  "for the paper's dense evaluation on images of any size.")
    logits, features = classifier_head(
        x, self.num_classes, train=train, dropout_rate=self.dropout_rate,
        kernel_init=kernel_init, window=window if self.fully_convolutional else None,
        hidden=tuple(self.fc_widths), dtype=self.dtype)
    self.sow('intermediates', 'features', features)
    return logits


@keras_converter('vgg16', 'vgg19')
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """tf.keras.applications.VGG16/VGG19 with include_top=True."""
  del keras_model
  for kind, ours, _, _ in layer_sequence(get_spec(name).kwargs['config']):
    if kind == 'conv':
      block, index = ours[len('conv'):].split('_')
      weights.conv(f'block{block}_conv{index}', (ours,))
  for keras_name, ours in (('fc1', 'fc6'), ('fc2', 'fc7'), ('predictions', 'fc8')):
    weights.dense(keras_name, (ours,))
  return {}


@torch_converter('vgg11', 'vgg13', 'vgg16', 'vgg19', 'vgg11_bn', 'vgg13_bn', 'vgg16_bn',
                 'vgg19_bn', source='torchvision')
def _from_torchvision(weights: TorchWeights, name: str) -> dict[str, Any]:
  """torchvision.models.vgg*: `features` numbers every layer (conv, [BN,] ReLU, pools),
  classifier.{0,3,6} are FC6-FC8 (FC6 reads the 7x7x512 map in torch's C, H, W order). Its
  AdaptiveAvgPool2d(7) is the identity at 224, the only size our VGG takes."""
  spec = get_spec(name)
  index = 0
  for kind, ours, _, _ in layer_sequence(spec.kwargs['config']):
    if kind != 'conv':
      index += 1
      continue
    weights.conv(f'features.{index}', (ours,))
    index += 1
    if spec.kwargs.get('batch_norm'):
      weights.bn(f'features.{index}', (ours.replace('conv', 'bn'),))
      index += 1
    index += 1  # ReLU
  weights.dense_from_map('classifier.0', ('fc6',), 512)
  weights.dense('classifier.3', ('fc7',))
  weights.head('classifier.6', ('fc8',))
  return {}
