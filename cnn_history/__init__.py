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
"""

from __future__ import annotations

import importlib.util
import os

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


_set_cpu_xla_defaults()
