"""GoogLeNet (paper and torchvision port) and BN-Inception: module tables, auxiliary heads,
switches, pooling numerics, and the train step's auxiliary losses.

The full networks are only traced (`jax.eval_shape`, `make_jaxpr`): compiling one costs tens
of CPU-seconds. The pooling numerics run on tiny inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_history import config as config_lib
from cnn_history import models, parallel
from cnn_history.models import googlenet, layers, summary
from cnn_history.steps import make_steps
from tests.helpers import tiny_config

# (spatial size, channels) of every module's output at 224x224.
GOOGLENET_OUTPUTS = {'3a': (28, 256), '3b': (28, 480), '4a': (14, 512), '4b': (14, 512),
                     '4c': (14, 512), '4d': (14, 528), '4e': (14, 832), '5a': (7, 832),
                     '5b': (7, 1024)}
BN_INCEPTION_OUTPUTS = {'3a': (28, 256), '3b': (28, 320), '3c': (14, 576), '4a': (14, 576),
                        '4b': (14, 576), '4c': (14, 576), '4d': (14, 576), '4e': (7, 1024),
                        '5a': (7, 1024), '5b': (7, 1024)}


def _init_shapes(model, size=224):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _call_shapes(model, size=224, train=False, batch=2):
  """Abstract (logits, intermediates) of a forward pass; every module's output is captured."""
  variables = _init_shapes(model, size)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def forward(variables, x):
    return model.apply(variables, x, train=train, rngs={'dropout': jax.random.key(1)},
                       capture_intermediates=True, mutable=['intermediates', 'batch_stats'])

  logits, state = jax.eval_shape(forward, variables, x)
  return logits, state['intermediates']


def _module_outputs(intermediates):
  return {name.removeprefix('inception_'): (v['__call__'][0].shape[1], v['__call__'][0].shape[3])
          for name, v in intermediates.items() if name.startswith('inception_')}


@pytest.mark.parametrize('name, expected', [('googlenet', GOOGLENET_OUTPUTS),
                                            ('googlenet_tv', GOOGLENET_OUTPUTS),
                                            ('bn_inception', BN_INCEPTION_OUTPUTS)])
def test_module_outputs_follow_the_tables(name, expected):
  _, inter = _call_shapes(models.create_model(name), batch=1)
  assert _module_outputs(inter) == expected


def test_googlenet_wide_branch_is_5x5_in_the_paper_and_3x3_in_torchvision():
  paper = _init_shapes(models.create_model('googlenet'))['params']
  port = _init_shapes(models.create_model('googlenet_tv'))['params']
  assert paper['inception_3a']['wide_1']['conv']['kernel'].shape == (5, 5, 16, 32)
  assert port['inception_3a']['wide_1']['conv']['kernel'].shape == (3, 3, 16, 32)
  assert 'bias' in paper['conv1']['conv'] and 'bn' not in paper['conv1']
  assert 'bias' not in port['conv1']['conv'] and 'bn' in port['conv1']


def test_bn_inception_stride_two_modules_pass_the_pooled_input_through():
  params = _init_shapes(models.create_model('bn_inception'))['params']
  # 3c/4e: no 1x1 branch, no pool projection; double 3x3 everywhere.
  for name in ('inception_3c', 'inception_4e'):
    assert set(params[name]) == {'reduce_3x3', 'branch_3x3', 'reduce_wide', 'wide_1', 'wide_2'}
  assert set(params['inception_4a']) == {'branch_1x1', 'reduce_3x3', 'branch_3x3', 'reduce_wide',
                                         'wide_1', 'wide_2', 'pool_proj'}
  assert params['inception_4a']['wide_2']['conv']['kernel'].shape == (3, 3, 128, 128)
  # The separable stem: 7x7 depthwise x 8, then 1x1 to 64, BN only after the pointwise conv.
  stem = params['conv1']
  assert stem['depthwise']['conv']['kernel'].shape == (7, 7, 1, 24)
  assert stem['pointwise']['conv']['kernel'].shape == (1, 1, 24, 64)
  assert 'bn' not in stem['depthwise'] and 'bn' in stem['pointwise']


def test_torchvision_pools_round_up():
  """conv1 112 -> 56 -> 28 -> 14 -> 7 (2x2/2 before stage 5). At 226 the conv gives 113 and
  ceil_mode gives 56 after the first pool where TF 'SAME' would give 57."""
  model = models.create_model('googlenet_tv')
  for size, sizes in ((224, (112, 56, 28, 14, 7)), (226, (113, 56, 28, 14, 7))):
    _, inter = _call_shapes(model, size, batch=1)
    got = tuple(inter[k]['__call__'][0].shape[1]
                for k in ('conv1', 'conv2', 'inception_3a', 'inception_4a', 'inception_5a'))
    assert got == sizes, size


@pytest.mark.parametrize('name, overrides', [('googlenet', {}),
                                             ('googlenet_tv', {'aux_logits': True})])
def test_aux_heads_report_logits_only_in_training(name, overrides):
  model = models.create_model(name, num_classes=11, **overrides)
  logits, inter = _call_shapes(model, train=True, batch=3)
  assert logits.shape == (3, 11)
  assert [a.shape for a in inter['aux_logits']] == [(3, 11), (3, 11)]
  assert inter['aux_1']['conv']['__call__'][0].shape == (3, 4, 4, 128)  # pooled 14x14 -> 4x4
  _, inter = _call_shapes(model, train=False)
  assert 'aux_logits' not in inter and 'aux_1' not in inter
  assert inter['features'][0].shape == (2, 1024)


def test_aux_heads_read_4a_and_4d_and_add_the_papers_counts():
  params = _init_shapes(models.create_model('googlenet'))['params']
  assert params['aux_1']['conv']['conv']['kernel'].shape == (1, 1, 512, 128)  # 4a: 512
  assert params['aux_2']['conv']['conv']['kernel'].shape == (1, 1, 528, 128)  # 4d: 528
  assert params['aux_1']['fc1']['kernel'].shape == (2048, 1024)  # 4x4x128
  count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  assert (count(params['aux_1']), count(params['aux_2'])) == (3_188_840, 3_190_888)


@pytest.mark.parametrize('name, overrides, params, macs', [
    ('googlenet', {}, 13_378_280, 1.58e9),
    ('googlenet', {'aux_logits': False}, 6_998_552, 1.58e9),  # aux heads: training only
    ('googlenet_tv', {}, 6_624_904, 1.50e9),
    ('googlenet_tv', {'aux_logits': True}, 13_004_888, 1.50e9),
    ('bn_inception', {}, 11_188_288, 1.93e9),
    ('bn_inception', {'separable_stem': False}, 11_194_984, 2.02e9),
])
def test_switches_change_counts_as_stated(name, overrides, params, macs):
  model = models.create_model(name, **overrides)
  assert summary.count_params(_init_shapes(model)) == params
  assert summary.count_macs(model, (224, 224, 3)) == pytest.approx(macs, rel=0.005)


def test_bn_inception_baseline_switches():
  """Inception (use_bn=False): conv biases, no BN; BN-x5-Sigmoid swaps every ReLU."""
  baseline = models.create_model('bn_inception', use_bn=False, lrn=True, dropout_rate=0.4)
  variables = _init_shapes(baseline)
  assert 'batch_stats' not in variables
  assert 'bias' in variables['params']['inception_4a']['branch_1x1']['conv']
  assert 'bias' in variables['params']['conv1']['pointwise']['conv']

  def jaxpr(model):
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    return str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(_init_shapes(model), x))

  sigmoid, relu = (jaxpr(models.create_model('bn_inception', activation=a))
                   for a in ('sigmoid', 'relu'))
  assert 'logistic' in sigmoid and ' max ' not in sigmoid  # ReLU is max(x, 0)
  assert 'logistic' not in relu and ' max ' in relu


@pytest.mark.parametrize('name, default', [('googlenet', True), ('bn_inception', False)])
def test_lrn_switch(name, default):
  for lrn in (True, False):
    _, inter = _call_shapes(models.create_model(name, lrn=lrn), batch=1)
    assert ('lrn1' in inter, 'lrn2' in inter) == (lrn, lrn)
  assert models.get_spec(name).module.lrn == default


@pytest.mark.parametrize('name, overrides, message', [
    ('bn_inception', {'activation': 'tanh'}, "activation must be one of .*'relu', 'sigmoid'"),
    ('bn_inception', {'dropout_rate': 1.0}, r'dropout_rate must be in \[0, 1\)'),
    ('googlenet', {'dropout_rate': -0.1}, r'dropout_rate must be in \[0, 1\)'),
])
def test_bad_switch_values_are_errors_naming_the_field(name, overrides, message):
  with pytest.raises(ValueError, match=message):
    _init_shapes(models.create_model(name, **overrides))


def test_googlenet_aux_heads_need_a_5x5_map():
  with pytest.raises(ValueError, match='at least 65x65 pixels or aux_logits=False'):
    _init_shapes(models.create_model('googlenet'), size=48)
  _init_shapes(models.create_model('googlenet', aux_logits=False), size=48)  # runs without


def test_torchvision_aux_pool_is_not_the_papers():
  x = np.random.default_rng(0).normal(size=(2, 14, 14, 3)).astype(np.float32)
  got = np.asarray(layers.adaptive_avg_pool(jnp.asarray(x), 4))  # windows at 0, 3, 7, 10
  paper = np.asarray(layers.avg_pool(jnp.asarray(x), 5, 3))  # windows at 0, 3, 6, 9
  assert paper.shape == got.shape and not np.allclose(paper, got)


@pytest.mark.parametrize('pool, strides', [('avg', 1), ('max', 2)])
def test_pool_branch_against_numpy(pool, strides):
  """The pool branch of a module with pass-through: 'SAME' padding, which max-pooling ignores
  (-inf) and average pooling leaves out of the count (TF's rule)."""
  row = googlenet.InceptionRow('t', 0, 1, 1, 1, 1, 0, pool, strides)
  module = googlenet.Inception(row, (3, 3))
  x = np.random.default_rng(1).normal(size=(1, 6, 6, 2)).astype(np.float32)
  variables = module.init(jax.random.key(0), x)
  passed = np.asarray(module.apply(variables, x))[..., 2:]  # after the 3x3 and wide branches
  # numpy: 3x3 windows; stride 2 on 6 -> 3 outputs, padding (0, 1) as TF 'SAME'.
  lo = 1 if strides == 1 else 0
  padded = np.pad(x, ((0, 0), (lo, 1), (lo, 1), (0, 0)), constant_values=np.nan)
  out = np.stack([np.stack([padded[:, i:i + 3, j:j + 3] for j in range(0, 6, strides)], 1)
                  for i in range(0, 6, strides)], 1)
  reduce = np.nanmean if pool == 'avg' else np.nanmax
  expected = reduce(out, axis=(3, 4))
  assert passed.shape == expected.shape == (1, 6 // strides, 6 // strides, 2)
  np.testing.assert_allclose(passed, expected, rtol=1e-5, atol=1e-6)


def test_train_step_takes_one_weight_per_auxiliary_head():
  """The train step of make_steps with GoogLeNet's two heads, traced (not compiled: a compiled
  GoogLeNet step costs ~40 CPU-seconds): config.loss.aux_weights = (0.3, 0.3) gives a step
  that updates every parameter, aux heads included; no weights is an error naming the fix."""
  size = 80  # the smallest input with a 5x5 map at 4a is 65
  config = tiny_config()
  config_lib.set_model(config, 'googlenet')
  model = models.create_model('googlenet', num_classes=10)
  mesh = parallel.make_mesh(1)
  batch = {'image': jax.ShapeDtypeStruct((4, size, size, 3), jnp.float32),
           'label': jax.ShapeDtypeStruct((4,), jnp.int32)}

  def traced_step(aux_weights):
    config.loss.aux_weights = aux_weights
    steps = make_steps(model, optax.sgd(0.01), optax.constant_schedule(0.01), config, mesh,
                       (size, size, 3))
    return steps.abstract_state, jax.eval_shape(steps.train, steps.abstract_state, batch)

  state, (new_state, metrics) = traced_step((0.3, 0.3))
  assert jax.tree_util.tree_structure(new_state.params) == jax.tree_util.tree_structure(
      state.params)
  assert state.params['aux_1']['fc1']['kernel'].shape == (128, 1024)  # 4a 5x5 -> 1x1x128
  assert state.params['aux_2']['fc2']['kernel'].shape == (1024, 10)
  assert metrics['loss'].shape == ()
  with pytest.raises(ValueError, match=r'2 auxiliary heads.*\(0.3, 0.3\)'):
    traced_step(())
