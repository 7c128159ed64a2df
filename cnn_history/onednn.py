"""CPU custom calls for XLA:CPU: oneDNN's convolutions (cnn_history/csrc/onednn_conv.cc) and a
fused training-mode batch normalisation (cnn_history/csrc/batch_norm.cc), as XLA FFI targets.

Convolutions. XLA:CPU lowers a convolution's two gradients poorly: the kernel gradient runs as
a convolution over the batch, and a strided convolution's input gradient as a convolution of
the zero-spread output gradient, each several times the forward pass; and its forward pass is
slow at few channels (ResNet-20's 16-channel layers). oneDNN, the library
under PyTorch's CPU convolutions, has direct kernels for all three (NHWC activations, the
kernel reordered to its blocked layout). `conv` is the convolution with oneDNN's forward pass
and gradients; `python benchmarks/conv_lowering.py` times each layer both ways and
results/benchmarks/README.md records what it gains whole networks.

Batch normalisation. `batch_norm` is BN's training pass with the residual add and ReLU that
follow it in a ResNet block, forward and backward, each direction two or three passes over the
tensor. XLA fuses the same arithmetic but, in a residual network, re-fuses each block's output
into the next block's (re-reading every earlier block's convolution output) and runs the
per-channel sums as separate loops. `layers.BatchNorm` uses it in float32 training where the
convolutions are oneDNN's (below); FUSED_BATCH_NORM (CNN_HISTORY_FUSED_BATCH_NORM=0) turns
just it off.

Availability: the shared library is built from both sources by

    python -m cnn_history.onednn     # needs g++ and oneDNN 2.x's headers:
                                     # apt-get install g++ libdnnl-dev

(`scripts/setup.sh` runs it). Without it every convolution is lax's and BatchNorm XLA's.
`layers.Conv` uses `conv` for float32 NHWC convolutions (no groups, no input dilation, kernel
larger than 1x1) when the computation runs on a CPU backend with one device: a custom call is
opaque to XLA's SPMD partitioner, so multi-device runs (and GPU/TPU) keep lax's convolutions
and XLA's BatchNorm. `enabled(...)` overrides that choice while a function is traced;
CNN_HISTORY_ONEDNN=0 turns both custom calls off."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).resolve().parent / 'csrc' / 'onednn_conv.cc'
SOURCES = (SOURCE, SOURCE.parent / 'batch_norm.cc')  # compiled into one library
LIBRARY = SOURCE.parent / 'build' / 'libcnn_history_onednn.so'
_TARGETS = {'forward': 'cnn_history_conv_forward', 'data': 'cnn_history_conv_backward_data',
            'weights': 'cnn_history_conv_backward_weights',
            'bn_forward': 'cnn_history_batch_norm_forward',
            'bn_backward': 'cnn_history_batch_norm_backward'}
_SYMBOLS = {'forward': 'CnnHistoryConvForward', 'data': 'CnnHistoryConvBackwardData',
            'weights': 'CnnHistoryConvBackwardWeights', 'bn_forward': 'CnnHistoryBatchNormForward',
            'bn_backward': 'CnnHistoryBatchNormBackward'}
_OVERRIDE: list[bool | None] = [None]
INCLUDE_DIRS = ('/usr/include', '/usr/local/include')  # where oneDNN's headers are looked for


class BuildError(RuntimeError):
  pass


def build(verbose: bool = False) -> Path:
  """Compiles the custom call into LIBRARY; a clear error names what is missing."""
  compiler = os.environ.get('CXX', 'g++')
  if shutil.which(compiler) is None:
    raise BuildError(f'No C++ compiler {compiler!r}: `apt-get install g++` (or set CXX).')
  roots = [*INCLUDE_DIRS, *([os.environ['DNNL_ROOT'] + '/include']
                             if os.environ.get('DNNL_ROOT') else [])]
  if not any(Path(p, 'oneapi', 'dnnl', 'dnnl.hpp').exists() for p in roots):
    raise BuildError("oneDNN's headers are missing: `apt-get install libdnnl-dev` (Debian/"
                     'Ubuntu), or set DNNL_ROOT to an install of oneDNN 2.x.')
  LIBRARY.parent.mkdir(parents=True, exist_ok=True)
  extra = []
  if os.environ.get('DNNL_ROOT'):
    root = os.environ['DNNL_ROOT']
    extra = [f'-I{root}/include', f'-L{root}/lib', f'-Wl,-rpath,{root}/lib']
  tmp = LIBRARY.with_suffix(f'.{os.getpid()}.tmp')
  cmd = [compiler, '-O3', '-std=c++17', '-shared', '-fPIC', '-fopenmp', '-w',
         f'-I{jax.ffi.include_dir()}', *extra, *map(str, SOURCES), '-o', str(tmp), '-ldnnl']
  done = subprocess.run(cmd, capture_output=not verbose, text=True, check=False)
  if done.returncode:
    raise BuildError(f'Building {SOURCE.name} failed ({" ".join(cmd)}):\n{done.stderr}')
  os.replace(tmp, LIBRARY)  # atomic: a concurrent loader never sees half a file
  return LIBRARY


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
  """The loaded library with its FFI targets registered, or None (not built, or stale)."""
  if not LIBRARY.exists() or LIBRARY.stat().st_mtime < max(p.stat().st_mtime for p in SOURCES):
    return None
  try:
    lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
  except OSError:  # e.g. libdnnl.so missing at run time
    return None
  for key, target in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, _SYMBOLS[key])),
                                platform='cpu')
  lib.CnnHistoryConvImplementation.restype = ctypes.c_char_p
  lib.CnnHistoryConvImplementation.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]
  return lib


def available() -> bool:
  """Whether the custom call is built and loads."""
  return _library() is not None


@contextlib.contextmanager
def enabled(value: bool = True):
  """Forces the oneDNN convolutions on (where they apply and are built) or off for functions
  traced within; outside, they are on exactly for single-device CPU computations."""
  _OVERRIDE.append(value)
  try:
    yield
  finally:
    _OVERRIDE.pop()


def in_use() -> bool:
  """Whether `layers.Conv` would use `conv` if traced now: on a one-device CPU backend with
  the library built, unless CNN_HISTORY_ONEDNN=0 or `enabled(...)` says otherwise."""
  if _OVERRIDE[-1] is not None:
    return _OVERRIDE[-1] and available()
  if os.environ.get('CNN_HISTORY_ONEDNN', '1') == '0':
    return False
  if jax.default_backend() != 'cpu' or jax.device_count() != 1:
    return False
  if not available():
    _note_unavailable()
    return False
  return True


@functools.lru_cache(maxsize=None)
def _note_unavailable() -> None:
  state = 'is older than its source' if LIBRARY.exists() else 'is not built'
  logging.warning('The oneDNN convolution library %s %s: convolutions use XLA:CPU\'s slower '
                  'gradients. Build it with `python -m cnn_history.onednn` (needs g++ and '
                  'libdnnl-dev); CNN_HISTORY_ONEDNN=0 silences this.', LIBRARY, state)


Pads = tuple[tuple[int, int], tuple[int, int]]


def _attrs(strides, pads: Pads, dilation) -> dict[str, np.int64]:
  (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = strides, pads, dilation
  return {k: np.int64(v) for k, v in dict(sh=sh, sw=sw, pt=pt, pb=pb, pl=pl, pr=pr, dh=dh,
                                           dw=dw).items()}


FORWARD = True  # the forward pass too (False: XLA's forward pass, oneDNN's gradients)
# layers.BatchNorm's training pass as `batch_norm` where `in_use()` (False: XLA's, to compare;
# CNN_HISTORY_FUSED_BATCH_NORM=0 sets it).
FUSED_BATCH_NORM = os.environ.get('CNN_HISTORY_FUSED_BATCH_NORM', '1') != '0'


def _call(target: str, result_shape, *args, geometry) -> jax.Array:
  _library()  # registers the FFI targets (once)
  return jax.ffi.ffi_call(_TARGETS[target], jax.ShapeDtypeStruct(result_shape, jnp.float32),
                          vmap_method='sequential')(*args, **_attrs(*geometry))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
         dilation: tuple[int, int]) -> jax.Array:
  """The NHWC/HWIO float32 convolution with explicit non-negative padding, and its gradients,
  as oneDNN's kernels. Call only where `available()`."""
  if not FORWARD:
    return jax.lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  out_hw = [(size + lo + hi - (k - 1) * d - 1) // s + 1 for size, (lo, hi), k, d, s in
            zip(x.shape[1:3], pads, kernel.shape[:2], dilation, strides)]
  return _call('forward', (x.shape[0], *out_hw, kernel.shape[3]), x, kernel,
               geometry=(strides, pads, dilation))


def _conv_fwd(x, kernel, strides, pads, dilation):
  return conv(x, kernel, strides, pads, dilation), (x, kernel)


def _conv_bwd(strides, pads, dilation, residuals, dy):
  x, kernel = residuals
  geometry = (strides, pads, dilation)
  dy = dy.astype(jnp.float32)
  return (_call('data', x.shape, dy, kernel, geometry=geometry),
          _call('weights', kernel.shape, x, dy, geometry=geometry))


conv.defvjp(_conv_fwd, _conv_bwd)


def _bn_attrs(groups: int, epsilon: float, relu: bool) -> dict[str, np.generic]:
  return {'groups': np.int64(groups), 'epsilon': np.float32(epsilon), 'relu': np.int64(relu)}


_NONE = np.zeros((0,), np.float32)  # an absent optional operand


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, residual: jax.Array | None,
               groups: int, epsilon: float, relu: bool):
  """Training-mode batch normalisation of float32 channels-last `x`, statistics over each of
  `groups` consecutive slices of the batch, then `+ residual` (if given) and ReLU (if `relu`),
  in one pass (cnn_history/csrc/batch_norm.cc). Returns (y, mean, var), the statistics of shape
  (groups, C), the variance biased. Only y is differentiable: the statistics are for running
  averages, and gradients reaching them are dropped. Call only where `available()`."""
  _library()
  c = x.shape[-1]
  if residual is not None and residual.shape != x.shape:
    raise ValueError(f'batch_norm: the residual {residual.shape} must have the shape of x '
                     f'{x.shape}.')
  stats = jax.ShapeDtypeStruct((groups, c), jnp.float32)
  return jax.ffi.ffi_call(
      _TARGETS['bn_forward'], (jax.ShapeDtypeStruct(x.shape, jnp.float32), stats, stats),
      vmap_method='sequential')(x, scale, bias, _NONE if residual is None else residual,
                                **_bn_attrs(groups, epsilon, relu))


def _batch_norm_fwd(x, scale, bias, residual, groups, epsilon, relu):
  y, mean, var = batch_norm(x, scale, bias, residual, groups, epsilon, relu)
  return (y, mean, var), (x, y if relu else None, mean, var, scale, residual is not None)


def _batch_norm_bwd(groups, epsilon, relu, saved, cotangents):
  x, y, mean, var, scale, has_residual = saved
  dy = cotangents[0].astype(jnp.float32)
  c = x.shape[-1]
  out = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct((c,), jnp.float32),
         jax.ShapeDtypeStruct((c,), jnp.float32),
         jax.ShapeDtypeStruct(x.shape if has_residual else (0,), jnp.float32))
  dx, dscale, dbias, dresidual = jax.ffi.ffi_call(
      _TARGETS['bn_backward'], out, vmap_method='sequential')(
          dy, x, _NONE if y is None else y, mean, var, scale,
          **_bn_attrs(groups, epsilon, relu))
  return dx, dscale, dbias, dresidual if has_residual else None


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def implementation(which: str, x_shape: Sequence[int], kernel_shape: Sequence[int],
                   out_shape: Sequence[int], strides, pads: Pads, dilation) -> str:
  """oneDNN's name for the kernel it picks for the 'forward' pass or a gradient ('data',
  'weights'), e.g. 'jit:avx512_core' or 'gemm:jit' (for benchmark records)."""
  lib = _library()
  if lib is None:
    return 'unavailable'
  n, h, w, i = x_shape
  kh, kw, _, o = kernel_shape
  geometry = [n, h, w, i, out_shape[1], out_shape[2], o, kh, kw, *strides, *pads[0], *pads[1],
              *dilation]
  arr = (ctypes.c_int64 * len(geometry))(*geometry)
  return lib.CnnHistoryConvImplementation({'data': 0, 'weights': 1, 'forward': 2}[which],
                                          arr).decode()


def main(argv: Sequence[str]) -> int:
  try:
    path = build(verbose='-v' in argv)
  except BuildError as e:
    print(f'cnn_history.onednn: {e}', file=sys.stderr)
    return 1
  _library.cache_clear()
  print(f'built {path}; loads: {available()}')
  return 0 if available() else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
