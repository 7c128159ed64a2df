r"""Looking inside a trained network, as Zeiler & Fergus (ECCV 2014) did, with two later tools.

  python -m cnn_history.visualize --workdir=W [--out=W/visualize]
      [--images=4 | --indices=0,7,12 | --image=a.png --image=b.png]
      [--layers=stage1_block1,stage3_block3] [--cam_layer=stage3_block3] [--scale=layer|map]
      [--step=N]
      [--config=configs/lenet5.py]   # only for a workdir from before runs wrote config.json

From a training workdir (its config.json and newest checkpoint) it writes PNGs into --out:
  filters.png              the first layer's kernels, each normalised to its own [min, max]
                           (RGB tiles for 3 input channels, one grey tile per channel otherwise)
  features_<layer>.png     the feature maps of each chosen layer for each image, one tile per
                           channel, on one grey scale per layer (--scale=map: per map)
  saliency.png             per image: the network input, then for the predicted and the true
                           class the gradient saliency (Simonyan, Vedaldi & Zisserman 2014:
                           max over channels of |d score / d pixel|) and Grad-CAM (Selvaraju et
                           al. 2017: ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of
                           d score / d A_k, drawn where the layer's units are centred on the
                           input: map_geometry), each overlaid on the input
  visualize.json           what was drawn: step, layers, predicted and true classes
Images come from the evaluation split of the run's dataset (after its evaluation preprocessing;
the first N, or chosen --indices) or from image files (--image, resized to the dataset's image
size, then preprocessed alike). The weights are the checkpoint's params (not its EMA).

Layers are named by module path, '/'-joined ('stage3_block3', 'stage1_block1/conv1',
'outputs_C3' for LeNet-5's C3 maps); any module whose output is an NHWC map can be chosen. The
default feature-map layers are the convolutions, each taken with the largest module around it
whose output is still a map (a ResNet block, a ConvBN, an Inception module), maps larger than
1x1 only, at most 8 of them; the default Grad-CAM layer is the last of those.

The analysis functions (first_conv_kernel, first_layer_filters, list_layers, feature_maps,
class_score_gradient, gradient_saliency, grad_cam, map_geometry) are pure functions of a model,
its variables and images; the PNG writers below them only draw.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from typing import Any, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
import flax  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from cnn_history import checkpoint, models  # noqa: E402
from cnn_history.models import layers as layers_lib  # noqa: E402
from cnn_history.models import lenet  # noqa: E402

MAX_DEFAULT_LAYERS = 8

CLASS_NAMES = {
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                      'Sneaker', 'Bag', 'Ankle boot'),
    'mnist': tuple(str(i) for i in range(10)),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                'truck'),
}


class VisualizeError(ValueError):
  """The workdir, layer or image cannot be used; the message says why and what to do."""


# ---- Layers ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layer:
  """A module whose output is a feature map: its path, output shape [N, H, W, C], and whether it
  is a convolution."""
  path: str
  shape: tuple[int, ...]
  conv: bool


def _is_conv(module: nn.Module) -> bool:
  return (isinstance(module, (nn.Conv, layers_lib.ConvBN)) or
          (isinstance(module, lenet.LayerOutput) and module.conv))


def _path(module: nn.Module) -> str:
  return '/'.join(module.path)


def list_layers(model: nn.Module, variables: Any, image_shape: Sequence[int]) -> list[Layer]:
  """Every module whose output is an NHWC map, in the order their outputs are made (for a
  (1,) + image_shape input; shapes only, nothing is computed)."""
  found = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if (context.method_name == '__call__' and module.path and getattr(out, 'ndim', 0) == 4
        and _path(module) not in found):
      found[_path(module)] = Layer(_path(module), tuple(out.shape), _is_conv(module))
    return out

  def run(variables):
    with nn.intercept_methods(record):
      return model.apply(variables, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                         train=False)

  jax.eval_shape(run, variables)  # variables may be arrays or their abstract shapes
  return list(found.values())


def _layer_error(name: str, available: list[Layer]) -> VisualizeError:
  names = [layer.path for layer in available]
  close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
  hint = f' Did you mean {", ".join(close)}?' if close else ''
  listing = '\n  '.join(f'{layer.path}  {"x".join(map(str, layer.shape[1:]))}'
                        f'{"  (conv)" if layer.conv else ""}' for layer in available)
  return VisualizeError(f'Unknown layer {name!r}.{hint} The layers with feature maps are:\n  '
                        f'{listing}')


def check_layers(names: Sequence[str], available: list[Layer]) -> None:
  known = {layer.path for layer in available}
  for name in names:
    if name not in known:
      raise _layer_error(name, available)


def default_layers(available: list[Layer], limit: int = MAX_DEFAULT_LAYERS) -> list[str]:
  """The convolutions with maps larger than 1x1, each replaced by the largest module around it
  whose output is still a map; at most `limit`, evenly spread, first and last kept."""
  by_path = {layer.path: layer for layer in available}
  chosen = []
  for layer in available:
    if not layer.conv:
      continue
    parts = layer.path.split('/')
    outer = next(p for p in ('/'.join(parts[:k]) for k in range(1, len(parts) + 1))
                 if p in by_path)
    if max(by_path[outer].shape[1:3]) > 1 and outer not in chosen:
      chosen.append(outer)
  if not chosen:  # no convolution found: every map larger than 1x1
    chosen = [layer.path for layer in available if max(layer.shape[1:3]) > 1]
  order = {layer.path: i for i, layer in enumerate(available)}
  chosen.sort(key=order.get)  # an enclosing block's output comes after its convolutions
  if len(chosen) > limit:
    picks = np.unique(np.round(np.linspace(0, len(chosen) - 1, limit)).astype(int))
    chosen = [chosen[i] for i in picks]
  return chosen


# ---- Analysis -------------------------------------------------------------------------------

def first_conv_kernel(model: nn.Module, variables: Any,
                      image_shape: Sequence[int]) -> tuple[str, np.ndarray]:
  """(path, kernel [kh, kw, in, out]) of the first convolution applied to the input: among the
  4-D kernels whose input channels match the image's, the one whose module is called first."""
  calls = []

  def record(module, method_name):
    if method_name == '__call__':
      calls.append(module.path)
    return False

  jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False,
      capture_intermediates=record, mutable=['intermediates']), variables)
  first_call = {}
  for i, path in enumerate(calls):
    first_call.setdefault(tuple(path), i)
  candidates = []
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables['params']))
  for position, (key, value) in enumerate(params.items()):
    if key[-1] == 'kernel' and np.ndim(value) == 4 and value.shape[2] == image_shape[-1]:
      owner = max((len(p), first_call[p]) for p in first_call if key[:len(p)] == p)[1]
      candidates.append((owner, position, '/'.join(key), value))
  if not candidates:
    raise VisualizeError(f'No convolution kernel takes the {image_shape[-1]} input channels; '
                         f'the parameters are {["/".join(k) for k in params]}.')
  _, _, path, kernel = min(candidates, key=lambda c: c[:2])
  return path, np.asarray(kernel, np.float32)


def _normalise(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
  """(x - min) / (max - min) over `axes`; a constant slice becomes 0."""
  low, high = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
  span = high - low
  return np.where(span > 0, (x - low) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


def tile_grid(tiles: np.ndarray, columns: int | None = None, pad: int = 1,
              fill: float = 1.0) -> np.ndarray:
  """Tiles [n, h, w] or [n, h, w, 3] on a grid, row-major, `pad` pixels of `fill` between and
  around them: tile i's top-left pixel is (pad + (i // columns)(h + pad),
  pad + (i % columns)(w + pad)). `columns` defaults to ceil(sqrt(n))."""
  n, h, w = tiles.shape[:3]
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.full((pad + rows * (h + pad), pad + columns * (w + pad)) + tiles.shape[3:], fill,
                 np.float32)
  for i in range(n):
    r, c = divmod(i, columns)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + c * (w + pad):pad + c * (w + pad) + w] = tiles[i]
  return grid


def first_layer_filters(kernel: np.ndarray, columns: int | None = None, pad: int = 1,
                        fill: float = 1.0) -> np.ndarray:
  """The kernel [kh, kw, in, out] as an image grid, each filter normalised to [0, 1] over all of
  its weights. With 3 input channels one RGB tile per filter ([H, W, 3]); otherwise one grey
  tile per (filter, input channel), filter-major ([H, W]; `columns` defaults to the number of
  input channels when there are several, so that a row is one filter). Layout: tile_grid."""
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim != 4:
    raise VisualizeError(f'A convolution kernel is [kh, kw, in, out]; got shape {kernel.shape}.')
  filters = _normalise(np.moveaxis(kernel, 3, 0), (1, 2, 3))  # [out, kh, kw, in]
  if kernel.shape[2] == 3:
    return tile_grid(filters, columns, pad, fill)
  tiles = np.moveaxis(filters, 3, 1).reshape((-1,) + kernel.shape[:2])  # [out * in, kh, kw]
  if columns is None and kernel.shape[2] > 1:
    columns = kernel.shape[2]
  return tile_grid(tiles, columns, pad, fill)


def _capture(model, variables, images, paths):
  wanted = set(paths)
  _, state = model.apply(variables, images, train=False, mutable=['intermediates'],
                         capture_intermediates=lambda m, method: (
                             method == '__call__' and _path(m) in wanted))
  flat = flax.traverse_util.flatten_dict(state['intermediates'])
  return {p: flat[tuple(p.split('/')) + ('__call__',)][0] for p in paths}


def feature_maps(model: nn.Module, variables: Any, images: np.ndarray,
                 layers: Sequence[str]) -> dict[str, np.ndarray]:
  """{layer path: its output [N, h, w, C]} for `images` [N, H, W, C] (evaluation mode)."""
  images = jnp.asarray(images, jnp.float32)
  check_layers(layers, list_layers(model, variables, images.shape[1:]))
  outputs = jax.jit(lambda v, x: _capture(model, v, x, tuple(layers)))(variables, images)
  return {k: np.asarray(v, np.float32) for k, v in outputs.items()}


def class_score_gradient(model: nn.Module, variables: Any, images: np.ndarray,
                         classes: Sequence[int], layer: str | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
  """(x, d score / d x): x the input (layer None) or `layer`'s output, score the logit of
  classes[n] for image n (before the softmax, as both Simonyan et al. and Grad-CAM take it)."""
  images = jnp.asarray(images, jnp.float32)
  classes = jnp.asarray(classes, jnp.int32)
  if layer is None:
    def score(x):
      logits = model.apply(variables, x, train=False)
      return jnp.take_along_axis(logits, classes[:, None], axis=1).sum(), x
    return tuple(np.asarray(a, np.float32)
                 for a in jax.jit(jax.grad(score, has_aux=True))(images)[::-1])

  available = list_layers(model, variables, images.shape[1:])
  check_layers([layer], available)
  shape = (images.shape[0],) + next(l.shape for l in available if l.path == layer)[1:]

  def score(delta):
    seen = []

    def add_delta(next_fun, args, kwargs, context):  # the layer's output, plus delta (= 0)
      out = next_fun(*args, **kwargs)
      if context.method_name == '__call__' and _path(context.module) == layer and not seen:
        seen.append(out)
        return out + delta
      return out

    with nn.intercept_methods(add_delta):
      logits = model.apply(variables, images, train=False)
    return jnp.take_along_axis(logits, classes[:, None], axis=1).sum(), seen[0]

  gradient, activation = jax.jit(jax.grad(score, has_aux=True))(jnp.zeros(shape, jnp.float32))
  return np.asarray(activation, np.float32), np.asarray(gradient, np.float32)


def gradient_saliency(model: nn.Module, variables: Any, images: np.ndarray,
                      classes: Sequence[int]) -> np.ndarray:
  """Simonyan et al. (2014) §3.1: max over channels of |d score_c / d pixel|, [N, H, W]."""
  _, gradient = class_score_gradient(model, variables, images, classes)
  return np.abs(gradient).max(axis=-1)


def map_geometry(model: nn.Module, variables: Any, images: np.ndarray, layer: str,
                 probes: int = 4, seed: int = 0) -> tuple[tuple[float, float], ...]:
  """Where `layer`'s map lies on the input: ((offset, spacing) of the rows, (offset, spacing) of
  the columns), unit i being centred on input pixel offset + spacing * i.

  Measured, not derived from the layer types: the receptive field of each unit of the middle
  row and column is the bounding box of the input pixels its gradient reaches (on `images` and
  `probes` noise images of their mean and spread); a line is fitted to the centres of the
  fields that no image border cuts. VALID convolutions (LeNet-5) give maps that cover only the
  middle of the input (C3: offset 6.5, spacing 2); where every field reaches a border (deep
  layers of SAME-padded nets), the map is taken to cover the input evenly, as Grad-CAM's
  plain resizing assumes (offset (spacing - 1) / 2, exact for 2x2/2 pooling; strided
  convolutions may centre their units elsewhere: with symmetric padding at spacing * i, as in
  the CIFAR ResNets' stage 3, so the drawing is up to (spacing - 1) / 2 pixels off)."""
  images = np.asarray(images, np.float32)
  size = images.shape[1:3]
  rng = np.random.default_rng(seed)
  noise = rng.normal(images.mean(), images.std() + 1e-3, (probes,) + images.shape[1:])
  inputs = jnp.asarray(np.concatenate([images, noise.astype(np.float32)]))
  shape = next(l.shape for l in list_layers(model, variables, images.shape[1:])
               if l.path == layer)
  geometry = []
  for axis in (0, 1):
    units = shape[1 + axis]
    middle = shape[2 - axis] // 2

    def picked(x, axis=axis, middle=middle, units=units):  # unit i of the line, per image copy
      a = _capture(model, variables, x, (layer,))[layer].sum(-1)  # [units * P, h, w]
      a = a.reshape((units, -1) + a.shape[1:])
      a = a[:, :, :, middle] if axis == 0 else a[:, :, middle, :]  # [units, P, units]
      return jnp.einsum('upu->', a.reshape((units, a.shape[1], units)))

    batch = jnp.tile(inputs[None], (units, 1, 1, 1, 1)).reshape((-1,) + inputs.shape[1:])
    reach = np.asarray(jax.jit(jax.grad(picked))(batch)) != 0
    reach = reach.reshape((units, -1) + inputs.shape[1:]).any(axis=(1, 4))  # [units, H, W]
    reach = reach.any(axis=2 - axis)  # [units, size along the axis]
    centres, index = [], []
    for i in range(units):
      hit = np.flatnonzero(reach[i])
      if hit.size and hit[0] > 0 and hit[-1] < size[axis] - 1:
        centres.append((hit[0] + hit[-1]) / 2)
        index.append(i)
    if len(set(index)) >= 2:
      spacing, offset = np.polyfit(index, centres, 1)
    else:
      spacing = size[axis] / units
      offset = (spacing - 1) / 2
    geometry.append((round(float(offset), 4), round(float(spacing), 4)))
  return tuple(geometry)


def place_on_input(maps: np.ndarray, geometry: tuple[tuple[float, float], ...],
                   size: Sequence[int]) -> np.ndarray:
  """Maps [N, h, w] drawn on the input grid `size` (bilinear), unit i centred on input pixel
  offset + spacing * i (map_geometry); zero where the map does not reach."""
  (row_offset, row_spacing), (col_offset, col_spacing) = geometry
  scale = jnp.array([row_spacing, col_spacing], jnp.float32)
  # Pixel centres sit at i + 0.5 in scale_and_translate's continuous coordinates.
  translation = jnp.array([row_offset + 0.5 - 0.5 * row_spacing,
                           col_offset + 0.5 - 0.5 * col_spacing], jnp.float32)
  out = jax.image.scale_and_translate(jnp.asarray(maps, jnp.float32),
                                      (maps.shape[0],) + tuple(size), (1, 2), scale, translation,
                                      'linear', antialias=False)
  return np.asarray(out, np.float32)


def grad_cam(model: nn.Module, variables: Any, images: np.ndarray, classes: Sequence[int],
             layer: str, upsample: bool = True, geometry: Any = None) -> np.ndarray:
  """Grad-CAM (Selvaraju et al. 2017, eq. 1-2): ReLU(sum_k alpha_k A_k), alpha_k the spatial
  mean of d score_c / d A_k, divided by its maximum per image (an all-zero map stays zero).
  [N, h, w] at the layer's resolution, or [N, H, W] placed on the input where the layer's
  units look (`geometry`, default map_geometry(...); bilinear)."""
  activation, gradient = class_score_gradient(model, variables, images, classes, layer)
  alpha = gradient.mean(axis=(1, 2), keepdims=True)
  cam = np.maximum((alpha * activation).sum(axis=-1), 0.0)
  if upsample:
    geometry = geometry or map_geometry(model, variables, images, layer)
    cam = np.maximum(place_on_input(cam, geometry, np.shape(images)[1:3]), 0.0)
  peak = cam.max(axis=(1, 2), keepdims=True)
  return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0).astype(np.float32)


# ---- A run: config, model, weights, images ----------------------------------------------------

@dataclasses.dataclass
class Run:
  """A trained network ready to apply: its config, model, variables and checkpoint step."""
  config: Any
  model: nn.Module
  variables: Any
  step: int
  image_shape: tuple[int, int, int]


def load_config(workdir: str, config: Any = None) -> Any:
  """The run's config: `config` when given, else workdir/config.json."""
  if config is not None:
    return config
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise VisualizeError(
        f'{workdir} has no config.json (the trainer writes it at the start of a run; runs from '
        'before it did lack it). Pass the config that trained it, e.g. '
        '--config=configs/lenet5.py[:variant=...], with the same --config.* overrides.')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the config had (module fields must be hashable)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {'/'.join(k): tuple(np.shape(v)) for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def load_run(workdir: str, config: Any, num_classes: int, image_shape: Sequence[int],
             step: int | None = None) -> Run:
  """The model of `config` with the weights of the workdir's newest (or `step`) checkpoint."""
  directory = os.path.join(workdir, 'checkpoints')
  try:
    step, state = checkpoint.restore_arrays(directory, step)
  except (checkpoint.CheckpointError, FileNotFoundError, ValueError) as e:
    raise VisualizeError(f'{workdir} has no usable checkpoint ({e}). Give the workdir of a run '
                         'that saved one (python -m cnn_history.main --config=... '
                         f'--workdir={workdir}).') from None
  classes = config.model.num_classes if config.model.num_classes > 0 else num_classes
  model = models.create_model(config.model.name, num_classes=classes, dtype=jnp.float32,
                              **_tuples(config.model.overrides.to_dict()))
  variables = {'params': state['params']}
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False))
  want, have = _shapes(expected['params']), _shapes(variables['params'])
  if want != have:
    diff = sorted(set(want.items()) ^ set(have.items()))[:4]
    raise VisualizeError(f'The checkpoint at step {step} in {directory} does not hold the '
                         f"parameters of the config's model {config.model.name!r} (first "
                         f'differences: {diff}); pass the config that trained it.')
  return Run(config, model, variables, step, tuple(image_shape))


def class_names(config: Any, num_classes: int) -> list[str]:
  data = config.data
  name = data.name.split(':')[0] if data.source == 'tfds' else ''
  if data.source == 'idx' and 'fashion' in data.path.lower():
    name = 'fashion_mnist'
  names = CLASS_NAMES.get(name)
  return list(names) if names and len(names) == num_classes else [str(i) for i in
                                                                  range(num_classes)]


def load_images(config: Any, num_images: int, image_paths: Sequence[str],
                indices: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, int]:
  """(images [N, H, W, C] after the evaluation preprocessing, labels (-1: unknown), number of
  classes): the first `num_images` of the evaluation split, its examples `indices`, or the files
  `image_paths`."""
  from cnn_history.data import pipeline, sources  # pylint: disable=g-import-not-at-top  (TF)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  pipeline.hide_accelerators_from_tensorflow()
  split = sources.load_split(config.data, config.data.eval_split, config.seed)
  if image_paths:
    channels = split.image_shape[-1]
    size = split.image_shape[:2] if None not in split.image_shape[:2] else None
    decoded = []
    for path in image_paths:
      if not os.path.exists(path):
        raise VisualizeError(f'--image {path} does not exist.')
      image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                 expand_animations=False)
      if size is not None:
        image = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(image, size), 0, 255)),
                        tf.uint8)
      decoded.append(image.numpy())
    shapes = {d.shape for d in decoded}
    if len(shapes) > 1:
      raise VisualizeError(f'The --image files have different sizes {sorted(shapes)}, and the '
                           'dataset has no fixed size to resize them to.')
    split = sources.Split('files', len(decoded), split.num_classes, decoded[0].shape,
                          np.stack(decoded), np.full(len(decoded), -1, np.int32))
    num_images = len(decoded)
  elif indices:
    if not split.in_memory:
      raise VisualizeError(f'--indices needs an in-memory evaluation split; {split.name} is '
                           'streamed (use --images=N for its first N examples).')
    bad = [i for i in indices if not 0 <= i < split.num_examples]
    if bad:
      raise VisualizeError(f'--indices {bad} are outside the {split.num_examples} examples of '
                           f'the {split.name} split.')
    picked = np.asarray(indices)
    split = sources.Split(split.name, len(picked), split.num_classes, split.image_shape,
                          split.images[picked], split.labels[picked])
    num_images = len(picked)
  num_images = min(num_images, split.num_examples)
  first_branch = config.data.eval_preprocess.split(' + ')[0]
  batch = next(pipeline.eval_batches(split, first_branch, num_images, config.seed,
                                     pipeline.HostSlice(0, 1)))
  images = batch['image']
  if images.ndim == 5:  # a multi-view protocol (ten_crop, flips): its first view
    images = images[:, 0]
  return images.astype(np.float32), batch['label'].astype(np.int64), split.num_classes


# ---- Drawing ----------------------------------------------------------------------------------

def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _display(image: np.ndarray) -> np.ndarray:
  """An input image as the network saw it, stretched to [0, 1] (grey: [H, W])."""
  image = _normalise(image, (0, 1, 2))
  return image[..., 0] if image.shape[-1] == 1 else image


BORDER = (0.55, 0.65, 0.9)  # the colour between tiles (any grey could be a weight's)


def _show(ax, image, title='', **kwargs):
  """Draws `image` ([H, W] grey or [H, W, 3]); NaN pixels (tile borders) in BORDER."""
  if image.ndim == 3:
    image = np.where(np.isnan(image), np.asarray(BORDER, np.float32), image)
    ax.imshow(image, interpolation='nearest', **kwargs)
  else:
    cmap = _pyplot().get_cmap('gray').with_extremes(bad=BORDER)
    ax.imshow(np.ma.masked_invalid(image), cmap=cmap, vmin=0, vmax=1, interpolation='nearest',
              **kwargs)
  ax.set_title(title, fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])


def write_filters(path: str, kernel_path: str, kernel: np.ndarray) -> None:
  plt = _pyplot()
  grid = first_layer_filters(kernel, fill=np.nan)
  scale = 5.0 / max(grid.shape[:2])
  fig, ax = plt.subplots(figsize=(max(4.0, grid.shape[1] * scale), grid.shape[0] * scale + 0.6))
  kh, kw, cin, cout = kernel.shape
  _show(ax, grid, f'{kernel_path}: {cout} filters of {kh}x{kw}x{cin}\n'
        f'({"rows: filters, columns: input channels; " if cin not in (1, 3) else ""}'
        'each scaled to its own min..max)')
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def write_feature_maps(path: str, layer: str, images: np.ndarray, maps: np.ndarray,
                       captions: list[str], scale: str = 'layer') -> None:
  """One row per image: the input and its maps; `scale` 'layer': one grey scale for all the
  maps of all the images, from the layer's 0.5th to its 99.5th percentile (a saturated or
  dead map shows as such), 'map': each map stretched to its own min..max."""
  plt = _pyplot()
  n, channels = len(images), maps.shape[-1]
  columns = channels if channels <= 8 else math.ceil(math.sqrt(3 * channels))
  if scale == 'layer':  # the 0.5th and 99.5th percentiles: a few outliers do not grey it all
    low, high = (float(v) for v in np.percentile(maps, [0.5, 99.5]))
    stretched = np.clip((maps - low) / (high - low if high > low else 1.0), 0, 1)
    how = f'black <= {low:.3g}, white >= {high:.3g}'
  elif scale == 'map':
    stretched = _normalise(maps, (1, 2))
    how = 'each map scaled to its own min..max'
  else:
    raise VisualizeError(f"--scale is 'layer' or 'map', not {scale!r}.")
  grids = [tile_grid(np.moveaxis(m, -1, 0), columns, fill=np.nan) for m in stretched]
  ratio = grids[0].shape[1] / grids[0].shape[0]
  fig, axes = plt.subplots(n, 2, figsize=(min(14.0, 2.2 * (1 + ratio)), 2.4 * n), squeeze=False,
                           gridspec_kw={'width_ratios': [1, ratio]})
  for i in range(n):
    _show(axes[i, 0], _display(images[i]), captions[i])
    _show(axes[i, 1], grids[i], f'{layer}: {channels} maps of {maps.shape[1]}x{maps.shape[2]} '
          f'({how})')
  fig.tight_layout()
  fig.savefig(path, dpi=72)
  plt.close(fig)


def write_saliency(path: str, images: np.ndarray,
                   columns: list[tuple[list[str], Sequence[np.ndarray | None]]],
                   captions: list[str]) -> None:
  """One row per image: the input, then each column (titles, maps [H, W] per image, None where
  there is none) overlaid on it."""
  plt = _pyplot()
  n = len(images)
  fig, axes = plt.subplots(n, 1 + len(columns), figsize=(2.0 * (1 + len(columns)), 2.2 * n),
                           squeeze=False)
  for i in range(n):
    shown = _display(images[i])
    _show(axes[i, 0], shown, captions[i])
    for j, (title, maps) in enumerate(columns):
      ax = axes[i, j + 1]
      if maps[i] is None:
        ax.axis('off')
        ax.set_title(f'{title[i]}\n(label unknown)', fontsize=7)
        continue
      _show(ax, shown, title[i])
      ax.imshow(maps[i], cmap='jet', vmin=0, vmax=max(float(maps[i].max()), 1e-12), alpha=0.5,
                interpolation='nearest')
  fig.tight_layout()
  fig.savefig(path, dpi=64)
  plt.close(fig)


def _file_name(layer: str) -> str:
  return 'features_' + layer.replace('/', '.') + '.png'


def render(workdir: str, out: str | None = None, num_images: int = 4,
           image_paths: Sequence[str] = (), layers: Sequence[str] = (),
           cam_layer: str | None = None, config: Any = None,
           step: int | None = None, indices: Sequence[int] = (),
           scale: str = 'layer') -> list[str]:
  """Writes filters.png, features_<layer>.png and saliency.png into `out` (default
  workdir/visualize) and returns their paths."""
  if not os.path.isdir(workdir):
    raise VisualizeError(f'--workdir {workdir} does not exist.')
  config = load_config(workdir, config)
  images, labels, num_classes = load_images(config, num_images, image_paths, indices)
  run = load_run(workdir, config, num_classes, images.shape[1:], step)
  model, variables = run.model, run.variables
  available = list_layers(model, variables, images.shape[1:])
  defaults = default_layers(available)
  layers = list(layers) or defaults
  check_layers(layers, available)
  if cam_layer is None:
    if not defaults:
      raise VisualizeError('No layer with a feature map larger than 1x1; choose --cam_layer.')
    cam_layer = defaults[-1]
  check_layers([cam_layer], available)
  out = out or os.path.join(workdir, 'visualize')
  os.makedirs(out, exist_ok=True)

  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
  names = class_names(config, logits.shape[-1])
  predicted = logits.argmax(-1)
  numbers = list(indices) if indices and not image_paths else range(len(images))
  captions = [f'#{i}: {names[p]}' + (f'\n(true: {names[t]})' if t >= 0 else '')
              for i, p, t in zip(numbers, predicted, labels)]

  written = []
  kernel_path, kernel = first_conv_kernel(model, variables, images.shape[1:])
  written.append(os.path.join(out, 'filters.png'))
  write_filters(written[-1], kernel_path, kernel)

  for layer, maps in feature_maps(model, variables, images, layers).items():
    written.append(os.path.join(out, _file_name(layer)))
    write_feature_maps(written[-1], layer, images, maps, captions, scale)

  known = labels >= 0
  true_classes = np.where(known, labels, predicted)
  geometry = map_geometry(model, variables, images, cam_layer)
  columns = [([f'saliency: {names[p]}' for p in predicted],
              gradient_saliency(model, variables, images, predicted)),
             ([f'Grad-CAM: {names[p]}' for p in predicted],
              grad_cam(model, variables, images, predicted, cam_layer, geometry=geometry))]
  true_saliency = gradient_saliency(model, variables, images, true_classes)
  true_cam = grad_cam(model, variables, images, true_classes, cam_layer, geometry=geometry)
  true_titles = [f'{names[t]} (true)' if k else 'true class' for t, k in zip(true_classes, known)]
  columns += [([f'saliency: {t}' for t in true_titles],
               [m if k else None for m, k in zip(true_saliency, known)]),
              ([f'Grad-CAM: {t}' for t in true_titles],
               [m if k else None for m, k in zip(true_cam, known)])]
  written.append(os.path.join(out, 'saliency.png'))
  write_saliency(written[-1], images, columns, captions)
  with open(os.path.join(out, 'visualize.json'), 'w') as f:
    json.dump({'workdir': workdir, 'step': run.step, 'model': config.model.name,
               'first_layer': kernel_path, 'layers': layers, 'cam_layer': cam_layer,
               'cam_layer_geometry': {'rows': geometry[0], 'columns': geometry[1]},
               'predicted': [names[p] for p in predicted],
               'true': [names[t] if t >= 0 else None for t in labels]}, f, indent=2)
  return written


# ---- Command line ----------------------------------------------------------------------------

def _define_flags() -> dict[str, Any]:
  """The flags, defined only when run as a program (cnn_history.main and plot define --workdir
  and --config too, and tests import this module beside them)."""
  return {
      'workdir': flags.DEFINE_string('workdir', None, 'A training run directory.'),
      'out': flags.DEFINE_string('out', None, 'Where the PNGs go (default: WORKDIR/visualize).'),
      'num_images': flags.DEFINE_integer('images', 4, 'How many evaluation images (the first N).'),
      'image_paths': flags.DEFINE_multi_string('image', [], 'Image files to use instead of '
                                               'evaluation images (repeat the flag).'),
      'layers': flags.DEFINE_list('layers', [], 'Feature-map layers by module path (default: the '
                                  'convolutions; an unknown name lists the available ones).'),
      'cam_layer': flags.DEFINE_string('cam_layer', None, 'Grad-CAM layer (default: the last of '
                                       'the default feature-map layers: the last convolution).'),
      'step': flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).'),
      'scale': flags.DEFINE_enum('scale', 'layer', ['layer', 'map'], "Feature-map grey scale: "
                                 "'layer' (one for all maps of a layer) or 'map' (each its own)."),
      'indices': flags.DEFINE_list('indices', [], 'Evaluation examples by index, instead of the '
                                   'first --images (in-memory splits).'),
      'config': config_flags.DEFINE_config_file(
          'config', None, "The run's config file, for a workdir without config.json."),
  }


class _QuietLibraries:
  """Drops orbax's and TFDS's INFO lines (warnings still show)."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(p in record.pathname
                                           for p in ('/orbax/', '/tensorflow_datasets/'))


def main(argv, flag_values: dict[str, Any]):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}.')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  values = {k: v.value for k, v in flag_values.items()}
  try:
    values['indices'] = [int(i) for i in values['indices']]
  except ValueError:
    raise app.UsageError(f'--indices takes integers, got {values["indices"]}.') from None
  if not values['workdir']:
    raise app.UsageError('--workdir is required.')
  try:
    written = render(**values)
  except VisualizeError as e:
    raise app.UsageError(str(e)) from None
  print('\n'.join(written))


if __name__ == '__main__':
  _FLAGS = _define_flags()
  app.run(lambda argv: main(argv, _FLAGS))
