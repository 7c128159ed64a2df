"""Data sources and pipelines: real Fashion-MNIST offline, determinism, exact evaluation coverage."""

import gzip
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from cnn_history.data import augment, pipeline, sources

ONE_HOST = pipeline.HostSlice(0, 1)


@pytest.fixture(scope='module')
def tfds_dir(fashion_mnist_dir, tmp_path_factory):
  """A TFDS data_dir where fashion_mnist was prepared offline from the Debian files."""
  del fashion_mnist_dir
  path = str(tmp_path_factory.mktemp('tfds'))
  sources.tfds_builder('fashion_mnist', path, download=False)
  return path


def test_idx_reads_the_official_fashion_mnist(fashion_mnist_dir):
  train = sources.idx_split(fashion_mnist_dir, 'train')
  test = sources.idx_split(fashion_mnist_dir, 'test')
  assert (train.num_examples, test.num_examples) == (60000, 10000)
  assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
  assert train.num_classes == 10
  # Published statistics of the training images (stack-notes.md): mean 0.2860, std 0.3530.
  pixels = train.images.astype(np.float64) / 255
  assert pixels.mean() == pytest.approx(0.2860, abs=1e-4)
  assert pixels.std() == pytest.approx(0.3530, abs=1e-4)
  assert np.bincount(train.labels).tolist() == [6000] * 10


def test_idx_reads_plain_and_gzipped_files(fashion_mnist_dir, tmp_path):
  for i, (images, labels) in enumerate(sources.IDX_FILES.values()):
    for j, stem in enumerate((images, labels)):
      src = os.path.join(fashion_mnist_dir, stem + '.gz')
      if (i + j) % 2:  # a mix of plain and gzipped files
        with gzip.open(src) as f, open(tmp_path / stem, 'wb') as out:
          out.write(f.read())
      else:
        shutil.copy(src, tmp_path / (stem + '.gz'))
  test = sources.idx_split(str(tmp_path), 'test')
  reference = sources.idx_split(fashion_mnist_dir, 'test')
  np.testing.assert_array_equal(test.images, reference.images)
  np.testing.assert_array_equal(test.labels, reference.labels)


def test_idx_errors_say_how_to_get_the_data(tmp_path):
  with pytest.raises(sources.DataError, match='apt-get install dataset-fashion-mnist'):
    sources.idx_split(str(tmp_path), 'train')
  (tmp_path / 't10k-images-idx3-ubyte').write_bytes(b'\x00\x00\x08\x03' + (2).to_bytes(4, 'big')
                                                    + (28).to_bytes(4, 'big') * 2 + b'\x00' * 10)
  (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(b'\x00\x00\x08\x01' + (2).to_bytes(4, 'big')
                                                    + b'\x01\x02')
  with pytest.raises(sources.DataError, match='truncated or corrupt'):
    sources.idx_split(str(tmp_path), 'test')
  (tmp_path / 't10k-images-idx3-ubyte').write_bytes(b'GIF89a')
  with pytest.raises(sources.DataError, match='bad magic'):
    sources.idx_split(str(tmp_path), 'test')


def test_tfds_fashion_mnist_builds_offline_from_local_files(fashion_mnist_dir, tfds_dir):
  split = sources.tfds_split('fashion_mnist', 'test', tfds_dir, download=False,
                             in_memory='auto')
  reference = sources.idx_split(fashion_mnist_dir, 'test')
  assert split.in_memory and split.num_examples == 10000 and split.num_classes == 10

  def examples(images, labels):  # TFDS stores them in its own order: compare as multisets
    return sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels))

  assert examples(split.images, split.labels) == examples(reference.images, reference.labels)
  # Streamed (as ImageNet would be), the same examples arrive, encoded, in the same order.
  streamed = sources.tfds_split('fashion_mnist', 'test', tfds_dir, download=False,
                                in_memory='no')
  assert not streamed.in_memory and streamed.shard_sizes(3) == [3334, 3333, 3333]
  first = next(iter(streamed.stream(0, 1)))
  np.testing.assert_array_equal(streamed.decode(first['image']), split.images[0])


def test_unknown_sources_and_datasets_are_clear_errors(tmp_path):
  with pytest.raises(sources.DataError, match="no dataset 'fashon_mnist'.*fashion_mnist"):
    sources.tfds_builder('fashon_mnist', str(tmp_path), download=False)
  with pytest.raises(sources.DataError, match='not prepared.*tfds build cifar10'):
    sources.tfds_builder('cifar10', str(tmp_path), download=False)
  with pytest.raises(sources.DataError, match='manual download.*ILSVRC2012_img_train.tar'):
    sources.tfds_builder('imagenet2012', str(tmp_path), download=True)

  class Data:
    source = 'hdf5'
  with pytest.raises(sources.DataError, match="Unknown config.data.source 'hdf5'.*synthetic"):
    sources.load_split(Data, 'train', 0)
  with pytest.raises(sources.DataError, match='subdirectory per split'):
    sources.folder_split(str(tmp_path), 'train', 'auto')


def _synthetic(n=250, shape=(8, 8, 1)):
  return sources.synthetic_split('train', shape, 10, n, seed=3)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_training_order_is_a_function_of_seed_and_epoch():
  split = _synthetic()
  a = _take(pipeline.train_batches(split, '', 50, 7, 0, ONE_HOST), 10)  # 2 epochs of 5
  b = _take(pipeline.train_batches(split, '', 50, 7, 0, ONE_HOST), 10)
  c = _take(pipeline.train_batches(split, '', 50, 8, 0, ONE_HOST), 10)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert not np.array_equal(a[0]['image'], c[0]['image'])
  # Each epoch is a permutation: 5 batches of 50 cover all 250 examples once.
  for epoch in range(2):
    labels = np.concatenate([x['label'] for x in a[5 * epoch:5 * epoch + 5]])
    np.testing.assert_array_equal(np.sort(labels), np.sort(split.labels))
  assert not np.array_equal(a[0]['label'], a[5]['label'])  # a fresh order each epoch


def test_deterministic_pipelines_run_on_whole_batches_with_the_same_result():
  """A pipeline whose ops ignore the seed (pad, scale, ...) is applied to each batch in one
  vectorised call: the images equal the per-image computation (numpy here)."""
  split = _synthetic()
  ops = 'pad(2)|scale(-0.1, 1.175)'
  assert augment.parse(ops).deterministic
  assert not augment.parse(ops + '|flip_lr').deterministic
  batches = _take(pipeline.train_batches(split, ops, 50, 4, 3, ONE_HOST), 4)  # steps 3-6
  for step, batch in zip(range(3, 7), batches):
    epoch, b = divmod(step, 5)
    picked = pipeline.epoch_permutation(4, epoch, 250)[b * 50:(b + 1) * 50]
    expected = np.pad(split.images[picked].astype(np.float32),
                      ((0, 0), (2, 2), (2, 2), (0, 0))) / 255 * 1.275 - 0.1
    np.testing.assert_allclose(batch['image'], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batch['label'], split.labels[picked])


@pytest.mark.parametrize('preprocess', ['pad(2)|scale(-0.1, 1.175)',
                                        ('scale(0, 1)', 'pad(1)|resize(8)|scale(0, 1)')])
def test_precomputed_preprocessing_gives_the_tf_data_batches(preprocess, monkeypatch):
  """A seed-free preprocessing of an in-memory split is applied once to the whole split and
  batches are gathered in numpy: the same batches, bit for bit, as the tf.data path, also for
  a per-epoch cycle, a resumed run and each host's slice."""
  split = _synthetic()
  hosts = [pipeline.HostSlice(p, 2) for p in range(2)]
  for host in [ONE_HOST, *hosts]:
    fast = pipeline.train_batches(split, preprocess, 50, 4, 3, host)
    assert fast.gi_code.co_name == '_precomputed_batches'
    fast = _take(fast, 8)  # steps 3-10: epochs 0, 1 and 2
    with monkeypatch.context() as m:
      m.setattr(pipeline, 'PRECOMPUTE_LIMIT_BYTES', 0)
      slow = pipeline.train_batches(split, preprocess, 50, 4, 3, host)
      assert getattr(slow, 'gi_code', None) is None or \
          slow.gi_code.co_name != '_precomputed_batches'
      slow = _take(slow, 8)
    for x, y in zip(fast, slow):
      assert x['image'].dtype == y['image'].dtype and x['label'].dtype == y['label'].dtype
      np.testing.assert_array_equal(x['image'], y['image'])
      np.testing.assert_array_equal(x['label'], y['label'])
  # The two hosts' slices make up the one-host batch.
  one = _take(pipeline.train_batches(split, preprocess, 50, 4, 3, ONE_HOST), 1)[0]
  parts = [_take(pipeline.train_batches(split, preprocess, 50, 4, 3, h), 1)[0] for h in hosts]
  np.testing.assert_array_equal(np.concatenate([p['image'] for p in parts]), one['image'])


def test_resumed_iterator_continues_exactly():
  split = _synthetic()
  full = _take(pipeline.train_batches(split, 'random_crop(6)|flip_lr', 50, 1, 0, ONE_HOST), 12)
  resumed = _take(pipeline.train_batches(split, 'random_crop(6)|flip_lr', 50, 1, 7, ONE_HOST), 5)
  for x, y in zip(full[7:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def test_hosts_read_disjoint_slices_of_the_same_global_batch():
  split = _synthetic()
  whole = _take(pipeline.train_batches(split, 'flip_lr', 50, 2, 3, ONE_HOST), 4)
  parts = [_take(pipeline.train_batches(split, 'flip_lr', 50, 2, 3, pipeline.HostSlice(p, 2)), 4)
           for p in range(2)]
  for i in range(4):
    joined = np.concatenate([parts[0][i]['image'], parts[1][i]['image']])
    np.testing.assert_array_equal(joined, whole[i]['image'])


def test_preprocessing_cycle_alternates_by_epoch_over_the_same_examples():
  """SPP-net's multi-size training: epoch e takes cycle[e % 2]; the examples of each step and
  their augmentation seeds are those of the single-preprocessing run, resumed mid-epoch too."""
  split = _synthetic()  # 250 examples of 8x8: 5 steps of 50 per epoch
  big, small = 'random_crop(6)|flip_lr', 'random_crop(6)|flip_lr|resize(4)'
  cycled = _take(pipeline.train_batches(split, (big, small), 50, 1, 0, ONE_HOST), 15)
  plain = _take(pipeline.train_batches(split, big, 50, 1, 0, ONE_HOST), 15)
  shapes = [b['image'].shape[1:3] for b in cycled]
  assert shapes == [(6, 6)] * 5 + [(4, 4)] * 5 + [(6, 6)] * 5
  for step, (x, y) in enumerate(zip(cycled, plain)):
    np.testing.assert_array_equal(x['label'], y['label'])
    expected = y['image'] if step // 5 != 1 else tf.image.resize(y['image'], (4, 4)).numpy()
    np.testing.assert_allclose(x['image'], expected, rtol=1e-6, atol=1e-6)
  resumed = _take(pipeline.train_batches(split, (big, small), 50, 1, 8, ONE_HOST), 4)
  for x, y in zip(cycled[8:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
  with pytest.raises(ValueError, match="Unknown preprocessing op 'nonsense'"):
    pipeline.train_batches(split, (big, 'nonsense(3)'), 50, 1, 0, ONE_HOST)


def test_streamed_preprocessing_cycle(tfds_dir):
  split = sources.tfds_split('fashion_mnist', 'test', tfds_dir, download=False,
                             in_memory='no')  # 10,000 examples: 2 steps of 5,000 per epoch
  cycled = _take(pipeline.train_batches(split, ('scale(0, 1)', 'scale(0, 1)|resize(14)'),
                                        5000, 0, 1, ONE_HOST, shuffle_buffer=1000), 3)
  plain = _take(pipeline.train_batches(split, 'scale(0, 1)', 5000, 0, 1, ONE_HOST,
                                       shuffle_buffer=1000), 3)
  assert [b['image'].shape for b in cycled] == [(5000, 28, 28, 1), (5000, 14, 14, 1),
                                                (5000, 14, 14, 1)]
  np.testing.assert_array_equal(cycled[0]['image'], plain[0]['image'])
  for x, y in zip(cycled[1:], plain[1:]):
    np.testing.assert_array_equal(x['label'], y['label'])
    np.testing.assert_allclose(x['image'], tf.image.resize(y['image'], (14, 14)).numpy(),
                               atol=1e-6)


@pytest.mark.parametrize('global_batch, processes', [(24, 1), (64, 2), (1000, 1), (7, 1)])
def test_evaluation_counts_every_example_once(global_batch, processes):
  split = sources.synthetic_split('test', (4, 4, 1), 10, 250, seed=5)
  split.labels = np.arange(250, dtype=np.int32)  # identify the examples
  seen = []
  for p in range(processes):
    for batch in pipeline.eval_batches(split, '', global_batch, 0, pipeline.HostSlice(p, processes)):
      assert batch['image'].shape[0] == global_batch // processes
      seen.extend(batch['label'][batch['mask'] > 0].tolist())
  assert sorted(seen) == list(range(250))


def test_streamed_evaluation_counts_every_example_once(fashion_mnist_dir, tfds_dir):
  split = sources.tfds_split('fashion_mnist', 'test', tfds_dir, download=False,
                             in_memory='no')
  total, count = 0, 0
  for p in range(3):
    for batch in pipeline.eval_batches(split, 'scale(0, 1)', 3 * 256, 0, pipeline.HostSlice(p, 3)):
      count += batch['mask'].sum()
      total += (batch['label'] * batch['mask']).sum()
  reference = sources.idx_split(fashion_mnist_dir, 'test')
  assert count == 10000 and total == reference.labels.sum()


def test_streamed_training_batches_are_deterministic(tfds_dir):
  split = sources.tfds_split('fashion_mnist', 'test', tfds_dir, download=False,
                             in_memory='no')
  a = _take(pipeline.train_batches(split, 'scale(0, 1)', 100, 0, 0, ONE_HOST,
                                   shuffle_buffer=1000), 3)
  b = _take(pipeline.train_batches(split, 'scale(0, 1)', 100, 0, 2, ONE_HOST,
                                   shuffle_buffer=1000), 1)
  np.testing.assert_array_equal(a[2]['image'], b[0]['image'])
  assert a[0]['image'].shape == (100, 28, 28, 1) and a[0]['image'].max() <= 1.0


def test_folder_source(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (('train', 6), ('test', 4)):
    for label in ('cat', 'dog'):
      os.makedirs(tmp_path / split / label)
      for i in range(n):
        image = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
        tf.io.write_file(str(tmp_path / split / label / f'{i}.png'), tf.io.encode_png(image))
  train = sources.folder_split(str(tmp_path), 'train', 'auto')
  assert train.num_examples == 12 and train.num_classes == 2 and not train.in_memory
  batches = _take(pipeline.train_batches(train, 'resize(8)', 4, 0, 0, ONE_HOST), 3)
  assert batches[0]['image'].shape == (4, 8, 8, 3)
  assert sorted(np.concatenate([b['label'] for b in batches]).tolist()) == [0] * 6 + [1] * 6
  test = sources.folder_split(str(tmp_path), 'test', 'auto')
  labels = [b['label'][b['mask'] > 0] for b in pipeline.eval_batches(test, 'resize(8)', 3, 0, ONE_HOST)]
  assert sorted(np.concatenate(labels).tolist()) == [0] * 4 + [1] * 4


def test_preprocessing_ops_against_numpy():
  image = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6, 1) * 8
  seed = tf.constant([0, 0], tf.int64)
  out = augment.parse('pad(2)|scale(-0.1, 1.175)')(tf.constant(image), seed).numpy()
  expected = np.pad(image.astype(np.float32), ((2, 2), (2, 2), (0, 0))) / 255 * 1.275 - 0.1
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  assert out[0, 0, 0] == pytest.approx(-0.1) and out.shape == (9, 10, 1)
  norm = augment.parse('normalize(mean=10.0, std=2.0)')(tf.constant(image), seed).numpy()
  np.testing.assert_allclose(norm, (image - 10.0) / 2.0)
  crop = augment.parse('center_crop(3, 4)')(tf.constant(image), seed).numpy()
  np.testing.assert_array_equal(crop, image[1:4, 1:5])
  flips = {augment.parse('flip_lr')(tf.constant(image), tf.constant([0, i], tf.int64)).numpy()
           .tobytes() for i in range(20)}
  assert flips == {image.astype(np.float32).tobytes(), image[:, ::-1].astype(np.float32).tobytes()}
  assert augment.output_shape(augment.parse('pad(2)'), (28, 28, 1)) == (32, 32, 1)


def test_preprocessing_parse_errors():
  with pytest.raises(ValueError, match="Unknown preprocessing op 'scal'.*Did you mean scale"):
    augment.parse('scal(0, 1)')
  with pytest.raises(ValueError, match='Cannot parse'):
    augment.parse('pad(x + 1)')
  with pytest.raises(ValueError, match="op 'pad\\(1, 2, 3, 4\\)'.*positional"):
    augment.parse('pad(1, 2, 3, 4)')
  with pytest.raises(ValueError, match="op 'pad\\(1, 2, 3\\)'.*mode must be"):
    augment.parse('pad(1, 2, 3)')
