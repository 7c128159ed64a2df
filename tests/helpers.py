"""Small configs for tests: synthetic data, LeNet-5 variants, a few steps."""

from __future__ import annotations

from cnn_history import config as config_lib


def tiny_config(variant: str = 'modern_bn', **fields):
  """A LeNet-5 run on synthetic 32x32x1 data that takes seconds.

  variant 'modern_bn': ReLU/max-pool/softmax with BatchNorm (exercises batch_stats);
  'paper': the 1998 network with SDLM and online updates.
  """
  c = config_lib.default_config()
  c.data.source = 'synthetic'
  c.data.synthetic_shape = (32, 32, 1)
  c.data.synthetic_classes = 10
  c.data.synthetic_train_size = 256
  c.data.synthetic_eval_size = 100
  c.data.train_preprocess = 'scale(-0.1, 1.175)'
  c.data.eval_preprocess = 'scale(-0.1, 1.175)'
  c.batch_size = 32
  c.eval_batch_size = 24
  c.num_epochs = 1
  c.log_every_steps = 2
  c.checkpoint_every_steps = 4
  c.progress_bar = False
  if variant == 'modern_bn':
    config_lib.set_model(c, 'lenet5', activation='relu', pooling='max', c3_table=False,
                         head='dense', initializer='default', batch_norm=True)
    c.loss.name = 'softmax_xent'
    c.optimizer.name = 'momentum'
    c.schedule.learning_rate = 0.05
  elif variant == 'paper':
    config_lib.set_model(c, 'lenet5')
    c.loss.name = 'rbf'
    c.optimizer.name = 'sdlm'
    c.optimizer.sdlm_samples = 40
    c.schedule.learning_rate = 5e-4
    c.examples_per_update = 1
  else:
    raise ValueError(variant)
  for key, value in fields.items():
    target = c
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    target[last] = value
  return c


def random_variables(abstract, seed: int = 0):
  """Random variables of the given abstract tree, made on the host (no initialiser to compile):
  kernels ~ N(0, 1/fan_in), biases 0, BN scale 1 / mean 0 / var 1, anything else N(0, 0.1)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def make(path, leaf):
    name = getattr(path[-1], 'key', str(path[-1]))
    shape, dtype = leaf.shape, leaf.dtype
    if name in ('var', 'scale', 'coefficient'):
      return np.ones(shape, dtype)
    if name in ('mean', 'bias'):
      return np.zeros(shape, dtype)
    if name == 'kernel' and len(shape) >= 2:
      fan_in = int(np.prod(shape[:-1]))
      return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)
    return (0.1 * rng.standard_normal(shape)).astype(dtype)

  return jax.tree_util.tree_map_with_path(make, abstract)
