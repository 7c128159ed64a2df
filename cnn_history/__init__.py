"""cnn_history: the history of CNN image classification in JAX/Flax.

Importing the package sets XLA's CPU defaults that results/benchmarks/README.md measured, before
JAX starts its backend (XLA reads XLA_FLAGS once, when the first computation needs a device):

  --xla_cpu_experimental_ynn_fusion_type=-individual_dot,-individual_convolution
      lowers single convolutions and dots through XLA:CPU's own (Eigen/oneDNN) kernels instead
      of one YNNPACK call each: the convolution backward pass was the slowest part of training
      (ResNet-50 training 1.7 -> 3.2 images/s on 2 cores).

The cost: Eigen's sums depend on how a process's devices share its threads, so a CPU run
split over several processes is no longer equal to one process within 1e-5 (up to 3e-3 after
16 LeNet-5 steps); set CNN_HISTORY_XLA_DEFAULTS=0 where that matters.

They are added only on a CPU-only installation (no TPU or GPU plugin, or JAX_PLATFORMS=cpu),
never over a value the user set for the same flag, and not at all with
CNN_HISTORY_XLA_DEFAULTS=0. Importing cnn_history after JAX has run a computation is too late
for them: `import cnn_history` first (python -m cnn_history.main does).

On the same CPU-only installations it also keeps glibc's malloc from handing XLA fresh pages
every step. XLA:CPU allocates each execution's temporary buffer as one block (about 190 MiB
for a ResNet-20 training step at batch 128); glibc serves a block that large by mmap and
returns it by munmap, so every step page-faulted and zeroed all of it again (48,712 faults a
ResNet-20 step: 167 ms a step against 116 ms without them, benchmarks/profile_step.py). With
no mmap (M_MMAP_MAX=0) and no trimming (M_TRIM_THRESHOLD=-1; an earlier limit of 2 GiB
still returned ResNet-50's 2.6 GiB block at batch 32: 675,278 faults a step) the block stays
in the heap from step to step. That holds for the main thread's heap only (another thread's
arena still maps a block over 64 MB), so single-device
computations run inline in the calling thread (jax_cpu_enable_async_dispatch=False; JAX still
dispatches multi-device computations asynchronously). results/benchmarks/README.md has the
numbers: ResNet-20 training 1.55x, LeNet-5 unchanged. The cost: the process keeps its peak heap,
and Python waits for each single-device step (tf.data still prefetches meanwhile).
CNN_HISTORY_MALLOC_DEFAULTS=0 leaves both alone; they too must precede JAX's first computation.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

CPU_XLA_FLAGS = (
    '--xla_cpu_experimental_ynn_fusion_type=-individual_dot,-individual_convolution',
)


def _cpu_only() -> bool:
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.strip().lower() == 'cpu'
  return not any(importlib.util.find_spec(name) is not None
                 for name in ('libtpu', 'jax_plugins'))


def _set_cpu_xla_defaults() -> None:
  if os.environ.get('CNN_HISTORY_XLA_DEFAULTS', '1') == '0' or not _cpu_only():
    return
  flags = os.environ.get('XLA_FLAGS', '')
  for flag in CPU_XLA_FLAGS:
    if flag.split('=')[0] not in flags:
      flags = f'{flags} {flag}'.strip()
  os.environ['XLA_FLAGS'] = flags


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MALLOC_DEFAULTS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))


def _set_cpu_malloc_defaults() -> bool:
  """Applies MALLOC_DEFAULTS with glibc's mallopt and inline single-device dispatch; whether
  it did."""
  if (os.environ.get('CNN_HISTORY_MALLOC_DEFAULTS', '1') == '0' or not _cpu_only()
      or not sys.platform.startswith('linux')):
    return False
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl)
    return False
  if not all([mallopt(param, value) == 1 for param, value in MALLOC_DEFAULTS]):
    return False
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True


_set_cpu_xla_defaults()
MALLOC_TUNED = _set_cpu_malloc_defaults()
