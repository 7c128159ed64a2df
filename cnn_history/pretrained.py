"""Imported weights and fine-tuning: what a converted checkpoint carries, and a new head.

`python -m cnn_history.convert` turns Keras / torchvision / timm weights into a workdir that
train.py reads like one of its own runs:

    OUT/checkpoints/0/      state (params, batch_stats; no optimizer state) + record
    OUT/conversion.json     source, model, the module switches the weights need (BN epsilon,
                            TF padding, in-model input scaling), num_classes, and the
                            evaluation preprocessing as a preprocessing-op string

The source framework's quirks travel with the weights (DESIGN.md, "Known traps"): a run that
evaluates OUT (mode='eval') or starts from it (init_from) merges conversion.json's switches
into config.model.overrides (`adopt_conversion`), and evaluation uses its preprocessing unless
config.data.eval_preprocess_from='config'.

Fine-tuning (`transfer`): the classifier head is found by shape, not by name. The models name
their classifier 'fc8', 'classifier', 'head', 'fc2', 'output', ... and some have auxiliary
classifiers; what they share is that exactly those tensors change shape with num_classes. So
the head is the set of variables whose shapes differ between the model built with the source's
and with the run's number of classes (`head_paths`); every other tensor must be copied.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from cnn_history import checkpoint

CONVERSION_FILE = 'conversion.json'
SOURCES = ('keras', 'torchvision', 'timm')

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # RGB, of images scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # BGR, in pixel units (Keras 'caffe' mode)

# keras.applications' builder of each registry model (for .h5 files that hold only weights).
KERAS_BUILDERS = {
    'vgg16': 'VGG16', 'vgg19': 'VGG19',
    'resnet50': 'ResNet50', 'resnet101': 'ResNet101', 'resnet152': 'ResNet152',
    'resnetv2_50': 'ResNet50V2', 'resnetv2_101': 'ResNet101V2', 'resnetv2_152': 'ResNet152V2',
    'densenet121': 'DenseNet121', 'densenet169': 'DenseNet169', 'densenet201': 'DenseNet201',
    'inception_v3': 'InceptionV3', 'inception_resnet_v2': 'InceptionResNetV2',
    'xception': 'Xception', 'mobilenet_v1': 'MobileNet', 'mobilenet_v2': 'MobileNetV2',
    'mobilenet_v3_large': 'MobileNetV3Large', 'mobilenet_v3_small': 'MobileNetV3Small',
    'nasnet_a_mobile': 'NASNetMobile', 'nasnet_a_large': 'NASNetLarge',
    **{f'efficientnet_b{i}': f'EfficientNetB{i}' for i in range(8)},
}

# The `mode` of keras.applications.<family>.preprocess_input each family's weights expect:
# 'caffe' RGB->BGR and the ImageNet mean subtracted in pixel units; 'tf' pixels to [-1, 1];
# 'torch' pixels to [0, 1], then the ImageNet mean/std. EfficientNet and MobileNetV3 scale
# their input inside the network (the converter's input_mean/input_std switches): 'none'.
_KERAS_MODES = (('vgg', 'caffe'), ('resnetv2_', 'tf'), ('resnet', 'caffe'), ('densenet', 'torch'),
                ('efficientnet', 'none'), ('mobilenet_v3', 'none'), ('', 'tf'))


def _literal(value: Any) -> str:
  """`value` as a Python literal for a preprocessing string (tuples stay tuples)."""
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(_literal(v) for v in value) + (',)' if len(value) == 1 else ')')
  if isinstance(value, float):
    return repr(round(value, 6))
  return repr(value)


def eval_preprocess(resolution: int | tuple[int, int], crop_pct: float = 0.875,
                    interpolation: str = 'bilinear', antialias: bool = True,
                    value_range: tuple[float, float] | None = (0.0, 1.0),
                    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                    bgr: bool = False, resize: int | None = None) -> str:
  """The single-crop evaluation of torchvision / timm / Keras as our preprocessing ops.

  Resize the shorter side to `resize`, by default floor(resolution / crop_pct) (timm's rule;
  torchvision's 256 for 224 is crop_pct 0.875), take the central resolution crop, optionally
  reverse the channels, map pixels [0, 255] onto `value_range` (None: keep pixel units), then
  (x - mean) / std in those units.
  """
  height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
  size = resize or int(math.floor(min(height, width) / crop_pct + 1e-6))
  ops = [f'resize_small({size}, {interpolation!r}, antialias={antialias})',
         f'center_crop({height}, {width})']
  if bgr:
    ops.append('rgb_to_bgr()')
  if value_range is not None and tuple(value_range) != (0.0, 255.0):
    ops.append(f'scale({_literal(float(value_range[0]))}, {_literal(float(value_range[1]))})')
  if mean is not None or std is not None:
    mean = (0.0,) if mean is None else tuple(mean)
    std = (1.0,) if std is None else tuple(std)
    ops.append(f'normalize({_literal(mean)}, {_literal(std)})')
  return '|'.join(ops)


def keras_mode(name: str) -> str:
  """The preprocess_input mode of Keras Applications' weights for registry model `name`."""
  return next(mode for prefix, mode in _KERAS_MODES if name.startswith(prefix))


def keras_preprocessing(name: str, resolution: tuple[int, int]) -> dict[str, Any]:
  """The evaluation preprocessing of Keras Applications' `name` at `resolution` (H, W): the
  central 87.5% crop, bilinear, and the family's preprocess_input mode."""
  mode = keras_mode(name)
  info = {'resolution': tuple(resolution), 'crop_pct': 0.875, 'interpolation': 'bilinear',
          'keras_mode': mode}
  if mode == 'caffe':
    info.update(value_range=None, mean=CAFFE_MEAN_BGR, bgr=True)
  elif mode == 'tf':
    info.update(value_range=(-1.0, 1.0))
  elif mode == 'torch':
    info.update(value_range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD)
  else:  # scaled inside the network
    info.update(value_range=None)
  return info


def preprocess_from_info(info: dict[str, Any]) -> str:
  """The preprocessing string of a converter's description (torch_preprocessing's dict:
  resolution, resize (the short side) or crop_pct, interpolation, mean, std in [0, 1] units,
  channel_order; or keras_preprocessing's)."""
  known = {'resolution', 'resize', 'crop_pct', 'interpolation', 'mean', 'std', 'value_range',
           'bgr', 'channel_order', 'antialias', 'keras_mode', 'crop_mode'}
  unknown = sorted(set(info) - known)
  if unknown:
    logging.warning('Preprocessing keys %s of the converter are not expressed in the '
                    'preprocessing string; check conversion.json.', unknown)
  crop_mode = info.get('crop_mode', 'center')
  if crop_mode != 'center':
    raise ValueError(f"The converter's crop_mode={crop_mode!r} has no preprocessing op here "
                     "(only 'center').")
  resolution = info['resolution']
  if isinstance(resolution, (list, tuple)) and len(resolution) == 3:  # timm's (C, H, W)
    resolution = tuple(resolution[1:])
  return eval_preprocess(
      resolution if isinstance(resolution, int) else tuple(resolution),
      crop_pct=float(info.get('crop_pct', 0.875)),
      interpolation=str(info.get('interpolation', 'bilinear')),
      antialias=bool(info.get('antialias', True)),
      value_range=info.get('value_range', (0.0, 1.0)),
      mean=info.get('mean'), std=info.get('std'),
      bgr=bool(info.get('bgr', False)) or info.get('channel_order', 'RGB') == 'BGR',
      resize=info.get('resize'))


# ---- Model switches -----------------------------------------------------------------------
# Switches that only change training (BN momentum and its batch span, dropout, stochastic
# depth), not what the weights compute: a config's own value of one of these wins.
_TRAINING_ONLY = ('momentum', 'batch_span', 'dropout', 'drop_path', 'stochastic_depth')


def training_only(switch: str) -> bool:
  return any(part in switch for part in _TRAINING_ONLY)


def _model_defaults(name: str) -> dict[str, Any]:
  from cnn_history import models  # pylint: disable=g-import-not-at-top
  spec = models.get_spec(name)
  return {**models.registry.module_defaults(spec.module), **spec.kwargs}


def module_overrides(name: str, module) -> dict[str, Any]:
  """The switches of a converter's `module` that differ from registry model `name`'s."""
  defaults = _model_defaults(name)
  out = {}
  for field in dataclasses.fields(module):
    if field.name in ('parent', 'name', 'num_classes', 'dtype') or not field.init:
      continue
    value = getattr(module, field.name)
    if field.name not in defaults or not _same(value, defaults[field.name]):
      out[field.name] = value
  return out


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return a == b


def _tuples(value: Any) -> Any:
  """JSON lists back to tuples (config fields and module switches hold tuples)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


# ---- conversion.json -----------------------------------------------------------------------
def read_conversion(workdir: str) -> dict[str, Any] | None:
  """conversion.json of `workdir`, or None when it is not an imported checkpoint."""
  if not workdir:
    return None
  path = checkpoint.as_path(workdir) / CONVERSION_FILE
  if not path.exists():
    return None
  conversion = json.loads(path.read_text())
  conversion['overrides'] = {k: _tuples(v) for k, v in conversion['overrides'].items()}
  return conversion


def adopt_conversion(config, conversion: dict[str, Any], where: str, evaluate: bool) -> None:
  """Makes `config` (unlocked fields are set in place) build the imported network.

  Its model must be conversion['model']; each switch the weights need is written into
  config.model.overrides unless the config already moved that switch away from the model's
  default to another value, which is an error (the weights would be run wrongly), or, for a
  training-only switch (BN momentum, dropout, ...), keeps the config's value. With
  `evaluate`, num_classes -1 becomes the imported one, and the imported preprocessing
  replaces config.data.eval_preprocess (and the extra eval_protocols are dropped) unless
  config.data.eval_preprocess_from='config'.
  """
  name = conversion['model']
  if config.model.name != name:
    raise ValueError(f'{where} holds imported {name} weights ({CONVERSION_FILE}), but '
                     f'config.model.name={config.model.name!r}: use a config of {name}.')
  defaults = _model_defaults(name)
  overrides = config.model.overrides
  for key, value in conversion['overrides'].items():
    current = overrides[key] if key in overrides else defaults.get(key)
    if _same(current, value):
      continue
    if key in overrides and not _same(current, defaults.get(key)):
      if training_only(key):
        logging.info('Imported weights in %s come with %s=%r; keeping the config\'s %r (a '
                     'training-only switch).', where, key, value, current)
        continue
      raise ValueError(f'config.model.overrides.{key}={current!r} contradicts the imported '
                       f'weights in {where}, which need {value!r} ({CONVERSION_FILE}); remove '
                       'that override.')
    with overrides.unlocked():
      if key in overrides and overrides[key] is not None and value is not None and (
          type(overrides[key]) is not type(value)):
        del overrides[key]  # e.g. a default None or int replaced by the weights' float
      overrides[key] = value
    logging.info('Imported weights in %s: config.model.overrides.%s = %r (was %r).', where,
                 key, value, current)
  if not evaluate:
    logging.info('Imported weights in %s were evaluated with %r (%s); the training data '
                 'should be normalised the same way.', where, conversion['eval_preprocess'],
                 CONVERSION_FILE)
    return
  classes = conversion['num_classes']
  if config.model.num_classes <= 0:
    config.model.num_classes = classes
  elif config.model.num_classes != classes:
    raise ValueError(f'config.model.num_classes={config.model.num_classes} but the imported '
                     f'weights in {where} have {classes} classes; set it to {classes} (or -1).')
  if config.data.eval_preprocess_from == 'auto':
    logging.info('Evaluating with the imported preprocessing %r (%s in %s) instead of '
                 'config.data.eval_preprocess=%r.', conversion['eval_preprocess'],
                 CONVERSION_FILE, where, config.data.eval_preprocess)
    config.data.eval_preprocess = conversion['eval_preprocess']
    if config.data.eval_protocols:  # written for the config's own normalisation
      logging.warning('Skipping config.data.eval_protocols %s: they assume the config\'s '
                      'normalisation, not the imported one (eval_preprocess_from=\'config\' '
                      'runs them).', sorted(config.data.eval_protocols))
      config.data.eval_protocols = ml_collections.ConfigDict()
  else:
    logging.info('Evaluating with config.data.eval_preprocess=%r (the imported weights were '
                 'evaluated with %r).', config.data.eval_preprocess,
                 conversion['eval_preprocess'])


# ---- Writing an imported checkpoint ----------------------------------------------------------
def save_imported(workdir: str, *, source: str, name: str, module, variables: dict[str, Any],
                  preprocessing: dict[str, Any], origin: str) -> dict[str, Any]:
  """Writes `variables` of registry model `name` as workdir/checkpoints/0 (train.py's layout,
  weights only) and workdir/conversion.json; returns the conversion record."""
  from cnn_history.state import TrainState  # pylint: disable=g-import-not-at-top
  directory = checkpoint.as_path(workdir) / 'checkpoints'
  if directory.exists() and any(d.name.isdigit() for d in directory.iterdir()):
    raise checkpoint.CheckpointError(f'{directory} already holds checkpoints; choose a new '
                                     '--workdir.')
  params = jax.tree_util.tree_map(jnp.asarray, variables['params'])
  batch_stats = jax.tree_util.tree_map(jnp.asarray, variables.get('batch_stats', {}))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state={}, rng=jax.random.key(0))
  identity = {'model': name, 'num_classes': int(module.num_classes),
              'params': checkpoint.fingerprint(params)}
  ckpt = checkpoint.Checkpoints(directory, 1, identity)
  ckpt.save(0, state, {'epoch': 0.0, 'contents': checkpoint.WEIGHTS_ONLY, 'source': source})
  ckpt.close()
  info = {k: (list(v) if isinstance(v, tuple) else v) for k, v in preprocessing.items()}
  conversion = {'source': source, 'model': name, 'checkpoint': origin,
                'num_classes': int(module.num_classes),
                'overrides': module_overrides(name, module),
                'preprocessing': info, 'eval_preprocess': preprocess_from_info(preprocessing),
                'num_params': int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))}
  checkpoint.write_json(checkpoint.as_path(workdir) / CONVERSION_FILE, conversion)
  return conversion


def load_keras_model(name: str, path: str, keras_args: dict[str, Any] | None = None):
  """A Keras model from a .keras / full-model .h5 file (keras.models.load_model: the file
  carries the architecture), or, for an .h5 of weights only (what keras.applications
  downloads), keras.applications.<Builder>(weights=path, **keras_args)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras_args = dict(keras_args or {})
  if path.endswith('.keras') or (path.endswith('.h5') and not path.endswith('.weights.h5')
                                 and not keras_args):
    try:
      return keras.models.load_model(path, compile=False)
    except ValueError as e:  # an .h5 without a model config: weights only
      if path.endswith('.keras'):
        raise
      logging.info('%s holds no model config (%s); building keras.applications.%s.', path,
                   str(e).splitlines()[0][:200], KERAS_BUILDERS.get(name))
  if name not in KERAS_BUILDERS:
    raise ValueError(f'No keras.applications builder for {name!r}; pass a .keras file. '
                     f'Known: {", ".join(sorted(KERAS_BUILDERS))}.')
  return getattr(keras.applications, KERAS_BUILDERS[name])(weights=path, **keras_args)


def import_weights(source: str, name: str, path: str, workdir: str,
                   keras_args: dict[str, Any] | None = None) -> dict[str, Any]:
  """Converts the `source` checkpoint at `path` to registry model `name` in `workdir`."""
  if source not in SOURCES:
    raise ValueError(f'--source={source!r}: choose one of {", ".join(SOURCES)}.')
  if source == 'keras':
    from cnn_history.convert.keras import keras_to_flax  # pylint: disable=g-import-not-at-top
    keras_model = load_keras_model(name, path, keras_args)
    module, variables = keras_to_flax(name, keras_model)
    shape = keras_model.inputs[0].shape
    resolution = (int(shape[1]), int(shape[2])) if shape[1] and shape[2] else \
        tuple(_input_hw(name))
    preprocessing = keras_preprocessing(name, resolution)
  else:
    from cnn_history.convert import torch as torch_convert  # pylint: disable=g-import-not-at-top
    state_dict = torch_convert.load_state_dict(path)
    module, variables = torch_convert.torch_to_flax(name, state_dict, source=source)
    preprocessing = dict(torch_convert.torch_preprocessing(name, source))
  return save_imported(workdir, source=source, name=name, module=module, variables=variables,
                       preprocessing=preprocessing, origin=str(path))


def _input_hw(name: str) -> tuple[int, int]:
  from cnn_history import models  # pylint: disable=g-import-not-at-top
  return models.input_shape(name)[:2]


def parse_keras_args(text: str) -> dict[str, Any]:
  """--keras_args: a Python dict literal, e.g. "{'alpha': 0.25, 'input_shape': (128, 128, 3)}"."""
  if not text:
    return {}
  value = ast.literal_eval(text)
  if not isinstance(value, dict):
    raise ValueError(f'--keras_args={text!r} must be a dict literal.')
  return value


# ---- Fine-tuning ---------------------------------------------------------------------------
def flatten(tree: Any) -> dict[str, Any]:
  return traverse_util.flatten_dict(dict(tree), sep='/') if tree else {}


def head_paths(build: Callable[[int], Any], source_classes: int, classes: int,
               image_shape: tuple[int, ...]) -> set[str]:
  """'collection/path' of every variable whose shape depends on the number of classes (the
  classifier and any auxiliary classifier): the model `build(n)` at both class counts."""
  if source_classes == classes:
    return set()

  def shapes(n):
    variables = jax.eval_shape(lambda: build(n).init(
        jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
    return {f'{c}/{p}': tuple(x.shape) for c in variables for p, x in flatten(variables[c]).items()}

  a, b = shapes(source_classes), shapes(classes)
  return {p for p in set(a) | set(b) if a.get(p) != b.get(p)}


def transfer(fresh: dict[str, Any], source: dict[str, Any], head: set[str],
             where: str) -> dict[str, Any]:
  """`fresh` ({'params':, 'batch_stats':}) with every tensor of `source` at the same path and
  shape copied in; head tensors (`head`) that differ keep their fresh initialisation. A
  non-head tensor missing from `source` or of another shape is an error naming each."""
  out, problems, reset, copied = {}, [], [], 0
  for collection, tree in fresh.items():
    have = flatten(source.get(collection, {}))
    flat = {}
    for path, value in flatten(tree).items():
      key = f'{collection}/{path}'
      theirs = have.pop(path, None)
      if theirs is not None and tuple(theirs.shape) == tuple(value.shape):
        flat[path] = theirs if theirs.sharding == value.sharding else \
            jax.device_put(theirs, value.sharding)
        copied += 1
      elif key in head:
        flat[path] = value
        reset.append(key)
      elif theirs is None:
        problems.append(f'{key} {tuple(value.shape)} is missing')
      else:
        problems.append(f'{key} is {tuple(theirs.shape)} there, {tuple(value.shape)} here')
    if have:
      logging.warning('config.init_from=%s: %d %s tensors not in this model are dropped: %s',
                      where, len(have), collection, sorted(have)[:10])
    out[collection] = traverse_util.unflatten_dict(flat, sep='/') if flat else tree
  if problems:
    raise checkpoint.CheckpointError(
        f'config.init_from={where!r} does not fit this model outside its classifier head: '
        f'{"; ".join(problems[:10])}{" ..." if len(problems) > 10 else ""}. Use the same '
        'model switches (config.model.overrides) as the run that wrote it.')
  logging.info('Initialised from %s: %d tensors copied; the head re-initialised: %s.', where,
               copied, sorted(reset) or 'none')
  return out
