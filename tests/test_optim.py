"""Schedules at the paper's boundaries; SDLM and weight-decay arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_history import config as config_lib
from cnn_history import optim


def test_lenet_schedule_per_pass():
  c = config_lib.default_config()
  c.schedule.name = 'piecewise'
  c.schedule.learning_rate = 5e-4
  c.schedule.boundaries = (2, 5, 8, 12)
  c.schedule.rates = (2e-4, 1e-4, 5e-5, 1e-5)
  per_epoch = 60000  # online updates per pass
  schedule = optim.build_schedule(c.schedule, per_epoch, 100, 20 * per_epoch)
  expected = {1: 5e-4, 2: 5e-4, 3: 2e-4, 5: 2e-4, 6: 1e-4, 8: 1e-4, 9: 5e-5, 12: 5e-5,
              13: 1e-5, 20: 1e-5}
  for one_based_pass, rate in expected.items():
    first, last = (one_based_pass - 1) * per_epoch, one_based_pass * per_epoch - 1
    assert float(schedule(first)) == pytest.approx(rate)
    assert float(schedule(last)) == pytest.approx(rate)


def test_exponential_cosine_and_warmup():
  c = config_lib.default_config()
  c.schedule.name = 'exponential'
  c.schedule.learning_rate = 0.045
  c.schedule.decay_factor = 0.94
  c.schedule.decay_every = 2.0
  schedule = optim.build_schedule(c.schedule, 100, 1, 10_000)
  assert float(schedule(199)) == pytest.approx(0.045)
  assert float(schedule(200)) == pytest.approx(0.045 * 0.94)
  assert float(schedule(1000)) == pytest.approx(0.045 * 0.94 ** 5)
  c.schedule.name = 'cosine'
  c.schedule.learning_rate = 0.4
  c.schedule.warmup = 5.0
  schedule = optim.build_schedule(c.schedule, 100, 1, 12_000)
  assert float(schedule(0)) == pytest.approx(0.4 / 500)
  assert float(schedule(249)) == pytest.approx(0.4 * 0.5, rel=1e-3)  # halfway up the warm-up
  assert float(schedule(500)) == pytest.approx(0.4)
  assert float(schedule(500 + 5750)) == pytest.approx(0.2, rel=1e-3)  # halfway down the cosine
  assert float(schedule(12_000)) == pytest.approx(0.0, abs=1e-7)


def test_piecewise_needs_one_rate_per_boundary():
  c = config_lib.default_config()
  c.schedule.name = 'piecewise'
  c.schedule.boundaries = (30, 60)
  c.schedule.rates = (0.01,)
  with pytest.raises(ValueError, match='one rate per boundary'):
    optim.build_schedule(c.schedule, 10, 1, 1000)


def test_sdlm_step_is_eta_over_mu_plus_h():
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = {'w': jnp.array([0.5, 0.5, -1.0])}
  h = {'w': jnp.array([0.0, 1.0, 10.0])}
  c = config_lib.default_config().optimizer
  c.name = 'sdlm'
  c.sdlm_mu = 0.02
  tx = optim.build_optimizer(c, optax.constant_schedule(5e-4))
  state = optim.with_curvature(tx.init(params), h)
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['w'], -5e-4 * np.array([0.5 / 0.02, 0.5 / 1.02, -1 / 10.02]),
                             rtol=1e-6)


@pytest.mark.parametrize('mode', ['coupled', 'decoupled'])
def test_weight_decay_modes_and_mask(mode):
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  grads['kernel'] = grads['kernel'] + 1.0
  c = config_lib.default_config().optimizer
  c.name, c.momentum, c.weight_decay = 'momentum', 0.9, 0.1
  c.weight_decay_mode, c.weight_decay_on = mode, 'kernels'
  tx = optim.build_optimizer(c, optax.constant_schedule(0.5))
  state = tx.init(params)
  u1, state = tx.update(grads, state, params)
  u2, state = tx.update(grads, state, params)
  np.testing.assert_allclose(u1['bias'], 0.0)  # biases are not decayed
  # coupled: v = 0.9 v + (g + wd w), update -lr v; decoupled: -lr (m + wd w).
  if mode == 'coupled':
    np.testing.assert_allclose(u1['kernel'], -0.5 * 1.1)
    np.testing.assert_allclose(u2['kernel'], -0.5 * (0.9 * 1.1 + 1.1))
  else:
    np.testing.assert_allclose(u1['kernel'], -0.5 * (1.0 + 0.1))
    np.testing.assert_allclose(u2['kernel'], -0.5 * (1.9 + 0.1))
