"""AlexNet (2012), its one-tower 2014 layout and ZFNet: LRN, the two towers, the ablation
switches, initialisation, map sizes, and the errors for bad switches."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import alexnet, layers, summary


def module_calls(model, shape, **overrides):
  """[(name, input shape, output shape)] of the top-level submodule calls, traced only."""
  calls = []

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    scope = context.module.scope
    if context.method_name == '__call__' and scope is not None and len(scope.path) == 1:
      calls.append((scope.path[0], args[0].shape[1:], y.shape[1:]))
    return y

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape)))
  return calls


def param_count(model, shape):
  return summary.count_params(
      jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape))))


def conv_params(k, cin, cout, groups=1):
  return k * k * (cin // groups) * cout + cout


FC_PARAMS = (6 * 6 * 256 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)


def lrn_numpy(a, k=2.0, n=5, alpha=1e-4, beta=0.75):
  """§3.3 as printed, N channels:
  b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta."""
  channels = a.shape[-1]
  b = np.empty_like(a)
  for i in range(channels):
    lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
    b[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)) ** beta
  return b


def test_lrn_is_the_papers_formula_and_the_alpha_over_n_convention():
  a = np.random.default_rng(0).normal(0.0, 40.0, size=(2, 3, 3, 11)).astype(np.float32)
  ours = np.asarray(layers.LRN().apply({}, jnp.asarray(a)))
  expected = lrn_numpy(a)
  assert np.abs(expected - a / 2.0 ** 0.75).max() > 0.1  # the sum matters at this scale
  np.testing.assert_allclose(ours, expected, rtol=1e-5)
  # Caffe/PyTorch write n times the paper's alpha and divide it by n: the same layer.
  torch_style = layers.LRN(alpha=5e-4, alpha_over_n=True).apply({}, jnp.asarray(a))
  np.testing.assert_allclose(torch_style, expected, rtol=1e-5)
  np.testing.assert_allclose(layers.LRN(size=3, k=1.0, alpha=2e-4, beta=0.5).apply({}, a),
                             lrn_numpy(a, k=1.0, n=3, alpha=2e-4, beta=0.5), rtol=1e-5)


def test_layer_order_lrn_placement_and_map_sizes():
  calls = module_calls(models.create_model('alexnet'), (227, 227, 3))
  assert [c[0] for c in calls] == ['conv1', 'lrn1', 'conv2', 'lrn2', 'conv3', 'conv4', 'conv5',
                                   'fc6', 'Dropout_0', 'fc7', 'Dropout_1', 'fc8']
  shapes = {name: (cin, cout) for name, cin, cout in calls}
  assert shapes['conv1'] == ((227, 227, 3), (55, 55, 96))
  assert shapes['conv2'] == ((27, 27, 96), (27, 27, 256))
  assert shapes['conv3'][0] == (13, 13, 256)
  assert shapes['fc6'][0] == (6, 6, 256)
  no_lrn = module_calls(models.create_model('alexnet', lrn=False), (227, 227, 3))
  assert not [c for c in no_lrn if c[0].startswith('lrn')]


def test_overlapping_pool_ablation_keeps_every_size():
  # §3.4: 2x2/2 pools give "output of equivalent dimensions": 55 -> 27 -> 13 -> 6 either way.
  plain = models.create_model('alexnet', overlapping_pool=False)
  shapes = {name: cin for name, cin, _ in module_calls(plain, (227, 227, 3))}
  assert shapes['conv2'] == (27, 27, 96) and shapes['fc6'] == (6, 6, 256)
  assert param_count(plain, (227, 227, 3)) == 60_965_224
  assert summary.count_macs(plain, (227, 227, 3)) == 724_406_816


def test_tower_switches_change_parameters_and_macs_as_the_arithmetic_says():
  towers = (conv_params(11, 3, 96) + conv_params(5, 96, 256, 2) + conv_params(3, 256, 384)
            + conv_params(3, 384, 384, 2) + conv_params(3, 384, 256, 2) + FC_PARAMS)
  assert towers == 60_965_224 == models.get_spec('alexnet').expected_params
  one_tower = models.create_model('alexnet', groups=1)
  dense = (conv_params(11, 3, 96) + conv_params(5, 96, 256) + conv_params(3, 256, 384)
           + conv_params(3, 384, 384) + conv_params(3, 384, 256) + FC_PARAMS)
  assert param_count(one_tower, (227, 227, 3)) == dense == 62_378_344
  assert summary.count_macs(one_tower, (227, 227, 3)) == 1_135_256_096
  # §3.2's control: one GPU, half the kernels in conv1-conv4, conv5 and FC6 unchanged.
  control = models.create_model('alexnet', groups=1, widths=(48, 128, 192, 192, 256))
  half = (conv_params(11, 3, 48) + conv_params(5, 48, 128) + conv_params(3, 128, 192)
          + conv_params(3, 192, 192) + conv_params(3, 192, 256) + FC_PARAMS)
  assert param_count(control, (227, 227, 3)) == half == 59_798_312


@pytest.fixture(scope='module')
def alexnet_2012():
  """The 2012 net at 227 with random conv layers and zero FC layers (cheap to make)."""
  model = models.create_model('alexnet', num_classes=10)
  x = jax.random.normal(jax.random.key(1), (1, 227, 227, 3)) * 50.0
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda path, s: (rng.normal(0.0, 0.01, s.shape) if path[0].key.startswith('conv')
                       else np.zeros(s.shape)).astype(np.float32),
      jax.eval_shape(model.init, jax.random.key(0), x)['params'])
  return model, {'params': params}, x


def initial_biases_and_conv3_kernel(model, x):
  def init(key):
    params = model.init(key, x)['params']
    return {k: v['bias'] for k, v in params.items()}, params['conv3']['kernel']

  return jax.jit(init)(jax.random.key(0))  # XLA skips drawing the weights not returned


def test_paper_initialisation():
  x = jnp.zeros((1, 227, 227, 3))
  biases, kernel = initial_biases_and_conv3_kernel(models.create_model('alexnet'), x)
  for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'):
    bias = 1.0 if name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7') else 0.0
    np.testing.assert_array_equal(biases[name], bias, err_msg=name)
  assert float(jnp.std(kernel)) == pytest.approx(0.01, rel=0.01)
  assert abs(float(jnp.mean(kernel))) < 1e-4
  biases, kernel = initial_biases_and_conv3_kernel(
      models.create_model('alexnet', initializer='he'), x)
  assert not any(np.any(b) for b in biases.values())
  assert float(jnp.std(kernel)) == pytest.approx(np.sqrt(2.0 / (3 * 3 * 256)), rel=0.02)


def _conv2_output(model, variables, x, shift):
  """conv2's output with conv1's second-tower maps (48-95) shifted by `shift`."""

  def bump(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.name == 'conv1':
      y = y.at[..., 48:].add(shift)
    return y

  def conv2(variables, x):
    with nn.intercept_methods(bump):
      _, state = model.apply(variables, x, mutable=['intermediates'],
                             capture_intermediates=lambda m, method: m.name == 'conv2')
    return state['intermediates']['conv2']['__call__'][0]

  return np.asarray(jax.jit(conv2)(variables, x))


def test_two_towers_are_separate_up_to_conv3(alexnet_2012):
  model, variables, x = alexnet_2012
  assert variables['params']['conv2']['kernel'].shape == (5, 5, 48, 256)
  # A large shift, so that an LRN window crossing the split would show.
  changed = np.abs(_conv2_output(model, variables, x, 0.0)
                   - _conv2_output(model, variables, x, 100.0)).max(axis=(0, 1, 2)) > 1e-6
  # GPU 0's conv2 maps read only GPU 0's conv1 maps, through its own LRN and pooling.
  assert not changed[:128].any()
  assert changed[128:].mean() > 0.9
  # One tower: every conv2 map reads every conv1 map.
  one_tower = models.create_model('alexnet', num_classes=10, groups=1)
  params = dict(variables['params'])
  for name in ('conv2', 'conv4', 'conv5'):  # the same kernels, now reading both halves
    params[name] = dict(params[name], kernel=jnp.tile(params[name]['kernel'], (1, 1, 2, 1)))
  changed = np.abs(_conv2_output(one_tower, {'params': params}, x, 0.0)
                   - _conv2_output(one_tower, {'params': params}, x, 100.0)).max(axis=(0, 1, 2))
  assert (changed[:128] > 1e-6).mean() > 0.9


def test_dropout_placement_and_features():
  owt = [c[0] for c in module_calls(models.create_model('alexnet_owt'), (224, 224, 3))]
  assert owt[-5:] == ['Dropout_0', 'fc6', 'Dropout_1', 'fc7', 'fc8']  # torchvision: before
  assert not [n for n in owt if n.startswith('lrn')]
  with_lrn = [c[0] for c in module_calls(models.create_model('alexnet_owt', lrn=True),
                                         (224, 224, 3))]
  assert with_lrn[:4] == ['conv1', 'lrn1', 'conv2', 'lrn2']
  model = models.create_model('zfnet', num_classes=10)
  x = jnp.zeros((2, 224, 224, 3))
  _, inter = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), x, mutable=['params', 'intermediates']))
  assert inter['intermediates']['features'][0].shape == (2, 4096)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  with pytest.raises(flax.errors.InvalidRngError, match='dropout'):  # train=True: needs an rng
    jax.eval_shape(lambda v: model.apply(v, x, train=True), variables)


def test_zfnet_map_sizes_follow_figure_3():
  shapes = {name: (cin, cout) for name, cin, cout in
            module_calls(models.create_model('zfnet'), (224, 224, 3))}
  assert shapes['conv1'] == ((224, 224, 3), (110, 110, 96))
  assert shapes['conv2'] == ((55, 55, 96), (26, 26, 256))
  assert shapes['conv3'] == ((13, 13, 256), (13, 13, 384))
  assert shapes['conv5'][1] == (13, 13, 256)
  assert shapes['fc6'][0] == (6, 6, 256)


def test_alexnet_owt_runs_at_other_sizes_through_its_adaptive_pool():
  model = models.create_model('alexnet_owt', num_classes=5)  # a 7x7 map at 256, pooled to 6x6
  assert jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, 256, 256, 3)))[0]).shape == (1, 5)


@pytest.mark.parametrize('name, overrides, message', [
    ('alexnet', dict(groups=3), r"alexnet: groups=3 is not valid; choose one of 1, 2"),
    ('alexnet', dict(initializer='xavier'), r"initializer='xavier' is not valid.*'paper', 'he'"),
    ('alexnet', dict(widths=(96, 256)), r'widths must give 5 positive map counts'),
    ('alexnet', dict(widths=(96, 256, 384, 384, 255)), r'do not split into groups=2 towers'),
    ('zfnet', dict(initializer='glorot'), r"zfnet: initializer='glorot' is not valid"),
    ('alexnet_owt', dict(initializer=None), r'alexnet_owt: initializer=None is not valid'),
    ('zfnet', dict(dropout_rate=1.0), r'dropout_rate=1.0 is not valid.*in \[0, 1\)'),
])
def test_bad_switches_are_named(name, overrides, message):
  model = models.create_model(name, **overrides)
  with pytest.raises(ValueError, match=message):
    param_count(model, models.input_shape(name))


def test_the_224_input_is_refused_with_the_reason():
  with pytest.raises(ValueError, match=r'alexnet: FC6 reads a 6x6 .* gives 5x5\. Feed 227x227'):
    param_count(models.create_model('alexnet'), (224, 224, 3))
  with pytest.raises(ValueError, match=r'zfnet: FC6 reads a 6x6'):
    param_count(models.create_model('zfnet'), (256, 256, 3))
