"""SENet: the SE block's cost and place in a residual unit, the official models' stride placement,
and SENet-154's specifics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import summary


def _abstract(name, resolution=None, **overrides):
  model = models.create_model(name, **overrides)
  h, w, c = models.input_shape(name)
  shape = (1, resolution or h, resolution or w, c)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def _kernels(variables, unit):
  return {k: p['kernel'].shape for k, p in variables['params'][unit].items() if 'conv' in k}


def test_se_adds_exactly_its_two_fcs():
  base = _abstract('resnet20')
  se = _abstract('resnet20', se_reduction=4)  # the switch works on any residual model
  # Per unit of C channels: FC C -> C/4 and FC C/4 -> C, both with biases; 3 units per width.
  added = sum(3 * (2 * c * (c // 4) + c // 4 + c) for c in (16, 32, 64))
  assert summary.count_params(se) - summary.count_params(base) == added
  # SE off gives the paper's baseline back: SE-ResNet-50 without SE is ResNet-50.
  no_se = _abstract('seresnet50', resolution=64, se_reduction=0)
  assert summary.count_params(no_se) == models.get_spec('resnet50').expected_params


def test_se_rescales_the_branch_before_the_addition():
  # Unit output = relu(SE(u) + shortcut) with u the branch's last BN output and
  # SE(u) = u * sigmoid(W2 relu(W1 mean(u) + b1) + b2), recomputed in numpy from the unit's own
  # parameters and intermediate outputs (ResNet-8 with SE and projections: small and fast).
  model = models.create_model('resnet20', depth=8, se_reduction=4, shortcut='projection')
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
  unit = jax.device_get(state['intermediates']['stage2_block1'])
  p = jax.device_get(variables['params']['stage2_block1']['se'])
  assert p['reduce']['kernel'].shape == (1, 1, 32, 8)  # C / r
  u = unit['bn2']['__call__'][0]
  squeeze = np.maximum(u.mean(axis=(1, 2)) @ p['reduce']['kernel'][0, 0] + p['reduce']['bias'], 0)
  gate = 1 / (1 + np.exp(-(squeeze @ p['expand']['kernel'][0, 0] + p['expand']['bias'])))
  se_out = u * gate[:, None, None, :]
  np.testing.assert_allclose(unit['se']['__call__'][0], se_out, rtol=1e-5, atol=1e-6)
  want = np.maximum(se_out + unit['shortcut_bn']['__call__'][0], 0)
  np.testing.assert_allclose(unit['__call__'][0], want, rtol=1e-5, atol=1e-6)


# papers.md §17: the official SE-ResNets keep Caffe's stride on the first 1x1; SE-ResNeXt and
# SENet-154 stride in the 3x3. Output sizes of each conv at a 64x64 input (stage 2 runs at 8).
@pytest.mark.parametrize('name, sizes', [
    ('seresnet50', dict(conv1=8, conv2=8, conv3=8, shortcut_conv=8)),
    ('seresnet101', dict(conv1=8, conv2=8, conv3=8, shortcut_conv=8)),
    ('seresnext50_32x4d', dict(conv1=16, conv2=8, conv3=8, shortcut_conv=8)),
    ('senet154', dict(conv1=16, conv2=8, conv3=8, shortcut_conv=8)),
])
def test_stride_placement_of_the_official_models(name, sizes):
  model = models.create_model(name)
  x = jnp.zeros((1, 64, 64, 3))

  def run():
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
    return state['intermediates']['stage2_block1']

  shapes = jax.eval_shape(run)
  assert {k: v['__call__'][0].shape[1] for k, v in shapes.items() if 'conv' in k} == sizes


def test_senet154_specifics():
  v = _abstract('senet154', resolution=64)
  assert [v['params'][f'stem_conv{i}']['kernel'].shape for i in (1, 2, 3)] == [
      (3, 3, 3, 64), (3, 3, 64, 64), (3, 3, 64, 128)]
  # The halved first 1x1 (128 of the 3x3's 256) feeds 64 groups of 2 channels; stage 1's
  # projection stays 1x1, the strided ones are 3x3.
  assert _kernels(v, 'stage1_block1') == {
      'conv1': (1, 1, 128, 128), 'conv2': (3, 3, 2, 256), 'conv3': (1, 1, 256, 256),
      'shortcut_conv': (1, 1, 128, 256)}
  assert _kernels(v, 'stage2_block1')['shortcut_conv'] == (3, 3, 256, 512)
  assert models.create_model('senet154').dropout_rate == 0.2


def test_dropout_sits_between_the_pool_and_the_classifier():
  # SENet-154's dropout (a switch of every residual model): in training two dropout draws give
  # the same pooled features but different logits; in evaluation it is off.
  model = models.create_model('resnet20', depth=8, dropout_rate=0.2)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)

  @jax.jit
  def train_apply(rng):
    return model.apply(variables, x, train=True, rngs={'dropout': rng},
                       mutable=['batch_stats', 'intermediates'])

  (logits_a, state_a), (logits_b, state_b) = train_apply(jax.random.key(2)), train_apply(
      jax.random.key(3))
  np.testing.assert_array_equal(state_a['intermediates']['features'][0],
                                state_b['intermediates']['features'][0])
  assert not np.allclose(logits_a, logits_b)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
