"""Per-image preprocessing and augmentation ops, chosen by a config string.

A preprocessing string chains ops with '|', each written as a Python call with literal
arguments, as in big_vision:

    config.data.train_preprocess = 'pad(2)|scale(-0.1, 1.175)'     # LeNet-5's input

Each op maps (image, seed) -> image in TensorFlow. Random ops draw from stateless RNGs
seeded per example from (run seed, epoch, example position), so the augmented stream is a
deterministic function of the seed and resumes exactly.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from typing import Any, Callable

import tensorflow as tf

_OPS: dict[str, Callable[..., Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]] = {}


def op(name: str):
  """Registers an op factory: factory(*args, **kwargs) -> fn(image, seed) -> image."""

  def decorator(factory):
    _OPS[name] = factory
    return factory

  return decorator


def _float(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(image, tf.float32)


@op('scale')
def scale(low: float = 0.0, high: float = 1.0):
  """Maps pixel values [0, 255] linearly onto [low, high] (LeNet-5: -0.1 .. 1.175)."""

  def fn(image, seed):
    del seed
    return low + _float(image) * ((high - low) / 255.0)

  return fn


@op('normalize')
def normalize(mean, std=1.0):
  """(x - mean) / std per channel, in the units the image has at this point."""

  def fn(image, seed):
    del seed
    return (_float(image) - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)

  return fn


@op('pad')
def pad(pixels: int, value: float = 0.0, mode: str = 'constant'):
  """Pads every side with `pixels` of `value` (LeNet-5: 28x28 digits centred in 32x32), or
  with mirrored pixels, mode='reflect' (Wide ResNet's CIFAR augmentation)."""
  if mode not in ('constant', 'reflect'):
    raise ValueError(f"pad: mode must be 'constant' or 'reflect', got {mode!r}.")

  def fn(image, seed):
    del seed
    paddings = [[pixels, pixels], [pixels, pixels], [0, 0]]
    if mode == 'reflect':
      return tf.pad(image, paddings, mode='REFLECT')
    return tf.pad(image, paddings, constant_values=tf.cast(value, image.dtype))

  return fn


@op('resize')
def resize(height: int, width: int | None = None, method: str = 'bilinear',
           antialias: bool = False):
  """Resizes to height x width (aspect ratio not kept); `method` 'bilinear' | 'bicubic' | ...
  (tf.image.resize's names); antialias=True filters when shrinking, as PIL does (torchvision,
  timm)."""

  def fn(image, seed):
    del seed
    return tf.image.resize(_float(image), (height, width or height), method=method,
                           antialias=antialias)

  return fn


@op('center_crop')
def center_crop(height: int, width: int | None = None):
  """The central height x width window."""

  def fn(image, seed):
    del seed
    return tf.image.resize_with_crop_or_pad(image, height, width or height)

  return fn


@op('random_crop')
def random_crop(height: int, width: int | None = None, padding: int = 0):
  """A random height x width window, after zero-padding every side by `padding`."""

  def fn(image, seed):
    if padding:
      image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    size = tf.stack([height, width or height, tf.shape(image)[-1]])
    return tf.image.stateless_random_crop(image, size, seed)

  return fn


@op('flip_lr')
def flip_lr():
  """Horizontal flip with probability 1/2."""

  def fn(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed)

  return fn


@op('resize_small')
def resize_small(size: int, method: str = 'bilinear', antialias: bool = False):
  """Resizes so that the shorter side is `size`, keeping the aspect ratio (AlexNet, VGG's
  fixed S, ResNet's evaluation: 256); `method` and `antialias` as in resize."""

  def fn(image, seed):
    del seed
    return _resize_shorter(image, tf.constant(size, tf.float32), method, antialias)

  return fn


def _resize_shorter(image, size, method, antialias=False):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = size / tf.reduce_min(shape)
  new = tf.cast(tf.round(shape * scale), tf.int32)
  return tf.image.resize(_float(image), new, method=method, antialias=antialias)


@op('resize_small_random')
def resize_small_random(min_size: int, max_size: int, method: str = 'bilinear'):
  """Scale jittering: the shorter side drawn uniformly from [min_size, max_size] per image
  (VGG's multi-scale training S in [256, 512]; ResNet's [256, 480])."""

  def fn(image, seed):
    size = tf.random.stateless_uniform([], seed, min_size, max_size + 1, tf.int32)
    return _resize_shorter(image, tf.cast(size, tf.float32), method)

  return fn


@op('inception_crop')
def inception_crop(size: int, area_min: float = 0.08, area_max: float = 1.0,
                   aspect_min: float = 3 / 4, aspect_max: float = 4 / 3,
                   method: str = 'bilinear'):
  """GoogLeNet's random-sized crop: a patch whose area is uniform in [area_min, area_max] of
  the image and aspect ratio in [aspect_min, aspect_max], resized to size x size."""

  def fn(image, seed):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4], tf.float32), seed,
        min_object_covered=0.0, aspect_ratio_range=(aspect_min, aspect_max),
        area_range=(area_min, area_max), max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])  # the channels survive a run-time crop
    return tf.image.resize(_float(crop), (size, size), method=method)

  return fn


@op('color_jitter')
def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.0):
  """Photometric distortions on a 0-255 RGB image: brightness, contrast and saturation each
  scaled by a factor drawn from [1 - x, 1 + x] (fb.resnet.torch's ColorJitter, Bag of Tricks'
  [0.6, 1.4]), hue shifted by up to +-hue (a fraction of the hue circle). Fixed order."""

  def fn(image, seed):
    x = _float(image) / 255.0
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if brightness:
      x = x * tf.random.stateless_uniform([], seeds[0], 1 - brightness, 1 + brightness)
    if contrast:
      x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast, seeds[1])
    if saturation and x.shape[-1] == 3:
      x = tf.image.stateless_random_saturation(x, 1 - saturation, 1 + saturation, seeds[2])
    if hue and x.shape[-1] == 3:
      x = tf.image.stateless_random_hue(x, hue, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0

  return fn


# AlexNet's PCA colour augmentation: eigenvalues and eigenvectors (rows) of the covariance of
# ImageNet's RGB pixels in [0, 1] (the constants of fb.resnet.torch; papers.md §3).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


@op('lighting')
def lighting(alpha_std: float = 0.1, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC,
             pixel_scale: float = 255.0):
  """AlexNet §4.1: adds sum_i alpha_i lambda_i p_i to every RGB pixel, alpha_i ~ N(0, 0.1^2)
  drawn once per image; eigval/eigvec (rows p_i) from `python -m cnn_history.data.stats` or
  the standard ImageNet constants, for pixels in [0, 1] (scaled by pixel_scale)."""
  vec = tf.constant(eigvec, tf.float32)   # rows: eigenvectors p_i
  val = tf.constant(eigval, tf.float32)

  def fn(image, seed):
    alpha = tf.random.stateless_normal([3], seed, stddev=alpha_std)
    shift = tf.linalg.matvec(vec, alpha * val, transpose_a=True) * pixel_scale
    return _float(image) + shift

  return fn


@op('rgb_to_bgr')
def rgb_to_bgr():
  """Channel order of Caffe-trained networks (VGG, ResNet v1 weights)."""

  def fn(image, seed):
    del seed
    return image[..., ::-1]

  return fn


@op('subtract_mean_image')
def subtract_mean_image(path: str):
  """Subtracts a per-pixel mean image (AlexNet §2: "subtracting the mean activity over the
  training set from each pixel") stored as .npy by `python -m cnn_history.data.stats`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  mean = tf.constant(np.load(path), tf.float32)

  def fn(image, seed):
    del seed
    return _float(image) - mean

  return fn


# ---- AutoAugment ----------------------------------------------------------------------------
# Cubuk et al. 2019, the ImageNet policy as EfficientNet trained with it (tensorflow/tpu
# `policy_v0`): 25 sub-policies of two (op, probability, magnitude 0-10) steps; one sub-policy
# is drawn per image. Magnitudes map to arguments as in that code: rotate 30 deg x m/10 and
# shears 0.3 x m/10 and translations 250 px x m/10 with a random sign; enhancement factors
# 0.1 + 1.8 m/10; posterize keeps int(4 m/10) bits (that code's mapping, not the paper's 4-8);
# solarize threshold int(256 m/10); solarize-add int(110 m/10). Empty pixels become 128.
AUTOAUGMENT_IMAGENET = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)
_FILL = 128.0


def _blend(degenerate, image, factor):
  """PIL's ImageEnhance: degenerate + factor (image - degenerate), clipped to [0, 255]."""
  return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _gray(image):
  return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)


def _transform(image, matrix):
  """Projective transform (output -> input coordinates, 8 numbers), nearest, fill 128."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.reshape(tf.cast(matrix, tf.float32), [1, 8]),
      output_shape=tf.shape(image)[:2], fill_value=_FILL, interpolation='NEAREST',
      fill_mode='CONSTANT')
  return out[0]


def _rotate(image, degrees):
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  a = degrees * 3.141592653589793 / 180.0
  cos, sin = tf.cos(a), tf.sin(a)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  # input = R^-1 (output - centre) + centre; positive degrees turn the content clockwise.
  return _transform(image, [cos, -sin, cx - cos * cx + sin * cy,
                            sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])


def _equalize_channel(channel):
  """PIL's ImageOps.equalize on one uint8 channel (values as float)."""
  values = tf.cast(channel, tf.int32)
  hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
  nonzero = tf.boolean_mask(hist, hist > 0)
  step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
  lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  return tf.where(step > 0, tf.cast(tf.gather(lut, values), tf.float32), channel)


def _autocontrast_channel(channel):
  """PIL's ImageOps.autocontrast: lo -> 0, hi -> 255, int(x * scale + offset) in float64."""
  x = tf.cast(channel, tf.float64)
  lo, hi = tf.reduce_min(x), tf.reduce_max(x)
  scale = 255.0 / tf.maximum(hi - lo, 1e-6)
  scaled = tf.clip_by_value(tf.floor(x * scale - lo * scale), 0.0, 255.0)
  return tf.where(hi > lo, tf.cast(scaled, tf.float32), channel)


def _per_channel(fn, image):
  return tf.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def _sign(seed):
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def _enhance(m):
  return 0.1 + 1.8 * m / 10.0


_AA_OPS = {  # name -> fn(image (float 0..255), magnitude, seed)
    'AutoContrast': lambda x, m, s: _per_channel(_autocontrast_channel, x),
    'Equalize': lambda x, m, s: _per_channel(_equalize_channel, x),
    'Invert': lambda x, m, s: 255.0 - x,
    'Posterize': lambda x, m, s: tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(
        tf.cast(x, tf.uint8), 8 - int(4 * m / 10)), 8 - int(4 * m / 10)), tf.float32),
    'Solarize': lambda x, m, s: tf.where(x < int(256 * m / 10), x, 255.0 - x),
    'SolarizeAdd': lambda x, m, s: tf.where(x < 128, tf.clip_by_value(x + int(110 * m / 10),
                                                                      0.0, 255.0), x),
    'Color': lambda x, m, s: _blend(tf.broadcast_to(_gray(x), tf.shape(x)), x, _enhance(m)),
    'Contrast': lambda x, m, s: _blend(tf.fill(tf.shape(x), tf.reduce_mean(_gray(x))), x,
                                       _enhance(m)),
    'Brightness': lambda x, m, s: _blend(tf.zeros_like(x), x, _enhance(m)),
    'Rotate': lambda x, m, s: _rotate(x, _sign(s) * 30.0 * m / 10),
    'ShearX': lambda x, m, s: _transform(x, [1.0, _sign(s) * 0.3 * m / 10, 0, 0, 1, 0, 0, 0]),
    'ShearY': lambda x, m, s: _transform(x, [1.0, 0, 0, _sign(s) * 0.3 * m / 10, 1, 0, 0, 0]),
    'TranslateX': lambda x, m, s: _transform(x, [1.0, 0, _sign(s) * 250.0 * m / 10, 0, 1, 0, 0, 0]),
    'TranslateY': lambda x, m, s: _transform(x, [1.0, 0, 0, 0, 1, _sign(s) * 250.0 * m / 10, 0, 0]),
}


@op('autoaugment')
def autoaugment(policy: str = 'imagenet'):
  """AutoAugment (Cubuk et al. 2019) with its ImageNet policy, as EfficientNet trained.

  Our Contrast blends towards the mean grey level as PIL does (tensorflow/tpu's port blends
  towards num_pixels/256, a known bug: tensorflow/tpu#825)."""
  if policy != 'imagenet':
    raise ValueError(f"autoaugment: unknown policy {policy!r}; available: 'imagenet'.")
  table = AUTOAUGMENT_IMAGENET

  def fn(image, seed):
    x = tf.clip_by_value(_float(image), 0.0, 255.0)  # bicubic resizing can overshoot
    seeds = tf.random.experimental.stateless_split(seed, 5)
    choice = tf.random.stateless_uniform([], seeds[0], 0, len(table), tf.int32)

    def sub_policy(steps):
      def apply(x):
        for i, (name, prob, magnitude) in enumerate(steps):
          use = tf.random.stateless_uniform([], seeds[1 + 2 * i]) < prob
          x = tf.cond(use, lambda x=x, n=name, m=magnitude, k=i: _AA_OPS[n](x, m, seeds[2 + 2 * k]),
                      lambda x=x: x)
        return x
      return apply

    return tf.switch_case(choice, [lambda steps=steps: sub_policy(steps)(x) for steps in table])

  return fn


@op('ten_crop')
def ten_crop(size: int):
  """The four corner and the centre size x size crops and their mirrors: [10, size, size, C]
  (AlexNet's and ResNet's 10-crop evaluation; softmax averaged over the views)."""

  def fn(image, seed):
    del seed
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    offsets = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
               ((h - size) // 2, (w - size) // 2)]
    crops = [tf.image.crop_to_bounding_box(image, y, x, size, size) for y, x in offsets]
    return tf.stack(crops + [c[:, ::-1] for c in crops])

  return fn


@op('grid_crops')
def grid_crops(size: int, grid: int = 5, flip: bool = True):
  """A grid x grid array of size x size crops (and their mirrors) spanning the image: VGG's
  multi-crop evaluation (5 x 5 x 2 = 50 crops per scale)."""

  def fn(image, seed):
    del seed
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    crops = []
    for i in range(grid):
      for j in range(grid):
        y = (h - size) * i // max(grid - 1, 1)
        x = (w - size) * j // max(grid - 1, 1)
        crops.append(tf.image.crop_to_bounding_box(image, y, x, size, size))
    if flip:
      crops += [c[:, ::-1] for c in crops]
    return tf.stack(crops)

  return fn


@op('flips')
def flips():
  """The image and its mirror, [2, H, W, C] (VGG's flip-averaged dense evaluation)."""

  def fn(image, seed):
    del seed
    return tf.stack([image, image[:, ::-1]])

  return fn


# Ops that ignore their seed (the same output for an image every time): a pipeline of only
# these is applied to a whole batch at once (pipeline.train_batches), 10x faster than per image.
DETERMINISTIC_OPS = frozenset({'scale', 'normalize', 'pad', 'resize', 'center_crop',
                               'resize_small', 'rgb_to_bgr', 'subtract_mean_image'})


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """A parsed preprocessing string: apply with pipeline(image, seed)."""
  spec: str
  ops: tuple[Callable[[tf.Tensor, tf.Tensor], tf.Tensor], ...]
  names: tuple[str, ...] = ()

  @property
  def deterministic(self) -> bool:
    """True when no op draws random numbers (the seed changes nothing)."""
    return all(name in DETERMINISTIC_OPS for name in self.names)

  def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    for i, fn in enumerate(self.ops):
      image = fn(image, tf.random.experimental.stateless_fold_in(seed, i))
    return tf.cast(image, tf.float32)


def parse(spec: str) -> Pipeline:
  """Parses 'op(args)|op(args)' into a Pipeline; unknown ops name the close ones."""
  ops, names = [], []
  for part in filter(None, (p.strip() for p in spec.split('|'))):
    try:
      call = ast.parse(part if '(' in part else part + '()', mode='eval').body
      if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (ValueError, SyntaxError):
      raise ValueError(f'Cannot parse preprocessing op {part!r}; write ops as calls with '
                       "literal arguments, e.g. 'pad(2)|scale(-0.1, 1.175)'.") from None
    name = call.func.id
    if name not in _OPS:
      close = difflib.get_close_matches(name, list(_OPS), n=3, cutoff=0.5)
      hint = f' Did you mean {", ".join(close)}?' if close else ''
      raise ValueError(f'Unknown preprocessing op {name!r}.{hint} Ops: {", ".join(sorted(_OPS))}.')
    try:
      ops.append(_OPS[name](*args, **kwargs))
    except (TypeError, ValueError) as e:
      raise ValueError(f'Preprocessing op {part!r}: {e}') from None
    names.append(name)
  return Pipeline(spec, tuple(ops), tuple(names))


class Views:
  """An evaluation protocol: one or more preprocessing branches joined by ' + ', each giving
  one image or a stack of views [V, H, W, C] (e.g. 'resize_small(256)|ten_crop(224)'), for
  multi-scale evaluation: 'resize_small(256)|center_crop(256)|flips() + resize_small(384)|...'.
  Calling it returns {'image': first branch, 'image_1': second, ...}; evaluation averages the
  softmax over the views of a branch, then over the branches."""

  def __init__(self, spec: str):
    self.spec = spec
    self.branches = tuple(parse(part) for part in spec.split(' + ')) if spec.strip() else (
        parse(''),)

  def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    return {('image' if i == 0 else f'image_{i}'): branch(image, seed)
            for i, branch in enumerate(self.branches)}


def list_ops() -> list[str]:
  return sorted(_OPS)


def output_shape(pipeline: Pipeline, image_shape: tuple[Any, ...]) -> tuple[Any, ...]:
  """The image shape after `pipeline`, traced symbolically on an input of `image_shape`."""
  spec = tf.TensorSpec(image_shape, tf.uint8)
  fn = tf.function(lambda image: pipeline(image, tf.constant([0, 0], tf.int64)))
  return tuple(fn.get_concrete_function(spec).structured_outputs.shape.as_list())
