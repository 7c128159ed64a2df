"""LeNet-5 as the 1998 paper built it: sizes, Table I, the RBF outputs, Appendix C's h_kk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import lenet


@pytest.fixture(scope='module')
def paper_net():
  model = models.create_model('lenet5')
  x = np.random.default_rng(0).uniform(-0.1, 1.175, size=(4, 32, 32, 1)).astype(np.float32)
  return model, model.init(jax.random.key(0), x), x


def test_parameter_counts_per_layer(paper_net):
  _, variables, _ = paper_net
  counts = {name: sum(p.size for p in jax.tree_util.tree_leaves(tree))
            for name, tree in variables['params'].items()}
  assert counts == {'C1': 156, 'S2': 12, 'C3': 1516, 'S4': 32, 'C5': 48120, 'F6': 10164}
  assert sum(counts.values()) == 60000
  assert set(variables) == {'params'}  # no hidden state: the RBF prototypes are constants


def test_registry_facts():
  assert 'lenet5' in models.list_models('lenet*')
  assert models.input_shape('lenet5') == (32, 32, 1)
  with pytest.raises(ValueError, match="Unknown model 'lenet'.*lenet5"):
    models.create_model('lenet')
  with pytest.raises(ValueError, match="no option 'activaton'.*Did you mean 'activation'"):
    models.create_model('lenet5', activaton='relu')


def test_output_and_feature_shapes(paper_net):
  model, variables, x = paper_net
  logits, inter = model.apply(variables, x, mutable=['intermediates'])
  assert logits.shape == (4, 10)
  assert inter['intermediates']['features'][0].shape == (4, 84)


def test_c3_follows_table_one():
  assert len(lenet.C3_TABLE) == 16
  assert sum(map(len, lenet.C3_TABLE)) == 60
  assert [len(r) for r in lenet.C3_TABLE] == [3] * 6 + [4] * 9 + [6]
  # Perturbing one S2 map changes exactly the C3 maps that Table I connects to it.
  rng = np.random.default_rng(1)
  params = {'kernel': jnp.asarray(rng.normal(size=(5, 5, 60)), jnp.float32),
            'bias': jnp.zeros(16)}
  x = rng.normal(size=(1, 14, 14, 6)).astype(np.float32)
  base = lenet.sparse_conv(params, x)
  for j in range(6):
    bumped = x.copy()
    bumped[..., j] += 1.0
    changed = np.abs(lenet.sparse_conv(params, bumped) - base).max(axis=(0, 1, 2)) > 1e-4
    assert [m for m in range(16) if changed[m]] == [m for m, row in enumerate(lenet.C3_TABLE)
                                                    if j in row]


def test_rbf_outputs_are_squared_distances_to_fixed_prototypes(paper_net):
  model, variables, x = paper_net
  logits, inter = model.apply(variables, x, mutable=['intermediates'])
  features = np.asarray(inter['intermediates']['features'][0], np.float64)
  prototypes = lenet.rbf_prototypes().astype(np.float64)
  assert prototypes.shape == (10, 84) and set(np.unique(prototypes)) == {-1.0, 1.0}
  assert len({p.tobytes() for p in prototypes}) == 10
  distances = ((features[:, None, :] - prototypes[None]) ** 2).sum(-1)
  np.testing.assert_allclose(-np.asarray(logits), distances, rtol=1e-5)


def test_scaled_tanh_constants():
  assert float(lenet.scaled_tanh(jnp.float32(1.0))) == pytest.approx(1.0, abs=2e-4)
  assert float(lenet.scaled_tanh(jnp.float32(100.0))) == pytest.approx(1.7159)


@pytest.mark.parametrize('initializer, bound', [('lecun98', lambda f: 2.4 / np.sqrt(f)),
                                                ('lecun98_printed', lambda f: 2.4 / f)])
def test_initialisation_bounds(initializer, bound):
  model = models.create_model('lenet5', initializer=initializer)
  params = model.init(jax.random.key(3), jnp.zeros((1, 32, 32, 1)))['params']
  for name, fan_in in (('C1', 25), ('C5', 400), ('F6', 120)):
    kernel = np.abs(np.asarray(params[name]['kernel']))
    assert kernel.max() <= bound(fan_in) and kernel.max() > 0.95 * bound(fan_in)
  # C3's fan-in depends on the map: 3, 4 or 6 input maps of 25 pixels.
  c3 = np.abs(np.asarray(params['C3']['kernel']))  # (5, 5, 60 connections)
  sizes = np.repeat([len(r) for r in lenet.C3_TABLE], [len(r) for r in lenet.C3_TABLE])
  assert np.all(c3.max(axis=(0, 1)) <= bound(25 * sizes))
  assert c3[..., sizes == 6].max() < bound(25 * 3)


def test_modern_variant():
  model = models.create_model('lenet5', activation='relu', pooling='max', c3_table=False,
                              head='dense', initializer='default', num_classes=7)
  variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))
  counts = {k: sum(p.size for p in jax.tree_util.tree_leaves(v))
            for k, v in variables['params'].items()}
  assert counts == {'C1': 156, 'C3': 2416, 'C5': 48120, 'F6': 10164, 'output': 84 * 7 + 7}
  assert model.apply(variables, jnp.ones((2, 32, 32, 1))).shape == (2, 7)


def test_bad_inputs_are_clear_errors(paper_net):
  model, variables, _ = paper_net
  with pytest.raises(ValueError, match=r'32x32 inputs.*got 28x28.*pad\(2\)'):
    model.apply(variables, jnp.zeros((1, 28, 28, 1)))
  with pytest.raises(ValueError, match="10 fixed prototypes.*head='dense'"):
    models.create_model('lenet5', num_classes=5).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


def test_diagonal_hessian_matches_hand_computation(paper_net):
  """Appendix C at the top two layers, written out by hand in numpy."""
  model, variables, x = paper_net
  mask = np.array([1, 1, 1, 0], np.float32)  # the last example is padding
  h = model.apply(variables, x, mask, method='diagonal_hessian')
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables['params'])

  def slope2(a):  # f'(a)^2 for f(a) = 1.7159 tanh(2a/3)
    return (1.7159 * 2 / 3 * (1 - np.tanh(2 * a / 3) ** 2)) ** 2

  _, inter = model.apply(variables, x, mutable=['intermediates'])
  f6 = np.asarray(inter['intermediates']['features'][0], np.float64)
  # Recover F6's input (C5's output) and pre-activations through the model's own layers.
  c5_in = None
  record = []
  model.apply(variables, x, False, record, method=model._forward)
  names = [r[0] for r in record]
  c5_in = np.asarray(record[names.index('F6')][2], np.float64).reshape(4, 120)
  a_f6 = np.asarray(record[names.index('F6')][3], np.float64)
  a_c5 = np.asarray(record[names.index('C5')][3], np.float64).reshape(4, 120)
  np.testing.assert_allclose(1.7159 * np.tanh(2 * a_f6 / 3), f6, rtol=1e-5, atol=1e-6)

  d2a_f6 = 2.0 * slope2(a_f6) * mask[:, None]                       # [N, 84]
  expect_f6_kernel = np.einsum('ni,nj->ij', c5_in ** 2, d2a_f6) / 3  # mean over 3 real examples
  np.testing.assert_allclose(h['F6']['kernel'], expect_f6_kernel, rtol=1e-4)
  np.testing.assert_allclose(h['F6']['bias'], d2a_f6.sum(0) / 3, rtol=1e-4)
  d2x_c5 = d2a_f6 @ (p['F6']['kernel'] ** 2).T                       # sum_i w_ij^2 d2a_i
  d2a_c5 = slope2(a_c5) * d2x_c5
  np.testing.assert_allclose(h['C5']['bias'], d2a_c5.sum(0) / 3, rtol=1e-4)
  for name in ('C1', 'S2', 'C3', 'S4'):
    assert all(np.all(np.asarray(v) >= 0) for v in h[name].values())
    assert all(np.asarray(v).max() > 0 for v in h[name].values())


def test_diagonal_hessian_needs_the_paper_network():
  model = models.create_model('lenet5', pooling='max')
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ValueError, match="pooling='subsample', head='rbf'"):
    model.apply(variables, jnp.zeros((1, 32, 32, 1)), jnp.ones(1), method='diagonal_hessian')
