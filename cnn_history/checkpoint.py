"""Checkpoints with orbax: async saves, automatic resume, preemption, corrupt-file fallback.

A checkpoint holds the TrainState and a small JSON record (model, parameter shapes, epoch).
On start the newest checkpoint is restored against the abstract state (with its shardings);
one that cannot be read is moved aside to `corrupt-<step>` (never deleted) and the previous
one is used, with a warning. A checkpoint of another network is an error, never a silent
fresh start.

Imported weights (`python -m cnn_history.convert`) are written in the same layout with record
contents=WEIGHTS_ONLY: their state has params and batch_stats but no optimizer state, so they
are restored (`restore_latest`, `read_weights`) by those two collections only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

# Replica-parallel writes make the first save of a multi-device run slow (stack-notes.md).
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


WEIGHTS_ONLY = 'weights'  # record['contents'] of a checkpoint without optimizer state


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message says why and what to do."""


def as_path(path: str | os.PathLike) -> epath.Path:
  """A local (made absolute) or remote (gs://...) path."""
  path = str(path)
  return epath.Path(path if '://' in path else os.path.abspath(path))


def fingerprint(tree: Any) -> str:
  """A short hash of the tree structure, shapes and dtypes (not the values)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  desc = ';'.join(f'{jax.tree_util.keystr(p)}:{tuple(x.shape)}:{x.dtype}' for p, x in leaves)
  return hashlib.sha256(desc.encode()).hexdigest()[:16]


class Checkpoints:
  """Saves and restores the train state under `directory` (keeps the newest `keep`)."""

  def __init__(self, directory: str, keep: int, identity: dict[str, Any]):
    self.directory = as_path(directory)
    self.identity = identity  # what must match to resume: model name, parameter fingerprint
    self._keep = keep
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, record: dict[str, Any], force: bool = False) -> None:
    """Starts an async save of `state` at `step` (returns before the bytes are written)."""
    record = {**record, **self.identity, 'step': int(step), 'time': time.time()}
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def read_record(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
    return restored.record

  def _check_identity(self, step: int, record: dict[str, Any]) -> None:
    for key, want in self.identity.items():
      have = record.get(key)
      if have != want:
        raise CheckpointError(
            f'The checkpoint at step {step} in {self.directory} is incompatible with this run: '
            f'its {key} is {have!r}, this run has {want!r}. Resume with the config that wrote '
            'it, or start this run in a new --workdir (the checkpoint is left untouched).')

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
    """The newest readable checkpoint as (state, record), or None when there is none.

    A weights-only checkpoint (record['contents'] == WEIGHTS_ONLY) comes back as the dict
    {'params': ..., 'batch_stats': ...} instead of a state: the caller completes it.
    """
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        record = self.read_record(step)
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
        self._quarantine(step, e)
        continue
      self._check_identity(step, record)
      if record.get('contents') == WEIGHTS_ONLY:
        target = {'params': abstract_state.params, 'batch_stats': abstract_state.batch_stats}
        return _restore_partial(self.directory / str(step) / 'state', target), record
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # pylint: disable=broad-except
        self._quarantine(step, e)
        continue
      return restored.state, record
    if steps:
      raise CheckpointError(f'None of the checkpoints {steps} in {self.directory} could be read '
                            '(each was moved aside to corrupt-<step>); start a new --workdir.')
    return None

  def _quarantine(self, step: int, error: Exception) -> None:
    """Moves an unreadable checkpoint aside (kept for inspection) so that it is not reused."""
    src = self.directory / str(step)
    dst = self.directory / f'corrupt-{step}-{int(time.time())}'
    logging.warning('Checkpoint at step %d in %s cannot be read (%s: %s); moving it to %s and '
                    'falling back to the previous checkpoint.', step, self.directory,
                    type(error).__name__, str(error).splitlines()[0][:300], dst)
    if jax.process_index() == 0 and src.exists():
      src.rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'quarantine-{step}')
    self._manager.close()
    self._manager = self._open()


def latest_step(directory: str | epath.Path) -> int:
  """The newest step saved under `directory` (an error when there is none)."""
  directory = as_path(directory)
  steps = [int(d.name) for d in directory.iterdir() if d.name.isdigit()] \
      if directory.is_dir() else []
  if not steps:
    raise CheckpointError(f'No checkpoint in {directory}.')
  return max(steps)


def read_record(directory: str | epath.Path, step: int) -> dict[str, Any]:
  """The JSON record saved beside the state at `step`."""
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    return checkpointer.restore(as_path(directory) / str(step) / 'record')


def _restore_partial(path: epath.Path, target: dict[str, Any]) -> dict[str, Any]:
  """The top-level entries `target` names (ShapeDtypeStructs with shardings) of the state
  saved at `path`, without reading the others (the optimizer state)."""
  target = {k: v for k, v in target.items() if jax.tree_util.tree_leaves(v)}
  if not target:
    return {}
  with ocp.PyTreeCheckpointer() as checkpointer:
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  return dict(restored)


def read_weights(directory: str | epath.Path,
                 sharding_for: Callable[[str, str, tuple[int, ...]], jax.sharding.Sharding],
                 step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """(record, {'params': ..., 'batch_stats': ...}) of the newest (or `step`) checkpoint under
  `directory`, at the shapes it holds, each leaf placed on `sharding_for(collection, path,
  shape)` (path: the leaf's keys joined by '/'). Any checkpoint, weights-only or a full run."""
  directory = as_path(directory)
  step = latest_step(directory) if step is None else step
  record = read_record(directory, step)
  path = directory / str(step) / 'state'
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata
  target = {}
  for collection in ('params', 'batch_stats'):
    target[collection] = jax.tree_util.tree_map_with_path(
        lambda p, m, c=collection: jax.ShapeDtypeStruct(
            m.shape, m.dtype, sharding=sharding_for(c, _slash_path(p), tuple(m.shape))),
        dict(metadata.get(collection) or {}))
  restored = _restore_partial(path, target)
  return record, {c: restored.get(c, {}) for c in ('params', 'batch_stats')}


def _slash_path(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def restore_arrays(directory: str, step: int | None = None) -> tuple[int, Any]:
  """A checkpointed state as arrays on this process's first device, whatever the topology
  that wrote it (for tools and tests: evaluation, visualisation, comparisons)."""
  directory = as_path(directory)
  step = latest_step(directory) if step is None else step
  path = directory / str(step) / 'state'
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    return step, checkpointer.restore(path, target)


class PreemptionWatch:
  """Turns SIGTERM into a request to checkpoint and stop at the next step boundary.

  With several processes, all of them must stop at the same step: JAX's preemption sync
  point (set up by jax.distributed) agrees on it; a single process uses its own handler.
  """

  def __init__(self):
    self._requested = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping at the end of this step.')
    self._requested.set()

  def request(self) -> None:
    """Asks the run to stop as if preempted (used by tests)."""
    self._requested.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:  # every process must agree, or the others would hang
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def write_json(path: str | epath.Path, data: dict[str, Any]) -> None:
  """Writes `data` atomically (a crash leaves the old file or the new one, never half)."""
  path = as_path(path)
  tmp = path.parent / (path.name + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + '\n')
  tmp.replace(path)
