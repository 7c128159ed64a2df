"""NASNet-A — Zoph, Vasudevan, Shlens & Le, "Learning Transferable Architectures for Scalable
Image Recognition", CVPR 2018 (arXiv 1707.07012).

A controller RNN searched two cells on CIFAR-10; the ImageNet networks stack them (§3, Fig. 2,
Fig. 4). What this file encodes (papers.md §23; TF-slim nets/nasnet and keras.applications
NASNet, the definitions of record):

  genotype   NORMAL_CELL and REDUCTION_CELL below, read by the one `Cell` module. A cell takes
             the outputs of the two previous cells; each of its 5 blocks applies one op to each
             of two hidden states and adds the results; the states its `concat` lists are
             concatenated into the cell's output (6 x filters for Normal, 4 x for Reduction).
  ops        separable k x k (k = 3, 5, 7): ReLU -> separable conv -> BN, twice, the stride on
             the first; avg/max pool 3x3; identity. In a Reduction cell the ops that read the
             cell inputs have stride 2.
  inputs     the current input goes through ReLU -> 1x1 conv -> BN; the previous one is
             adjusted to it: ReLU -> factorized reduction (two 1x1 convs, one on the input
             shifted by one pixel, each on every second pixel, concatenated -> BN) when it is
             twice as large, ReLU -> 1x1 conv -> BN when only the width differs.
  layout     3x3/2 'VALID' conv -> BN -> 2 Reduction cells (the "stem", widths F/4 and F/2)
             -> N Normal -> Reduction -> N Normal -> Reduction -> N Normal (widths F, 2F, 4F),
             F = P / 24 (P / (6 m^2) for a filter_multiplier m) -> ReLU -> global average
             pool -> dropout -> FC.
             "N @ P" names a network: Mobile 4 @ 1056 (32 stem filters, 224x224), Large
             6 @ 4032 (96 stem filters, 331x331).
  padding    TF 'SAME' (stride-2 separable convs and pools, asymmetric on even maps); BN eps
             1e-3, decay 0.9997; He (fan-out) normal init (TF-slim: variance_scaling FAN_OUT).

Numbers: Mobile 5,289,978 params, 563.6M mult-adds; Large 88,753,150 params, 23.78G (Keras
trainable = timm nasnetalarge; papers.md §23). The paper prints 5.3M / 564M and 88.9M / 23.8B.
TF-slim checkpoints have 1001 classes (index 0 = background): num_classes=1001.
keras.applications parity (converter below, reduction_pool_padding='zeros', float32 logits, BN
statistics randomised, two runs each): max |difference| <= 1.1e-5 for NASNetMobile at 224,
<= 3.4e-5 for NASNetLarge at 331 (logits of magnitude ~50); with 'same' they move by 0.7-2.3.

Switches (module fields):
  normal_cells_per_stack, penultimate_filters, stem_filters, filter_multiplier
                          the "N @ P" family (filter_multiplier: width ratio between stacks).
  skip_reduction          Large: True. The Normal cell after a Reduction cell takes as its
                          "previous" input the cell output before the Reduction cell's input
                          (TF-slim skip_reduction_layer_input), not the Reduction cell's input.
  drop_path_rate          DropPath on every non-identity op of every cell, cell i of T at
                          rate * (i + 1) / T (TF-slim's per-cell scaling). The paper's
                          ScheduledDropPath also ramps the rate linearly over training: the
                          recipe's config.model.ramp = ('drop_path_rate',) does that; the
                          rate here is the final one: Large 0.3 (keep 0.7), Mobile 0.
  dropout_rate            before the classifier, 0.5 (dense_dropout_keep_prob).
  aux_logits              the auxiliary classifier after the last Normal cell of the second stack
                          (~2/3 depth; loss weight 0.4 in the recipe): ReLU -> 5x5/3 avg pool ->
                          1x1 conv 128 -> BN -> ReLU -> conv 768 over the whole map -> BN -> ReLU
                          -> FC. Off by default: the paper's and Keras's parameter counts exclude
                          it, and it is a training device. Its 768-conv kernel is as large as the
                          pooled map, so it fixes the training resolution (4x4 at 224, 6x6 at 331).
  reduction_pool_padding  'same' (TF-slim: the stride-2 pools of Reduction cells ignore the padding)
                          or 'zeros' (keras.applications: they see explicit zero padding, which
                          the average counts and the max compares with) or 'avg_zeros' (timm
                          nasnetalarge: the averages count zero padding, the max ignores it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.convert.keras import ConversionError, KerasWeights, keras_converter
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models import layers
from cnn_history.models.registry import create_model, register


# ---- The searched cells (Fig. 4), as data ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Genotype:
  """A cell. Hidden states: 0 = the cell's input, 1 = the previous cell's output, 2 + b = block
  b's output. Each block adds op(left state) and op(right state)."""
  blocks: tuple[tuple[tuple[str, int], tuple[str, int]], ...]  # ((op, state), (op, state))
  concat: tuple[int, ...]  # hidden states concatenated into the output
  stride: int              # of the ops that read states 0 and 1


NORMAL_CELL = Genotype(
    blocks=((('sep_5x5', 0), ('sep_3x3', 1)),
            (('sep_5x5', 1), ('sep_3x3', 1)),
            (('avg_3x3', 0), ('identity', 1)),
            (('avg_3x3', 1), ('avg_3x3', 1)),
            (('sep_3x3', 0), ('identity', 0))),
    concat=(1, 2, 3, 4, 5, 6),
    stride=1)

REDUCTION_CELL = Genotype(
    blocks=((('sep_5x5', 0), ('sep_7x7', 1)),
            (('max_3x3', 0), ('sep_7x7', 1)),
            (('avg_3x3', 0), ('sep_5x5', 1)),
            (('identity', 3), ('avg_3x3', 2)),
            (('sep_3x3', 2), ('max_3x3', 0))),
    concat=(3, 4, 5, 6),
    stride=2)

OPS = {'sep_3x3': ('separable', 3), 'sep_5x5': ('separable', 5), 'sep_7x7': ('separable', 7),
       'avg_3x3': ('avg', 3), 'max_3x3': ('max', 3), 'identity': ('identity', 1)}


class CellSpec(NamedTuple):
  name: str           # TF-slim's scope name
  genotype: Genotype
  filters: int        # width of every op (the output has len(concat) x filters channels)
  stack: int          # -1: stem; 0, 1, 2: the three stacks of Normal cells and their Reductions


def cell_plan(normal_cells_per_stack: int, penultimate_filters: int,
              filter_multiplier: int) -> list[CellSpec]:
  """The cells in network order: stem Reductions, then per stack [Reduction,] N Normals."""
  m = filter_multiplier
  filters = penultimate_filters // (len(NORMAL_CELL.concat) * m ** 2)
  plan = [CellSpec('cell_stem_0', REDUCTION_CELL, filters // m ** 2, -1),
          CellSpec('cell_stem_1', REDUCTION_CELL, filters // m, -1)]
  for stack in range(3):
    width = filters * m ** stack
    if stack:
      plan.append(CellSpec(f'reduction_cell_{stack - 1}', REDUCTION_CELL, width, stack))
    plan += [CellSpec(f'cell_{stack * normal_cells_per_stack + i}', NORMAL_CELL, width, stack)
             for i in range(normal_cells_per_stack)]
  return plan


# ---- Blocks ---------------------------------------------------------------------------------

_KERNEL_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')  # He, fan-out


def _bn_fields(module) -> dict[str, Any]:
  return dict(bn_momentum=module.bn_momentum, bn_epsilon=module.bn_epsilon,
              bn_batch_span=module.bn_batch_span, dtype=module.dtype)


class SeparableStack(nn.Module):
  """ReLU -> separable conv (stride) -> BN -> ReLU -> separable conv -> BN (the "sep k x k" op)."""
  features: int
  kernel_size: int
  strides: int = 1
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, stride in enumerate((self.strides, 1), 1):
      x = layers.SeparableConv(self.features, self.kernel_size, stride, 'SAME', act=None,
                               name=f'separable_{i}', **_bn_fields(self))(nn.relu(x), train)
    return x


class FactorizedReduction(nn.Module):
  """Halves the spatial size without dropping pixels: a 1x1 conv on the even pixel grid and one
  on the grid shifted by one pixel (zero past the edge), each of features/2, concatenated -> BN.
  """
  features: int
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.features % 2:
      raise ValueError(f'FactorizedReduction needs an even number of features, got '
                       f'{self.features}; choose penultimate_filters so that every cell width '
                       'is even.')
    even = x[:, ::2, ::2]
    shifted = jnp.pad(x[:, 1:, 1:], ((0, 0), (0, 1), (0, 1), (0, 0)))[:, ::2, ::2]
    paths = [nn.Conv(self.features // 2, (1, 1), use_bias=False, dtype=self.dtype,
                     kernel_init=_KERNEL_INIT, name=f'path{i}_conv')(p)
             for i, p in enumerate((even, shifted), 1)]
    return layers.BatchNorm(self.bn_momentum, self.bn_epsilon, self.bn_batch_span,
                            dtype=self.dtype, name='bn')(jnp.concatenate(paths, -1), train)


def cell_pool(x: jax.Array, kind: str, window: int, stride: int, zero_padding: bool) -> jax.Array:
  """A 'SAME' pool; with zero_padding (Keras) a strided pool sees explicit zeros instead."""
  if stride > 1 and zero_padding:
    pads = jax.lax.padtype_to_pads(x.shape[1:3], (window, window), (stride, stride), 'SAME')
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    padding = 'VALID'
  else:
    padding = 'SAME'
  if kind == 'max':
    return layers.max_pool(x, window, stride, padding)
  return layers.avg_pool(x, window, stride, padding, count_include_pad=False)


class Cell(nn.Module):
  """One NASNet cell: `genotype` interpreted on (input, previous cell output)."""
  genotype: Genotype
  features: int
  drop_path_rate: float = 0.0
  reduction_pool_padding: str = 'same'
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, prev: jax.Array | None, train: bool = False) -> jax.Array:
    bn = _bn_fields(self)
    if prev is None:  # the first stem cell: the stem conv's output is both inputs
      prev = x
    elif prev.shape[1:3] != x.shape[1:3]:
      prev = FactorizedReduction(self.features, name='adjust', **bn)(nn.relu(prev), train)
    elif prev.shape[-1] != self.features:
      prev = layers.ConvBN(self.features, 1, act=None, kernel_init=_KERNEL_INIT, name='adjust',
                           **bn)(nn.relu(prev), train)
    base = layers.ConvBN(self.features, 1, act=None, kernel_init=_KERNEL_INIT, name='base',
                         **bn)(nn.relu(x), train)
    states = [base, prev]
    drop_path = layers.DropPath(self.drop_path_rate, name='drop_path')
    for b, block in enumerate(self.genotype.blocks):
      outputs = []
      for side, (op, source) in zip(('left', 'right'), block):
        stride = self.genotype.stride if source < 2 else 1
        y = self._op(op, states[source], stride, f'block{b}_{side}', train)
        outputs.append(y if op == 'identity' else drop_path(y, train))
      states.append(outputs[0] + outputs[1])
    return jnp.concatenate([states[s] for s in self.genotype.concat], axis=-1)

  def _op(self, op: str, x: jax.Array, stride: int, name: str, train: bool) -> jax.Array:
    kind, size = OPS[op]
    if kind == 'separable':
      return SeparableStack(self.features, size, stride, name=name, **_bn_fields(self))(x, train)
    if x.shape[-1] != self.features or (kind == 'identity' and stride != 1):
      raise ValueError(f'NASNet cell: {op!r} with stride {stride} on {x.shape[-1]} channels '
                       f'cannot give {self.features}; NASNet-A never needs it.')
    if kind == 'identity':
      return x
    mode = self.reduction_pool_padding
    return cell_pool(x, kind, size, stride, mode == 'zeros' or (mode, kind) == ('avg_zeros', 'avg'))


class AuxHead(nn.Module):
  """The auxiliary classifier (TF-slim _build_aux_head), on the ReLU of a cell output."""
  num_classes: int
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if min(x.shape[1:3]) < 5:
      raise ValueError(f'NASNet aux_logits needs a map of at least 5x5 after the second stack, got '
                       f'{x.shape[1]}x{x.shape[2]}; use a larger input or aux_logits=False.')
    bn = _bn_fields(self)
    x = layers.avg_pool(x, 5, 3, 'VALID')
    x = layers.ConvBN(128, 1, act='relu', kernel_init=_KERNEL_INIT, name='proj', **bn)(x, train)
    x = layers.ConvBN(768, tuple(x.shape[1:3]), padding='VALID', act='relu',
                      kernel_init=_KERNEL_INIT, name='conv', **bn)(x, train)
    return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT, dtype=self.dtype,
                    name='classifier')(x.reshape(x.shape[0], -1))


# ---- The network ----------------------------------------------------------------------------

POOL_PADDINGS = ('same', 'zeros', 'avg_zeros')
_LARGE = dict(normal_cells_per_stack=6, penultimate_filters=4032, stem_filters=96,
              skip_reduction=True, drop_path_rate=0.3)


@register('nasnet_a_mobile', paper='Zoph et al., CVPR 2018', year=2018, input_shape=(224, 224, 3),
          expected_params=5_289_978, expected_macs=564e6,
          source='keras NASNetMobile (trainable); MACs: paper (conv + FC)',
          paper_params='5.3M', paper_macs='564M')
@register('nasnet_a_large', paper='Zoph et al., CVPR 2018', year=2018, input_shape=(331, 331, 3),
          expected_params=88_753_150, expected_macs=23.78e9,
          source='keras NASNetLarge (trainable) = timm nasnetalarge',
          paper_params='88.9M', paper_macs='23.8B', **_LARGE)
class NASNetA(nn.Module):
  """NASNet-A (N @ P); the defaults are Mobile 4 @ 1056 (module docstring)."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  normal_cells_per_stack: int = 4    # N: Normal cells between Reductions (Large: 6)
  penultimate_filters: int = 1056    # P: channels of the last cell (Large: 4032)
  stem_filters: int = 32             # of the 3x3/2 stem conv (Large: 96)
  filter_multiplier: int = 2         # width ratio between stacks (and stem cells)
  skip_reduction: bool = False       # Large: True (see module docstring)
  drop_path_rate: float = 0.0        # final ScheduledDropPath rate (Large: 0.3)
  dropout_rate: float = 0.5          # before the classifier
  aux_logits: bool = False           # auxiliary classifier after stack 2 (training only)
  reduction_pool_padding: str = 'same'  # 'same' (TF-slim) | 'zeros' (keras.applications) |
                                        # 'avg_zeros' (timm)
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  bn_batch_span: int | None = None

  def cells(self) -> list[CellSpec]:
    return cell_plan(self.normal_cells_per_stack, self.penultimate_filters,
                     self.filter_multiplier)

  def _check_switches(self) -> None:
    m = self.filter_multiplier
    if self.reduction_pool_padding not in POOL_PADDINGS:
      raise ValueError('NASNetA reduction_pool_padding must be one of '
                       f'{", ".join(map(repr, POOL_PADDINGS))}; got '
                       f'{self.reduction_pool_padding!r}.')
    if self.normal_cells_per_stack < 1:
      raise ValueError(f'NASNetA normal_cells_per_stack must be >= 1; got '
                       f'{self.normal_cells_per_stack}.')
    if m < 1 or self.penultimate_filters % (len(NORMAL_CELL.concat) * m ** 4):
      raise ValueError(f'NASNetA penultimate_filters must be a multiple of 6 * filter_multiplier'
                       f'**4 = {len(NORMAL_CELL.concat) * m ** 4} (filter_multiplier >= 1) so that '
                       f'every cell width is whole; got {self.penultimate_filters} with '
                       f'filter_multiplier={m}.')
    for field in ('drop_path_rate', 'dropout_rate'):
      if layers.is_static(getattr(self, field)) and not 0.0 <= getattr(self, field) < 1.0:
        raise ValueError(f'NASNetA {field} must be in [0, 1); got {getattr(self, field)}.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check_switches()
    bn = _bn_fields(self)
    x = layers.ConvBN(self.stem_filters, 3, 2, 'VALID', act=None, kernel_init=_KERNEL_INIT,
                      name='stem', **bn)(x.astype(self.dtype), train)
    plan = self.cells()
    aux_after = f'cell_{2 * self.normal_cells_per_stack - 1}'  # last Normal cell of stack 2
    prev = None
    for index, spec in enumerate(plan):
      out = Cell(spec.genotype, spec.filters,
                 drop_path_rate=self.drop_path_rate * (index + 1) / len(plan),
                 reduction_pool_padding=self.reduction_pool_padding, name=spec.name,
                 **bn)(x, prev, train)
      # With skip_reduction the cell after a Reduction inherits the Reduction's "previous".
      skip = self.skip_reduction and spec.genotype is REDUCTION_CELL and spec.stack >= 0
      prev, x = (prev if skip else x), out
      if self.aux_logits and spec.name == aux_after and (train or self.is_initializing()):
        aux_logits = AuxHead(self.num_classes, name='aux_head', **bn)(nn.relu(x), train)
        if train:
          self.sow('intermediates', 'aux_logits', aux_logits.astype(jnp.float32))
    features = layers.global_avg_pool(nn.relu(x))
    self.sow('intermediates', 'features', features)
    features = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(features)
    logits = nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT, dtype=self.dtype,
                      name='classifier')(features)
    return logits.astype(jnp.float32)


# ---- keras.applications NASNetMobile / NASNetLarge ------------------------------------------

# Keras's block_id of each separable op, by (genotype, block from 0, side). Keras counts blocks
# from 1 and names the separable op of Reduction block 5 'reduction_left4' (a slip its layer
# names keep).
_KERAS_SEPARABLE = {
    NORMAL_CELL: {(0, 'left'): 'normal_left1', (0, 'right'): 'normal_right1',
                  (1, 'left'): 'normal_left2', (1, 'right'): 'normal_right2',
                  (4, 'left'): 'normal_left5'},
    REDUCTION_CELL: {(0, 'left'): 'reduction_left1', (0, 'right'): 'reduction_right1',
                     (1, 'right'): 'reduction_right2', (2, 'right'): 'reduction_right3',
                     (4, 'left'): 'reduction_left4'},
}


def _keras_cell_ids(plan: list[CellSpec], n: int) -> list[str]:
  """Keras numbers cells stem_1, stem_2, 0..N-1, reduce_N, N+1..2N, reduce_2N, 2N+1..3N."""
  ids, normal = [], 0
  for spec in plan:
    if spec.stack < 0:
      ids.append(f'stem_{len(ids) + 1}')
    elif spec.genotype is REDUCTION_CELL:
      ids.append(f'reduce_{spec.stack * n}')
    else:
      ids.append(str(normal + (spec.stack > 0)))  # N itself names reduce_N
      normal += 1
  return ids


def _keras_architecture(weights: KerasWeights) -> dict[str, Any]:
  """The NASNet(...) arguments of a Keras model, read off its layers and graph."""
  def width(layer: str) -> int:
    return int(weights.layer(layer).get_weights()[0].shape[-1])

  n = sum(name.startswith('normal_conv_1_') for name in weights.layers) // 3
  if n < 1:
    raise ConversionError('The Keras model has no NASNet Normal cells (normal_conv_1_*).')
  # Without skip_reduction the Normal cell after the first Reduction adjusts that Reduction's
  # input, the output of Normal cell n - 1; with it, the output of the cell before.
  adjusted = weights.layer(f'adjust_relu_1_{n + 1}').input._keras_history[0].name
  return dict(normal_cells_per_stack=n, stem_filters=width('stem_conv1'),
              penultimate_filters=len(NORMAL_CELL.concat) * width(f'normal_conv_1_{3 * n}'),
              filter_multiplier=width(f'normal_conv_1_{n + 1}') // width('normal_conv_1_0'),
              skip_reduction=adjusted != f'normal_concat_{n - 1}')


@keras_converter('nasnet_a_mobile', 'nasnet_a_large')
def _from_keras(keras_model, weights: KerasWeights, name: str) -> dict[str, Any]:
  """Any keras.applications NASNet: its architecture is read off the model (the registry name
  only sets the defaults that do not change the function, e.g. drop-path)."""
  del keras_model
  architecture = _keras_architecture(weights)
  model = create_model(name, **architecture)
  weights.conv('stem_conv1', ('stem', 'conv'))
  epsilon = weights.bn('stem_bn1', ('stem', 'bn'))
  plan = model.cells()
  for spec, cid in zip(plan, _keras_cell_ids(plan, model.normal_cells_per_stack)):
    cell = spec.name
    kind = 'normal' if spec.genotype is NORMAL_CELL else 'reduction'
    weights.conv(f'{kind}_conv_1_{cid}', (cell, 'base', 'conv'))
    weights.bn(f'{kind}_bn_1_{cid}', (cell, 'base', 'bn'))
    if f'adjust_conv_1_{cid}' in weights.layers:  # factorized reduction
      for i in (1, 2):
        weights.conv(f'adjust_conv_{i}_{cid}', (cell, 'adjust', f'path{i}_conv'))
      weights.bn(f'adjust_bn_{cid}', (cell, 'adjust', 'bn'))
    elif f'adjust_conv_projection_{cid}' in weights.layers:
      weights.conv(f'adjust_conv_projection_{cid}', (cell, 'adjust', 'conv'))
      weights.bn(f'adjust_bn_{cid}', (cell, 'adjust', 'bn'))
    keras_ids = _KERAS_SEPARABLE[spec.genotype]
    separable = {(b, side) for b, block in enumerate(spec.genotype.blocks)
                 for side, (op, _) in zip(('left', 'right'), block) if OPS[op][0] == 'separable'}
    assert separable == set(keras_ids), 'the Keras table must name every separable op'
    for (b, side), block_id in keras_ids.items():
      for i in (1, 2):
        path = (cell, f'block{b}_{side}', f'separable_{i}')
        weights.separable(f'separable_conv_{i}_{block_id}_{cid}', path + ('depthwise', 'conv'),
                          path + ('pointwise', 'conv'))
        weights.bn(f'separable_conv_{i}_bn_{block_id}_{cid}', path + ('pointwise', 'bn'))
  weights.dense('predictions', ('classifier',))
  return {**architecture, 'reduction_pool_padding': 'zeros', 'bn_epsilon': epsilon}


# ---- timm nasnetalarge -------------------------------------------------------------------------

@torch_converter('nasnet_a_large', source='timm')
def _from_timm(weights: TorchWeights, name: str) -> dict[str, Any]:
  """timm nasnetalarge (Cadene's port of the TF-slim weights, TF 'SAME' padding): conv0; per
  cell conv_1x1 (our 'base'), conv_prev_1x1 or path_1/path_2 + final_path_bn (our 'adjust'),
  comb_iter_{b}_{left,right} (separable_{1,2}: depthwise_conv2d, pointwise_conv2d; bn_sep_{1,2});
  last_linear. Its stride-2 average pools count the zero padding, its max pools do not."""
  weights.conv_bn('conv0.conv', 'conv0.bn', ('stem',))
  for spec in create_model(name).cells():
    cell = spec.name
    weights.conv_bn(f'{cell}.conv_1x1.conv', f'{cell}.conv_1x1.bn', (cell, 'base'))
    if weights.has(f'{cell}.conv_prev_1x1.conv.weight'):
      weights.conv_bn(f'{cell}.conv_prev_1x1.conv', f'{cell}.conv_prev_1x1.bn', (cell, 'adjust'))
    elif weights.has(f'{cell}.final_path_bn.running_mean'):
      for i in (1, 2):
        weights.conv(f'{cell}.path_{i}.conv', (cell, 'adjust', f'path{i}_conv'))
      weights.bn(f'{cell}.final_path_bn', (cell, 'adjust', 'bn'))
    for b, block in enumerate(spec.genotype.blocks):
      for side, (op, _) in zip(('left', 'right'), block):
        if OPS[op][0] != 'separable':
          continue
        theirs = f'{cell}.comb_iter_{b}_{side}'
        for i in (1, 2):
          path = (cell, f'block{b}_{side}', f'separable_{i}')
          weights.conv(f'{theirs}.separable_{i}.depthwise_conv2d', path + ('depthwise', 'conv'))
          weights.conv(f'{theirs}.separable_{i}.pointwise_conv2d', path + ('pointwise', 'conv'))
          weights.bn(f'{theirs}.bn_sep_{i}', path + ('pointwise', 'bn'))
  weights.head('last_linear', ('classifier',))
  return {'reduction_pool_padding': 'avg_zeros'}
