"""Data parallelism: the sharded step equals the single-device step; errors for bad batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models, optim, parallel
from cnn_history.steps import make_steps
from tests.helpers import tiny_config


def _build(config, num_devices):
  mesh = parallel.make_mesh(num_devices)
  model = models.create_model(config.model.name, num_classes=10,
                              **config.model.overrides.to_dict())
  schedule = optim.build_schedule(config.schedule, 8, 1, 8)
  tx = optim.build_optimizer(config.optimizer, schedule)
  return mesh, make_steps(model, tx, schedule, config, mesh, (32, 32, 1))


def _batch(seed, n=32):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, 32, 32, 1)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}


@pytest.mark.parametrize('batch_span', [None, 4])
def test_eight_devices_equal_one_device(batch_span):
  assert jax.device_count() == 8
  config = tiny_config(**{'model.overrides.bn_batch_span': batch_span})
  results = []
  for devices in (1, 8):
    mesh, steps = _build(config, devices)
    state = steps.init(jax.random.key(0))
    for i in range(3):
      state, metrics = steps.train(state, parallel.global_batch(_batch(i), mesh))
    assert len(state.params['C1']['kernel'].sharding.device_set) == devices
    results.append(jax.device_get((state.params, state.batch_stats, metrics['loss'])))
  (p1, s1, l1), (p8, s8, l8) = results
  assert s1, 'the model must have BatchNorm statistics for this test to mean anything'
  for a, b in zip(jax.tree_util.tree_leaves((p1, s1)), jax.tree_util.tree_leaves((p8, s8))):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  # The three updates moved the parameters: the comparison is not between two initial states.
  init = jax.device_get(_build(config, 1)[1].init(jax.random.key(0)).params)
  assert np.abs(p1['C1']['kernel'] - init['C1']['kernel']).max() > 1e-3


def test_batch_not_divisible_by_devices_is_an_error():
  mesh = parallel.make_mesh(8)
  with pytest.raises(ValueError, match=r'batch_size=30 is not divisible by the 8 devices.*24 or 32'):
    parallel.check_divisible(30, mesh, 'batch_size')


def test_more_devices_than_exist_is_an_error():
  with pytest.raises(ValueError, match='only 8 devices exist'):
    parallel.make_mesh(9)


def test_global_batch_is_sharded_over_data_axis():
  mesh = parallel.make_mesh(8)
  batch = parallel.global_batch(_batch(0), mesh)
  assert batch['image'].shape == (32, 32, 32, 1)
  shards = batch['image'].addressable_shards
  assert len(shards) == 8 and {s.data.shape[0] for s in shards} == {4}
  np.testing.assert_array_equal(np.asarray(batch['label']), _batch(0)['label'])


def _collectives(steps, state, mesh):
  """Counts of the communication and host-transfer ops in the compiled train step."""
  import collections  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  hlo = steps.train.lower(state, parallel.global_batch(_batch(0), mesh)).compile().as_text()
  return collections.Counter(re.findall(
      r'\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|send|recv|'
      r'infeed|outfeed|custom-call)(?:-start)?\(', hlo))


def _compiled_collectives(config, batch_span=None):
  config.model.overrides.bn_batch_span = batch_span
  mesh, steps = _build(config, 8)
  return _collectives(steps, steps.init(jax.random.key(0)), mesh)


def test_data_parallel_step_communicates_once():
  # LeNet-5 as in 1998 (no BatchNorm): the gradients (and the metric sums) in one all-reduce,
  # nothing else crosses devices and nothing goes to the host.
  config = tiny_config('paper', examples_per_update=0)
  assert _compiled_collectives(config) == {'all-reduce': 1}
  # With BatchNorm statistics over each device's own examples (the papers' per-GPU BN), the
  # same; over the global batch, BN adds its own all-reduces of the batch moments.
  bn = tiny_config('modern_bn')
  assert _compiled_collectives(bn, batch_span=4) == {'all-reduce': 1}
  global_bn = _compiled_collectives(tiny_config('modern_bn'))
  assert set(global_bn) == {'all-reduce'} and global_bn['all-reduce'] > 1


def test_fsdp_shards_the_state_and_equals_the_replicated_run(monkeypatch):
  monkeypatch.setattr(parallel, 'FSDP_MIN_SIZE', 1000)  # LeNet's layers are small
  results, sizes = [], []
  for mode in ('replicated', 'fsdp'):
    config = tiny_config(sharding=mode)
    mesh, steps = _build(config, 8)
    state = steps.init(jax.random.key(0))
    for i in range(3):
      state, _ = steps.train(state, parallel.global_batch(_batch(i), mesh))
    per_device = parallel.bytes_per_device(state.params)
    sizes.append(max(per_device.values()))
    results.append(jax.device_get(state.params))
    if mode == 'fsdp':
      kernel = state.params['C5']['kernel']  # (5, 5, 16, 120): its 120 output maps split 8 ways
      assert kernel.addressable_shards[0].data.shape == (5, 5, 16, 15)
      collectives = set(_collectives(steps, state, mesh))
      assert 'all-gather' in collectives  # weights gathered where they are used
      assert collectives <= {'all-gather', 'all-reduce', 'reduce-scatter'}
  assert sizes[1] < sizes[0] / 5  # ~8x less, bar the small replicated arrays
  for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
