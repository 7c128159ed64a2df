"""Shared layers: BatchNorm's statistics span, 2x2 pooling."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import layers, summary


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


@pytest.mark.parametrize('shape,window,stride,padding,ceil_mode', [
    ((2, 9, 9, 3), 3, 2, 1, False),              # ResNet's stem pool
    ((2, 10, 11, 3), 3, 2, 'VALID', True),       # GoogLeNet's ceil_mode pools
    ((1, 7, 7, 2), 3, 1, 'SAME', False),         # Inception's stride-1 branch pool
    ((2, 12, 12, 5), 3, 2, ((0, 1), (1, 0)), False),
    ((2, 8, 8, 4), 2, 2, 'VALID', False)], ids=str)
def test_max_pool_gradient_equals_xlas(shape, window, stride, padding, ceil_mode):
  """On CPU the max-pool gradient is a loop over the window's taps; it equals XLA's
  select-and-scatter, ties included (the first maximum in the window takes the gradient)."""
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  x = x.at[:, ::3].set(0.0)  # ties: rows of equal values
  pool = lambda x: layers.max_pool(x, window, stride, padding, ceil_mode)
  y, vjp = jax.vjp(pool, x)
  assert 'custom_vjp_call' in str(jax.make_jaxpr(pool)(x))
  with layers.reference_convolutions():  # a new function: make_jaxpr caches traces
    reference = lambda x: layers.max_pool(x, window, stride, padding, ceil_mode)
    y_ref, vjp_ref = jax.vjp(reference, x)
    assert 'custom_vjp_call' not in str(jax.make_jaxpr(reference)(x))
  np.testing.assert_array_equal(y, y_ref)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  np.testing.assert_allclose(vjp(dy)[0], vjp_ref(dy)[0], rtol=1e-6, atol=1e-6)


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


DEPTHWISE_CASES = [  # (height, width, channels, kernel, stride, dilation, padding)
    (9, 9, 4, 3, 1, 1, 'SAME'), (10, 9, 4, 3, 2, 1, 'SAME'), (9, 11, 3, 5, 2, 1, 'SAME'),
    (8, 8, 4, 3, 1, 2, 'SAME'), (9, 9, 4, 5, 1, 1, 'VALID'), (10, 10, 3, 3, 2, 1, 'VALID'),
    (7, 7, 6, 7, 2, 1, ((3, 2), (1, 3))), (11, 11, 2, 3, 3, 2, ((0, 4), (2, 0)))]


@pytest.mark.parametrize('h, w, c, k, s, d, padding', DEPTHWISE_CASES)
def test_depthwise_conv_equals_the_grouped_convolution(h, w, c, k, s, d, padding):
  """layers.depthwise_conv (taps, custom VJP) against lax's grouped convolution: outputs and
  both gradients, for strides, dilations and SAME/VALID/explicit padding."""
  rng = np.random.default_rng(h * 100 + k * 10 + s)
  x = jnp.asarray(rng.normal(size=(2, h, w, c)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 1, c)), jnp.float32)
  numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))

  def reference(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (s, s), padding, rhs_dilation=(d, d),
                                        dimension_numbers=numbers, feature_group_count=c)

  def ours(x, kernel):
    return layers.conv_general_dilated(x, kernel, (s, s), padding, rhs_dilation=(d, d),
                                       dimension_numbers=numbers, feature_group_count=c)

  expected, got = reference(x, kernel), ours(x, kernel)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
  for a, b in zip(jax.vjp(reference, x, kernel)[1](cotangent),
                  jax.vjp(ours, x, kernel)[1](cotangent)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()))
  # It really is the tap loop: no convolution in its program (nor in its gradient's).
  program = str(jax.make_jaxpr(jax.grad(lambda x, k: ours(x, k).sum(), (0, 1)))(x, kernel))
  assert 'conv_general_dilated' not in program


def test_only_depthwise_convolutions_leave_lax():
  """Grouped (not depthwise) convolutions, channel multipliers and reference_convolutions()
  keep lax's convolution, so MAC counting and every other conv are unchanged."""
  x = jnp.ones((1, 6, 6, 4))
  numbers = jax.lax.conv_dimension_numbers(x.shape, (3, 3, 2, 4), ('NHWC', 'HWIO', 'NHWC'))
  grouped = lambda x: layers.conv_general_dilated(x, jnp.ones((3, 3, 2, 4)), (1, 1), 'SAME',
                                                  dimension_numbers=numbers,
                                                  feature_group_count=2)
  multiplier = lambda x: layers.conv_general_dilated(x, jnp.ones((3, 3, 1, 8)), (1, 1), 'SAME',
                                                     dimension_numbers=numbers,
                                                     feature_group_count=4)
  def depthwise(x):  # a new function each time: the switch acts when a function is traced
    return layers.conv_general_dilated(x, jnp.ones((3, 3, 1, 4)), (1, 1), 'SAME',
                                       dimension_numbers=numbers, feature_group_count=4)

  for fn in (grouped, multiplier):
    assert 'conv_general_dilated' in str(jax.make_jaxpr(fn)(x))
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(lambda x: depthwise(x))(x))
  with layers.reference_convolutions():
    assert 'conv_general_dilated' in str(jax.make_jaxpr(lambda x: depthwise(x))(x))
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(lambda x: depthwise(x))(x))
  # MobileNet v2's multiply-adds still count its depthwise layers (~17M of its 300.8M at 224).
  model = models.create_model('mobilenet_v2')
  assert summary.count_macs(model, (224, 224, 3)) == pytest.approx(
      models.get_spec('mobilenet_v2').expected_macs, rel=1e-3)


def _like_lax(x, kernel, stride, padding, rng, exact_forward=False):
  """layers.conv_general_dilated as a function of (x, kernel), after checking that its value
  (bitwise with exact_forward) and both gradients equal lax's at (x, kernel)."""
  numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))
  reference = lambda x, k: jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                                        dimension_numbers=numbers)
  ours = lambda x, k: layers.conv_general_dilated(x, k, (stride, stride), padding,
                                                  dimension_numbers=numbers)
  expected = reference(x, kernel)
  if exact_forward:
    np.testing.assert_array_equal(ours(x, kernel), expected)
  else:
    np.testing.assert_allclose(ours(x, kernel), expected, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
  for a, b in zip(jax.vjp(reference, x, kernel)[1](cotangent),
                  jax.vjp(ours, x, kernel)[1](cotangent)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
  return ours


@pytest.mark.parametrize('stride, padding', [(1, 'SAME'), (2, 'SAME'), (2, 'VALID'),
                                             (3, ((0, 0), (0, 0)))])
def test_pointwise_convolution_gradients_as_matrix_products(stride, padding):
  """1x1 convolutions keep lax's forward; their custom VJP (matrix products over the N*H*W
  positions, strided positions for stride > 1) gives lax's gradients."""
  rng = np.random.default_rng(stride)
  x = jnp.asarray(rng.normal(size=(2, 9, 7, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(1, 1, 3, 5)), jnp.float32)
  ours = _like_lax(x, kernel, stride, padding, rng, exact_forward=True)
  assert 'custom_vjp_call' in str(jax.make_jaxpr(lambda x, k: ours(x, k))(x, kernel))
  with layers.reference_convolutions():
    assert 'custom_vjp_call' not in str(jax.make_jaxpr(lambda x, k: ours(x, k))(x, kernel))


@pytest.mark.parametrize('kernel_hw, padding, stride', [((5, 5), 'VALID', 1),
                                                         ((3, 4), ((0, 0), (0, 0)), 2)])
def test_full_window_convolution_is_a_matrix_product(kernel_hw, padding, stride):
  """A window over the whole unpadded input (LeNet-5's C5) is one output position: a dense
  layer, with lax's values and gradients and no convolution left in its program."""
  rng = np.random.default_rng(kernel_hw[1])
  x = jnp.asarray(rng.normal(size=(4, *kernel_hw, 6)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(*kernel_hw, 6, 7)), jnp.float32)
  ours = _like_lax(x, kernel, stride, padding, rng)
  assert ours(x, kernel).shape == (4, 1, 1, 7)
  numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))
  program = lambda: str(jax.make_jaxpr(jax.grad(lambda x, k: ours(x, k).sum(), (0, 1)))(x, kernel))
  assert 'conv_general_dilated' not in program() and 'dot_general' in program()
  with layers.reference_convolutions():
    assert 'conv_general_dilated' in program()
  # Padding, or a window smaller than the input, keeps the convolution.
  larger = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  for inputs, pads in ((x, 'SAME'), (larger, 'VALID')):
    conv = lambda x, pads=pads: layers.conv_general_dilated(x, kernel, (1, 1), pads,
                                                            dimension_numbers=numbers)
    assert 'conv_general_dilated' in str(jax.make_jaxpr(conv)(inputs))


_FLOAT64_GRADIENTS = r"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from cnn_history import models
from cnn_history.models import layers
model = models.create_model('mobilenet_v2', num_classes=10, dtype=jnp.float64)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(8, 64, 64, 3)), jnp.float64)
labels = jnp.asarray(rng.integers(0, 10, 8))
variables = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64),
                                   model.init(jax.random.key(0), x, train=False))

def gradients():
  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                            train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.key(1)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return jax.jit(jax.grad(loss))(variables['params'])

ours = gradients()
with layers.reference_convolutions():
  reference = gradients()
pairs = list(zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference)))
assert all(a.dtype == jnp.float64 for a, _ in pairs)
print(len(pairs), max(float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-30)) for a, b in pairs))
"""


def test_mobilenet_v2_gradients_equal_with_lax_convolutions():
  """MobileNet v2's training gradients (64x64, batch 8, BatchNorm on batch statistics) through
  the CPU forms (depthwise tap loop, 1x1 gradient VJP) equal those through lax's convolutions.
  In float64: in float32, rounding flips a few ReLU6 masks and BN's backward amplifies it, so
  some BN gradients differ by ~1% whichever form runs."""
  env = dict(os.environ, JAX_ENABLE_X64='1', CUDA_VISIBLE_DEVICES='')
  env.pop('XLA_FLAGS', None)
  out = subprocess.run([sys.executable, '-c', _FLOAT64_GRADIENTS], env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  count, worst = out.stdout.split()
  assert int(count) > 100
  assert float(worst) < 1e-6  # equal up to float64 rounding
