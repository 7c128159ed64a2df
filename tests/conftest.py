"""Test set-up: 8 virtual CPU devices (set before JAX starts) and shared helpers."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

from cnn_history.data import sources  # noqa: E402

FASHION_MNIST = sources.DEBIAN_FASHION_MNIST


@pytest.fixture(scope='session')
def fashion_mnist_dir() -> str:
  """The Debian package's Fashion-MNIST files; their absence is a set-up error, not a skip."""
  missing = [f for pair in sources.IDX_FILES.values() for f in pair
             if not os.path.exists(os.path.join(FASHION_MNIST, f + '.gz'))]
  if missing:
    raise RuntimeError(f'{FASHION_MNIST} lacks {missing}: run `apt-get install -y '
                       'dataset-fashion-mnist` (the README test command does).')
  return FASHION_MNIST


def pytest_report_header(config):
  del config
  return f'jax {jax.__version__}: {jax.device_count()} devices ({jax.default_backend()})'
