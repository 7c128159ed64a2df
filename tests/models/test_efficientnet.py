"""EfficientNet: B1-B7 derived from Table 1 by compound scaling, SE widths, drop-connect rates,
the padding switch, any-phi networks, and the errors for bad switches."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import efficientnet, layers, summary
from tests.helpers import random_variables

# The released networks as Keras 3.15 (= torchvision = timm) builds them: stem channels,
# (output channels, blocks) of stages 2-8, head channels.
REFERENCE = {
    'efficientnet_b0': (32, ((16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)),
                        1280),
    'efficientnet_b1': (32, ((16, 2), (24, 3), (40, 3), (80, 4), (112, 4), (192, 5), (320, 2)),
                        1280),
    'efficientnet_b2': (32, ((16, 2), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 2)),
                        1408),
    'efficientnet_b3': (40, ((24, 2), (32, 3), (48, 3), (96, 5), (136, 5), (232, 6), (384, 2)),
                        1536),
    'efficientnet_b4': (48, ((24, 2), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 2)),
                        1792),
    'efficientnet_b5': (48, ((24, 3), (40, 5), (64, 5), (128, 7), (176, 7), (304, 9), (512, 3)),
                        2048),
    'efficientnet_b6': (56, ((32, 3), (40, 6), (72, 6), (144, 8), (200, 8), (344, 11), (576, 3)),
                        2304),
    'efficientnet_b7': (64, ((32, 4), (48, 7), (80, 7), (160, 10), (224, 10), (384, 13), (640, 4)),
                        2560),
}


# A small network of the family for behaviour tests: 8-80 channels, 1-2 blocks per stage.
TINY = dict(width_coefficient=0.25, depth_coefficient=0.5)


def _abstract_init(model, size=64):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def _modules_of(model, kind, size=64):
  """{module path: module} of every `kind` module the model builds."""
  found = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, kind) and context.method_name == '__call__':
      found['/'.join(context.module.scope.path)] = context.module
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    _abstract_init(model, size)
  return found


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_scaled_table_is_the_released_network(name):
  stem, stages, head = REFERENCE[name]
  spec = models.get_spec(name)
  w, d = spec.kwargs['width_coefficient'], spec.kwargs['depth_coefficient']
  assert efficientnet.round_filters(efficientnet.STEM_CHANNELS, w) == stem
  assert tuple((s.channels, s.layers) for s in efficientnet.scale_stages(w, d)) == stages
  assert efficientnet.round_filters(efficientnet.HEAD_CHANNELS, w) == head
  # Kernel sizes, expansion and strides stay those of Table 1.
  assert [(s.expand_ratio, s.kernel_size, s.stride) for s in efficientnet.scale_stages(w, d)] == \
      [(1, 3, 1), (6, 3, 2), (6, 5, 2), (6, 3, 2), (6, 5, 1), (6, 5, 2), (6, 3, 1)]


def test_b7_built_from_the_table():
  model = models.create_model('efficientnet_b7')
  params = _abstract_init(model, 32)['params']
  assert params['head']['conv']['kernel'].shape == (1, 1, 640, 2560)
  assert params['stem']['conv']['kernel'].shape == (3, 3, 3, 64)
  per_stage = [sum(1 for k in params if k.startswith(f'stage{s}_')) for s in range(2, 9)]
  assert per_stage == [n for _, n in REFERENCE['efficientnet_b7'][1]]
  assert models.input_shape('efficientnet_b7') == (600, 600, 3)


def test_rounding_rule():
  assert efficientnet.round_filters(40, 1.1) == 48   # 44 -> nearest multiple of 8 rounding up
  assert efficientnet.round_filters(112, 1.1) == 120  # 123.2 -> 120 (within 10%)
  assert efficientnet.round_filters(10, 1.1) == 16   # 11 -> 8 is > 10% below: +8
  assert efficientnet.round_repeats(3, 1.2) == 4     # ceil(3.6)
  assert efficientnet.round_repeats(1, 3.1) == 4


def test_variant_resolution_and_dropout():
  got = [(models.input_shape(n)[0], models.get_spec(n).kwargs['dropout_rate'])
         for n in efficientnet.VARIANTS]
  assert got == [(224, 0.2), (240, 0.2), (260, 0.3), (300, 0.3), (380, 0.4), (456, 0.4),
                 (528, 0.5), (600, 0.5)]


def test_stochastic_depth_grows_linearly_with_block_index():
  drops = _modules_of(models.create_model('efficientnet_b0'), layers.DropPath)
  rates = {path.split('/')[0]: m.rate for path, m in drops.items()}
  # Only blocks with an identity shortcut drop; the rate counts every block (16 in B0).
  order = [b.name for b in efficientnet.blocks(1.0, 1.0)]
  assert len(order) == 16
  expected = {name: 0.2 * i / 16 for i, name in enumerate(order)}
  assert rates == {name: pytest.approx(expected[name]) for name in rates}
  assert sorted(rates) == sorted(['stage3_block2', 'stage4_block2', 'stage5_block2',
                                  'stage5_block3', 'stage6_block2', 'stage6_block3',
                                  'stage7_block2', 'stage7_block3', 'stage7_block4'])
  assert rates['stage7_block4'] == pytest.approx(0.2 * 14 / 16)
  b7 = efficientnet.blocks(2.0, 3.1, 0.3)
  assert len(b7) == 55 and b7[-1].drop_path_rate == pytest.approx(0.3 * 54 / 55)


def test_se_width_is_a_quarter_of_the_block_input():
  model = models.create_model('efficientnet_b0')
  params = _abstract_init(model)['params']
  for block in efficientnet.blocks(1.0, 1.0):
    kernel = params[block.name]['se']['reduce']['kernel']
    hidden = block.in_channels * block.expand_ratio
    assert kernel.shape == (1, 1, hidden, max(1, int(block.in_channels * 0.25))), block.name
  # stage3_block1 reads 16 channels and expands to 96: SE squeezes to 4 (MobileNetV3's rule
  # would give 24).
  assert params['stage3_block1']['se']['reduce']['kernel'].shape == (1, 1, 96, 4)


def test_bn_defaults_are_tf_and_configurable():
  norms = _modules_of(models.create_model('efficientnet_b0'), layers.BatchNorm)
  assert {(m.epsilon, m.momentum) for m in norms.values()} == {(1e-3, 0.99)}
  assert len(norms) == 2 + 16 * 2 + 15  # stem, head; dw + project per block; 15 expansions
  torch_style = _modules_of(models.create_model('efficientnet_b0', bn_epsilon=1e-5,
                                                bn_momentum=0.9), layers.BatchNorm)
  assert {(m.epsilon, m.momentum) for m in torch_style.values()} == {(1e-5, 0.9)}


def test_padding_switch():
  x = jax.random.normal(jax.random.key(1), (2, 64, 48, 3))
  same = models.create_model('efficientnet_b0', num_classes=5, **TINY)
  symmetric = models.create_model('efficientnet_b0', num_classes=5, padding='symmetric', **TINY)
  variables = random_variables(jax.eval_shape(same.init, jax.random.key(0), x))
  assert jax.tree_util.tree_structure(jax.eval_shape(symmetric.init, jax.random.key(0), x)) == \
      jax.tree_util.tree_structure(variables)  # same weights fit both

  def stem_and_logits(model):
    logits, state = jax.jit(functools.partial(
        model.apply, mutable=['intermediates'],
        capture_intermediates=lambda m, _: m.scope.path == ('stem', 'conv')))(variables, x)
    return state['intermediates']['stem']['conv']['__call__'][0], logits

  def conv(pads):
    return jax.lax.conv_general_dilated(x, variables['params']['stem']['conv']['kernel'], (2, 2),
                                        pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  stem_same, logits_same = stem_and_logits(same)
  stem_symmetric, logits_symmetric = stem_and_logits(symmetric)
  # TF 'SAME' on even inputs: the extra row and column at the bottom/right; PyTorch: 1 each side.
  np.testing.assert_allclose(stem_same, conv(((0, 1), (0, 1))), atol=1e-5)
  np.testing.assert_allclose(stem_symmetric, conv(((1, 1), (1, 1))), atol=1e-5)
  assert logits_same.shape == logits_symmetric.shape == (2, 5)
  assert np.abs(logits_same - logits_symmetric).max() > 1e-3 * np.abs(logits_same).max()


def _table(width, depth):
  return (efficientnet.round_filters(efficientnet.STEM_CHANNELS, width),
          tuple((s.channels, s.layers) for s in efficientnet.scale_stages(width, depth)),
          efficientnet.round_filters(efficientnet.HEAD_CHANNELS, width))


def test_compound_scaling_at_any_phi():
  assert efficientnet.compound_scaling(0) == (1.0, 1.0, 1.0)
  phi1 = efficientnet.compound_scaling(1)
  assert (phi1.width, phi1.depth, phi1.resolution) == pytest.approx((1.1, 1.2, 1.15))
  # phi = 1 is B2's network (w 1.1, d 1.2) at 258 px (B2: 260); the released B1 is (1.0, 1.1).
  assert phi1.input_size == 258
  assert _table(phi1.width, phi1.depth) == REFERENCE['efficientnet_b2']
  model = models.create_model('efficientnet_b0', width_coefficient=phi1.width,
                              depth_coefficient=phi1.depth)
  assert summary.count_params(_abstract_init(model, 32)) == 9_109_994
  # phi = 2 (1.21, 1.44, 296 px) has B3's stages but a 1552-channel head: B3 rounds w to 1.2.
  phi2 = efficientnet.compound_scaling(2)
  stem, stages, head = _table(phi2.width, phi2.depth)
  assert (stem, stages, phi2.input_size) == (40, REFERENCE['efficientnet_b3'][1], 296)
  assert head == 1552 != REFERENCE['efficientnet_b3'][2]
  # Scaling one dimension alone (Figure 3): width 2 keeps the blocks, depth 2 the channels.
  wide = efficientnet.scale_stages(2.0, 1.0)
  deep = efficientnet.scale_stages(1.0, 2.0)
  assert [s.layers for s in wide] == [s.layers for s in efficientnet.B0_STAGES]
  assert [s.channels for s in wide] == [2 * s.channels for s in efficientnet.B0_STAGES]
  assert [s.channels for s in deep] == [s.channels for s in efficientnet.B0_STAGES]
  assert [s.layers for s in deep] == [2 * s.layers for s in efficientnet.B0_STAGES]


def test_dropout_and_drop_connect_only_in_training():
  model = models.create_model('efficientnet_b0', num_classes=5, **TINY)
  no_drop = model.clone(dropout_rate=0.0, stochastic_depth_rate=0.0)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = random_variables(jax.eval_shape(model.init, jax.random.key(0), x))

  def run(model, train):
    return jax.jit(lambda seed: model.apply(
        variables, x, train=train, rngs={'dropout': jax.random.key(seed)},
        mutable=['intermediates', 'batch_stats']))

  logits, state = run(model, False)(0)
  assert state['intermediates']['features'][0].shape == (4, 320)  # round_filters(1280 / 4)
  np.testing.assert_array_equal(logits, run(model, False)(1)[0])
  train = run(model, True)
  assert np.abs(train(1)[0] - train(2)[0]).max() > 1e-4
  drop_connect_only = run(model.clone(dropout_rate=0.0), True)
  assert np.abs(drop_connect_only(1)[0] - drop_connect_only(2)[0]).max() > 1e-4
  train_no_drop = run(no_drop, True)
  np.testing.assert_array_equal(train_no_drop(1)[0], train_no_drop(2)[0])


def test_input_normalisation_option():
  mean, std = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)
  plain = models.create_model('efficientnet_b0', num_classes=3, **TINY)
  embedded = plain.clone(input_mean=mean, input_std=std)
  pixels = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), maxval=255.0)
  variables = random_variables(jax.eval_shape(plain.init, jax.random.key(0), pixels))
  normalised = (pixels - jnp.array(mean)) / jnp.array(std)
  np.testing.assert_allclose(jax.jit(embedded.apply)(variables, pixels),
                             jax.jit(plain.apply)(variables, normalised), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('override, message', [
    (dict(padding='valid'), "padding must be 'same' .* or 'symmetric'"),
    (dict(width_coefficient=0.0), 'width_coefficient must be positive'),
    (dict(depth_coefficient=-1.0), 'depth_coefficient must be positive'),
    (dict(dropout_rate=1.0), r'dropout_rate must be in \[0, 1\)'),
    (dict(stochastic_depth_rate=-0.1), r'stochastic_depth_rate must be in \[0, 1\)'),
    (dict(activation='swishh'), "Unknown activation 'swishh'"),
    (dict(input_mean=(0.0, 0.0, 0.0)), 'set both input_mean and input_std'),
    (dict(input_mean=(0.0,), input_std=(1.0,)), 'one value per input channel'),
])
def test_bad_switches_are_named(override, message):
  with pytest.raises(ValueError, match=message):
    _abstract_init(models.create_model('efficientnet_b0', **override), 32)
