"""Shared layers: BatchNorm's statistics span, 2x2 pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history.models import layers


def test_batchnorm_ghost_batches_use_their_own_statistics():
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(8, 4, 4, 3)).astype(np.float32)
  bn = layers.BatchNorm(momentum=0.9, epsilon=1e-5, batch_span=4)
  variables = bn.init(jax.random.key(0), x, train=False)
  y, updates = bn.apply(variables, x, train=True, mutable=['batch_stats'])
  expected, means, variances = [], [], []
  for group in (x[:4], x[4:]):  # numpy: each group of 4 examples normalised on its own
    mean, var = group.mean(axis=(0, 1, 2)), group.var(axis=(0, 1, 2))
    expected.append((group - mean) / np.sqrt(var + 1e-5))
    means.append(mean)
    variances.append(var)
  np.testing.assert_allclose(y, np.concatenate(expected), atol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['mean'], 0.1 * np.mean(means, 0), rtol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['var'],
                             0.9 + 0.1 * np.mean(variances, 0), rtol=1e-5)


def test_batchnorm_whole_batch_matches_flax():
  x = np.random.default_rng(1).normal(size=(6, 5, 5, 4)).astype(np.float32)
  ours = layers.BatchNorm(momentum=0.9, epsilon=1e-3)
  theirs = nn.BatchNorm(momentum=0.9, epsilon=1e-3, use_running_average=False)
  v1 = ours.init(jax.random.key(0), x, train=False)
  v2 = theirs.init(jax.random.key(0), x)
  y1, s1 = ours.apply(v1, x, train=True, mutable=['batch_stats'])
  y2, s2 = theirs.apply(v2, x, mutable=['batch_stats'])
  np.testing.assert_allclose(y1, y2, atol=1e-5)
  np.testing.assert_allclose(s1['batch_stats']['var'], s2['batch_stats']['var'], rtol=1e-5)
  # Inference uses the running statistics.
  y_eval = ours.apply({**v1, 'batch_stats': s1['batch_stats']}, x, train=False)
  expected = (x - s1['batch_stats']['mean']) / np.sqrt(s1['batch_stats']['var'] + 1e-3)
  np.testing.assert_allclose(y_eval, expected, atol=1e-5)


def test_batchnorm_span_must_divide_the_batch():
  bn = layers.BatchNorm(batch_span=3)
  x = jnp.ones((4, 2, 2, 1))
  variables = bn.init(jax.random.key(0), x, train=False)
  with pytest.raises(ValueError, match='batch_span=3 does not divide the batch of 4'):
    bn.apply(variables, x, train=True, mutable=['batch_stats'])


@pytest.mark.parametrize('reduce', ['max', 'avg'])
def test_pool_2x2_equals_reduce_window(reduce):
  x = np.random.default_rng(2).normal(size=(2, 6, 8, 3)).astype(np.float32)
  ours = layers.pool_2x2(jnp.asarray(x), reduce)
  ref = (nn.max_pool if reduce == 'max' else nn.avg_pool)(jnp.asarray(x), (2, 2), (2, 2))
  np.testing.assert_allclose(ours, ref, rtol=1e-6)
  np.testing.assert_allclose(layers.pool_2x2(jnp.asarray(x), 'sum'),
                             x.reshape(2, 3, 2, 4, 2, 3).sum(axis=(2, 4)), rtol=1e-5)


def test_adaptive_avg_pool_uses_pytorchs_bins():
  x = np.random.default_rng(2).normal(size=(1, 7, 9, 2)).astype(np.float32)
  ours = np.asarray(layers.adaptive_avg_pool(jnp.asarray(x), 6))
  expected = np.empty((1, 6, 6, 2), np.float32)
  for i in range(6):
    for j in range(6):  # bin i spans [floor(i H / 6), ceil((i + 1) H / 6))
      r0, r1 = int(np.floor(i * 7 / 6)), int(np.ceil((i + 1) * 7 / 6))
      c0, c1 = int(np.floor(j * 9 / 6)), int(np.ceil((j + 1) * 9 / 6))
      expected[0, i, j] = x[0, r0:r1, c0:c1].mean(axis=(0, 1))
  np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_convbn_default_init_is_he_over_one_groups_fan_out():
  x = jnp.ones((1, 8, 8, 64))
  for groups, features in ((1, 64), (64, 64), (64, 128)):
    conv = layers.ConvBN(features, 3, groups=groups, use_bn=False, act=None)
    kernel = conv.init(jax.random.key(0), x)['params']['conv']['kernel']
    fan_out = 9 * features // groups  # k*k outputs of each group's filters
    assert float(jnp.std(kernel)) == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)
