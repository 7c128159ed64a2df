"""MnasNet-A1/B1: SE exactly in A1's SE stages, shortcuts where the table allows them, kernel
sizes and strides from the tables, the depth multiplier's counts. Abstract traces only."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_history import models
from cnn_history.models import mnasnet, summary


def _trace(model, resolution=224):
  """(params shapes, {module path: (class, module, output shape)}) of an abstract init."""
  calls = {}

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      calls['/'.join(context.module.scope.path)] = (type(context.module).__name__,
                                                    context.module, getattr(y, 'shape', None))
    return y

  def init():
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)))

  params = jax.eval_shape(init)['params']
  return jax.tree_util.tree_map(lambda x: x.shape, params), calls


# Figure 7(a) and arXiv v1, read independently of the module: per stage (t, k, c, n, s, SE).
FIGURE = {
    'a1': [(1, 3, 16, 1, 1, 0), (6, 3, 24, 2, 2, 0), (3, 5, 40, 3, 2, 1), (6, 3, 80, 4, 2, 0),
           (6, 3, 112, 2, 1, 1), (6, 5, 160, 3, 2, 1), (6, 3, 320, 1, 1, 0)],
    'b1': [(1, 3, 16, 1, 1, 0), (3, 3, 24, 3, 2, 0), (3, 5, 40, 3, 2, 0), (6, 5, 80, 3, 2, 0),
           (6, 3, 96, 2, 1, 0), (6, 5, 192, 4, 2, 0), (6, 3, 320, 1, 1, 0)],
}


@pytest.mark.parametrize('variant', ['a1', 'b1'])
def test_blocks_follow_the_table(variant):
  params, calls = _trace(models.create_model(f'mnasnet_{variant}'))
  cin, size, seen, shortcuts = 32, 112, 0, 0
  for stage, (t, k, c, n, s, se) in enumerate(FIGURE[variant], start=2):
    for j in range(1, n + 1):
      name = f'stage{stage}_block{j}'
      block, stride = params[name], s if j == 1 else 1
      size //= stride
      assert calls[name][2] == (1, size, size, c), name  # the stride on the first block only
      assert block['depthwise']['conv']['kernel'] == (k, k, 1, cin * t), name
      assert ('expand' in block) == (t != 1), name       # SepConv: no expansion
      # SE exactly in the SE stages, squeezing the block's INPUT channels by 4, sigmoid gate.
      assert ('se' in block) == bool(se), name
      if se:
        assert block['se']['reduce']['kernel'] == (1, 1, cin * t, cin // 4), name
        assert calls[f'{name}/se'][1].gate == 'sigmoid'
      has_shortcut = f'{name}/drop_path' in calls  # InvertedResidual's shortcut goes through it
      assert has_shortcut == (stride == 1 and cin == c), name
      shortcuts += has_shortcut
      seen += 1
      cin = c
  assert seen == len([p for p in params if p.startswith('stage')])
  assert shortcuts == {'a1': 9, 'b1': 10}[variant]
  assert params['stem']['conv']['kernel'] == (3, 3, 3, 32)
  assert params['head']['conv']['kernel'] == (1, 1, 320, 1280)
  assert {m.act for kind, m, _ in calls.values() if kind == 'ConvBN' and m.act} == {'relu'}


def test_only_a1_has_squeeze_and_excitation():
  a1 = [b for b in mnasnet.blocks('a1') if b.se_channels]
  assert [b.name for b in a1] == ['stage4_block1', 'stage4_block2', 'stage4_block3',
                                  'stage6_block1', 'stage6_block2', 'stage7_block1',
                                  'stage7_block2', 'stage7_block3']
  assert [b.se_channels for b in a1] == [6, 10, 10, 20, 28, 28, 40, 40]
  assert not any(b.se_channels for b in mnasnet.blocks('b1'))


@pytest.mark.parametrize('multiplier, paper_params, stem', [
    (1.4, 6.1e6, 48), (0.75, 2.9e6, 24), (0.5, 2.1e6, 16), (0.35, 1.7e6, 16)])
def test_depth_multiplier_matches_the_released_table(multiplier, paper_params, stem):
  """The TF reference's README (A1 at 224): 1.4 -> 6.1M, 0.75 -> 2.9M, 0.5 -> 2.1M, 0.35 ->
  1.7M; only a 1280-wide last conv that is NOT scaled gives these (scaled to 1792: 1.4 -> 6.8M)."""
  model = models.create_model('mnasnet_a1', depth_multiplier=multiplier)
  params, _ = _trace(model, 32)
  assert params['head']['conv']['kernel'][-1] == 1280
  count = sum(math.prod(shape) for shape in jax.tree_util.tree_leaves(
      params, is_leaf=lambda x: isinstance(x, tuple)))
  assert round(count / 1e5) == round(paper_params / 1e5)
  # make_divisible(32 m, 8): 44.8 -> 48; 11.2 -> 8 is more than 10% low -> 16.
  assert params['stem']['conv']['kernel'][-1] == stem


def test_depth_multiplier_1_4_mult_adds():
  """README: 591.5M for A1 1.4 (its 1.0 figure, 315.2M, is 1.2% above timm's 311.6M too)."""
  macs = summary.count_macs(models.create_model('mnasnet_a1', depth_multiplier=1.4),
                            (224, 224, 3))
  assert macs == pytest.approx(591.5e6, rel=0.012)


@pytest.mark.parametrize('overrides, match', [
    ({'variant': 'c1'}, "variant must be 'a1' or 'b1'"),
    ({'depth_multiplier': -1.0}, 'depth_multiplier must be positive'),
    ({'padding': 'SAME'}, "padding must be 'same'"),
    ({'dropout_rate': -0.1}, r'dropout_rate must be in \[0, 1\)'),
])
def test_bad_switches_raise(overrides, match):
  model = models.create_model('mnasnet_a1', **overrides)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
