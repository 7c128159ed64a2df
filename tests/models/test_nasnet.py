"""NASNet-A: the genotype as data, the cell wiring (skip_reduction), factorized reduction and
the pools against numpy, drop-path and the auxiliary head only in training, the switches."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import layers, nasnet, summary

TINY = dict(normal_cells_per_stack=2, penultimate_filters=96)  # widths 1, 2 | 4, 8, 16


def _cell_calls(model, resolution):
  """[(cell name, Cell module, input, prev, output)] of one abstract init, and its variables."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nasnet.Cell) and context.method_name == '__call__':
      calls.append((context.module.name, context.module, args[0], args[1], out))
    return out

  x = jnp.zeros((1, resolution, resolution, 3))
  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  return calls, variables


def _random_variables(module, *args, seed=0):
  """Random parameters and BN statistics of `module`'s shapes (XLA compiles random
  initialisers slowly on CPU; the tests need values, not the init distribution)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    return rng.normal(0.0, 0.3, leaf.shape).astype(np.float32)

  abstract = jax.eval_shape(module.init, jax.random.key(0), *args)
  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize('name, n, widths', [
    ('nasnet_a_mobile', 4, (11, 22, 44, 88, 176)),
    ('nasnet_a_large', 6, (42, 84, 168, 336, 672)),
])
def test_cell_plan_follows_n_at_p(name, n, widths):
  model = models.create_model(name)
  plan = model.cells()
  kinds = ''.join('R' if c.genotype is nasnet.REDUCTION_CELL else 'N' for c in plan)
  assert kinds == 'RR' + 'N' * n + 'R' + 'N' * n + 'R' + 'N' * n
  assert [c.name for c in plan[:3]] == ['cell_stem_0', 'cell_stem_1', 'cell_0']
  assert plan[2 + n].name == 'reduction_cell_0' and plan[-1].name == f'cell_{3 * n - 1}'
  stem0, stem1, stack1, stack2, stack3 = widths
  assert [c.filters for c in plan] == ([stem0, stem1] + [stack1] * n + [stack2] * (n + 1)
                                       + [stack3] * (n + 1))
  assert len(nasnet.NORMAL_CELL.concat) * plan[-1].filters == model.penultimate_filters


@functools.lru_cache(maxsize=None)
def _mobile_with_options():
  """NASNet-A Mobile at 224 with drop-path and the auxiliary head (one trace, several tests)."""
  return _cell_calls(models.create_model('nasnet_a_mobile', drop_path_rate=0.3,
                                         aux_logits=True), 224)


def test_cell_outputs_have_the_concat_widths_and_halve_at_reductions():
  calls, _ = _mobile_with_options()
  shapes = {name: out.shape[1:] for name, _, _, _, out in calls}
  assert shapes['cell_stem_0'] == (56, 56, 4 * 11)   # stem conv 3x3/2 'VALID': 224 -> 111
  assert shapes['cell_stem_1'] == (28, 28, 4 * 22)
  assert shapes['cell_3'] == (28, 28, 6 * 44)
  assert shapes['reduction_cell_0'] == (14, 14, 4 * 88)
  assert shapes['cell_7'] == (14, 14, 6 * 88)
  assert shapes['reduction_cell_1'] == (7, 7, 4 * 176)
  assert shapes['cell_11'] == (7, 7, 6 * 176)
  assert len(calls) == 16


@pytest.mark.parametrize('skip_reduction', [False, True])
def test_each_cell_reads_the_two_previous_outputs_or_skips_the_reduction_input(skip_reduction):
  calls, _ = _cell_calls(models.create_model('nasnet_a_mobile', skip_reduction=skip_reduction,
                                             **TINY), 64)
  index = {id(out): name for name, _, _, _, out in calls}
  index[id(calls[0][2])] = 'stem'  # the stem conv's output is the first cell's input
  prev = {name: index.get(id(p), 'none' if p is None else '?') for name, _, _, p, _ in calls}
  # Without the skip, every cell's "previous" input is the input of the cell before it.
  expected = {'cell_stem_0': 'none', 'cell_stem_1': 'stem', 'cell_0': 'cell_stem_0',
              'cell_1': 'cell_stem_1', 'reduction_cell_0': 'cell_0', 'cell_2': 'cell_1',
              'cell_3': 'reduction_cell_0', 'reduction_cell_1': 'cell_2', 'cell_4': 'cell_3',
              'cell_5': 'reduction_cell_1'}
  if skip_reduction:  # Large: the Normal cell after a Reduction skips the Reduction's input
    expected.update(cell_2='cell_0', cell_4='cell_2')
  assert prev == expected
  # Either way the first Normal cell after a Reduction gets a map twice its input's size.
  shapes = {name: (x.shape[1], p.shape[1]) for name, _, x, p, _ in calls if p is not None}
  assert shapes['cell_2'] == (4, 8) and shapes['cell_3'] == (4, 4)


def test_factorized_reduction_against_numpy():
  rng = np.random.default_rng(0)
  block = nasnet.FactorizedReduction(6, bn_epsilon=1e-3)
  for size in (7, 6):  # odd: the shifted grid runs past the edge into a zero; even: it fits
    x = rng.normal(size=(2, size, size, 4)).astype(np.float32)
    variables = _random_variables(block, x, seed=size)
    p, stats = variables['params'], variables['batch_stats']['bn']
    shifted = np.zeros_like(x)
    shifted[:, :-1, :-1] = x[:, 1:, 1:]  # pixel (i, j) holds (i + 1, j + 1)
    paths = [x[:, ::2, ::2] @ p['path1_conv']['kernel'][0, 0],
             shifted[:, ::2, ::2] @ p['path2_conv']['kernel'][0, 0]]
    expected = ((np.concatenate(paths, -1) - stats['mean']) / np.sqrt(stats['var'] + 1e-3)
                * p['bn']['scale'] + p['bn']['bias'])
    out = jax.jit(block.apply)(variables, x)
    assert out.shape == (2, (size + 1) // 2, (size + 1) // 2, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [6, 7])
def test_reduction_pools_same_and_keras_zero_padding(size):
  x = -np.random.default_rng(1).uniform(1.0, 2.0, size=(1, size, size, 2)).astype(np.float32)
  lo = 0 if size % 2 == 0 else 1  # TF 'SAME', window 3, stride 2: the extra pad at the end
  padded = np.pad(x, ((0, 0), (lo, 1), (lo, 1), (0, 0)), constant_values=np.nan)
  n = (size + 1) // 2
  windows = np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3] for i in range(n)
                      for j in range(n)], 1).reshape(1, n, n, 9, 2)
  expected = {('max', False): np.nanmax(windows, 3), ('avg', False): np.nanmean(windows, 3),
              ('max', True): np.nan_to_num(windows).max(3),
              ('avg', True): np.nan_to_num(windows).mean(3)}
  for (kind, zeros), want in expected.items():
    got = nasnet.cell_pool(jnp.asarray(x), kind, 3, 2, zero_padding=zeros)
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f'{kind} zeros={zeros}')
  # The two conventions differ at the edge only: every value is negative, the padding is 0.
  assert nasnet.cell_pool(jnp.asarray(x), 'max', 3, 2, True)[0, -1, -1, 0] == 0.0


def test_drop_path_only_in_training():
  x = np.random.default_rng(2).normal(size=(8, 6, 6, 8)).astype(np.float32)
  cell = nasnet.Cell(nasnet.NORMAL_CELL, 4, drop_path_rate=0.5)
  no_drop = cell.clone(drop_path_rate=0.0)
  variables = jax.eval_shape(cell.init, jax.random.key(0), x, x)

  def program(module, train):
    return str(jax.make_jaxpr(lambda v, key: module.apply(
        v, x, x, train=train, rngs={'dropout': key}, mutable=['batch_stats']))(
            variables, jax.random.key(0)))

  # Evaluation runs the same program whatever the rate; training draws a mask per example.
  assert program(cell, False) == program(no_drop, False)
  assert program(cell, True) != program(no_drop, True)
  variables = _random_variables(cell, x, x)
  train = jax.jit(lambda key: cell.apply(variables, x, x, train=True, rngs={'dropout': key},
                                         mutable=['batch_stats'])[0])
  assert not np.allclose(train(jax.random.key(0)), train(jax.random.key(1)))


def test_traced_drop_path_rate_scheduled_drop_path():
  """ScheduledDropPath (config.model.ramp) sets drop_path_rate to a traced scalar inside the
  train step: the whole network traces with it (its switch checks skip a traced value), and
  draws drop masks in training (traced only: compiling NASNet costs a minute of CPU)."""
  model = models.create_model('nasnet_a_mobile', num_classes=5, **TINY)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

  def forward(rate, train):
    return jax.make_jaxpr(lambda v, r, key: model.clone(drop_path_rate=r).apply(
        v, x, train=train, rngs={'dropout': key}, mutable=['batch_stats'])[0])(
            variables, rate, jax.random.key(0))

  traced = forward(jnp.float32(0.3), True)
  assert traced.out_avals[0].shape == (2, 5)
  assert 'random_bits' in str(traced)  # the per-example masks
  assert 'random_bits' not in str(forward(jnp.float32(0.3), False))


def test_drop_path_with_a_traced_rate():
  x = jnp.ones((4000, 3))
  drop = jax.jit(lambda rate, key: layers.DropPath(rate).apply({}, x, True,
                                                               rngs={'dropout': key}))
  np.testing.assert_array_equal(drop(jnp.float32(0.0), jax.random.key(0)), x)
  y = np.asarray(drop(jnp.float32(0.25), jax.random.key(1)))
  dropped = (y == 0).all(axis=1)
  assert abs(dropped.mean() - 0.25) < 0.03
  np.testing.assert_allclose(y[~dropped], 1 / 0.75, rtol=1e-6)


def test_drop_path_rate_grows_with_depth():
  # Cell i of T drops at rate * (i + 1) / T (TF-slim): the last cell at the full rate.
  rates = [module.drop_path_rate for _, module, _, _, _ in _mobile_with_options()[0]]
  np.testing.assert_allclose(rates, 0.3 * np.arange(1, 17) / 16)


def test_aux_head_only_in_training():
  model = models.create_model('nasnet_a_mobile', aux_logits=True, num_classes=5, **TINY)
  x = jnp.zeros((2, 80, 80, 3))  # stack 2 runs at 5x5: the head's 5x5/3 pool fits once
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert 'aux_head' in variables['params']

  def intermediates(train):
    return jax.eval_shape(lambda v: model.apply(
        v, x, train=train, rngs={'dropout': jax.random.key(1)},
        mutable=['intermediates', 'batch_stats'])[1]['intermediates'], variables)

  assert set(intermediates(False)) == {'features'}
  inter = intermediates(True)
  assert [a.shape for a in inter['aux_logits']] == [(2, 5)]
  assert inter['features'][0].shape == (2, 96)


def test_aux_head_parameters_at_224():
  # TF-slim's head on 14x14x528: 5x5/3 pool -> 1x1 conv 128 -> BN -> 4x4 conv 768 -> BN -> FC.
  _, variables = _mobile_with_options()
  head = 528 * 128 + 2 * 128 + 4 * 4 * 128 * 768 + 2 * 768 + 768 * 1000 + 1000
  assert summary.count_params(variables) == 5_289_978 + head


@pytest.mark.parametrize('override, message', [
    (dict(reduction_pool_padding='valid'), "reduction_pool_padding must be one of 'same', 'zeros'"),
    (dict(penultimate_filters=1000), r'penultimate_filters must be a multiple of .* = 96'),
    (dict(normal_cells_per_stack=0), 'normal_cells_per_stack must be >= 1'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\)'),
    (dict(aux_logits=True), 'aux_logits needs a map of at least 5x5'),
])
def test_bad_switches_are_named(override, message):
  model = models.create_model('nasnet_a_mobile', **override)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def test_registered_variants():
  large = models.create_model('nasnet_a_large')
  assert (large.normal_cells_per_stack, large.penultimate_filters, large.stem_filters,
          large.skip_reduction, large.drop_path_rate) == (6, 4032, 96, True, 0.3)
  mobile = models.create_model('nasnet_a_mobile')
  assert (mobile.skip_reduction, mobile.drop_path_rate, mobile.aux_logits) == (False, 0.0, False)
  assert (mobile.bn_momentum, mobile.bn_epsilon) == (0.9997, 1e-3)
  assert models.input_shape('nasnet_a_large') == (331, 331, 3)
