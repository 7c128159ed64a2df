"""torchvision / timm state dicts -> Flax: every tensor mapped, checked, and accounted for.

Each registry model with a PyTorch counterpart registers a converter beside its model:

    @torch_converter('resnet18', 'resnet34', source='torchvision')
    def _resnet(weights: TorchWeights, name: str) -> dict:
      weights.conv('conv1', ('stem_conv1',))       # torch module prefix -> Flax module path
      weights.bn('bn1', ('stem_bn1',))
      ...
      weights.head('fc', ('head',))                # the classifier: sets num_classes
      return {'stride_in': '3x3'}   # the model options that make ours the torch network

`torch_to_flax(name, state_dict, source)` runs it, builds the Flax module with those options and
checks the result against the module's own variables: a missing, unexpected or mis-shaped
tensor, or a state-dict entry no converter line consumed, is a ConversionError naming it.

Layouts: torch conv weights are [O, I/groups, kh, kw] (a depthwise conv: [C, 1, kh, kw]), Flax's
[kh, kw, I/groups, O]; torch Linear weights are [out, in], Flax Dense kernels [in, out]. BN
weight/bias/running_mean/running_var become scale/bias/mean/var; num_batches_tracked (a step
counter of training) is consumed and dropped. torch's BN epsilon is 1e-5 unless a model says
otherwise, the converters pass the one their network uses.

Files: `load_state_dict` reads .safetensors without torch (the format is an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}} and the raw little-endian
bytes) and .pth/.pt/.bin pickles with torch when it is installed.
"""

from __future__ import annotations

import difflib
import json
import os
import struct
from typing import Any, Callable, Mapping

import flax.linen as nn
import numpy as np

from cnn_history.convert.common import (ConversionError, VariableWriter, check_variables,
                                        first_few, report_unused)

SOURCES = ('torchvision', 'timm')
_CONVERTERS: dict[str, dict[str, Callable[..., dict[str, Any]]]] = {s: {} for s in SOURCES}


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ValueError(f'Unknown PyTorch source {source!r}; choose one of {", ".join(SOURCES)}.')


def torch_converter(*names: str, source: str = 'torchvision'):
  """Registers a converter `(weights: TorchWeights, name) -> overrides` for the registry models
  `names`, reading state dicts of `source` ('torchvision' | 'timm')."""
  _check_source(source)

  def decorator(fn):
    for name in names:
      if name in _CONVERTERS[source]:
        raise ValueError(f'Two {source} converters for {name!r}.')
      _CONVERTERS[source][name] = fn
    return fn

  return decorator


def supported_torch_models(source: str = 'torchvision') -> list[str]:
  """Our registry names that `torch_to_flax` converts from `source`."""
  _check_source(source)
  _import_converters()
  return sorted(_CONVERTERS[source])


# ---- Reading files ----------------------------------------------------------------------------

# safetensors dtype -> numpy little-endian dtype (BF16 is widened to float32 by hand).
_SAFETENSORS_DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4',
                       'I16': '<i2', 'I8': 'i1', 'U8': 'u1', 'BOOL': '?'}
_NUMPY_TO_SAFETENSORS = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """The tensors of a .safetensors file as numpy arrays (BF16 -> float32), without torch."""
  with open(path, 'rb') as f:
    data = f.read()
  if len(data) < 8:
    raise ConversionError(f'{path}: too short for a safetensors file.')
  (header_len,) = struct.unpack('<Q', data[:8])
  if 8 + header_len > len(data):
    raise ConversionError(f'{path}: header length {header_len} runs past the end of the file.')
  header = json.loads(data[8:8 + header_len])
  body = memoryview(data)[8 + header_len:]
  tensors = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    dtype, shape, (start, end) = info['dtype'], tuple(info['shape']), info['data_offsets']
    if end > len(body) or start > end:
      raise ConversionError(f'{path}: tensor {name!r} lies outside the file ({start}:{end}).')
    raw = body[start:end]
    if dtype == 'BF16':  # the upper half of a float32
      bits = np.frombuffer(raw, '<u2').astype(np.uint32) << 16
      array = bits.view(np.float32)
    elif dtype in _SAFETENSORS_DTYPES:
      array = np.frombuffer(raw, _SAFETENSORS_DTYPES[dtype])
    else:
      raise ConversionError(f'{path}: tensor {name!r} has dtype {dtype}, which this reader does '
                            f'not support ({", ".join(["BF16", *_SAFETENSORS_DTYPES])}).')
    if array.size != int(np.prod(shape)):
      raise ConversionError(f'{path}: tensor {name!r} holds {array.size} values, not the '
                            f'{int(np.prod(shape))} of shape {shape}.')
    tensors[name] = array.reshape(shape).astype(array.dtype.newbyteorder('='))
  return tensors


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes numpy arrays as a .safetensors file (tests; tools without torch)."""
  header, chunks, offset = {}, [], 0
  for name, value in tensors.items():
    array = np.asarray(value)
    dtype = array.dtype if array.dtype.itemsize == 1 else array.dtype.newbyteorder('<')
    if dtype not in _NUMPY_TO_SAFETENSORS:
      raise ValueError(f'write_safetensors: {name!r} has unsupported dtype {array.dtype}.')
    raw = array.astype(dtype).tobytes()
    header[name] = {'dtype': _NUMPY_TO_SAFETENSORS[dtype], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  encoded = json.dumps(header).encode()
  encoded += b' ' * (-len(encoded) % 8)  # the format pads the header to 8 bytes with spaces
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(encoded)))
    f.write(encoded)
    for chunk in chunks:
      f.write(chunk)


def _to_numpy(value: Any) -> np.ndarray:
  """A numpy array from a numpy array or a torch tensor (bfloat16 -> float32)."""
  if isinstance(value, np.ndarray):
    return value
  if hasattr(value, 'detach'):  # a torch tensor, without importing torch
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def unwrap_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The flat {name: array} inside a checkpoint: looks into 'state_dict' / 'model' / 'module'
  entries (training-script checkpoints) and strips a 'module.' prefix (DataParallel)."""
  for key in ('state_dict', 'model', 'module', 'model_state_dict'):
    if isinstance(state_dict.get(key), Mapping):
      state_dict = state_dict[key]
      break
  out = {}
  for name, value in state_dict.items():
    if isinstance(value, Mapping):
      raise ConversionError(f'State dict entry {name!r} is a nested dict, not a tensor; pass the '
                            'model\'s state dict.')
    out[name[len('module.'):] if name.startswith('module.') else name] = _to_numpy(value)
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a .safetensors (read without torch) or .pth/.pt/.bin (torch.load) file."""
  path = os.fspath(path)
  if path.endswith('.safetensors'):
    return unwrap_state_dict(read_safetensors(path))
  if not path.endswith(('.pth', '.pt', '.bin', '.ckpt', '.tar')):
    raise ConversionError(f'{path}: unknown checkpoint format; expected .safetensors, .pth, '
                          '.pt or .bin.')
  try:
    import torch  # pylint: disable=g-import-not-at-top  (optional dependency)
  except ImportError:
    raise ConversionError(f'{path} is a pickled PyTorch checkpoint: reading it needs torch '
                          '(pip install torch), or convert it to .safetensors first.') from None
  return unwrap_state_dict(torch.load(path, map_location='cpu', weights_only=True))


# ---- Mapping tensors ----------------------------------------------------------------------------

class TorchWeights(VariableWriter):
  """Reads a state dict's tensors by name and writes them into Flax variable trees."""

  def __init__(self, state_dict: Mapping[str, Any]):
    super().__init__()
    self.tensors = unwrap_state_dict(state_dict)
    self._used: set[str] = set()
    self.num_classes: int | None = None

  # -- reading ---------------------------------------------------------------------------------
  def has(self, name: str) -> bool:
    return name in self.tensors

  def names(self, prefix: str = '') -> list[str]:
    """The state dict's names under `prefix` (all when empty), in their stored order."""
    return [n for n in self.tensors if n.startswith(prefix)]

  def take(self, name: str) -> np.ndarray:
    """Tensor `name`, marked as consumed."""
    if name not in self.tensors:
      close = difflib.get_close_matches(name, list(self.tensors), n=3)
      raise ConversionError(f'The state dict has no tensor {name!r}; close: {close}.')
    if name in self._used:
      raise ConversionError(f'Tensor {name!r} is mapped twice.')
    self._used.add(name)
    return self.tensors[name]

  def unused(self) -> list[str]:
    return [n for n in self.tensors if n not in self._used]

  # -- layouts ---------------------------------------------------------------------------------
  def conv(self, prefix: str, path: tuple[str, ...]) -> None:
    """Conv2d `prefix` (.weight [O, I/g, kh, kw] [, .bias]) -> a Flax Conv at `path`."""
    kernel = self.take(f'{prefix}.weight')
    if kernel.ndim != 4:
      raise ConversionError(f'{prefix}.weight has shape {kernel.shape}; a Conv2d weight is 4-D.')
    self.put('params', path, 'kernel', kernel.transpose(2, 3, 1, 0))
    if self.has(f'{prefix}.bias'):
      self.put('params', path, 'bias', self.take(f'{prefix}.bias'))

  def dense(self, prefix: str, path: tuple[str, ...]) -> None:
    """Linear `prefix` (.weight [out, in] [, .bias]) -> a Flax Dense at `path`."""
    kernel = self.take(f'{prefix}.weight')
    if kernel.ndim != 2:
      raise ConversionError(f'{prefix}.weight has shape {kernel.shape}; a Linear weight is 2-D.')
    self.put('params', path, 'kernel', kernel.T)
    if self.has(f'{prefix}.bias'):
      self.put('params', path, 'bias', self.take(f'{prefix}.bias'))

  def dense_from_map(self, prefix: str, path: tuple[str, ...], channels: int) -> None:
    """A Linear reading a flattened NCHW map of `channels` (torch's flatten: C, H, W order)
    -> a Flax Dense reading the flattened NHWC map (H, W, C order): its rows reordered."""
    kernel = self.take(f'{prefix}.weight')
    out, fan_in = kernel.shape
    side = int(round((fan_in // channels) ** 0.5))
    if channels * side * side != fan_in:
      raise ConversionError(f'{prefix}.weight {kernel.shape} does not read a square map of '
                            f'{channels} channels.')
    kernel = kernel.reshape(out, channels, side, side).transpose(2, 3, 1, 0)
    self.put('params', path, 'kernel', kernel.reshape(fan_in, out))
    if self.has(f'{prefix}.bias'):
      self.put('params', path, 'bias', self.take(f'{prefix}.bias'))

  def head(self, prefix: str, path: tuple[str, ...]) -> None:
    """The classifier Linear: `dense`, and its output width is the model's num_classes."""
    self.num_classes = int(self.tensors[f'{prefix}.weight'].shape[0]) if self.has(
        f'{prefix}.weight') else None
    self.dense(prefix, path)

  def bn(self, prefix: str, path: tuple[str, ...]) -> None:
    """BatchNorm2d `prefix` -> our BatchNorm at `path` (affine terms when it has them)."""
    if self.has(f'{prefix}.weight'):
      self.put('params', path, 'scale', self.take(f'{prefix}.weight'))
    if self.has(f'{prefix}.bias'):
      self.put('params', path, 'bias', self.take(f'{prefix}.bias'))
    self.put('batch_stats', path, 'mean', self.take(f'{prefix}.running_mean'))
    self.put('batch_stats', path, 'var', self.take(f'{prefix}.running_var'))
    if self.has(f'{prefix}.num_batches_tracked'):
      self.take(f'{prefix}.num_batches_tracked')

  def conv_bn(self, conv_prefix: str, bn_prefix: str, path: tuple[str, ...]) -> None:
    """A conv and its BN -> a layers.ConvBN at `path` (its 'conv' and 'bn')."""
    self.conv(conv_prefix, path + ('conv',))
    self.bn(bn_prefix, path + ('bn',))

  def inverted_residual(self, prefix: str, path: tuple[str, ...], expand: bool,
                        se: bool) -> None:
    """A torchvision MBConv / InvertedResidual whose layers are the numbered children
    `prefix`.{0, 1, ...}: [expansion,] depthwise, [SE (fc1, fc2),] projection, each a conv with
    its BN at .0/.1 -- except MobileNetV2's projection, a bare conv and its BN as two children
    -> layers.InvertedResidual at `path` (expand, depthwise, se/reduce|expand, project)."""
    parts = (['expand'] if expand else []) + ['depthwise'] + (['se'] if se else []) + ['project']
    index = 0
    for part in parts:
      child = f'{prefix}.{index}'
      if part == 'se':
        self.conv(f'{child}.fc1', path + ('se', 'reduce'))
        self.conv(f'{child}.fc2', path + ('se', 'expand'))
        index += 1
      elif self.has(f'{child}.0.weight'):
        self.conv_bn(f'{child}.0', f'{child}.1', path + (part,))
        index += 1
      else:
        self.conv_bn(child, f'{prefix}.{index + 1}', path + (part,))
        index += 2


def _import_converters() -> None:
  """The converters live beside their models; importing the zoo registers them."""
  import cnn_history.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


def convert_torch(state_dict: Mapping[str, Any], module: nn.Module,
                  mapping: Callable[[TorchWeights], None],
                  input_shape: tuple[int, ...]) -> dict[str, Any]:
  """Runs `mapping(weights)` and returns the checked variables of `module`."""
  weights = TorchWeights(state_dict)
  mapping(weights)
  report_unused(weights.unused(), 'PyTorch')
  return check_variables(weights.variables, module, input_shape, 'PyTorch')


def torch_to_flax(name: str, state_dict: Mapping[str, Any],
                  source: str = 'torchvision') -> tuple[nn.Module, dict[str, Any]]:
  """The registry model `name` configured like the `source` network, and its weights.

  `state_dict` maps torch names to numpy arrays or torch tensors (a training checkpoint's
  wrappers are unwrapped); num_classes is read from the classifier.
  """
  # A cycle: the model files import this module to register their converters.
  from cnn_history.models import registry  # pylint: disable=g-import-not-at-top
  _check_source(source)
  _import_converters()
  if name not in _CONVERTERS[source]:
    raise ConversionError(f'No {source} converter for {name!r}; models with one: '
                          f'{", ".join(sorted(_CONVERTERS[source]))}.')
  weights = TorchWeights(state_dict)
  overrides = dict(_CONVERTERS[source][name](weights, name) or {})
  num_classes = overrides.pop('num_classes', weights.num_classes)
  if num_classes is None:
    raise ConversionError(f'The {name!r} converter did not map a classifier (weights.head).')
  module = registry.create_model(name, num_classes=num_classes, **overrides)
  report_unused(weights.unused(), 'PyTorch')
  spec = registry.get_spec(name)
  return module, check_variables(weights.variables, module, spec.input_shape, 'PyTorch')


# ---- Evaluation preprocessing -------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# torchvision's IMAGENET1K_V1 weights (torchvision.models.*: transforms=ImageClassification):
# resize the short side to `resize` (bilinear unless stated), center-crop `crop`. Default 256 ->
# 224, bilinear, ImageNet mean/std. googlenet and inception_v3 load their pretrained weights with
# transform_input=True, which turns the ImageNet-normalised input into (x - 0.5) / 0.5 (the
# TF-slim originals' [-1, 1]); our models have no such step, so they take that scaling directly.
_TORCHVISION_EVAL = {
    'googlenet_tv': dict(mean=INCEPTION_MEAN, std=INCEPTION_STD),
    'inception_v3': dict(resize=342, crop=299, mean=INCEPTION_MEAN, std=INCEPTION_STD),
    'efficientnet_b0': dict(resize=256, crop=224, interpolation='bicubic'),
    'efficientnet_b1': dict(resize=256, crop=240, interpolation='bicubic'),
    'efficientnet_b2': dict(resize=288, crop=288, interpolation='bicubic'),
    'efficientnet_b3': dict(resize=320, crop=300, interpolation='bicubic'),
    'efficientnet_b4': dict(resize=384, crop=380, interpolation='bicubic'),
    'efficientnet_b5': dict(resize=456, crop=456, interpolation='bicubic'),
    'efficientnet_b6': dict(resize=528, crop=528, interpolation='bicubic'),
    'efficientnet_b7': dict(resize=600, crop=600, interpolation='bicubic'),
    'shufflenet_v2_x1_5': dict(resize=232, crop=224),
    'shufflenet_v2_x2_0': dict(resize=232, crop=224),
}

# timm's pretrained_cfg of each model's default weights (timm 1.0): input size, crop_pct (resize
# the short side to size / crop_pct, center-crop size), interpolation, mean, std.
_TIMM_EVAL = {
    'resnet50d': (224, 0.875, 'bicubic', IMAGENET_MEAN, IMAGENET_STD),
    'inception_v4': (299, 0.875, 'bicubic', INCEPTION_MEAN, INCEPTION_STD),
    'inception_resnet_v2': (299, 0.8975, 'bicubic', INCEPTION_MEAN, INCEPTION_STD),
    'seresnet50': (224, 0.875, 'bilinear', IMAGENET_MEAN, IMAGENET_STD),
    'seresnet101': (224, 0.875, 'bilinear', IMAGENET_MEAN, IMAGENET_STD),
    'seresnet152': (224, 0.875, 'bilinear', IMAGENET_MEAN, IMAGENET_STD),
    'seresnext50_32x4d': (224, 0.875, 'bilinear', IMAGENET_MEAN, IMAGENET_STD),
    'seresnext101_32x4d': (224, 0.875, 'bilinear', IMAGENET_MEAN, IMAGENET_STD),
    'senet154': (224, 0.875, 'bilinear', IMAGENET_MEAN, IMAGENET_STD),
    'xception': (299, 0.8975, 'bicubic', INCEPTION_MEAN, INCEPTION_STD),
    'nasnet_a_large': (331, 0.911, 'bicubic', INCEPTION_MEAN, INCEPTION_STD),
}


def torch_preprocessing(name: str, source: str = 'torchvision') -> dict[str, Any]:
  """How `source` evaluates its pretrained `name` (our registry name), for the converted model:
  {resolution, resize, crop_pct, interpolation, mean, std, channel_order}. Images are RGB scaled
  to [0, 1]; resize is the short side before the center crop of resolution x resolution (timm:
  floor(resolution / crop_pct)); then (x - mean) / std per channel."""
  _check_source(source)
  if source == 'torchvision':
    if name not in supported_torch_models('torchvision'):
      raise ConversionError(f'No torchvision converter for {name!r}; models with one: '
                            f'{", ".join(supported_torch_models("torchvision"))}.')
    cfg = {'resize': 256, 'crop': 224, 'interpolation': 'bilinear', 'mean': IMAGENET_MEAN,
           'std': IMAGENET_STD, **_TORCHVISION_EVAL.get(name, {})}
    resolution, resize, interpolation = cfg['crop'], cfg['resize'], cfg['interpolation']
    crop_pct, mean, std = resolution / resize, cfg['mean'], cfg['std']
  else:
    if name not in _TIMM_EVAL:
      raise ConversionError(f'No timm preprocessing recorded for {name!r}; known: '
                            f'{", ".join(sorted(_TIMM_EVAL))}.')
    resolution, crop_pct, interpolation, mean, std = _TIMM_EVAL[name]
    resize = int(resolution / crop_pct)  # timm's transforms_factory: math.floor(size / crop_pct)
  return {'resolution': resolution, 'resize': resize, 'crop_pct': crop_pct,
          'interpolation': interpolation, 'mean': mean, 'std': std, 'channel_order': 'RGB'}
