"""VGG: Table 1 as data, config C's 1x1 convs, A-LRN, the BN variants, §3.2's dense
(fully-convolutional) evaluation with the same parameters, and the errors for bad switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import summary, vgg


def abstract_params(model, size=224):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))['params']


def call_order(model, size=224):
  names = []

  def record(next_fun, args, kwargs, context):
    scope = context.module.scope
    if context.method_name == '__call__' and scope is not None and len(scope.path) == 1:
      names.append(scope.path[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    abstract_params(model, size)
  return names


def test_table_one_depths_and_blocks():
  assert {c: vgg.weight_layers(c) for c in vgg.VGG_CONFIGS} == {
      'A': 11, 'A-LRN': 11, 'B': 13, 'C': 16, 'D': 16, 'E': 19}
  per_block = {}
  for kind, name, _, _ in vgg.layer_sequence('E'):
    if kind == 'conv':
      block = name.split('_')[0]
      per_block[block] = per_block.get(block, 0) + 1
  assert per_block == {'conv1': 2, 'conv2': 2, 'conv3': 4, 'conv4': 4, 'conv5': 4}
  for config in vgg.VGG_CONFIGS:  # five 2x2 pools: 224 -> 7
    assert sum(kind == 'maxpool' for kind, *_ in vgg.layer_sequence(config)) == 5
  names = [n for n in call_order(models.create_model('vgg16')) if not n.startswith('Dropout')]
  assert names == ['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1', 'conv3_2', 'conv3_3',
                   'conv4_1', 'conv4_2', 'conv4_3', 'conv5_1', 'conv5_2', 'conv5_3',
                   'fc6', 'fc7', 'fc8']


def test_config_c_adds_1x1_convs_to_b():
  c = abstract_params(models.create_model('vgg16_c'))
  d = abstract_params(models.create_model('vgg16'))
  for name, width in (('conv3_3', 256), ('conv4_3', 512), ('conv5_3', 512)):
    assert c[name]['kernel'].shape == (1, 1, width, width)
    assert d[name]['kernel'].shape == (3, 3, width, width)
  b = models.get_spec('vgg13').expected_params
  extra = (256 * 256 + 256) + 2 * (512 * 512 + 512)  # three conv1 layers with biases
  assert summary.count_params({'params': c}) == b + extra == 133_638_952
  macs_b, macs_c = (summary.count_macs(models.create_model(n), (224, 224, 3))
                    for n in ('vgg13', 'vgg16_c'))
  assert macs_c - macs_b == 56 * 56 * 256 * 256 + 28 * 28 * 512 * 512 + 14 * 14 * 512 * 512


def test_lrn_only_in_a_lrn_after_the_first_conv():
  assert call_order(models.create_model('vgg11_lrn'))[:3] == ['conv1_1', 'lrn1', 'conv2_1']
  assert not [n for n in call_order(models.create_model('vgg11')) if n.startswith('lrn')]


def test_batch_norm_variants_add_gamma_and_beta_per_conv():
  for name in ('vgg11', 'vgg13', 'vgg16', 'vgg19'):
    config = models.get_spec(name).kwargs['config']
    widths = [f for kind, _, _, f in vgg.layer_sequence(config) if kind == 'conv']
    assert (models.get_spec(f'{name}_bn').expected_params
            - models.get_spec(name).expected_params) == 2 * sum(widths)
  order = call_order(models.create_model('vgg11_bn'))
  assert order[:4] == ['conv1_1', 'bn1_1', 'conv2_1', 'bn2_1']
  model = models.create_model('vgg11_bn')
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert set(variables['batch_stats']['bn1_1']) == {'mean', 'var'}
  assert variables['params']['conv1_1']['bias'].shape == (64,)  # torchvision keeps conv biases
  x = jnp.zeros((2, 224, 224, 3))
  _, updates = jax.eval_shape(lambda v: model.apply(
      v, x, train=True, rngs={'dropout': jax.random.key(1)}, mutable=['batch_stats']), variables)
  assert len(updates['batch_stats']) == 8  # every BN updates its statistics in training


@pytest.fixture(scope='module')
def vgg11_both_modes():
  dense = models.create_model('vgg11', num_classes=10)
  sliding = models.create_model('vgg11', num_classes=10, fully_convolutional=True)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(  # uniform, He-scaled so that the logits are O(1)
      lambda s: (rng.random(s.shape, np.float32) - 0.5) * np.float32(
          np.sqrt(24.0 / np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.2),
      abstract_params(dense))
  return dense, sliding, {'params': params}


def test_dense_evaluation_equals_the_dense_head_at_224(vgg11_both_modes):
  dense, sliding, variables = vgg11_both_modes
  assert jax.tree_util.tree_map(lambda s: s.shape, abstract_params(sliding, 288)) == \
      jax.tree_util.tree_map(lambda s: s.shape, variables['params'])  # one checkpoint, any size
  x = jax.random.normal(jax.random.key(1), (1, 224, 224, 3))
  a = jax.jit(dense.apply)(variables, x)
  b = jax.jit(sliding.apply)(variables, x)
  assert float(jnp.std(a)) > 0.1
  np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(a).max()))


def test_dense_evaluation_averages_the_class_score_map(vgg11_both_modes):
  _, sliding, variables = vgg11_both_modes
  x = jax.random.normal(jax.random.key(2), (1, 256, 256, 3))

  def apply(variables, x):  # also returns FC6's input, the 8x8 conv5 map
    def record(next_fun, args, kwargs, context):
      if context.method_name == '__call__' and context.module.name == 'fc6':
        maps.append(args[0])
      return next_fun(*args, **kwargs)

    maps = []
    with nn.intercept_methods(record):
      logits = sliding.apply(variables, x)
    return logits, maps[0]

  logits, pool5 = jax.jit(apply)(variables, x)
  assert pool5.shape == (1, 8, 8, 512)
  p = jax.tree_util.tree_map(np.asarray, variables['params'])
  scores = []  # numpy: the dense head on each 7x7 window of the 8x8 map
  for i in range(2):
    for j in range(2):
      h = np.asarray(pool5)[:, i:i + 7, j:j + 7].reshape(1, -1)
      for layer in ('fc6', 'fc7'):
        h = np.maximum(h @ p[layer]['kernel'] + p[layer]['bias'], 0.0)
      scores.append(h @ p['fc8']['kernel'] + p['fc8']['bias'])
  expected = np.mean(scores, axis=0)
  assert np.abs(np.asarray(scores[0]) - np.asarray(scores[3])).max() > 1e-2  # windows differ
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_dense_evaluation_runs_on_larger_images():
  model = models.create_model('vgg16', num_classes=7, fully_convolutional=True)
  x = jnp.zeros((2, 288, 320, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 7)


@pytest.mark.parametrize('overrides, size, message', [
    (dict(config='F'), 224, r"VGG: config='F' is not valid; choose one of 'A', 'A-LRN', 'B'"),
    (dict(initializer='xavier'), 224, r"initializer='xavier' is not valid.*'glorot'"),
    ({}, 256, r'FC6 reads a 7x7 feature map, but this input gives 8x8.*fully_convolutional'),
    (dict(fully_convolutional=True), 192, r'dense evaluation needs inputs of at least 224x224'),
])
def test_bad_switches_and_sizes_are_named(overrides, size, message):
  with pytest.raises(ValueError, match=message):
    abstract_params(models.create_model('vgg11', **overrides), size)
