"""The oneDNN convolution custom call (cnn_history/onednn.py): built by the set-up, equal to
lax's convolution and its gradients, used exactly where it applies."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models, onednn
from cnn_history.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NHWC = ('NHWC', 'HWIO', 'NHWC')


def test_the_setup_built_the_library():
  assert onednn.available(), (f'{onednn.LIBRARY} is missing or stale: run scripts/setup.sh '
                              '(or python -m cnn_history.onednn).')


# (N, H, W, Cin, Cout, kernel, stride, pads, dilation)
GEOMETRIES = [
    (2, 9, 9, 3, 5, 3, 1, ((1, 1), (1, 1)), 1),      # ResNet's 3x3
    (2, 10, 11, 4, 6, 3, 2, ((0, 1), (1, 0)), 1),    # stride 2, asymmetric padding ('SAME')
    (3, 8, 8, 2, 3, 5, 1, ((2, 2), (2, 2)), 2),      # dilated 5x5
    (1, 7, 7, 3, 4, 3, 2, ((0, 0), (0, 0)), 1),      # 'VALID', odd size
    (2, 20, 20, 3, 8, 7, 2, ((3, 3), (3, 3)), 1),    # ResNet's stem
    (2, 32, 32, 1, 6, 5, 1, ((0, 0), (0, 0)), 1),    # LeNet-5's C1
    (2, 13, 9, 8, 4, 3, 1, ((2, 0), (0, 3)), 1),     # non-square, one-sided padding
]


@pytest.mark.parametrize('geometry', GEOMETRIES, ids=str)
def test_forward_and_gradients_equal_lax(geometry):
  n, h, w, cin, cout, k, s, pads, d = geometry
  rng = np.random.default_rng(k * 10 + s)
  x = jnp.asarray(rng.normal(size=(n, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)

  def reference(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (s, s), pads, rhs_dilation=(d, d),
                                        dimension_numbers=NHWC)

  def ours(x, kernel):
    return onednn.conv(x, kernel, (s, s), pads, (d, d))

  y_ref, vjp_ref = jax.vjp(reference, x, kernel)
  y, vjp = jax.jit(lambda x, kernel: jax.vjp(ours, x, kernel))(x, kernel)
  assert y.shape == y_ref.shape
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for got, want in zip((y, *vjp(dy)), (y_ref, *vjp_ref(dy))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(want))))


def test_layers_route_only_what_applies_to_onednn():
  x = jnp.ones((2, 12, 12, 8))

  def custom_calls(module, x):
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
    jaxpr = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(module.apply(v, x))))(variables)
    return str(jaxpr).count('cnn_history_conv_')

  conv3 = layers.Conv(4, (3, 3), padding='SAME')
  with onednn.enabled():
    assert custom_calls(conv3, x) == 3  # forward, input gradient, kernel gradient
    assert custom_calls(layers.Conv(4, (1, 1)), x) == 0  # 1x1: matrix products (_pointwise)
    assert custom_calls(layers.Conv(8, (3, 3), feature_group_count=8), x) == 0  # depthwise
    assert custom_calls(layers.Conv(4, (3, 3), dtype=jnp.bfloat16,
                                    param_dtype=jnp.bfloat16), x.astype(jnp.bfloat16)) == 0
    assert custom_calls(layers.Conv(4, (3, 3), padding=((1, 1), (1, 1)), input_dilation=2),
                        x) == 0  # input dilation
    with layers.reference_convolutions():
      assert custom_calls(conv3, x) == 0
  with onednn.enabled(False):
    assert custom_calls(conv3, x) == 0
  # This process has 8 CPU devices (conftest): a custom call would stop SPMD partitioning.
  assert jax.device_count() == 8 and not onednn.in_use()
  assert custom_calls(conv3, x) == 0


def test_on_by_default_in_a_single_device_cpu_process():
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'CNN_HISTORY_ONEDNN')}
  code = ('import jax; from cnn_history import onednn; '
          'print(jax.device_count(), onednn.in_use())')
  out = subprocess.run([sys.executable, '-c', code], env={**env, 'PYTHONPATH': ROOT},
                       capture_output=True, text=True, check=True, cwd=ROOT)
  assert out.stdout.split()[-2:] == ['1', 'True'], out.stdout + out.stderr
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={**env, 'PYTHONPATH': ROOT, 'CNN_HISTORY_ONEDNN': '0'}, cwd=ROOT)
  assert out.stdout.split()[-2:] == ['1', 'False'], out.stdout + out.stderr


def test_resnet20_training_gradients_equal_lax():
  model = models.create_model('resnet20')
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
  labels = jnp.arange(4) % 10
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  with onednn.enabled():
    ours = jax.jit(jax.value_and_grad(loss))
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(variables['params']))
  with onednn.enabled(False):
    reference = jax.jit(jax.value_and_grad(loss))
  assert jaxpr.count('cnn_history_conv_forward') == 19  # every 3x3 convolution of ResNet-20
  (l1, g1), (l2, g2) = ours(variables['params']), reference(variables['params'])
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for path, a in jax.tree_util.tree_leaves_with_path(g1):
    b = dict(jax.tree_util.tree_leaves_with_path(g2))[path]
    scale = float(jnp.max(jnp.abs(b)))
    assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * scale + 1e-7, jax.tree_util.keystr(path)


def test_lenet5_gradients_and_curvature_equal_lax():
  """LeNet-5's C1 and C3 go to oneDNN and C5 (its window the whole 5x5 input) becomes a
  matrix product; the loss gradients and SDLM's second-derivative pass equal lax's."""
  model = models.create_model('lenet5')
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 32, 32, 1)), jnp.float32)
  variables = jax.jit(lambda: model.init(jax.random.key(0), x))()
  loss = lambda params: jnp.sum(jnp.tanh(model.apply({'params': params}, x) / 100.0))
  curvature = lambda params: model.apply({'params': params}, x, jnp.ones(8),
                                         method='diagonal_hessian')
  with onednn.enabled():
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(variables['params']))
    ours = jax.jit(jax.grad(loss))(variables['params']), jax.jit(curvature)(variables['params'])
  with layers.reference_convolutions():
    reference = (jax.jit(jax.grad(loss))(variables['params']),
                 jax.jit(curvature)(variables['params']))
  assert jaxpr.count('cnn_history_conv_forward') == 2  # C1 and C3
  assert jaxpr.count('conv_general_dilated') == 0  # C5 is a dot
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_vmap_over_the_custom_call():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 2)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
  f = lambda x: jnp.sum(onednn.conv(x, kernel, (1, 1), ((1, 1), (1, 1)), (1, 1)) ** 2)
  batched = jax.jit(jax.vmap(jax.grad(f)))(x)
  one_by_one = jnp.stack([jax.grad(f)(xi) for xi in x])
  np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)


def test_a_missing_or_stale_library_means_lax(monkeypatch, tmp_path, caplog):
  monkeypatch.setattr(onednn, 'LIBRARY', tmp_path / 'missing.so')
  onednn._library.cache_clear()  # pylint: disable=protected-access
  try:
    assert not onednn.available()
    with onednn.enabled():
      assert not onednn.in_use()
    monkeypatch.setattr(jax, 'device_count', lambda *a: 1)
    onednn._note_unavailable.cache_clear()  # pylint: disable=protected-access
    with caplog.at_level('WARNING'):
      assert not onednn.in_use()
    assert 'python -m cnn_history.onednn' in caplog.text and 'not built' in caplog.text
    stale = tmp_path / 'stale.so'
    stale.write_bytes(b'')
    os.utime(stale, (0, 0))  # older than the source
    monkeypatch.setattr(onednn, 'LIBRARY', stale)
    onednn._library.cache_clear()  # pylint: disable=protected-access
    assert not onednn.available()
  finally:
    monkeypatch.undo()
    onednn._library.cache_clear()  # pylint: disable=protected-access
  assert onednn.available()


def test_build_errors_name_the_fix(monkeypatch, tmp_path):
  monkeypatch.setenv('CXX', 'no-such-compiler')
  with pytest.raises(onednn.BuildError, match='apt-get install g..'):
    onednn.build()
  monkeypatch.delenv('CXX')
  monkeypatch.delenv('DNNL_ROOT', raising=False)
  monkeypatch.setattr(onednn, 'INCLUDE_DIRS', (str(tmp_path),))
  with pytest.raises(onednn.BuildError, match='apt-get install libdnnl-dev'):
    onednn.build()


@pytest.mark.parametrize('which', ['forward', 'data', 'weights'])
def test_oneDNN_names_its_kernels(which):
  impl = onednn.implementation(which, (8, 16, 16, 16), (3, 3, 16, 16), (8, 16, 16, 16),
                               (1, 1), ((1, 1), (1, 1)), (1, 1))
  assert impl and impl != 'unavailable' and not impl.startswith('error'), impl
  bad = onednn.implementation(which, (8, 16, 16, 16), (3, 3, 16, 16), (8, 99, 16, 16),
                              (1, 1), ((1, 1), (1, 1)), (1, 1))  # an output size that is wrong
  assert bad.startswith('error'), bad


def test_cpu_forms_only_on_cpu(monkeypatch):
  """GPU and TPU backends get lax's convolutions (cuDNN's): the depthwise tap loop, the 1x1
  gradient VJP and the oneDNN call are CPU forms (XLA's GPU compiler once aborted on them)."""
  x = jnp.ones((2, 12, 12, 8))

  def primitives(module):
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
    return str(jax.make_jaxpr(jax.grad(lambda v: jnp.sum(module.apply(v, x))))(variables))

  depthwise, pointwise = layers.Conv(8, (3, 3), feature_group_count=8), layers.Conv(4, (1, 1))
  on_cpu = primitives(depthwise) + primitives(pointwise)
  assert 'custom_vjp_call' in on_cpu
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  with onednn.enabled():
    on_gpu = [primitives(m) for m in (depthwise, pointwise, layers.Conv(4, (3, 3)))]
  for jaxpr in on_gpu:
    assert 'custom_vjp_call' not in jaxpr and 'cnn_history_conv_' not in jaxpr
    assert 'conv_general_dilated' in jaxpr
