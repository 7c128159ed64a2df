"""Where images come from: TFDS by name, MNIST-format IDX files, image folders, or random data.

Every source returns `Split`s. A split is either held in memory as uint8 arrays (small
datasets: the data order is then an exact function of (seed, epoch) and resuming costs
nothing) or streamed from TFDS records (ImageNet-sized data), each host reading its own shard.
"""

from __future__ import annotations

import dataclasses
import difflib
import gzip
import logging
import os
import struct
from typing import Any, Callable

import numpy as np

# Debian's `dataset-fashion-mnist` package installs the official files here.
DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
LOCAL_COPIES = {'fashion_mnist': DEBIAN_FASHION_MNIST}
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
IN_MEMORY_LIMIT_BYTES = 2 << 30
SOURCES = ('tfds', 'idx', 'folder', 'synthetic')


class DataError(RuntimeError):
  """A dataset is missing or malformed; the message says how to get or fix it."""


@dataclasses.dataclass
class Split:
  """One split of a dataset, in memory (`images`, `labels`) or as a stream (`stream`)."""
  name: str
  num_examples: int
  num_classes: int
  image_shape: tuple[int | None, int | None, int] | None  # None dims: variable size
  images: np.ndarray | None = None   # uint8 [N, H, W, C]
  labels: np.ndarray | None = None   # int32 [N]
  # stream(shard_index, num_shards) -> tf.data.Dataset of {'image': encoded bytes, 'label'}.
  stream: Callable[[int, int], Any] | None = None
  decode: Callable[[Any], Any] | None = None  # encoded image -> uint8 HWC tensor
  shard_sizes: Callable[[int], list[int]] | None = None  # num_shards -> examples per shard

  @property
  def in_memory(self) -> bool:
    return self.images is not None


# ---- IDX (MNIST-format) files -----------------------------------------------------------

def _open_idx(directory: str, stem: str):
  for name in (stem, stem + '.gz'):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path, (gzip.open(path, 'rb') if name.endswith('.gz') else open(path, 'rb'))
  raise DataError(
      f'Missing {stem}[.gz] in {directory!r}. An IDX directory must hold '
      f'{", ".join(f for pair in IDX_FILES.values() for f in pair)} (each optionally .gz). '
      f'For Fashion-MNIST on Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` '
      f'(installs them under {DEBIAN_FASHION_MNIST}); or download them from '
      'https://github.com/zalandoresearch/fashion-mnist.')


def read_idx(directory: str, stem: str) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into an array of its declared shape."""
  path, f = _open_idx(directory, stem)
  with f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise DataError(f'{path} is not an unsigned-byte IDX file (bad magic number).')
  ndim = data[3]
  dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
  payload = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if payload.size != int(np.prod(dims)):
    raise DataError(f'{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds '
                    f'{payload.size} bytes; the file is truncated or corrupt.')
  return payload.reshape(dims)


def idx_split(directory: str, split: str) -> Split:
  if split not in IDX_FILES:
    raise DataError(f'IDX directories have the splits {sorted(IDX_FILES)}, not {split!r}.')
  if not directory:
    raise DataError("data.source='idx' needs data.path, the directory of the IDX files "
                    f'(e.g. {DEBIAN_FASHION_MNIST}).')
  images_stem, labels_stem = IDX_FILES[split]
  images, labels = read_idx(directory, images_stem), read_idx(directory, labels_stem)
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise DataError(f'{directory}: expected images [N, H, W] and labels [N], got '
                    f'{images.shape} and {labels.shape}.')
  return Split(split, len(labels), int(labels.max()) + 1, images.shape[1:] + (1,),
               images[..., None], labels.astype(np.int32))


# ---- Synthetic ----------------------------------------------------------------------------

def synthetic_split(split: str, shape: tuple[int, int, int], num_classes: int, size: int,
                    seed: int) -> Split:
  """Random uint8 images with random labels (a different stream per split)."""
  rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
  images = rng.integers(0, 256, (size,) + tuple(shape), dtype=np.uint8)
  labels = rng.integers(0, num_classes, size, dtype=np.int32)
  return Split(split, size, num_classes, tuple(shape), images, labels)


# ---- TFDS -----------------------------------------------------------------------------------

def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (heavy)
  return tfds


def _local_fashion_mnist_builder(data_dir: str | None, files_dir: str):
  """TFDS's fashion_mnist builder reading the four local files instead of downloading."""
  tfds = _tfds()

  class FashionMNISTLocal(tfds.image_classification.FashionMNIST, skip_registration=True):
    name = 'fashion_mnist'

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples('train'), 'test': self._generate_examples('test')}

    def _generate_examples(self, split):  # pylint: disable=arguments-differ
      data = idx_split(files_dir, split)
      for i in range(data.num_examples):
        yield i, {'image': data.images[i], 'label': int(data.labels[i])}

  return FashionMNISTLocal(data_dir=data_dir)


def tfds_builder(name: str, data_dir: str | None, download: bool):
  """A prepared TFDS builder for `name`; prepares it from local files or by download."""
  tfds = _tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=5, cutoff=0.6)
    hint = f' Close names: {", ".join(close)}.' if close else ''
    raise DataError(f'TFDS has no dataset {name!r}.{hint} See tfds.list_builders().') from None
  if builder.is_prepared():
    return builder
  local = LOCAL_COPIES.get(name.split(':')[0])
  if local and all(os.path.exists(os.path.join(local, f + '.gz')) or
                   os.path.exists(os.path.join(local, f))
                   for pair in IDX_FILES.values() for f in pair):
    logging.info('Preparing TFDS %s from the local files in %s (no network).', name, local)
    builder = _local_fashion_mnist_builder(data_dir, local)
    builder.download_and_prepare()
    return builder
  where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
  if name.startswith('imagenet2012'):
    how = ('ImageNet needs a manual download: put ILSVRC2012_img_train.tar and '
           f'ILSVRC2012_img_val.tar in {where}/downloads/manual/ and run '
           f'`tfds build imagenet2012 --data_dir={where}`.')
  elif download:
    how = ''
  else:
    how = (f'Prepare it with `tfds build {name} --data_dir={where}` on a machine with network '
           'access, or set config.data.download=True.')
    if name.split(':')[0] == 'fashion_mnist':
      how += (' Offline on Debian: `sudo apt-get install dataset-fashion-mnist` '
              "provides local files (or use data.source='idx').")
  if how:
    raise DataError(f'TFDS dataset {name!r} is not prepared in {where}. {how}')
  logging.info('Downloading and preparing TFDS %s into %s.', name, where)
  try:
    builder.download_and_prepare()
  except Exception as e:  # network errors come in many types
    raise DataError(f'Could not download TFDS {name!r} into {where}: {e}. Without network, '
                    f'prepare it elsewhere (`tfds build {name}`) and copy {where}.') from e
  return builder


def _split_size(builder, split: str) -> int:
  tfds = _tfds()
  try:
    return builder.info.splits[split].num_examples
  except KeyError:
    raise DataError(f'{builder.name} has no split {split!r}; it has '
                    f'{sorted(builder.info.splits)}.') from None


def _builder_split(builder, split: str, in_memory: str, subsplits: bool = True) -> Split:
  """A split of a TFDS builder; `subsplits` False: shard by ds.shard (ImageFolder has none)."""
  tfds = _tfds()
  features = builder.info.features
  num_classes = features['label'].num_classes
  shape = tuple(features['image'].shape)
  n = _split_size(builder, split)
  size_bytes = n * int(np.prod([d or 256 for d in shape]))
  load = in_memory == 'yes' or (in_memory == 'auto' and None not in shape and
                                size_bytes < IN_MEMORY_LIMIT_BYTES)
  if load:
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    return Split(split, n, num_classes, shape, np.asarray(data['image'], np.uint8),
                 np.asarray(data['label'], np.int32))

  decoders = {'image': tfds.decode.SkipDecoding()}

  def stream(shard_index: int, num_shards: int):
    if not subsplits:
      ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
      return ds.shard(num_shards, shard_index)
    sub = tfds.even_splits(split, n=num_shards, drop_remainder=False)[shard_index]
    return builder.as_dataset(split=sub, shuffle_files=False, decoders=decoders)

  def shard_sizes(num_shards: int) -> list[int]:
    if not subsplits:
      return [len(range(i, n, num_shards)) for i in range(num_shards)]
    return [_split_size(builder, s) for s in tfds.even_splits(split, n=num_shards,
                                                              drop_remainder=False)]

  return Split(split, n, num_classes, shape, stream=stream, shard_sizes=shard_sizes,
               decode=lambda encoded: features['image'].decode_example(encoded))


def tfds_split(name: str, split: str, data_dir: str, download: bool, in_memory: str) -> Split:
  return _builder_split(tfds_builder(name, data_dir or None, download), split, in_memory)


def folder_split(path: str, split: str, in_memory: str) -> Split:
  """Class-per-subfolder images: PATH/<split>/<class>/*.{png,jpg} (TFDS ImageFolder)."""
  if not path or not os.path.isdir(os.path.join(path, split)):
    raise DataError(f"data.source='folder' needs data.path with a subdirectory per split, "
                    f'e.g. {path or "DIR"}/{split}/<class name>/<image>.png; '
                    f'{os.path.join(path, split)!r} does not exist.')
  builder = _tfds().folder_dataset.ImageFolder(path)
  return _builder_split(builder, split, in_memory, subsplits=False)


def load_split(data_config, split: str, seed: int) -> Split:
  """The split `split` of the dataset that `data_config` (config.data) names."""
  source = data_config.source
  if source == 'tfds':
    return tfds_split(data_config.name, split, data_config.tfds_dir, data_config.download,
                      data_config.in_memory)
  if source == 'idx':
    return idx_split(data_config.path, split)
  if source == 'folder':
    return folder_split(data_config.path, split, data_config.in_memory)
  if source == 'synthetic':
    size = (data_config.synthetic_train_size if split == data_config.train_split
            else data_config.synthetic_eval_size)
    return synthetic_split(split, tuple(data_config.synthetic_shape),
                           data_config.synthetic_classes, size, seed)
  raise DataError(f'Unknown config.data.source {source!r}; choose one of {", ".join(SOURCES)}.')
