"""Inception-v3/v4 and Inception-ResNet-v1/v2: the 299 -> 35 -> 17 -> 8 grids, blocks per stage,
the auxiliary head, residual scaling, the Inception-ResNet-v1 hand count, the Keras variants'
counts and the errors for bad switches. Everything at 299 is traced (jax.eval_shape), not run."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import inception, summary

X299 = jnp.zeros((1, 299, 299, 3))


@functools.lru_cache(maxsize=None)
def _trace(name, **overrides):
  """(abstract variables, {top-level module: output shape}, [(residual block, scale, relu)])."""
  model = models.create_model(name, **overrides)
  shapes, blocks = {}, []

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    path = context.module.scope.path
    if context.method_name == '__call__' and len(path) == 1:
      shapes[path[0]] = y.shape[1:]
    if isinstance(context.module, inception.InceptionResNetBlock):
      blocks.append((path[0], context.module.scale, context.module.relu))
    return y

  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), X299, train=False))
  return variables, shapes, blocks


def _params(name, **overrides):
  return summary.count_params(_trace(name, **overrides)[0])


GRIDS = {  # (layer, its output) at the end of each grid size
    'inception_v3': {'Conv2d_4a_3x3': (71, 71, 192), 'Mixed_5b': (35, 35, 256),
                     'Mixed_5d': (35, 35, 288), 'Mixed_6a': (17, 17, 768),
                     'Mixed_6e': (17, 17, 768), 'Mixed_7a': (8, 8, 1280),
                     'Mixed_7c': (8, 8, 2048), 'head': (1000,)},
    'inception_v4': {'stem_mixed_5a': (35, 35, 384), 'inception_a_4': (35, 35, 384),
                     'reduction_a': (17, 17, 1024), 'inception_b_7': (17, 17, 1024),
                     'reduction_b': (8, 8, 1536), 'inception_c_3': (8, 8, 1536)},
    'inception_resnet_v1': {'stem_conv_6': (35, 35, 256), 'inception_resnet_a_5': (35, 35, 256),
                            'reduction_a': (17, 17, 896), 'inception_resnet_b_10': (17, 17, 896),
                            'reduction_b': (8, 8, 1792), 'inception_resnet_c_5': (8, 8, 1792)},
    'inception_resnet_v2': {'mixed_5b': (35, 35, 320), 'block35_10': (35, 35, 320),
                            'mixed_6a': (17, 17, 1088), 'block17_20': (17, 17, 1088),
                            'mixed_7a': (8, 8, 2080), 'block8_9': (8, 8, 2080),
                            'block8_10': (8, 8, 2080), 'conv_7b': (8, 8, 1536)},
}
BLOCKS_PER_STAGE = {  # the figures' "4 x Inception-A", ...
    'inception_v4': {'inception_a': 4, 'inception_b': 7, 'inception_c': 3},
    'inception_resnet_v1': {'inception_resnet_a': 5, 'inception_resnet_b': 10,
                            'inception_resnet_c': 5},
    'inception_resnet_v2': {'block35': 10, 'block17': 20, 'block8': 10},
}


@pytest.mark.parametrize('name', sorted(GRIDS))
def test_grids_299_35_17_8_and_blocks_per_stage(name):
  _, shapes, _ = _trace(name)
  assert {k: shapes[k] for k in GRIDS[name]} == GRIDS[name]
  for stage, count in BLOCKS_PER_STAGE.get(name, {}).items():
    assert sorted(k for k in shapes if k.rsplit('_', 1)[0] == stage) == \
        sorted(f'{stage}_{i}' for i in range(1, count + 1))


def test_inception_v3_aux_head_exists_always_and_runs_only_in_training():
  model = models.create_model('inception_v3')
  variables = _trace('inception_v3')[0]
  # avg 5x5/3 -> 1x1 128 (+BN) -> 5x5 768 (+BN) -> FC 1000: torchvision's 3,326,696.
  aux = 768 * 128 + 2 * 128 + 5 * 5 * 128 * 768 + 2 * 768 + 768 * 1000 + 1000
  assert aux == 3_326_696
  assert _params('inception_v3') == 23_834_568 + aux == 27_161_264
  assert _params('inception_v3', aux_logits=False) == 23_834_568
  assert 'AuxLogits' not in _trace('inception_v3', aux_logits=False)[0]['params']

  def intermediates(m, v, train):
    _, state = jax.eval_shape(lambda v: m.apply(v, X299, train=train,
                                                rngs={'dropout': jax.random.key(0)},
                                                mutable=['intermediates', 'batch_stats']), v)
    return state['intermediates']

  assert set(intermediates(model, variables, False)) == {'features'}
  train = intermediates(model, variables, True)
  assert [a.shape for a in train['aux_logits']] == [(1, 1000)]  # one head, one sow
  assert train['features'][0].shape == (1, 2048)
  no_aux = model.clone(aux_logits=False)
  assert 'aux_logits' not in intermediates(no_aux, _trace('inception_v3', aux_logits=False)[0],
                                           True)
  # The evaluation pass does not compute it.
  assert not any('AuxLogits' in scope for scope in summary.macs_by_scope(model, (299, 299, 3)))


def test_residual_block_scales_only_the_branch():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 5, 8)), jnp.float32)
  branches = ((inception.conv(4),), (inception.conv(4), inception.conv(6, 3)))
  conv_bn = functools.partial(inception.layers.ConvBN, bn_epsilon=1e-3)

  def block(scale, relu=False):
    return inception.InceptionResNetBlock(branches, scale, relu, conv_bn)

  variables = block(1.0).init(jax.random.key(0), x)
  assert variables['params']['up']['conv']['kernel'].shape == (1, 1, 10, 8)  # back to x's width
  assert 'bn' not in variables['params']['up']
  plain = block(1.0).apply(variables, x) - x
  np.testing.assert_allclose(block(0.17).apply(variables, x) - x, 0.17 * plain, atol=1e-5)
  np.testing.assert_allclose(block(0.17, relu=True).apply(variables, x),
                             np.maximum(x + 0.17 * plain, 0), atol=1e-5)


@pytest.mark.parametrize('name, scales', [
    ('inception_resnet_v2', [0.17] * 10 + [0.10] * 20 + [0.20] * 9 + [1.0]),
    ('inception_resnet_v1', [0.17] * 5 + [0.10] * 10 + [0.20] * 5),
])
def test_residual_scaling_switch(name, scales):
  blocks = _trace(name)[2]
  assert [scale for _, scale, _ in blocks] == scales
  # Only the released v2's last Block8 has no ReLU.
  assert [b for b, _, relu in blocks if not relu] == (['block8_10'] if name.endswith('v2') else [])
  unscaled = _trace(name, residual_scaling=False)
  assert [scale for _, scale, _ in unscaled[2]] == [1.0] * len(scales)
  assert summary.count_params(unscaled[0]) == _params(name)  # a pure multiplier, no parameters


def _conv_bn(cin, cout, kh, kw, out):
  """(params, MACs) of conv (no bias) + BN (gamma, beta) with an out x out output."""
  return cin * cout * kh * kw + 2 * cout, cin * cout * kh * kw * out * out


def _linear(cin, cout, out):
  """The residual blocks' 1x1 "Linear" conv: kernel + bias, no BN."""
  return cin * cout + cout, cin * cout * out * out


def test_inception_resnet_v1_hand_count():
  """The paper's figures, layer by layer (k, l, m, n = 192, 192, 256, 384 from Table 1)."""
  stem = [_conv_bn(3, 32, 3, 3, 149), _conv_bn(32, 32, 3, 3, 147), _conv_bn(32, 64, 3, 3, 147),
          _conv_bn(64, 80, 1, 1, 73), _conv_bn(80, 192, 3, 3, 71), _conv_bn(192, 256, 3, 3, 35)]
  block_a = ([_conv_bn(256, 32, 1, 1, 35)] * 3 + [_conv_bn(32, 32, 3, 3, 35)] * 3
             + [_linear(96, 256, 35)])
  reduction_a = [_conv_bn(256, 384, 3, 3, 17), _conv_bn(256, 192, 1, 1, 35),
                 _conv_bn(192, 192, 3, 3, 35), _conv_bn(192, 256, 3, 3, 17)]
  block_b = [_conv_bn(896, 128, 1, 1, 17)] * 2 + [_conv_bn(128, 128, 1, 7, 17),
                                                 _conv_bn(128, 128, 7, 1, 17),
                                                 _linear(256, 896, 17)]
  reduction_b = [_conv_bn(896, 256, 1, 1, 17)] * 3 + [
      _conv_bn(256, 384, 3, 3, 8), _conv_bn(256, 256, 3, 3, 8), _conv_bn(256, 256, 3, 3, 17),
      _conv_bn(256, 256, 3, 3, 8)]
  block_c = [_conv_bn(1792, 192, 1, 1, 8)] * 2 + [_conv_bn(192, 192, 1, 3, 8),
                                                 _conv_bn(192, 192, 3, 1, 8),
                                                 _linear(384, 1792, 8)]
  fc = [(1792 * 1000 + 1000, 1792 * 1000)]
  parts = {'stem': (stem, 1), 'A': (block_a, 5), 'reduction_a': (reduction_a, 1),
           'B': (block_b, 10), 'reduction_b': (reduction_b, 1), 'C': (block_c, 5), 'fc': (fc, 1)}
  params = {k: n * sum(p for p, _ in rows) for k, (rows, n) in parts.items()}
  assert params == {'stem': 615_552, 'A': 5 * 77_440, 'reduction_a': 1_710_080,
                    'B': 10 * 690_048, 'reduction_b': 3_346_176, 'C': 5 * 1_600_768,
                    'fc': 1_793_000}
  total = sum(params.values())
  assert total == 22_756_328 == _params('inception_resnet_v1')
  assert models.get_spec('inception_resnet_v1').expected_params == total
  macs = sum(n * sum(m for _, m in rows) for rows, n in parts.values())
  assert macs == models.get_spec('inception_resnet_v1').expected_macs == 6_206_361_696
  # "about Inception-v3's cost" (5.71G): within 10%.
  assert macs == pytest.approx(models.get_spec('inception_v3').expected_macs, rel=0.1)


def test_keras_variants_counts():
  """BN without gamma (TF-slim/Keras): Keras's trainable counts."""
  assert _params('inception_v3', aux_logits=False, bn_scale=False) == 23_817_352
  assert _params('inception_resnet_v2', bn_scale=False) == 55_813_192


def test_module_pool_branch_excludes_padding_from_the_mean():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  y = inception.apply_layer(inception.AVG_POOL, x, False, None, 'pool')
  assert y.shape == x.shape
  assert float(y[0, 0, 0, 0]) == (0 + 1 + 4 + 5) / 4   # TF 'SAME': 4 real values, not 9
  assert float(y[0, 1, 1, 0]) == np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10])


def test_logits_are_float32_in_bfloat16():
  model = models.create_model('inception_v4', dtype=jnp.bfloat16, num_classes=10)
  x = jnp.zeros((2, 75, 75, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert (out.shape, out.dtype) == ((2, 10), jnp.float32)


@pytest.mark.parametrize('name, overrides, shape, message', [
    ('inception_resnet_v2', {'version': 'v3'}, 299, r"unknown version 'v3'; use 'v1'.*'v2'"),
    ('inception_resnet_v1', {'residual_scaling': 0.1}, 299, 'residual_scaling must be True or'),
    ('inception_v3', {'aux_logits': 'yes'}, 299, 'aux_logits must be True or False'),
    ('inception_v4', {'dropout_rate': 1.0}, 299, r'dropout_rate must be in \[0, 1\)'),
    ('inception_v4', {}, 64, 'at least 75x75'),
])
def test_bad_switches_are_named(name, overrides, shape, message):
  model = models.create_model(name, **overrides)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, shape, shape, 3))))


def test_aux_head_needs_the_299_grid_in_training():
  model = models.create_model('inception_v3')
  variables = jax.eval_shape(lambda: model.clone(aux_logits=False).init(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  with pytest.raises(ValueError, match='aux_logits=False'):
    jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 224, 224, 3)), train=True,
                                         rngs={'dropout': jax.random.key(0)},
                                         mutable=['batch_stats']), variables)
  with pytest.raises(ValueError, match="no option 'residual_scaling'"):
    models.create_model('inception_v4', residual_scaling=False)
