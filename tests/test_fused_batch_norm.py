"""The fused batch-normalisation custom call (cnn_history/csrc/batch_norm.cc): equal to the
XLA arithmetic of layers.BatchNorm and its gradients, deterministic, and used exactly where it
applies."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models, onednn
from cnn_history.models import layers


def reference(x, scale, bias, residual, groups, epsilon, relu):
  """What the custom call computes, in plain jnp (two-pass variance, as layers.BatchNorm)."""
  n = x.shape[0]
  g = x.reshape((groups, n // groups) + x.shape[1:])
  axes = tuple(range(1, g.ndim - 1))
  mean = g.mean(axes, keepdims=True)
  var = jnp.square(g - mean).mean(axes, keepdims=True)
  y = ((g - mean) * jax.lax.rsqrt(var + epsilon)).reshape(x.shape) * scale + bias
  if residual is not None:
    y = y + residual
  if relu:
    y = jax.nn.relu(y)
  return y, mean.reshape(groups, -1), var.reshape(groups, -1)


# (shape, groups, residual, relu): ResNet's three uses, ghost batches, a channel count that is
# not a multiple of the vector width, a 2-D input and a tensor larger than one block of tiles.
CASES = [((8, 5, 5, 16), 1, True, True), ((8, 5, 5, 16), 1, False, True),
         ((8, 6, 6, 16), 4, False, True), ((6, 3, 7, 3), 3, True, False),
         ((12, 10), 2, False, False), ((16, 30, 30, 7), 2, True, True)]


@pytest.mark.parametrize('shape,groups,with_residual,relu', CASES, ids=str)
def test_forward_and_gradients_equal_the_reference(shape, groups, with_residual, relu):
  rng = np.random.default_rng(sum(shape) + groups)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  x = f32(*shape) * 3 + 1
  scale, bias = f32(shape[-1]), f32(shape[-1])
  residual = f32(*shape) if with_residual else None
  out = jax.jit(onednn.batch_norm, static_argnums=(4, 5, 6))(x, scale, bias, residual, groups,
                                                             1e-3, relu)
  want = reference(x, scale, bias, residual, groups, 1e-3, relu)
  for got, w in zip(out, want):
    assert got.shape == w.shape
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=2e-5 * float(jnp.max(jnp.abs(w))))
  assert float(jnp.min(out[0])) >= 0 if relu else float(jnp.min(out[0])) < 0

  dy = f32(*shape)
  argnums = (0, 1, 2, 3) if with_residual else (0, 1, 2)

  def grads(fn):
    loss = lambda x, s, b, r: jnp.sum(fn(x, s, b, r, groups, 1e-3, relu)[0] * dy)
    return jax.jit(jax.grad(loss, argnums))(x, scale, bias, residual)

  for got, w in zip(grads(onednn.batch_norm), grads(reference)):
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_results_are_deterministic():
  """Per-thread partial sums are combined in a fixed order: reruns are bitwise equal."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 17, 17, 24)), jnp.float32)
  s, b = jnp.ones(24), jnp.zeros(24)
  run = jax.jit(jax.value_and_grad(
      lambda x: jnp.sum(onednn.batch_norm(x, s, b, None, 1, 1e-5, True)[0] * x)))
  (l1, g1), (l2, g2) = run(x), run(x + 0.0)
  assert float(l1) == float(l2) and np.array_equal(g1, g2)


def test_mismatched_groups_or_residual_is_an_error():
  with pytest.raises(Exception, match='does not split into the given groups'):
    jax.block_until_ready(onednn.batch_norm(jnp.ones((6, 4)), jnp.ones(4), jnp.zeros(4), None,
                                            4, 1e-5, False))
  with pytest.raises(ValueError, match='must have the shape of x'):
    onednn.batch_norm(jnp.ones((6, 4)), jnp.ones(4), jnp.zeros(4), jnp.ones((6, 1)), 1, 1e-5,
                      False)


def _module_pass(bn, x, residual, relu, fused):
  variables = bn.init(jax.random.key(0), x, train=False)
  variables = {**variables, 'params': jax.tree.map(
      lambda p: p + jnp.linspace(0.5, 1.5, p.size).reshape(p.shape), variables['params'])}

  def loss(params, x, residual):
    y, stats = bn.apply({**variables, 'params': params}, x, train=True, residual=residual,
                        relu=relu, mutable=['batch_stats'])
    return jnp.sum(y * jnp.cos(y)), (y, stats)

  with onednn.enabled(fused):
    jaxpr = str(jax.make_jaxpr(jax.grad(loss, has_aux=True))(variables['params'], x, residual))
    out = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(variables['params'], x,
                                                                      residual)
  return jaxpr, out


@pytest.mark.parametrize('span', [None, 4])
def test_layers_batch_norm_fused_equals_xla(span):
  """layers.BatchNorm with residual and ReLU: the custom call (one-device CPU, float32) gives
  XLA's output, running statistics and gradients."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 6, 6, 12)) * 2 + 0.5, jnp.float32)
  residual = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  bn = layers.BatchNorm(momentum=0.8, batch_span=span)
  jaxpr, ((loss, (y, stats)), grads) = _module_pass(bn, x, residual, True, fused=True)
  ref_jaxpr, ((ref_loss, (ref_y, ref_stats)), ref_grads) = _module_pass(bn, x, residual, True,
                                                                        fused=False)
  assert 'cnn_history_batch_norm_forward' in jaxpr and 'cnn_history_batch_norm_backward' in jaxpr
  assert 'cnn_history_batch_norm' not in ref_jaxpr
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves((stats, grads)), jax.tree.leaves((ref_stats, ref_grads))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-7)


def test_fused_only_where_it_applies(monkeypatch):
  """Evaluation, bfloat16, the FUSED_BATCH_NORM switch and non-CPU backends keep XLA's."""
  x = jnp.ones((4, 3, 3, 8))

  def uses_custom_call(bn, train=True, dtype=jnp.float32):
    xs = x.astype(dtype)
    variables = jax.eval_shape(lambda: bn.init(jax.random.key(0), xs, train=False))
    with onednn.enabled():
      jaxpr = jax.make_jaxpr(lambda v: bn.apply(v, xs, train=train, relu=True,
                                                mutable=['batch_stats']))(variables)
    return 'cnn_history_batch_norm_forward' in str(jaxpr)

  assert uses_custom_call(layers.BatchNorm())
  assert not uses_custom_call(layers.BatchNorm(), train=False)
  assert not uses_custom_call(layers.BatchNorm(dtype=jnp.bfloat16), dtype=jnp.bfloat16)
  monkeypatch.setattr(onednn, 'FUSED_BATCH_NORM', False)
  assert not uses_custom_call(layers.BatchNorm())
  monkeypatch.setattr(onednn, 'FUSED_BATCH_NORM', True)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not uses_custom_call(layers.BatchNorm())


def test_resnet_blocks_fuse_bn_residual_and_relu():
  """ResNet-20's 19 BatchNorms are custom calls, 9 of them with the residual add: none of the
  block outputs is left for XLA to recompute (it re-fused the whole residual chain before)."""
  model = models.create_model('resnet20')
  x = jnp.ones((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  with onednn.enabled():
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x, train=True,
                                                     mutable=['batch_stats']))(variables))
  assert jaxpr.count('cnn_history_batch_norm_forward') == 19
  assert not re.search(r'= max ', jaxpr)  # every ReLU is inside a custom call
  assert not re.search(r'f32\[2,\d+,\d+,\d+\] = add ', jaxpr)  # and every residual add
