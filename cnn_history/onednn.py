"""oneDNN convolutions for XLA:CPU: an XLA FFI custom call (cnn_history/csrc/onednn_conv.cc).

XLA:CPU lowers a convolution's two gradients poorly: the kernel gradient runs as a
convolution over the batch, and a strided convolution's input gradient as a convolution of
the zero-spread output gradient, each several times the forward pass; and its forward pass is
slow at few channels (ResNet-20's 16-channel layers). oneDNN, the library
under PyTorch's CPU convolutions, has direct kernels for all three (NHWC activations, the
kernel reordered to its blocked layout). `conv` is the convolution with oneDNN's forward pass
and gradients; `python benchmarks/conv_lowering.py` times each layer both ways and
results/benchmarks/README.md records what it gains whole networks.

Availability: the shared library is built from cnn_history/csrc/onednn_conv.cc by

    python -m cnn_history.onednn     # needs g++ and oneDNN 2.x's headers:
                                     # apt-get install g++ libdnnl-dev

(`scripts/setup.sh` runs it). Without it every convolution is lax's. `layers.Conv` uses `conv`
for float32 NHWC convolutions (no groups, no input dilation, kernel larger than 1x1) when the
computation runs on a CPU backend with one device: a custom call is opaque to XLA's SPMD
partitioner, so multi-device runs (and GPU/TPU) keep lax's convolutions. `enabled(...)`
overrides that choice while a function is traced; CNN_HISTORY_ONEDNN=0 turns it off.
"""

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
LIBRARY = SOURCE.parent / 'build' / 'libcnn_history_onednn.so'
_TARGETS = {'forward': 'cnn_history_conv_forward', 'data': 'cnn_history_conv_backward_data',
            'weights': 'cnn_history_conv_backward_weights'}
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
  cmd = [compiler, '-O3', '-std=c++17', '-shared', '-fPIC', '-w',
         f'-I{jax.ffi.include_dir()}', *extra, str(SOURCE), '-o', str(tmp), '-ldnnl']
  done = subprocess.run(cmd, capture_output=not verbose, text=True, check=False)
  if done.returncode:
    raise BuildError(f'Building {SOURCE.name} failed ({" ".join(cmd)}):\n{done.stderr}')
  os.replace(tmp, LIBRARY)  # atomic: a concurrent loader never sees half a file
  return LIBRARY


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
  """The loaded library with its FFI targets registered, or None (not built, or stale)."""
  if not LIBRARY.exists() or LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
    return None
  try:
    lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
  except OSError:  # e.g. libdnnl.so missing at run time
    return None
  jax.ffi.register_ffi_target(_TARGETS['forward'], jax.ffi.pycapsule(lib.CnnHistoryConvForward),
                              platform='cpu')
  jax.ffi.register_ffi_target(_TARGETS['data'], jax.ffi.pycapsule(lib.CnnHistoryConvBackwardData),
                              platform='cpu')
  jax.ffi.register_ffi_target(_TARGETS['weights'],
                              jax.ffi.pycapsule(lib.CnnHistoryConvBackwardWeights),
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
