"""ShuffleNet v1/v2: the units against numpy (where the channel shuffle sits and which way it
permutes), Table 1's counts by hand for every g, stage structure, and the errors for bad
switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import layers, shufflenet, summary
from tests.helpers import random_variables

EPS = 1e-5


# ---- numpy reference of the v1 unit ----------------------------------------------------------

def _np_group_conv1x1(x, kernel, groups):
  """kernel (1, 1, c_in / g, c_out): output group i reads input group i only."""
  c_in, c_out = x.shape[-1], kernel.shape[-1]
  outs = [x[..., i * c_in // groups:(i + 1) * c_in // groups]
          @ kernel[0, 0, :, i * c_out // groups:(i + 1) * c_out // groups] for i in range(groups)]
  return np.concatenate(outs, axis=-1)


def _np_depthwise3x3(x, kernel, stride):
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  side = (x.shape[1] - 1) // stride + 1
  out = 0.0
  for i in range(3):
    for j in range(3):
      window = padded[:, i:i + stride * side:stride, j:j + stride * side:stride]
      out = out + window * kernel[i, j, 0]
  return out


def _np_avg_pool3x3_s2(x):  # PyTorch AvgPool2d(3, 2, 1): zero padding counted
  return _np_depthwise3x3(x, np.full((3, 3, 1, x.shape[-1]), 1 / 9), 2)


def _np_shuffle(x, groups):
  """The paper's shuffle: output channel k is channel (k mod g) * (C / g) + k div g."""
  c = x.shape[-1]
  return x[..., [(k % groups) * (c // groups) + k // groups for k in range(c)]]


def _np_bn(x, p, s):
  return (x - s['mean']) / np.sqrt(s['var'] + EPS) * p['scale'] + p['bias']


def _np_unit_v1(x, p, s, groups, stride, group_first_conv, shuffle):
  relu = lambda v: np.maximum(v, 0)
  y = _np_group_conv1x1(x, p['group_conv1']['conv']['kernel'], groups if group_first_conv else 1)
  y = relu(_np_bn(y, p['group_conv1']['bn'], s['group_conv1']['bn']))
  if shuffle:
    y = _np_shuffle(y, groups)
  y = _np_depthwise3x3(y, p['depthwise']['conv']['kernel'], stride)
  y = _np_bn(y, p['depthwise']['bn'], s['depthwise']['bn'])
  y = _np_group_conv1x1(y, p['group_conv2']['conv']['kernel'], groups)
  y = _np_bn(y, p['group_conv2']['bn'], s['group_conv2']['bn'])
  if stride == 2:
    return relu(np.concatenate([_np_avg_pool3x3_s2(x), y], axis=-1))
  return relu(x + y)


@pytest.mark.parametrize('c_in, features, stride, group_first_conv, shuffle', [
    (48, 48, 1, True, True), (24, 48, 2, False, True), (48, 48, 1, True, False)])
def test_v1_unit_matches_numpy(c_in, features, stride, group_first_conv, shuffle):
  rng = np.random.default_rng(0)
  x = np.abs(rng.normal(size=(2, 6, 6, c_in))).astype(np.float32)  # post-ReLU, as in the net
  unit = shufflenet.ShuffleUnitV1(features, groups=3, strides=stride,
                                  group_first_conv=group_first_conv, channel_shuffle=shuffle,
                                  bn=dict(bn_epsilon=EPS))
  abstract = jax.eval_shape(lambda: unit.init(jax.random.key(0), x, False))
  params = jax.tree_util.tree_map(lambda v: rng.normal(size=v.shape).astype(np.float32),
                                  abstract['params'])
  stats = jax.tree_util.tree_map_with_path(  # non-trivial running statistics
      lambda path, v: (rng.uniform(0.5, 2.0, v.shape) if path[-1].key == 'var'
                       else rng.normal(size=v.shape)).astype(np.float32),
      abstract['batch_stats'])
  ours = jax.jit(unit.apply, static_argnums=2)({'params': params, 'batch_stats': stats}, x, False)
  expected = _np_unit_v1(x, params, stats, 3, stride, group_first_conv, shuffle)
  assert ours.shape == (2, 6 // stride, 6 // stride, features)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_channel_shuffle_interleaves_the_groups():
  # Fig. 1(c): after the shuffle, each consecutive run of g channels holds one from every group.
  x = np.arange(12, dtype=np.float32).reshape(1, 1, 1, 12)
  shuffled = np.asarray(layers.channel_shuffle(jnp.asarray(x), 3)).ravel()
  np.testing.assert_array_equal(shuffled, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
  np.testing.assert_array_equal(shuffled, _np_shuffle(x, 3).ravel())


# ---- v1: Table 1 ------------------------------------------------------------------------------

def v1_counts(groups, scale=1.0, stem=24, res=224, classes=1000):
  """(params, MACs) of ShuffleNet v1 by hand from Table 1 and the unit of Fig. 2."""
  params, side = 27 * stem + 2 * stem, res // 2
  macs = side * side * 27 * stem
  side //= 2
  c_in = stem
  for stage, (c_out, repeats) in enumerate(zip(shufflenet.V1_STAGE_CHANNELS[groups], (4, 8, 4))):
    c_out = int(c_out * scale)
    for unit in range(repeats):
      mid, g1 = c_out // 4, 1 if (stage, unit) == (0, 0) else groups
      branch = c_out - c_in if unit == 0 else c_out
      in_side, side = side, side // 2 if unit == 0 else side
      params += c_in * mid // g1 + 2 * mid + 9 * mid + 2 * mid + mid * branch // groups + 2 * branch
      macs += in_side ** 2 * c_in * mid // g1 + side ** 2 * (9 * mid + mid * branch // groups)
      c_in = c_out
  return params + c_in * classes + classes, macs + c_in * classes


def test_v1_groups_change_params_and_macs_as_table_1_says():
  # papers.md §21 (own arithmetic): the registry's figures, and Table 1's complexities
  # (143/140/137/133/137 MFLOPs) to within 1.5M.
  paper = {1: (1_531_936, 143), 2: (1_733_848, 140), 3: (1_865_728, 137), 4: (1_968_344, 133),
           8: (2_434_768, 137)}
  for g, (params, paper_mflops) in paper.items():
    spec = models.get_spec(f'shufflenet_v1_g{g}')
    assert v1_counts(g) == (params, spec.expected_macs)
    assert spec.expected_params == params
    assert spec.expected_macs / 1e6 == pytest.approx(paper_mflops, abs=1.5)
  # More groups: wider layers at about the same cost (Table 1's point).
  widths = [shufflenet.V1_STAGE_CHANNELS[g][0] for g in (1, 2, 3, 4, 8)]
  assert widths == sorted(widths)


def test_v1_scale_factor_and_stage_structure():
  model = models.create_model('shufflenet_v1_g3', scale_factor=0.5)
  params, intermediates = _shapes(model)
  assert summary.count_params({'params': params}) == v1_counts(3, 0.5)[0] == 718_888
  for stage, (side, c, units) in zip((2, 3, 4), [(28, 120, 4), (14, 240, 8), (7, 480, 4)]):
    assert sum(n.startswith(f'stage{stage}_') for n in params) == units
    assert intermediates[f'stage{stage}_unit{units}']['__call__'][0].shape == (1, side, side, c)
  # Stage2's first 1x1 is dense (24 inputs); every other one has g = 3 groups.
  assert params['stage2_unit1']['group_conv1']['conv']['kernel'].shape == (1, 1, 24, 30)
  assert params['stage2_unit2']['group_conv1']['conv']['kernel'].shape == (1, 1, 40, 30)
  assert params['stage3_unit1']['group_conv2']['conv']['kernel'].shape == (1, 1, 20, 120)


def _shapes(model, input_shape=(224, 224, 3)):
  def run():
    x = jnp.zeros((1,) + input_shape)
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
    return variables['params'], state['intermediates']

  return jax.eval_shape(run)


def test_v1_bad_switches_name_the_valid_values():
  x = jnp.zeros((1, 224, 224, 3))
  init = lambda **kw: jax.eval_shape(
      lambda: models.create_model('shufflenet_v1_g3', **kw).init(jax.random.key(0), x))
  with pytest.raises(ValueError, match=r'groups must be one of \(1, 2, 3, 4, 8\)'):
    init(groups=5)
  with pytest.raises(ValueError, match='scale_factor must be one of'):
    init(scale_factor=0.75)
  # 0.5 x Table 1 for g=2: bottleneck 100 / 4 = 25 channels do not split into 2 groups.
  with pytest.raises(ValueError,
                     match=r'groups=2.*\(25\).*Valid scale factors for g=2: \(1.0, 2.0\)'):
    init(groups=2, scale_factor=0.5)


# ---- v2: Table 5 ------------------------------------------------------------------------------

def test_v2_unit_passes_half_and_interleaves_it():
  # Stride 1: the first half of the input passes untouched and, after the 2-group shuffle,
  # lands on the even output channels (Fig. 3(c)).
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
  unit = shufflenet.ShuffleUnitV2(8, 1, bn={})
  variables = random_variables(jax.eval_shape(lambda: unit.init(jax.random.key(1), x, False)))
  y = jax.jit(unit.apply, static_argnums=2)(variables, x, False)
  np.testing.assert_array_equal(y[..., 0::2], x[..., :4])
  assert np.all(np.asarray(y[..., 1::2]) >= 0)  # the branch ends in ReLU
  assert not np.allclose(y[..., 1::2], x[..., 4:])
  # Stride 2: no split, both branches downsample; channels set by `features`.
  down = shufflenet.ShuffleUnitV2(16, 2, bn={})
  out = jax.eval_shape(lambda: down.init_with_output(jax.random.key(1), x, False)[0])  # no compute
  assert out.shape == (2, 3, 3, 16)


def test_v2_stages_follow_table_5():
  params, inter = _shapes(models.create_model('shufflenet_v2_x1_0'))
  for stage, (side, c, units) in zip((2, 3, 4), [(28, 116, 4), (14, 232, 8), (7, 464, 4)]):
    assert sum(n.startswith(f'stage{stage}_') for n in params) == units
    assert inter[f'stage{stage}_unit{units}']['__call__'][0].shape == (1, side, side, c)
  assert inter['conv5']['__call__'][0].shape == (1, 7, 7, 1024)
  # Downsampling units have the left branch; the others pass half the channels.
  assert 'left_depthwise' in params['stage3_unit1']
  assert 'left_depthwise' not in params['stage3_unit2']
  assert params['stage3_unit2']['right_conv1']['conv']['kernel'].shape == (1, 1, 116, 116)
  with pytest.raises(ValueError, match=r'width_multiplier must be one of \(0.5, 1.0, 1.5, 2.0\)'):
    jax.eval_shape(lambda: models.create_model('shufflenet_v2_x1_0', width_multiplier=0.75).init(
        jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
