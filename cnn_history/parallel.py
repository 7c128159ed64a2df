"""The device mesh, shardings, and global batches assembled from per-host data.

Data parallelism on a 1-D mesh ('data',): the batch is sharded on its leading axis,
parameters are replicated, and one `jax.jit` step runs on 1 CPU, 8 GPUs or a multi-host
TPU pod alike. (No pmap: it is in maintenance mode in JAX.)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(num_devices: int = -1) -> Mesh:
  """A ('data',) mesh over all devices, or over the first `num_devices` of a single process."""
  devices = jax.devices()
  if num_devices > 0:
    if num_devices > len(devices):
      raise ValueError(f'config.num_devices={num_devices}, but only {len(devices)} devices exist.')
    if num_devices < len(devices) and jax.process_count() > 1:
      raise ValueError('config.num_devices must be -1 (all devices) in a multi-process run.')
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


FSDP_MIN_SIZE = 2 ** 14  # arrays smaller than this stay replicated under FSDP (biases, BN)


def fsdp_spec(shape: tuple[int, ...], mesh: Mesh) -> P:
  """Shards the largest axis divisible by the device count over 'data' (ZeRO-3 / FSDP style);
  small or indivisible arrays stay replicated."""
  if math.prod(shape) < FSDP_MIN_SIZE:
    return P()
  candidates = [i for i, d in enumerate(shape) if d % mesh.size == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: shape[i])
  return P(*[('data' if i == axis else None) for i in range(len(shape))])


def state_sharding(abstract_state: Any, mesh: Mesh, mode: str) -> Any:
  """Shardings of the train state: 'replicated' (data parallel) or 'fsdp' (parameters,
  optimizer state and weight averages sharded over 'data'; XLA all-gathers a layer's weights
  where it is used and reduce-scatters its gradients)."""
  if mode == 'replicated':
    return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)
  if mode != 'fsdp':
    raise ValueError(f"config.sharding={mode!r} is not valid; choose 'replicated' or 'fsdp'.")
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, mesh)),
                                abstract_state)


def bytes_per_device(tree: Any) -> dict[Any, int]:
  """Bytes of `tree`'s arrays held by each device."""
  out: dict[Any, int] = {}
  for x in jax.tree_util.tree_leaves(tree):
    for shard in x.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out


def check_divisible(global_batch: int, mesh: Mesh, field: str) -> None:
  """A global batch must split evenly over the devices of the mesh."""
  if global_batch % mesh.size:
    lower = global_batch - global_batch % mesh.size
    raise ValueError(
        f'config.{field}={global_batch} is not divisible by the {mesh.size} devices of the mesh; '
        f'use a multiple of {mesh.size} (e.g. {lower or mesh.size} or {lower + mesh.size}).')


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Joins every process's host-local batch into global arrays sharded over 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def to_host(tree: Any) -> Any:
  """Numpy copies of (possibly multi-host) arrays: replicated ones read locally, others gathered."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def fetch(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    if x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree_util.tree_map(fetch, tree)
