"""tf.data input pipelines: per-host shards of deterministic global batches.

Training order is a pure function of (seed, epoch): for in-memory splits the global batch of
step s holds the examples perm(seed, epoch)[b*G:(b+1)*G] (b = s mod steps_per_epoch), and
process p of P reads its contiguous 1/P of it. One process or many, the global batch is the
same, and a run resumed at step s continues exactly where it stopped.

Evaluation visits every example exactly once: the last global batch is padded, and a `mask`
marks the real examples.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from cnn_history.data import augment
from cnn_history.data.sources import DataError, Split


def hide_accelerators_from_tensorflow() -> None:
  """TF must not take GPU/TPU memory that JAX needs: it only runs the input pipeline."""
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device type
      pass


@dataclasses.dataclass(frozen=True)
class HostSlice:
  """Which part of each global batch this process reads."""
  process_index: int
  process_count: int

  def local(self, global_batch: int, what: str = 'batch_size') -> int:
    if global_batch % self.process_count:
      raise ValueError(f'config.{what}={global_batch} is not divisible by the '
                       f'{self.process_count} processes.')
    return global_batch // self.process_count


def _as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  for batch in ds.as_numpy_iterator():
    yield batch


def _seed(seed: int, position: tf.Tensor) -> tf.Tensor:
  return tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The training order of `epoch`: a permutation that depends only on (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_batches(split: Split, preprocess: str | Sequence[str], global_batch: int, seed: int,
                  start_step: int, host: HostSlice, prefetch: int = 2,
                  shuffle_buffer: int = 50_000) -> Iterator[dict[str, np.ndarray]]:
  """Endless host-local training batches {'image', 'label'} from step `start_step` on.

  `preprocess`: the ops, or several op strings taken in turn by epoch (epoch e uses
  preprocess[e % len(preprocess)]; SPP-net's multi-size training). The examples of a step and
  their augmentation seeds do not depend on which ops an epoch uses.
  """
  cycle = [preprocess] if isinstance(preprocess, str) else list(preprocess)
  if not cycle:
    raise ValueError('train_batches needs at least one preprocessing string.')
  host.local(global_batch)
  steps_per_epoch = split.num_examples // global_batch
  if steps_per_epoch == 0:
    raise DataError(f'The {split.name} split has {split.num_examples} examples, fewer than one '
                    f'global batch of {global_batch}; lower config.batch_size.')
  pipelines = [augment.parse(ops) for ops in cycle]  # (bad ops fail here, not at first use)
  if split.in_memory and all(p.deterministic for p in pipelines) and (
      sum(_preprocessed_bytes(split, ops) for ops in cycle) <= PRECOMPUTE_LIMIT_BYTES):
    return _precomputed_batches(split, pipelines, global_batch, seed, start_step, host)
  if len(pipelines) == 1:
    return _as_numpy(_train_dataset(split, pipelines[0], global_batch, seed, start_step, 2**62,
                                    host, shuffle_buffer).prefetch(prefetch))

  def by_epoch():
    for epoch in range(start_step // steps_per_epoch, 2**62):  # one dataset per epoch
      first = max(start_step, epoch * steps_per_epoch)
      ds = _train_dataset(split, pipelines[epoch % len(pipelines)], global_batch, seed, first,
                          (epoch + 1) * steps_per_epoch, host, shuffle_buffer)
      yield from _as_numpy(ds.prefetch(prefetch))

  return by_epoch()


# A seed-free preprocessing of an in-memory split is applied once to the whole split, up to
# this size; each batch is then a gather in numpy, with no tf.data thread to wait for (LeNet-5's
# small steps on 2 cores: results/benchmarks/README.md, section 3).
PRECOMPUTE_LIMIT_BYTES = 2 << 30


def _preprocessed_bytes(split: Split, preprocess: str) -> int:
  shape = augment.output_shape(augment.parse(preprocess), split.image_shape)
  if any(d is None for d in shape):
    return 2**62
  return split.num_examples * int(np.prod(shape)) * 4


def _preprocess_all(split: Split, pipeline, chunk: int = 4096) -> np.ndarray:
  """pipeline applied to every image of an in-memory split (seed-free ops: no seed needed),
  in the same vectorised form as a batch of the tf.data path: the same images."""
  unused_seed = _seed(0, 0)
  fn = tf.function(lambda images: tf.vectorized_map(lambda image: pipeline(image, unused_seed),
                                                    images, fallback_to_while_loop=True))
  return np.concatenate([fn(tf.constant(split.images[i:i + chunk])).numpy()
                         for i in range(0, split.num_examples, chunk)])


def _precomputed_batches(split: Split, pipelines, global_batch: int, seed: int,
                         start_step: int, host: HostSlice) -> Iterator[dict[str, np.ndarray]]:
  """The in-memory path's batches (same order, same images) from preprocessed copies of the
  split: epoch e reads copy e % len(pipelines)."""
  local = host.local(global_batch)
  steps_per_epoch = split.num_examples // global_batch
  offset = host.process_index * local
  copies = [_preprocess_all(split, p) for p in pipelines]
  labels = np.asarray(split.labels)
  epoch = None
  for step in range(start_step, 2**62):
    e, b = divmod(step, steps_per_epoch)
    if e != epoch:
      epoch, perm = e, epoch_permutation(seed, e, split.num_examples)
    idx = perm[b * global_batch + offset:b * global_batch + offset + local]
    yield {'image': copies[e % len(copies)][idx], 'label': labels[idx]}


def _train_dataset(split: Split, pipeline, global_batch: int, seed: int, start_step: int,
                   end_step: int, host: HostSlice, shuffle_buffer: int) -> tf.data.Dataset:
  """The host-local batches of steps [start_step, end_step) (end_step on an epoch boundary, or
  2**62: endless)."""
  local = host.local(global_batch)
  steps_per_epoch = split.num_examples // global_batch
  offset = host.process_index * local

  if split.in_memory:
    images, labels = tf.constant(split.images), tf.constant(split.labels)

    def index_batches():
      epoch = None
      for step in range(start_step, end_step):
        e, b = divmod(step, steps_per_epoch)
        if e != epoch:
          epoch, perm = e, epoch_permutation(seed, e, split.num_examples)
        start = b * global_batch + offset
        yield perm[start:start + local], step * global_batch + offset

    ds = tf.data.Dataset.from_generator(index_batches, output_signature=(
        tf.TensorSpec([local], tf.int64), tf.TensorSpec([], tf.int64)))
    if pipeline.deterministic:  # no seeds needed: the whole batch in one vectorised call
      unused_seed = _seed(seed, 0)
      return ds.map(lambda idx, first: {
          'image': tf.vectorized_map(lambda image: pipeline(image, unused_seed),
                                     tf.gather(images, idx), fallback_to_while_loop=True),
          'label': tf.gather(labels, idx)}, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    ds = ds.map(lambda idx, first: (idx, first + tf.range(local, dtype=tf.int64))).unbatch()
    ds = ds.map(lambda i, pos: {'image': pipeline(tf.gather(images, i), _seed(seed, pos)),
                                'label': tf.gather(labels, i)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    start_epoch, skip = divmod(start_step, steps_per_epoch)
    end_epoch = -(-end_step // steps_per_epoch)
    per_epoch = steps_per_epoch * local

    shard = split.stream(host.process_index, host.process_count)

    def epoch_dataset(epoch):
      ds = shard.shuffle(shuffle_buffer, seed=seed * 1_000_003 + epoch,
                      reshuffle_each_iteration=False)
      ds = ds.take(per_epoch).enumerate(epoch * per_epoch)
      return ds.skip(tf.where(epoch == start_epoch, tf.constant(skip * local, tf.int64),
                              tf.constant(0, tf.int64)))

    ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(epoch_dataset)
    # Positions are distinct across hosts, so that no two examples share an augmentation seed.
    ds = ds.map(lambda pos, ex: {
        'image': pipeline(split.decode(ex['image']),
                          _seed(seed, pos * host.process_count + host.process_index)),
        'label': tf.cast(ex['label'], tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True)


def eval_batches(split: Split, preprocess: str, global_batch: int, seed: int,
                 host: HostSlice, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Host-local evaluation batches {'image', 'label', 'mask'}: every example exactly once."""
  local = host.local(global_batch, 'eval_batch_size')
  views = augment.Views(preprocess)
  if split.in_memory:
    images, labels = tf.constant(split.images), tf.constant(split.labels)
    n = split.num_examples
    num_batches = math.ceil(n / global_batch)
    positions = (np.arange(num_batches)[:, None] * global_batch + host.process_index * local
                 + np.arange(local)[None, :]).reshape(-1)
    ds = tf.data.Dataset.from_tensor_slices(positions)

    def example(pos):
      i = tf.minimum(pos, n - 1)
      return {**views(tf.gather(images, i), _seed(seed, pos)),
              'label': tf.gather(labels, i), 'mask': tf.cast(pos < n, tf.float32)}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    sizes = split.shard_sizes(host.process_count)
    if min(sizes) == 0:
      raise DataError(f'The {split.name} split is too small to give every process an example.')
    num_batches = math.ceil(max(sizes) / local)
    ds = split.stream(host.process_index, host.process_count).enumerate()
    ds = ds.map(lambda pos, ex: {**views(split.decode(ex['image']), _seed(seed, pos)),
                                 'label': tf.cast(ex['label'], tf.int32),
                                 'mask': tf.constant(1.0)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = num_batches * local - sizes[host.process_index]
    ds = ds.concatenate(ds.take(1).map(lambda ex: {**ex, 'mask': tf.constant(0.0)}).repeat(padding))
  ds = ds.batch(local, drop_remainder=True).prefetch(prefetch)
  return _as_numpy(ds)


def output_image_shape(split: Split, preprocess: str) -> tuple[Any, ...]:
  """The shape of one preprocessed image of `split` (None where it varies); for an evaluation
  protocol with views, the shape of one view of its first branch."""
  first = preprocess.split(' + ')[0]
  shape = augment.output_shape(augment.parse(first), split.image_shape)
  return shape[-3:]
