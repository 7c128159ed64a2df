"""SPPNet: the pyramid's bins against numpy, the parameter count by hand, one set of weights
for 224 and 180 inputs, the `levels` switch, and the errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import layers, summary


def spp_numpy(x, levels):
  """§2.3: for an a x a map and n x n bins, window ceil(a/n) and stride floor(a/n)."""
  out = []
  for n in levels:
    h, w = x.shape[1:3]
    win_h, win_w, stride_h, stride_w = -(-h // n), -(-w // n), h // n, w // n
    bins = np.empty((x.shape[0], n, n, x.shape[3]), x.dtype)
    for i in range(n):
      for j in range(n):
        bins[:, i, j] = x[:, i * stride_h:i * stride_h + win_h,
                          j * stride_w:j * stride_w + win_w].max(axis=(1, 2))
    out.append(bins.reshape(x.shape[0], -1))
  return np.concatenate(out, axis=1)


@pytest.mark.parametrize('size', [(13, 13), (10, 10), (7, 9)])
def test_pyramid_bins_match_numpy(size):
  x = np.random.default_rng(0).normal(size=(2,) + size + (3,)).astype(np.float32)
  ours = np.asarray(layers.spatial_pyramid_pool(jnp.asarray(x), (6, 3, 2, 1)))
  assert ours.shape == (2, 50 * 3)
  np.testing.assert_array_equal(ours, spp_numpy(x, (6, 3, 2, 1)))
  np.testing.assert_array_equal(ours[:, -3:], x.max(axis=(1, 2)))  # the 1x1 level


def test_parameter_count_by_hand():
  zf5 = ((7 * 7 * 3 * 96 + 96)          # conv1
         + (5 * 5 * 96 * 256 + 256)     # conv2
         + (3 * 3 * 256 * 384 + 384)    # conv3
         + (3 * 3 * 384 * 384 + 384)    # conv4
         + (3 * 3 * 384 * 256 + 256))   # conv5
  bins = 6 * 6 + 3 * 3 + 2 * 2 + 1 * 1  # 50
  fc = ((bins * 256 * 4096 + 4096)      # FC6 on the 12,800-d pyramid
        + (4096 * 4096 + 4096)          # FC7
        + (4096 * 1000 + 1000))         # FC8
  assert zf5 == 3_726_464 and bins == 50
  assert zf5 + fc == 77_037_672 == models.get_spec('sppnet').expected_params
  thirty_bins = models.create_model('sppnet', levels=(4, 3, 2, 1))
  params = summary.count_params(jax.eval_shape(thirty_bins.init, jax.random.key(0),
                                               jnp.zeros((1, 224, 224, 3))))
  assert params == zf5 + fc - (50 - 30) * 256 * 4096


def fc6_input_shape(model, size):
  shapes = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.name == 'fc6':
      shapes.append(args[0].shape)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return shapes[0], variables


def test_one_set_of_weights_for_224_and_180():
  model = models.create_model('sppnet', num_classes=10)
  fc6_224, abstract = fc6_input_shape(model, 224)
  fc6_180, abstract_180 = fc6_input_shape(model, 180)
  assert fc6_224 == fc6_180 == (1, 12_800)
  assert abstract == abstract_180  # the same parameter shapes
  # Weights made at 224 run at 180 (conv5 10x10 instead of 13x13): same output shape.
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda s: (rng.random(s.shape, np.float32) - 0.5) * np.float32(0.05), abstract['params'])
  apply = jax.jit(model.apply)
  big = apply({'params': params}, jax.random.normal(jax.random.key(1), (2, 224, 224, 3)))
  small = apply({'params': params}, jax.random.normal(jax.random.key(1), (2, 180, 180, 3)))
  assert big.shape == small.shape == (2, 10)
  assert np.all(np.isfinite(small)) and not np.allclose(small[0], small[1])


def test_a_single_6x6_level_is_zfnets_pool5():
  # At 224 conv5 is 13x13: 6x6 bins of window 3, stride 2 are the windows of ZFNet's pool5.
  spp = models.create_model('sppnet', num_classes=10, levels=(6,))
  zf = models.create_model('zfnet', num_classes=10)
  x = jax.random.normal(jax.random.key(2), (1, 224, 224, 3))
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda s: (rng.random(s.shape, np.float32) - 0.5) * np.float32(0.05),
      jax.eval_shape(zf.init, jax.random.key(0), x)['params'])
  np.testing.assert_allclose(jax.jit(spp.apply)({'params': params}, x),
                             jax.jit(zf.apply)({'params': params}, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('overrides, size, message', [
    (dict(levels=()), 224, r'sppnet: levels must be positive bin counts'),
    (dict(levels=(6, 0)), 224, r'sppnet: levels must be positive bin counts'),
    (dict(initializer='glorot'), 224, r"sppnet: initializer='glorot' is not valid"),
    ({}, 96, r'SPP level 6 needs a feature map of at least 6x6, got 5x5'),
])
def test_bad_switches_and_sizes_are_named(overrides, size, message):
  model = models.create_model('sppnet', **overrides)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
