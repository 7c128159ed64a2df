"""Xception: the three flows of Fig. 5 (shapes, 8 middle modules, 36 convolutions, shortcuts) and
the separable switch counted by hand."""

import jax
import jax.numpy as jnp
import pytest

from cnn_history import models
from cnn_history.models import summary, xception


def _shapes(model, input_shape=(299, 299, 3)):
  def run():
    x = jnp.zeros((1,) + input_shape)
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
    return variables['params'], state['intermediates']

  return jax.eval_shape(run)


@pytest.fixture(scope='module')
def xception_shapes():
  return _shapes(models.create_model('xception'))


def test_flows_have_the_papers_modules_and_resolutions(xception_shapes):
  params, inter = xception_shapes
  out = lambda name: inter[name]['__call__'][0].shape
  assert out('entry_conv1') == (1, 149, 149, 32)  # VALID
  assert out('entry_conv2') == (1, 147, 147, 64)
  assert [out(f'entry_module{i}') for i in (1, 2, 3)] == [
      (1, 74, 74, 128), (1, 37, 37, 256), (1, 19, 19, 728)]
  middle = sorted(n for n in params if n.startswith('middle_'))
  assert len(middle) == 8
  for name in middle:  # three separable convs, identity shortcut
    assert set(params[name]) == {'conv1', 'conv2', 'conv3'}
    assert out(name) == (1, 19, 19, 728)
  assert out('exit_module1') == (1, 10, 10, 1024)
  assert out('exit_conv2') == (1, 10, 10, 2048)
  # Modules that downsample add a 1x1/2 conv + BN shortcut.
  for name in ('entry_module1', 'entry_module2', 'entry_module3', 'exit_module1'):
    assert params[name]['shortcut']['conv']['kernel'].shape[:2] == (1, 1)
  # "36 convolutional layers": 2 stem convs + 34 separable convs (shortcuts not counted).
  separable = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)
               if 'pointwise' in jax.tree_util.keystr(path) and path[-1].key == 'kernel']
  assert len(separable) + 2 == 36


def _separable_convs():
  """(c_in, c_out, output side) of every separable conv, from the table and Fig. 5's sizes."""
  sides = iter([147, 74, 37] + [19] * 8 + [19])  # each module's input (its convs' output) side
  convs, c = [], xception.STEM[-1][0]
  for _, module_widths, _ in xception.module_names():
    side = next(sides)
    for w in module_widths:
      convs.append((c, w, side))
      c = w
  for w in xception.HEAD:
    convs.append((c, w, 10))
    c = w
  return convs


def test_full_convolutions_in_place_of_separable_ones(xception_shapes):
  # Each separable conv (9 c_in + c_in c_out weights) becomes a 3x3 conv (9 c_in c_out);
  # BN and everything else stay.
  convs = _separable_convs()
  assert len(convs) == 34
  extra = sum(9 * a * b - (9 * a + a * b) for a, b, _ in convs)
  extra_macs = sum((9 * a * b - (9 * a + a * b)) * side * side for a, b, side in convs)
  full = models.create_model('xception', separable=False)
  params, inter = _shapes(full)
  assert summary.count_params({'params': params}) == 22_855_952 + extra == 179_071_688
  assert params['middle_module4']['conv2']['conv']['kernel'].shape == (3, 3, 728, 728)
  assert (inter['exit_conv2']['__call__'][0].shape
          == xception_shapes[1]['exit_conv2']['__call__'][0].shape)
  assert summary.count_macs(full, (299, 299, 3)) == (
      models.get_spec('xception').expected_macs + extra_macs)
