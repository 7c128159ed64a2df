"""DenseNet: Table 1's channel bookkeeping, the compression and bottleneck switches against the
paper's Table 2 sizes, DenseNet-264's counts by hand, remat, and the errors for bad switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import densenet, summary
from tests.helpers import random_variables


def _shapes(model, input_shape):
  """(params, captured __call__ outputs) as shapes, without computing anything."""

  def run():
    x = jnp.zeros((1,) + input_shape)
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
    return variables['params'], state['intermediates']

  return jax.eval_shape(run)


def _out(intermediates, name):
  return intermediates[name]['__call__'][0].shape


def _count(model, input_shape):
  return summary.count_params(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1,) + input_shape))))


def densenet_counts(blocks, k, theta=0.5, bottleneck=True, cifar=False, classes=1000, res=224,
                    stem=None):
  """(params, MACs) by hand: the paper's layers, counted one by one."""
  c = stem or 2 * k
  if cifar:  # 3x3 conv, no BN
    params, h = 27 * c, res
    macs = h * h * 27 * c
  else:  # 7x7/2 conv + BN, then a /2 max-pool
    params, h = 147 * c + 2 * c, res // 2
    macs = h * h * 147 * c
    h //= 2
  for i, n in enumerate(blocks):
    for _ in range(n):
      if bottleneck:  # BN(c) 1x1(c -> 4k) BN(4k) 3x3(4k -> k)
        params += 2 * c + c * 4 * k + 2 * 4 * k + 9 * 4 * k * k
        macs += h * h * (c * 4 * k + 9 * 4 * k * k)
      else:  # BN(c) 3x3(c -> k)
        params += 2 * c + 9 * c * k
        macs += h * h * 9 * c * k
      c += k
    if i < len(blocks) - 1:  # BN(c) 1x1(c -> floor(theta c)), avg-pool /2
      out = int(theta * c)
      params += 2 * c + c * out
      macs += h * h * c * out
      c, h = out, h // 2
  return params + 2 * c + c * classes + classes, macs + c * classes


def test_hand_arithmetic_gives_torchvision_and_densenet264():
  # The arithmetic reproduces torchvision's exact counts, so it is trusted for DenseNet-264,
  # which no reference implementation has (papers.md §15: 33,337,704 / 5.75G).
  for depth in (121, 169, 201, 264):
    spec = models.get_spec(f'densenet{depth}')
    params, macs = densenet_counts(densenet.DENSENET_BLOCKS[depth], 32)
    assert params == spec.expected_params, depth
    assert macs == spec.expected_macs, depth
  assert densenet_counts(densenet.DENSENET_BLOCKS[264], 32) == (33_337_704, 5_751_653_376)
  spec = models.get_spec('densenet_bc_100_12')
  assert densenet_counts((16, 16, 16), 12, cifar=True, classes=10, res=32) == (
      spec.expected_params, spec.expected_macs)


def test_channels_after_each_block_and_transition_follow_table_1():
  params, inter = _shapes(models.create_model('densenet121'), (224, 224, 3))
  # Block b ends with C_in + n_b * 32 maps; each transition halves them and the resolution.
  assert _out(inter, 'stem') == (1, 112, 112, 64)
  assert _out(inter, 'block1_layer6') == (1, 56, 56, 64 + 6 * 32)
  assert _out(inter, 'transition1') == (1, 56, 56, 128)  # the 1x1 conv, before the pool
  assert _out(inter, 'block2_layer12') == (1, 28, 28, 128 + 12 * 32)
  assert _out(inter, 'transition2') == (1, 28, 28, 256)
  assert _out(inter, 'block3_layer24') == (1, 14, 14, 256 + 24 * 32)
  assert _out(inter, 'transition3') == (1, 14, 14, 512)
  assert _out(inter, 'block4_layer16') == (1, 7, 7, 512 + 16 * 32)
  assert 'transition4' not in params and 'block4_layer17' not in params
  # Every dense layer: 1x1 to 4k = 128 maps, then 3x3 to k = 32.
  layer = params['block3_layer5']
  assert layer['bottleneck']['conv']['kernel'].shape == (1, 1, 256 + 4 * 32, 128)
  assert layer['conv']['conv']['kernel'].shape == (3, 3, 128, 32)


def test_compression_floors_theta_times_channels():
  # k = 13, 3 layers per block: block 1 ends with 26 + 3*13 = 65 maps -> floor(32.5) = 32;
  # block 2 with 32 + 39 = 71 -> floor(35.5) = 35.
  small = dict(block_sizes=(3, 3, 3), growth_rate=13)
  _, inter = _shapes(models.create_model('densenet_bc_100_12', **small), (32, 32, 3))
  assert _out(inter, 'transition1')[-1] == 32
  assert _out(inter, 'transition2')[-1] == 35
  _, inter = _shapes(models.create_model('densenet_bc_100_12', compression=1.0, **small),
                     (32, 32, 3))
  assert _out(inter, 'transition1')[-1] == 65
  assert _out(inter, 'transition2')[-1] == 65 + 39


def _table_2_row(depth, k, bc):
  """Table 2's DenseNet (no bottleneck, theta = 1, 16-map stem) and DenseNet-BC rows."""
  return dict(block_sizes=densenet.cifar_block_sizes(depth, bottleneck=bc), growth_rate=k,
              bottleneck=bc, compression=0.5 if bc else 1.0, stem_channels=None if bc else 16)


def test_cifar_switches_give_table_2_sizes():
  for depth, k, bc, paper_millions in [(40, 12, False, 1.0), (100, 12, False, 7.0),
                                       (100, 24, False, 27.2), (100, 12, True, 0.8),
                                       (250, 24, True, 15.3), (190, 40, True, 25.6)]:
    row = _table_2_row(depth, k, bc)
    params, _ = densenet_counts(row['block_sizes'], k, row['compression'], bc, cifar=True,
                                classes=10, res=32, stem=row['stem_channels'])
    assert round(params / 1e6, 1) == paper_millions, (depth, k, bc)
  # The model built with the switches has the hand-counted parameters (BC L=100: the zoo test).
  row = _table_2_row(40, 12, False)
  assert _count(models.create_model('densenet_bc_100_12', **row), (32, 32, 3)) == 1_019_722


def test_plain_layers_have_no_bottleneck_conv():
  params, inter = _shapes(models.create_model('densenet_bc_100_12', bottleneck=False,
                                              block_sizes=(2, 2, 2)), (32, 32, 3))
  assert set(params['block1_layer2']) == {'conv'}
  assert params['block1_layer2']['conv']['conv']['kernel'].shape == (3, 3, 24 + 12, 12)
  assert _out(inter, 'block3_layer2') == (1, 8, 8, (24 + 2 * 12) // 2 + 2 * 12)


def test_remat_gives_the_same_gradients_and_dropout_acts_in_training_only():
  model = models.create_model('densenet_bc_100_12', block_sizes=(2,), growth_rate=4)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  variables = random_variables(jax.eval_shape(lambda: model.init(jax.random.key(1), x)))

  def grads(m):
    loss = lambda p: m.apply({**variables, 'params': p}, x, train=True,
                             mutable=['batch_stats'])[0].sum()
    return jax.jit(jax.value_and_grad(loss))(variables['params'])

  (value, g), (value_r, g_r) = grads(model), grads(model.clone(remat=True))
  np.testing.assert_allclose(value, value_r, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_r)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  dropout = model.clone(dropout_rate=0.2)
  train = jax.jit(lambda key: dropout.apply(variables, x, train=True, rngs={'dropout': key},
                                            mutable=['batch_stats'])[0])
  assert not np.allclose(train(jax.random.key(2)), train(jax.random.key(3)))
  np.testing.assert_array_equal(dropout.apply(variables, x), model.apply(variables, x))


def test_bad_switches_raise():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match='compression'):
    models.create_model('densenet_bc_100_12', compression=0.0).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='stem'):
    models.create_model('densenet_bc_100_12', stem='tiny').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='block_sizes'):
    models.create_model('densenet_bc_100_12', block_sizes=(4, 0)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r'depth 101 is not 4 \+ 6n'):
    densenet.cifar_block_sizes(101)
  assert densenet.cifar_block_sizes(100, bottleneck=False) == (32, 32, 32)
