"""MobileNet v1/v2/v3: the switches' effects (Tables 4, 6, 7; v2's and v3's width multipliers)
and the block structure each table prescribes (strides, shortcuts, SE, h-swish).

Everything here traces the networks abstractly (jax.eval_shape / jaxprs): no compilation.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_history import models
from cnn_history.models import layers, mobilenet, summary


def _trace(model, resolution=224):
  """Abstract init at `resolution`: (params shapes, {module path: (class, module, output shape)}
  for every module called, the sown features' shape)."""
  calls = {}

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      calls['/'.join(context.module.scope.path)] = (type(context.module).__name__,
                                                    context.module, getattr(y, 'shape', None))
    return y

  def init():
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)),
                        train=False, mutable=['params', 'batch_stats', 'intermediates'])

  variables = jax.eval_shape(init)
  params = jax.tree_util.tree_map(lambda x: x.shape, variables['params'])
  features = variables['intermediates']['features'][0].shape
  return params, calls, features


def _count(name, resolution=224, **overrides):
  model = models.create_model(name, **overrides)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)), train=False))
  return summary.count_params(variables), summary.count_macs(model, (resolution, resolution, 3))


# ---- v1 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('alpha, params, macs', [
    (0.75, 2_585_560, 325.4e6), (0.5, 1_331_592, 149.5e6), (0.25, 470_072, 41.0e6)])
def test_v1_width_multiplier_table_6(alpha, params, macs):
  """Keras MobileNet(alpha) trainable counts; the paper's 325M / 149M / 41M mult-adds."""
  got_params, got_macs = _count('mobilenet_v1', width_multiplier=alpha)
  assert got_params == params
  assert got_macs == pytest.approx(macs, rel=0.002)


@pytest.mark.parametrize('resolution, macs', [(192, 418.1e6), (160, 290.7e6), (128, 186.4e6)])
def test_v1_resolution_multiplier_table_7(resolution, macs):
  """rho is the input size: same 4,231,976 parameters, 418 / 290 / 186M mult-adds."""
  params, got_macs = _count('mobilenet_v1', resolution)
  assert params == 4_231_976
  assert got_macs == pytest.approx(macs, rel=0.002)


def test_v1_full_convolution_baseline_table_4():
  """Conv MobileNet: 29.3M parameters and 4866M mult-adds; the separable net needs 6.9x fewer
  parameters and 8.6x fewer mult-adds (Table 4: 4.2M, 569M)."""
  params, macs = _count('mobilenet_v1', depthwise=False)
  # 3x3 convs 28,257,120 + FC 1,025,000 + BN (one per layer, not two) 11,968.
  assert params == 29_294_088
  assert macs == pytest.approx(4866e6, rel=0.001)
  separable_params, separable_macs = _count('mobilenet_v1')
  assert params / separable_params == pytest.approx(6.92, abs=0.01)
  assert macs / separable_macs == pytest.approx(8.56, abs=0.01)


def test_v1_layers_follow_table_1():
  params, calls, features = _trace(models.create_model('mobilenet_v1'))
  table = mobilenet.v1_layers()
  assert [l.out_channels for l in table] == [64, 128, 128, 256, 256, 512, 512, 512, 512, 512,
                                              512, 1024, 1024]
  # Stride 2 at layers 2, 4, 6, 12 (Table 1's last "s2" is a misprint): 112 -> 7.
  sizes = [calls[l.name][2][1] for l in table]
  assert sizes == [112, 56, 56, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]
  block = params['block7']
  assert block['depthwise']['conv']['kernel'] == (3, 3, 1, 512)  # one 3x3 filter per channel
  assert block['pointwise']['conv']['kernel'] == (1, 1, 512, 512)
  assert set(block['depthwise']) == {'conv', 'bn'}  # BN + ReLU after the depthwise conv too
  assert features == (1, 1024)
  acts = {calls[p][1].act for p in calls if calls[p][0] == 'ConvBN'}
  assert acts == {'relu'}
  _, calls, _ = _trace(models.create_model('mobilenet_v1', activation='relu6'))
  assert {calls[p][1].act for p in calls if calls[p][0] == 'ConvBN'} == {'relu6'}


def test_width_rounding_v1_int_vs_v2_make_divisible():
  """v1 truncates int(c * alpha); v2 rounds to a multiple of 8, never 10% below c * alpha."""
  v1, _, _ = _trace(models.create_model('mobilenet_v1', width_multiplier=0.35), 64)
  assert v1['stem']['conv']['kernel'][-1] == 11            # int(32 * 0.35)
  assert v1['block13']['pointwise']['conv']['kernel'][-1] == 358  # int(1024 * 0.35)
  v2, _, _ = _trace(models.create_model('mobilenet_v2', width_multiplier=0.35), 64)
  assert v2['stem']['conv']['kernel'][-1] == 16            # 11.2 -> 8 is < 90%: 16
  outs = [v2[b.name]['project']['conv']['kernel'][-1] for b in mobilenet.v2_blocks(0.35)]
  assert sorted(set(outs)) == [8, 16, 24, 32, 56, 112]     # c = 16, 24, 32, 64, 96, 160, 320
  assert v2['head']['conv']['kernel'][-1] == 1280          # kept wide for alpha <= 1


def test_v2_width_1_4():
  """make_divisible(1280 * 1.4) = 1792 last conv; 6,108,776 parameters (the paper's '6.9M' does
  not match its architecture), 582M mult-adds (paper: 585M)."""
  params, macs = _count('mobilenet_v2', width_multiplier=1.4)
  assert params == 6_108_776
  assert macs == pytest.approx(582.2e6, rel=0.002)
  shapes, _, features = _trace(models.create_model('mobilenet_v2', width_multiplier=1.4), 64)
  assert shapes['head']['conv']['kernel'] == (1, 1, 448, 1792)
  assert features == (1, 1792)


def _expected_blocks(rows, stem):
  """(in, out, stride) of every block from a (t, c, n, s)-style table: the test's own reading."""
  out, cin = [], stem
  for row in rows:
    for j in range(row.repeats):
      out.append((cin, row.channels, row.stride if j == 0 else 1))
      cin = row.channels
  return out


def test_v2_stages_strides_and_shortcuts_follow_table_2():
  _, calls, _ = _trace(models.create_model('mobilenet_v2'))
  blocks = [(p, c) for p, c in calls.items() if c[0] == 'InvertedResidual']
  expected = _expected_blocks(mobilenet.V2_BODY, 32)
  assert len(blocks) == len(expected) == 17
  # Stage s holds Table 2's n blocks: names stage{row}_block{1..n}.
  assert [p for p, _ in blocks][:4] == ['stage2_block1', 'stage3_block1', 'stage3_block2',
                                        'stage4_block1']
  assert [c[2][1] for _, c in blocks] == [112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 14,
                                          7, 7, 7, 7]
  # InvertedResidual routes its identity shortcut through DropPath: the shortcut's witness.
  shortcuts = {p.rsplit('/', 1)[0] for p, c in calls.items() if c[0] == 'DropPath'}
  want = {p for (p, _), (cin, cout, s) in zip(blocks, expected) if s == 1 and cin == cout}
  assert shortcuts == want and len(want) == 10
  # t = 1: no expansion conv in the first block, 6x expansion elsewhere; ReLU6 everywhere.
  params, _, _ = _trace(models.create_model('mobilenet_v2'), 64)
  assert 'expand' not in params['stage2_block1']
  assert params['stage3_block1']['expand']['conv']['kernel'] == (1, 1, 16, 96)
  assert {c[1].act for c in calls.values() if c[0] == 'ConvBN' and c[1].act} == {'relu6'}
  assert calls['stage2_block1/project'][1].act is None  # linear bottleneck


# ---- v3 -----------------------------------------------------------------------------------------

# exp size -> SE squeeze width make_divisible(exp / 4, 8) (72 / 4 = 18 -> 16 is > 10% low: 24).
SQUEEZE = {16: 8, 72: 24, 96: 24, 120: 32, 144: 40, 240: 64, 288: 72, 480: 120, 576: 144,
           672: 168, 960: 240}


@pytest.mark.parametrize('size', ['large', 'small'])
def test_v3_blocks_follow_tables_1_and_2(size):
  spec = mobilenet.V3_SPECS[size]
  params, calls, features = _trace(models.create_model(f'mobilenet_v3_{size}'))
  names = [f'block{i}' for i in range(1, len(spec.rows) + 1)]
  cin = spec.stem
  for name, row in zip(names, spec.rows):
    block = params[name]
    # exp size, #out and kernel from the table.
    assert block['depthwise']['conv']['kernel'] == (row.kernel_size, row.kernel_size, 1,
                                                    row.expanded), name
    assert block['project']['conv']['kernel'] == (1, 1, row.expanded, row.channels), name
    assert ('expand' in block) == (row.expanded != cin), name
    # SE exactly in the SE rows, squeezing to make_divisible(exp / 4, 8) with a hard-sigmoid.
    assert ('se' in block) == row.se, name
    if row.se:
      squeeze = SQUEEZE[row.expanded]
      assert block['se']['reduce']['kernel'] == (1, 1, row.expanded, squeeze), name
      se = calls[f'{name}/se'][1]
      assert (se.act, se.gate) == ('relu', 'hard_sigmoid')
    # The NL column: ReLU or h-swish in the expansion and depthwise convs; linear projection.
    acts = {calls[f'{name}/{part}'][1].act for part in ('expand', 'depthwise')
            if f'{name}/{part}' in calls}
    assert acts == {row.nonlinearity}, name
    assert calls[f'{name}/project'][1].act is None
    # Shortcut exactly where stride 1 and c_in = c_out.
    assert (f'{name}/drop_path' in calls) == (row.stride == 1 and cin == row.channels), name
    cin = row.channels
  assert calls['stem'][1].act == calls['head'][1].act == 'hard_swish'
  assert params['stem']['conv']['kernel'] == (3, 3, 3, 16)
  # The efficient last stage: 1x1 conv + BN to 960/576, pool, then a 1280/1024 layer without BN.
  assert params['head']['conv']['kernel'] == (1, 1, spec.rows[-1].channels, spec.last_conv)
  assert set(params['pre_logits']) == {'kernel', 'bias'}
  assert params['pre_logits']['kernel'] == (spec.last_conv, spec.head)
  assert features == (1, spec.head)
  sizes = [calls[n][2][1] for n in names]
  assert sizes[-1] == 7 and calls['stem'][2][1] == 112


@pytest.mark.parametrize('size, params, macs', [
    ('large', 3_993_528, 155e6), ('small', 2_041_872, 44e6)])
def test_v3_width_0_75_rows_of_table_3(size, params, macs):
  """Table 3: Large 0.75 "4.0M, 155M", Small 0.75 "2.0M, 44M"; the parameter counts are the
  Keras/TF-slim networks' (the parity test converts one)."""
  got_params, got_macs = _count(f'mobilenet_v3_{size}', width_multiplier=0.75)
  assert got_params == params
  assert got_macs == pytest.approx(macs, rel=0.015)
  shapes, _, _ = _trace(models.create_model(f'mobilenet_v3_{size}', width_multiplier=0.75), 64)
  assert shapes['pre_logits']['kernel'][-1] == mobilenet.V3_SPECS[size].head  # kept for alpha < 1


def _first_conv_padding(model, resolution=64):
  with layers.reference_convolutions():  # every convolution as lax's (depthwise ones included)
    jaxpr = jax.make_jaxpr(lambda x: model.init_with_output(jax.random.key(0), x)[0])(
        jnp.zeros((1, resolution, resolution, 3)))
  convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == 'conv_general_dilated']
  return [tuple(map(tuple, e.params['padding'])) for e in convs]


def test_padding_tf_same_or_symmetric():
  """TF 'SAME' puts a stride-2 conv's extra row/column at the end; PyTorch pads k // 2."""
  same = _first_conv_padding(models.create_model('mobilenet_v3_small'))
  symmetric = _first_conv_padding(models.create_model('mobilenet_v3_small', padding='symmetric'))
  assert same[0] == ((0, 1), (0, 1)) and symmetric[0] == ((1, 1), (1, 1))      # stem 3x3/2
  assert ((1, 2), (1, 2)) in same and ((2, 2), (2, 2)) in symmetric            # 5x5/2 depthwise


class _StemInput(Exception):
  pass


def _stem_input(model, x):
  """What the stem conv receives (the forward pass stops there: no parameters needed)."""

  def stop_at_stem(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.name == 'stem':
      raise _StemInput(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(stop_at_stem), pytest.raises(_StemInput) as stopped:
    model.apply({'params': {}}, x)
  return stopped.value.args[0]


def test_inputs_normalised_inside_the_network():
  """Keras's include_preprocessing (0-255 pixels) as input_mean = input_std = 127.5; off by
  default."""
  x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3)) * 255
  keras_like = models.create_model('mobilenet_v3_small', input_mean=(127.5,) * 3,
                                   input_std=(127.5,) * 3)
  assert jnp.allclose(_stem_input(keras_like, x), x / 127.5 - 1, atol=1e-6)
  assert jnp.array_equal(_stem_input(models.create_model('mobilenet_v3_small'), x), x)


@pytest.mark.parametrize('name, overrides, match', [
    ('mobilenet_v1', {'width_multiplier': 0.0}, 'width_multiplier must be positive'),
    ('mobilenet_v1', {'width_multiplier': 0.01}, 'no channels'),
    ('mobilenet_v1', {'activation': 'gelu'}, "activation must be 'relu'"),
    ('mobilenet_v1', {'padding': 'valid'}, "padding must be 'same'"),
    ('mobilenet_v2', {'dropout_rate': 1.0}, r'dropout_rate must be in \[0, 1\)'),
    ('mobilenet_v3_large', {'size': 'medium'}, "size must be 'large' or 'small'"),
    ('mobilenet_v3_small', {'input_mean': (0.5,) * 3}, 'both input_mean and input_std'),
    ('mobilenet_v3_small', {'input_mean': (0.5,), 'input_std': (1.0,)}, 'one value per input'),
])
def test_bad_switches_raise(name, overrides, match):
  model = models.create_model(name, **overrides)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
