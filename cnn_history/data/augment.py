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
def pad(pixels: int, value: float = 0.0):
  """Pads every side with `pixels` of `value` (LeNet-5: 28x28 digits centred in 32x32)."""

  def fn(image, seed):
    del seed
    paddings = [[pixels, pixels], [pixels, pixels], [0, 0]]
    return tf.pad(image, paddings, constant_values=tf.cast(value, image.dtype))

  return fn


@op('resize')
def resize(height: int, width: int | None = None, method: str = 'bilinear'):
  """Resizes to height x width (aspect ratio not kept)."""

  def fn(image, seed):
    del seed
    return tf.image.resize(_float(image), (height, width or height), method=method)

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


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """A parsed preprocessing string: apply with pipeline(image, seed)."""
  spec: str
  ops: tuple[Callable[[tf.Tensor, tf.Tensor], tf.Tensor], ...]

  def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    for i, fn in enumerate(self.ops):
      image = fn(image, tf.random.experimental.stateless_fold_in(seed, i))
    return tf.cast(image, tf.float32)


def parse(spec: str) -> Pipeline:
  """Parses 'op(args)|op(args)' into a Pipeline; unknown ops name the close ones."""
  ops = []
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
    except TypeError as e:
      raise ValueError(f'Preprocessing op {part!r}: {e}') from None
  return Pipeline(spec, tuple(ops))


def list_ops() -> list[str]:
  return sorted(_OPS)


def output_shape(pipeline: Pipeline, image_shape: tuple[Any, ...]) -> tuple[Any, ...]:
  """The image shape after `pipeline`, traced symbolically on an input of `image_shape`."""
  spec = tf.TensorSpec(image_shape, tf.uint8)
  fn = tf.function(lambda image: pipeline(image, tf.constant([0, 0], tf.int64)))
  return tuple(fn.get_concrete_function(spec).structured_outputs.shape.as_list())
