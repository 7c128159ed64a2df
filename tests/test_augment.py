"""Augmentation and evaluation ops against numpy, PIL and published constants."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from cnn_history.data import augment


def _apply(spec, image, seed=(0, 0)):
  return augment.parse(spec)(tf.constant(image), tf.constant(seed, tf.int64)).numpy()


def _rgb(h=24, w=30, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def test_resize_shorter_side_keeps_the_aspect_ratio():
  assert _apply('resize_small(256)', _rgb(300, 400)).shape == (256, 341, 3)
  assert _apply('resize_small(256)', _rgb(400, 300)).shape == (341, 256, 3)
  sizes = {min(_apply('resize_small_random(20, 28)', _rgb(30, 40), (s, 1)).shape[:2])
           for s in range(40)}
  assert sizes <= set(range(20, 29)) and len(sizes) >= 6  # jittered within [S_min, S_max]


def test_inception_crop_area_and_aspect():
  h, w = 60, 80
  coords = np.zeros((h, w, 3), np.uint8)  # pixels that say where they come from
  coords[..., 0] = np.arange(w)[None, :]
  coords[..., 1] = np.arange(h)[:, None]
  for s in range(25):
    out = augment.parse('inception_crop(32, method="nearest")')(
        tf.constant(coords), tf.constant([s, 7], tf.int64)).numpy()
    cw = out[..., 0].max() - out[..., 0].min() + 1
    ch = out[..., 1].max() - out[..., 1].min() + 1
    assert out.shape == (32, 32, 3)
    assert 0.08 * h * w * 0.8 <= cw * ch <= h * w
    assert 3 / 4 * 0.8 <= cw / ch <= 4 / 3 * 1.25  # sampled aspect, up to pixel rounding


def test_brightness_jitter_scales_within_bounds():
  image = _rgb()
  ratios = []
  for s in range(20):
    out = _apply('color_jitter(brightness=0.4, contrast=0.0, saturation=0.0)', image, (s, 3))
    unclipped = image.astype(np.float32) < 150
    ratios.append(np.median(out[unclipped] / np.maximum(image[unclipped], 1)))
  assert 0.6 <= min(ratios) and max(ratios) <= 1.4 and max(ratios) - min(ratios) > 0.2


def test_pca_lighting_adds_one_colour_shift_along_the_eigenvectors():
  image = _rgb()
  vec = np.array(augment.IMAGENET_PCA_EIGVEC)
  val = np.array(augment.IMAGENET_PCA_EIGVAL)
  alphas = []
  for s in range(400):
    shift = _apply('lighting', image, (s, 5)) - image
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-3)
    alphas.append(vec @ (shift[0, 0] / 255.0) / val)  # recover alpha (vec is orthonormal)
  alphas = np.array(alphas)
  assert np.abs(alphas.mean(0)).max() < 0.02
  np.testing.assert_allclose(alphas.std(0), 0.1, rtol=0.15)  # alpha_i ~ N(0, 0.1^2)


def test_caffe_style_inputs():
  image = _rgb()
  np.testing.assert_array_equal(_apply('rgb_to_bgr', image), image[..., ::-1])
  out = _apply('normalize(mean=(123.68, 116.779, 103.939), std=(58.393, 57.12, 57.375))', image)
  np.testing.assert_allclose(out, (image - np.array([123.68, 116.779, 103.939]))
                             / np.array([58.393, 57.12, 57.375]), rtol=1e-5, atol=1e-6)


def test_mean_image(tmp_path):
  image = _rgb()
  mean = np.random.default_rng(1).uniform(0, 255, image.shape).astype(np.float32)
  np.save(tmp_path / 'mean.npy', mean)
  np.testing.assert_allclose(_apply(f'subtract_mean_image("{tmp_path / "mean.npy"}")', image),
                             image - mean, rtol=1e-6)


def test_cifar_crop_and_flip():
  image = _rgb(32, 32)
  out = _apply('random_crop(32, padding=4)', image, (3, 4))
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  assert any(np.array_equal(out, padded[y:y + 32, x:x + 32]) for y in range(9) for x in range(9))


def test_ten_crop_and_grid_crops():
  image = _rgb(40, 50)
  crops = _apply('ten_crop(32)', image)
  expected = [image[:32, :32], image[:32, -32:], image[-32:, :32], image[-32:, -32:],
              image[4:36, 9:41]]
  expected += [c[:, ::-1] for c in expected]
  np.testing.assert_array_equal(crops, np.stack(expected))
  grid = _apply('grid_crops(32, grid=5)', image)
  assert grid.shape == (50, 32, 32, 3)
  np.testing.assert_array_equal(grid[0], image[:32, :32])
  np.testing.assert_array_equal(grid[24], image[-32:, -32:])
  np.testing.assert_array_equal(grid[25 + 12], image[4:36, 9:41][:, ::-1])
  np.testing.assert_array_equal(_apply('flips', image)[1], image[:, ::-1])


def test_views_join_branches():
  views = augment.Views('center_crop(8) + flips()|center_crop(6)')
  out = views(tf.constant(_rgb(10, 10)), tf.constant([0, 0], tf.int64))
  assert out['image'].shape == (8, 8, 3) and out['image_1'].shape == (2, 6, 6, 3)


# ---- AutoAugment ------------------------------------------------------------------------------

def _aa(name, image, magnitude, seed=(0, 0)):
  return augment._AA_OPS[name](tf.constant(image, tf.float32), magnitude,  # pylint: disable=protected-access
                               tf.constant(seed, tf.int64)).numpy()


@pytest.mark.parametrize('name, pil', [
    ('Equalize', ImageOps.equalize), ('AutoContrast', ImageOps.autocontrast),
    ('Invert', ImageOps.invert)])
def test_autoaugment_pixel_ops_equal_pil(name, pil):
  image = np.random.default_rng(2).integers(40, 200, (20, 24, 3)).astype(np.uint8)
  np.testing.assert_array_equal(_aa(name, image, 5), np.asarray(pil(Image.fromarray(image))))


def test_autoaugment_magnitudes_equal_pil():
  image = _rgb(20, 24, seed=3)
  pil = Image.fromarray(image)
  # Posterize m=6 keeps int(4 * 0.6) = 2 bits (tensorflow/tpu's mapping, which EfficientNet
  # trained with); Solarize m=4: threshold int(256 * 0.4).
  np.testing.assert_array_equal(_aa('Posterize', image, 6), np.asarray(ImageOps.posterize(pil, 2)))
  np.testing.assert_array_equal(_aa('Solarize', image, 4), np.asarray(ImageOps.solarize(pil, 102)))
  for name, enhancer in (('Color', ImageEnhance.Color), ('Contrast', ImageEnhance.Contrast),
                         ('Brightness', ImageEnhance.Brightness)):
    factor = 0.1 + 1.8 * 0.7
    expected = np.asarray(enhancer(pil).enhance(factor)).astype(np.float32)
    # PIL rounds its grey image to integers; we keep it in float: at most 1-2 levels apart.
    assert np.abs(_aa(name, image, 7) - expected).max() <= 2.0, name


def test_autoaugment_geometry():
  image = np.arange(9 * 9 * 3, dtype=np.uint8).reshape(9, 9, 3)
  rotated = _aa('Rotate', image, 30.0)  # 30 deg x 30/10 = 90 degrees, either sign
  assert (np.array_equal(rotated, np.rot90(image, 1)) or
          np.array_equal(rotated, np.rot90(image, -1)))
  moved = _aa('TranslateX', image, 10 * 2 / 250)  # 2 pixels, either way
  left, right = np.full_like(image, 128), np.full_like(image, 128)
  left[:, :-2], right[:, 2:] = image[:, 2:], image[:, :-2]
  assert np.array_equal(moved, left) or np.array_equal(moved, right)


def test_autoaugment_policy_is_the_published_table():
  table = augment.AUTOAUGMENT_IMAGENET
  assert len(table) == 25 and all(len(sub) == 2 for sub in table)
  for sub in table:
    for name, prob, magnitude in sub:
      assert name in augment._AA_OPS and 0 <= prob <= 1 and 0 <= magnitude <= 10  # pylint: disable=protected-access
  # First, middle and last rows of tensorflow/tpu's policy_v0 (the EfficientNet policy).
  assert table[0] == (('Equalize', 0.8, 1), ('ShearY', 0.8, 4))
  assert table[12] == (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7))
  assert table[24] == (('Color', 0.8, 6), ('Rotate', 0.4, 5))
  counts = {}
  for sub in table:
    for name, _, _ in sub:
      counts[name] = counts.get(name, 0) + 1
  assert counts == {'Equalize': 12, 'ShearY': 4, 'Color': 9, 'Rotate': 7, 'Solarize': 8,
                    'SolarizeAdd': 2, 'ShearX': 2, 'Invert': 1, 'Posterize': 2,
                    'AutoContrast': 2, 'TranslateY': 1}


def test_autoaugment_is_seeded_per_example():
  image = _rgb(16, 16)
  fn = tf.function(lambda s: augment.parse('autoaugment')(tf.constant(image), s))
  a = [fn(tf.constant([i, 9], tf.int64)).numpy() for i in range(12)]
  b = [fn(tf.constant([i, 9], tf.int64)).numpy() for i in range(12)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert len({x.tobytes() for x in a}) >= 6


def test_training_set_statistics_against_numpy():
  from cnn_history.data import sources, stats  # pylint: disable=g-import-not-at-top
  split = sources.synthetic_split('train', (6, 6, 3), 10, 100, seed=0)
  result = stats.compute(split, '', batch_size=32)
  images = split.images.astype(np.float64)
  np.testing.assert_allclose(result['mean_image'], images.mean(0), rtol=1e-5)
  pixels = images.reshape(-1, 3) / 255.0
  eigval, eigvec = np.linalg.eigh(np.cov(pixels.T, bias=True))
  np.testing.assert_allclose(result['eigval'], eigval[::-1], rtol=1e-6)
  for row, vec in zip(result['eigvec'], eigvec[:, ::-1].T):
    np.testing.assert_allclose(np.abs(row @ vec), 1.0, rtol=1e-6)  # the same axis (up to sign)
  assert result['count'] == 100


def test_autoaugment_after_a_random_crop_in_a_pipeline():
  """inception_crop's run-time crop size must not hide the channel count from later ops."""
  from cnn_history.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  split = sources.synthetic_split('train', (40, 48, 3), 10, 8, seed=0)
  batch = next(pipeline.train_batches(split, 'inception_crop(24)|flip_lr|autoaugment', 4, 0, 0,
                                      pipeline.HostSlice(0, 1)))
  assert batch['image'].shape == (4, 24, 24, 3)
  assert batch['image'].min() >= 0 and batch['image'].max() <= 255
