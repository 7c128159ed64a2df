"""Blocks shared by several papers. One block, one place."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """Batch normalisation (Ioffe & Szegedy 2015) whose statistics span `batch_span` examples.

  Under `jax.jit` with a batch sharded over devices, a plain batch mean is a mean over the
  *global* batch (synchronised BN). The papers computed statistics per GPU (ResNet and
  BN-Inception: 32 examples). `batch_span` reproduces that on any device count: the batch is
  cut into consecutive groups of `batch_span` examples ("ghost batches"), each normalised with
  its own mean and variance. With the batch sharded on the leading axis and `batch_span`
  dividing the per-device batch, each group lives on one device and costs no communication.

  Running statistics follow the TF/Flax convention
  `running = momentum * running + (1 - momentum) * batch_statistic` (PyTorch momentum m is
  1 - m here), averaged over the groups; the stored variance is the biased one.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  batch_span: int | None = None   # None: statistics over the whole global batch
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Any = nn.initializers.ones
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if train:
      n = x.shape[0]
      span = self.batch_span or n
      if n % span:
        raise ValueError(f'BatchNorm batch_span={span} does not divide the batch of {n} examples; '
                         'choose a span that divides the per-device batch.')
      groups = x32.reshape((n // span, span) + x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = groups.mean(axes, keepdims=True)
      var = jnp.square(groups - mean).mean(axes, keepdims=True)
      y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        batch_mean = mean.reshape(-1, features).mean(0)
        batch_var = var.reshape(-1, features).mean(0)
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * batch_mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * batch_var
    else:
      y = (x32 - running_mean.value) * jax.lax.rsqrt(running_var.value + self.epsilon)
    if self.use_scale:
      y = y * self.param('scale', self.scale_init, (features,), jnp.float32)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    return y.astype(self.dtype)


def pool_2x2(x: jax.Array, reduce: str) -> jax.Array:
  """Non-overlapping 2x2 pooling ('max', 'avg' or 'sum') on NHWC, written as reshape + reduce.

  Same function as `nn.max_pool(x, (2, 2), (2, 2))` for even H, W, but XLA's CPU gradient of
  the reshape form is about twice as fast as that of reduce_window (measured for LeNet-5).
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'pool_2x2 needs even spatial dimensions, got {h}x{w}.')
  blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
  if reduce == 'max':
    return blocks.max(axis=(2, 4))
  if reduce == 'avg':
    return blocks.mean(axis=(2, 4))
  if reduce == 'sum':
    return blocks.sum(axis=(2, 4))
  raise ValueError(f"pool_2x2: unknown reduce {reduce!r}; use 'max', 'avg' or 'sum'.")
