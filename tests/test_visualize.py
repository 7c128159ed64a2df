"""Filters, feature maps, gradient saliency and Grad-CAM (cnn_history/visualize.py)."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models, train, visualize
from cnn_history.data import sources
from cnn_history.models import lenet
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TwoDetectors(nn.Module):
  """Channel 0 fires on positive pixels, channel 1 on negative ones (a stride-2 1x1 conv and a
  ReLU in the module 'block'); class c's logit is sum_k head[k, c] * mean(channel k)."""
  head: tuple[tuple[float, float], tuple[float, float]] = ((2.0, -1.0), (-1.0, 2.0))

  @nn.compact
  def __call__(self, x, train=False):
    del train
    a = Block(name='block')(x)
    return a.mean(axis=(1, 2)) @ jnp.asarray(self.head)


class Block(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Conv(2, (1, 1), strides=(2, 2), use_bias=False, name='conv')(x))


def _detectors():
  model = TwoDetectors()
  variables = {'params': {'block': {'conv': {'kernel': np.array([[[[1.0, -1.0]]]], np.float32)}}}}
  image = np.zeros((1, 8, 8, 1), np.float32)
  image[0, 1:3, 1:3, 0] = [[1.0, 2.0], [3.0, 1.5]]    # the class-0 evidence, top left
  image[0, 5:7, 5:7, 0] = [[-1.0, -2.5], [-1.0, -1.0]]  # the class-1 evidence, bottom right
  return model, variables, image


def test_grad_cam_peaks_where_the_class_evidence_is():
  model, variables, image = _detectors()
  a = np.maximum(np.stack([image[0, ::2, ::2, 0], -image[0, ::2, ::2, 0]], -1), 0)  # [4, 4, 2]
  for cls, corner in ((0, (slice(0, 2), slice(0, 2))), (1, (slice(2, 4), slice(2, 4)))):
    cam = visualize.grad_cam(model, variables, image, [cls], 'block', upsample=False)[0]
    # alpha_k = head[k, c] / 16 (the mean-pool's gradient): the map is ReLU(head[:, c] . A).
    expected = np.maximum(a @ np.asarray(model.head)[:, cls], 0)
    np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-6)
    assert cam[corner].max() == 1.0
    outside = np.ones((4, 4), bool)
    outside[corner] = False
    assert cam[outside].max() == 0.0
    full = visualize.grad_cam(model, variables, image, [cls], 'block')[0]
    assert full.shape == (8, 8)
    # Map unit (i, j) sees input pixel (2i, 2j): the peak lands on the pixel it came from.
    peak = (2, 2) if cls == 0 else (6, 6)
    assert np.unravel_index(full.argmax(), full.shape) == peak and full[peak] == 1.0
    assert full[4 - 4 * cls:8 - 4 * cls, 4 - 4 * cls:8 - 4 * cls].max() == 0.0


def test_map_geometry_finds_where_each_layer_looks():
  model, variables, image = _detectors()
  assert visualize.map_geometry(model, variables, image, 'block') == ((0.0, 2.0), (0.0, 2.0))
  lenet5 = models.create_model('lenet5', num_classes=10)
  images = np.random.default_rng(0).uniform(-0.1, 1.175, (2, 32, 32, 1)).astype(np.float32)
  variables = lenet5.init(jax.random.key(0), images)
  # VALID 5x5 convolutions and 2x2 subsampling: C1 unit i is centred on input pixel 2 + i,
  # S2 unit i on 2.5 + 2i, C3 on 6.5 + 2i, S4 on 7.5 + 4i.
  for layer, geometry in (('outputs_C1', (2.0, 1.0)), ('outputs_S2', (2.5, 2.0)),
                          ('outputs_C3', (6.5, 2.0)), ('outputs_S4', (7.5, 4.0))):
    assert visualize.map_geometry(lenet5, variables, images, layer) == (geometry, geometry)
  cam = np.zeros((1, 10, 10), np.float32)
  cam[0, 2, 7] = 1.0  # C3's unit (2, 7) lies on input pixel (6.5 + 4, 6.5 + 14)
  placed = visualize.place_on_input(cam, ((6.5, 2.0), (6.5, 2.0)), (32, 32))[0]
  np.testing.assert_allclose(placed[10:12, 20:22], 0.5625, atol=1e-6)  # 0.75 x 0.75, bilinear
  assert placed.sum() == pytest.approx(4.0)  # a unit spreads over spacing^2 pixels


def test_grad_cam_of_a_layer_inside_a_module_and_of_two_images():
  model, variables, image = _detectors()
  images = np.concatenate([image, -image])  # the second image swaps the two regions
  cams = visualize.grad_cam(model, variables, images, [0, 0], 'block/conv', upsample=False)
  # Before the ReLU: A = (x, -x); alpha_k = head[k, 0] * mean(1[A_k > 0]) over the 16 positions.
  for cam, x in zip(cams, images[:, ::2, ::2, 0]):
    alpha = np.array([2.0 * (x > 0).mean(), -1.0 * (x < 0).mean()]) / 16
    expected = np.maximum(alpha[0] * x - alpha[1] * x, 0)
    np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-6)
  assert cams[0][:2, :2].max() == 1.0 and cams[1][2:, 2:].max() == 1.0


class SmoothNet(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = jnp.tanh(nn.Conv(4, (3, 3), name='conv')(x))
    return nn.Dense(3, name='head')(x.reshape(x.shape[0], -1))


def test_gradient_saliency_matches_finite_differences():
  model = SmoothNet()
  images = np.random.default_rng(0).normal(size=(2, 5, 5, 2)).astype(np.float32)
  variables = model.init(jax.random.key(1), images)
  classes = [2, 0]
  x, gradient = visualize.class_score_gradient(model, variables, images, classes)
  np.testing.assert_array_equal(x, images)
  eps = 1e-2
  for n, cls in enumerate(classes):
    base = np.repeat(images[n:n + 1], images[n].size, axis=0)
    step = eps * np.eye(images[n].size, dtype=np.float32).reshape((-1,) + images.shape[1:])
    up = model.apply(variables, base + step)[:, cls]
    down = model.apply(variables, base - step)[:, cls]
    numeric = np.asarray((up - down) / (2 * eps)).reshape(images.shape[1:])
    np.testing.assert_allclose(gradient[n], numeric, rtol=2e-2, atol=2e-3)
    saliency = visualize.gradient_saliency(model, variables, images, classes)[n]
    np.testing.assert_allclose(saliency, np.abs(numeric).max(-1), rtol=2e-2, atol=2e-3)
  assert np.abs(gradient).max() > 0.05  # not a trivially zero gradient


def test_filter_grid_holds_each_normalised_kernel_at_its_tile():
  rng = np.random.default_rng(0)
  grey = rng.normal(size=(3, 3, 1, 5)).astype(np.float32)
  grid = visualize.first_layer_filters(grey)  # 3 columns: ceil(sqrt(5))
  assert grid.shape == (1 + 2 * 4, 1 + 3 * 4)
  for i in range(5):
    r, c = divmod(i, 3)
    w = grey[:, :, 0, i]
    np.testing.assert_allclose(grid[1 + 4 * r:4 + 4 * r, 1 + 4 * c:4 + 4 * c],
                               (w - w.min()) / (w.max() - w.min()), atol=1e-6)
  assert grid[0].min() == 1.0 and grid[5:8, 9:12].min() == 1.0  # border and the empty tile

  rgb = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
  grid = visualize.first_layer_filters(rgb)
  assert grid.shape == (7, 7, 3)
  w = rgb[..., 3]  # normalised over all three channels together: its colour is kept
  np.testing.assert_allclose(grid[4:6, 4:6], (w - w.min()) / (w.max() - w.min()), atol=1e-6)

  two = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)  # rows: filters, columns: channels
  grid = visualize.first_layer_filters(two)
  w = two[..., 1]
  np.testing.assert_allclose(grid[5:8, 5:8], (w[..., 1] - w.min()) / (w.max() - w.min()),
                             atol=1e-6)


class TwoConvs(nn.Module):
  """The first convolution is named to sort last."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.Conv(2, (3, 3), name='z_first')(x)
    x = nn.Conv(2, (1, 1), name='a_second')(x)
    return x.mean(axis=(1, 2))


def test_first_conv_kernel_follows_the_call_order():
  model = TwoConvs()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 2)))
  path, kernel = visualize.first_conv_kernel(model, variables, (6, 6, 2))
  assert path == 'z_first/kernel'
  np.testing.assert_array_equal(kernel, variables['params']['z_first']['kernel'])


def test_lenet_layers_feature_maps_and_unknown_layer():
  model = models.create_model('lenet5', num_classes=10)
  images = np.random.default_rng(0).uniform(-0.1, 1.175, (2, 32, 32, 1)).astype(np.float32)
  variables = model.init(jax.random.key(0), images)
  available = visualize.list_layers(model, variables, (32, 32, 1))
  assert [(l.path, l.shape[1:], l.conv) for l in available] == [
      ('outputs_C1', (28, 28, 6), True), ('outputs_S2', (14, 14, 6), False),
      ('outputs_C3', (10, 10, 16), True), ('outputs_S4', (5, 5, 16), False),
      ('outputs_C5', (1, 1, 120), True)]
  assert visualize.default_layers(available) == ['outputs_C1', 'outputs_C3']
  maps = visualize.feature_maps(model, variables, images, ['outputs_C1', 'outputs_S4'])
  c1 = lenet.scaled_tanh(lenet.conv_valid(variables['params']['C1'], jnp.asarray(images)))
  np.testing.assert_allclose(maps['outputs_C1'], c1, atol=1e-5)
  assert maps['outputs_S4'].shape == (2, 5, 5, 16)
  assert visualize.first_conv_kernel(model, variables, (32, 32, 1))[0] == 'C1/kernel'
  with pytest.raises(visualize.VisualizeError, match=r"(?s)'outputs_C4'. Did you mean "
                     r'outputs_S4, outputs_C5, outputs_C3\?.*outputs_C3  10x10x16  \(conv\)'):
    visualize.feature_maps(model, variables, images, ['outputs_C4'])


def test_default_layers_take_the_block_around_each_conv():
  layers = [visualize.Layer('stem', (1, 16, 16, 8), True),
            visualize.Layer('b1/conv', (1, 8, 8, 8), True), visualize.Layer('b1/bn', (1, 8, 8, 8),
                                                                           False),
            visualize.Layer('b1', (1, 8, 8, 8), False),
            visualize.Layer('b2/conv', (1, 1, 1, 8), True), visualize.Layer('b2', (1, 1, 1, 8),
                                                                           False)]
  assert visualize.default_layers(layers) == ['stem', 'b1']
  many = [visualize.Layer(f'c{i}', (1, 4, 4, 1), True) for i in range(20)]
  assert visualize.default_layers(many, limit=4) == ['c0', 'c6', 'c13', 'c19']


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config(num_steps=4)  # LeNet-5 with ReLU, max-pooling and BatchNorm
  train.train_and_evaluate(config, str(workdir))
  return str(workdir)


def _is_png(path):
  with open(path, 'rb') as f:
    return f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_render_writes_the_pictures(trained_workdir, tmp_path):
  written = visualize.render(trained_workdir, str(tmp_path / 'out'), indices=[5, 0, 17])
  names = sorted(os.path.basename(p) for p in written)
  assert names == ['features_outputs_C1.png', 'features_outputs_C3.png', 'filters.png',
                   'saliency.png']
  assert all(_is_png(p) and os.path.getsize(p) < 300_000 for p in written)
  with open(tmp_path / 'out' / 'visualize.json') as f:
    record = json.load(f)
  assert record['step'] == 4 and record['cam_layer'] == 'outputs_C3'
  assert record['first_layer'] == 'C1/kernel'
  config = visualize.load_config(trained_workdir)
  labels = sources.load_split(config.data, config.data.eval_split, config.seed).labels
  assert record['true'] == [str(labels[i]) for i in (5, 0, 17)]  # synthetic: names are digits
  assert record['cam_layer_geometry'] == {'rows': [6.5, 2.0], 'columns': [6.5, 2.0]}

  with pytest.raises(visualize.VisualizeError, match=r"(?s)Unknown layer 'C3'.*outputs_C3"):
    visualize.render(trained_workdir, str(tmp_path / 'bad'), num_images=1, layers=['C3'])


def test_errors_for_a_workdir_without_config_or_checkpoint(trained_workdir, tmp_path):
  with pytest.raises(visualize.VisualizeError, match='has no config.json.*--config='):
    visualize.render(str(tmp_path))
  (tmp_path / 'config.json').write_text(
      open(os.path.join(trained_workdir, 'config.json')).read())
  with pytest.raises(visualize.VisualizeError, match='has no usable checkpoint'):
    visualize.render(str(tmp_path))
  with pytest.raises(visualize.VisualizeError, match=r"does not hold the parameters of the "
                     r"config's model 'lenet5'.*C3/kernel"):  # the 1998 net: C3 compact
    visualize.render(trained_workdir, config=tiny_config('paper'))


def test_command_line_with_image_files(trained_workdir, tmp_path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  picture = str(tmp_path / 'square.png')
  disc = np.zeros((40, 40))
  disc[10:30, 10:30] = 1.0
  plt.imsave(picture, disc, cmap='gray')
  out = tmp_path / 'cli'
  result = subprocess.run(
      [sys.executable, '-m', 'cnn_history.visualize', f'--workdir={trained_workdir}',
       f'--out={out}', f'--image={picture}', '--layers=outputs_S2', '--cam_layer=outputs_C1'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': REPO, 'CUDA_VISIBLE_DEVICES': ''})
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == ['features_outputs_S2.png', 'filters.png', 'saliency.png',
                                     'visualize.json']
  record = json.loads((out / 'visualize.json').read_text())
  assert record['true'] == [None] and record['cam_layer'] == 'outputs_C1'
