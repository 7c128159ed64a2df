"""Residual networks: the stage table, where each variant downsamples, the shortcut options,
pre-activation, ResNeXt/WRN widths, the scan of repeated units, a train step, bad switches.
(SENet's configurations: test_senet.py.)"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import config as config_lib
from cnn_history import models, optim, parallel
from cnn_history.models import layers, resnet, summary
from cnn_history.steps import make_steps
from tests.helpers import tiny_config


def _abstract(name, resolution=None, **overrides):
  """(model, abstract variables) of registry model `name`, optionally at a smaller input."""
  model = models.create_model(name, **overrides)
  h, w, c = models.input_shape(name)
  shape = (1, resolution or h, resolution or w, c)
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def _blocks_per_stage(model):
  counts = {}
  for name, _, repeats in model.plan():
    stage = name.split('_')[0]
    counts[stage] = counts.get(stage, 0) + repeats
  return list(counts.values())


@pytest.mark.parametrize('name, blocks', [
    ('resnet18', [2, 2, 2, 2]), ('resnet34', [3, 4, 6, 3]), ('resnet50', [3, 4, 6, 3]),
    ('resnet101', [3, 4, 23, 3]), ('resnet152', [3, 8, 36, 3]), ('resnetv2_200', [3, 24, 36, 3]),
    ('resnet20', [3, 3, 3]), ('resnet110', [18, 18, 18]), ('resnet1202', [200, 200, 200]),
    ('preact_resnet164', [18, 18, 18]), ('preact_resnet1001', [111, 111, 111]),
    ('wide_resnet28_10', [4, 4, 4])])
def test_blocks_per_stage_follow_the_table(name, blocks):
  assert _blocks_per_stage(models.create_model(name)) == blocks


def test_param_tree_has_one_entry_per_unit():
  _, variables = _abstract('resnet34', resolution=64)
  units = sorted(k for k in variables['params'] if k.startswith('stage'))
  assert len(units) == 3 + 4 + 6 + 3
  assert 'stage3_block6' in units and 'stage3_block7' not in units


# Output sizes of each conv in one unit at a 64x64 input (stage 1 runs at 16, stage 2 at 8, ...).
@pytest.mark.parametrize('name, unit, overrides, sizes', [
    # The paper (Caffe, Keras v1): the first 1x1 and the projection.
    ('resnet50', 'stage2_block1', {}, dict(conv1=8, conv2=8, conv3=8, shortcut_conv=8)),
    # ResNet-B (torchvision v1.5), ResNeXt, timm's v2: the 3x3.
    ('resnet50b', 'stage2_block1', {}, dict(conv1=16, conv2=8, conv3=8, shortcut_conv=8)),
    ('resnext50_32x4d', 'stage4_block1', {}, dict(conv1=4, conv2=2, conv3=2, shortcut_conv=2)),
    ('resnetv2_50', 'stage2_block1', {}, dict(conv1=16, conv2=8, conv3=8, shortcut_conv=8)),
    # Basic blocks: the first 3x3.
    ('resnet34', 'stage3_block1', {}, dict(conv1=4, conv2=4, shortcut_conv=4)),
    # Keras/TF-slim v2: a stage's LAST unit downsamples (in its 3x3), for the next stage...
    ('resnetv2_50', 'stage1_block3', {'stride_in_last_block': True},
     dict(conv1=16, conv2=8, conv3=8)),
    # ... whose first unit only widens: 256 -> 512 channels at 8x8.
    ('resnetv2_50', 'stage2_block1', {'stride_in_last_block': True},
     dict(conv1=8, conv2=8, conv3=8, shortcut_conv=8)),
])
def test_which_conv_has_the_stride(name, unit, overrides, sizes):
  model = models.create_model(name, **overrides)
  x = jnp.zeros((1, 64, 64, 3))

  def run():
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
    return state['intermediates'][unit]

  shapes = jax.eval_shape(run)
  got = {k: v['__call__'][0].shape[1] for k, v in shapes.items() if 'conv' in k}
  assert got == sizes


def test_zero_pad_shortcut_against_numpy():
  x = np.random.default_rng(0).normal(size=(2, 7, 8, 16)).astype(np.float32)
  want = np.concatenate([x[:, ::2, ::2], np.zeros((2, 4, 4, 16), np.float32)], axis=-1)
  np.testing.assert_array_equal(resnet.zero_pad_shortcut(jnp.asarray(x), 32, 2), want)


def _unit(**fields):
  return resnet.ResidualBlock(conv=nn.Conv, norm=layers.BatchNorm, **fields)


@pytest.mark.parametrize('shortcut', ['zero_pad', 'none'])
def test_zero_gamma_unit_outputs_its_shortcut(shortcut):
  # With the last BN's gamma at zero the residual branch adds nothing: a post-activation unit
  # computes relu(shortcut(x)). Option A is the zero-padded subsample; a plain unit gives 0.
  unit = _unit(features=32, width=32, bottleneck=False, strides=2, shortcut=shortcut,
               zero_init_residual=True)
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 16)).astype(np.float32)
  variables = unit.init(jax.random.key(0), x)
  assert not any('shortcut' in k for k in variables['params'])  # parameter-free
  y = np.asarray(unit.apply(variables, x))
  padded = np.concatenate([x[:, ::2, ::2], np.zeros((2, 4, 4, 16), np.float32)], axis=-1)
  np.testing.assert_allclose(y, np.maximum(padded, 0) if shortcut == 'zero_pad' else 0 * y,
                             atol=1e-6)


def test_resnet_d_shortcut_averages_then_projects():
  # ResNet-D's shortcut: 2x2 average pool / 2 (ceil mode, padding not counted), then the 1x1.
  # A zero-gamma unit outputs relu(BN(shortcut)), BN at its initial statistics (0, 1).
  unit = _unit(features=8, width=8, bottleneck=False, strides=2, shortcut='avgpool',
               zero_init_residual=True)
  x = np.random.default_rng(2).normal(size=(2, 7, 7, 4)).astype(np.float32)
  variables = unit.init(jax.random.key(0), x)
  kernel = np.asarray(variables['params']['shortcut_conv']['kernel'])
  assert kernel.shape == (1, 1, 4, 8)
  pooled = np.stack([np.stack([x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
                               for j in range(4)], axis=1) for i in range(4)], axis=1)
  want = np.maximum(pooled @ kernel[0, 0] / np.sqrt(1 + 1e-5), 0)
  np.testing.assert_allclose(unit.apply(variables, x), want, rtol=1e-5, atol=1e-5)


def test_cifar_option_a_is_parameter_free_and_b_adds_the_projections():
  _, option_a = _abstract('resnet20')
  _, option_b = _abstract('resnet20', shortcut='projection')
  # Stages 2 and 3 each gain a 1x1 projection + BN (16->32, 32->64); stage 1 keeps 16 channels.
  projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
  assert summary.count_params(option_b) - summary.count_params(option_a) == projections
  assert not any('shortcut' in k for unit in option_a['params'].values() for k in unit)


def test_plain_nets_have_no_shortcuts():
  _, plain = _abstract('plain18', resolution=64)
  _, residual = _abstract('resnet18', resolution=64)
  assert not any('shortcut' in k for unit in plain['params'].values() for k in unit)
  with_shortcut = [u for u, p in residual['params'].items() if 'shortcut_conv' in p]
  assert with_shortcut == ['stage2_block1', 'stage3_block1', 'stage4_block1']
  assert summary.count_params(residual) - summary.count_params(plain) == 173_824


def _kernels(variables, unit):
  return {k: p['kernel'].shape for k, p in variables['params'][unit].items() if 'conv' in k}


def test_widths_of_resnext_and_wrn():
  _, v = _abstract('resnext50_32x4d', resolution=64)
  assert _kernels(v, 'stage1_block1')['conv2'] == (3, 3, 4, 128)  # 32 groups x 4 channels
  assert _kernels(v, 'stage4_block1')['conv2'] == (3, 3, 32, 1024)
  _, v = _abstract('wide_resnet50_2', resolution=64)
  assert _kernels(v, 'stage1_block1') == {
      'conv1': (1, 1, 64, 128), 'conv2': (3, 3, 128, 128), 'conv3': (1, 1, 128, 256),
      'shortcut_conv': (1, 1, 64, 256)}
  _, v = _abstract('wide_resnet28_10')
  assert _kernels(v, 'stage1_block1') == {
      'conv1': (3, 3, 16, 160), 'conv2': (3, 3, 160, 160), 'shortcut_conv': (1, 1, 16, 160)}


def test_preactivation_structure():
  _, v2 = _abstract('resnetv2_50', resolution=64)
  params = v2['params']
  assert 'final_bn' in params and 'stem_bn1' not in params
  assert set(params['stage2_block1']) == {'preact_bn', 'conv1', 'bn1', 'conv2', 'bn2', 'conv3',
                                          'shortcut_conv'}
  _, v1 = _abstract('resnet50', resolution=64)
  assert set(v1['params']['stage2_block1']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                                'shortcut_conv', 'shortcut_bn'}


def test_zero_init_residual():
  x = jnp.zeros((1, 32, 32, 3))
  post = models.create_model('resnet20', depth=8, zero_init_residual=True).init(
      jax.random.key(0), x)  # ResNet-8: one unit per stage
  assert all(np.all(u['bn2']['scale'] == 0) and np.all(u['bn1']['scale'] == 1)
             for k, u in post['params'].items() if k.startswith('stage'))
  pre = models.create_model('wide_resnet28_10', depth=10, width_factor=1,
                            zero_init_residual=True).init(jax.random.key(0), x)
  units = [u for k, u in pre['params'].items() if k.startswith('stage')]
  assert all(np.all(u['conv2']['kernel'] == 0) and np.any(u['conv1']['kernel'] != 0)
             for u in units)


def test_wrn_dropout_only_in_training():
  model = models.create_model('wide_resnet28_10', depth=10, width_factor=1,
                              block_dropout_rate=0.3)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  apply = jax.jit(lambda v, x, rng: model.apply(v, x, train=True, rngs={'dropout': rng},
                                                mutable=['batch_stats'])[0])
  a, b = apply(variables, x, jax.random.key(2)), apply(variables, x, jax.random.key(3))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


def test_scanned_units_compute_what_unrolled_units_do():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  unrolled = models.create_model('resnet20')
  scanned = models.create_model('resnet20', scan_blocks=True)
  assert [n for n, _, _ in scanned.plan()] == [
      'stage1_block1', 'stage1_block2to3', 'stage2_block1', 'stage2_block2to3',
      'stage3_block1', 'stage3_block2to3']
  variables = unrolled.init(jax.random.key(0), x)

  def stack(tree):
    out = {}
    for key, value in tree.items():
      if key.endswith('_block2'):
        stage = key[:-len('_block2')]
        out[f'{stage}_block2to3'] = jax.tree_util.tree_map(
            lambda a, b: jnp.stack([a, b]), value, tree[f'{stage}_block3'])
      elif not key.endswith('_block3'):
        out[key] = value
    return out

  stacked = {k: stack(v) for k, v in variables.items()}
  assert (jax.tree_util.tree_structure(stacked)
          == jax.tree_util.tree_structure(scanned.init(jax.random.key(0), x)))
  np.testing.assert_allclose(scanned.apply(stacked, x), unrolled.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


def test_train_step_on_resnet20():
  config = config_lib.set_model(tiny_config(), 'resnet20')
  model = models.create_model('resnet20', **config.model.overrides.to_dict())
  schedule = optim.build_schedule(config.schedule, 8, 1, 8)
  mesh = parallel.make_mesh(1)
  steps = make_steps(model, optim.build_optimizer(config.optimizer, schedule), schedule, config,
                     mesh, (32, 32, 3))
  state = steps.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = parallel.global_batch({'image': rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
                                 'label': rng.integers(0, 10, 8).astype(np.int32)}, mesh)
  start = jax.device_get(state.batch_stats)
  losses = []
  for _ in range(3):
    state, metrics = steps.train(state, batch)
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # it learns the fixed batch
  moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), start,
                                 jax.device_get(state.batch_stats))
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-3  # BN statistics are updated


@pytest.mark.parametrize('overrides, message', [
    ({'shortcut': 'identity'}, r"shortcut='identity' is not valid.*'projection', 'zero_pad'"),
    ({'stride_in': '2x2'}, r"stride_in='2x2' is not valid.*'1x1', '3x3'"),
    ({'stem': '5x5'}, r"stem='5x5' is not valid"),
    ({'stem_pool': 'same'}, r"stem_pool='same' is not valid.*'pad1', 'zero_pad1', 'ceil'"),
    ({'layout': 'mnist'}, r"layout='mnist' is not valid.*'imagenet', 'cifar'"),
    ({'depth': 51}, r'depth=51 is not in the ImageNet stage table.*18, 34, 50, 101, 152, 200'),
    ({'block': 'basic'}, r"ResNet-50 is built from bottleneck blocks.*block='basic'"),
    ({'depth': 18, 'cardinality': 32}, r'cardinality and base_width.*need bottleneck blocks'),
    ({'layout': 'cifar', 'depth': 21}, r'depth=21 is not 6n \+ 2 or 6n \+ 4'),
])
def test_bad_switch_is_a_clear_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    models.create_model('resnet50', **overrides)
