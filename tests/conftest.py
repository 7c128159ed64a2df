"""Test set-up: 8 virtual CPU devices (set before JAX starts) and shared helpers."""

import os
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# The runs' persistent XLA compilation cache: one shared by this run's workers, never the
# user's ~/.cache (config.compilation_cache_dir's default reads this variable).
os.environ.setdefault('CNN_HISTORY_COMPILATION_CACHE', os.path.join(
    tempfile.gettempdir(), f'cnn_history_tests_xla_{os.getuid()}'))

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


# Tests that each take tens of seconds (compiling a paper network's training step, or a real
# training pass) start first, so that the two pytest workers finish together instead of one
# of them running the longest tests alone at the end (longest-first scheduling).
SLOW_FIRST = ('tests/test_configs.py::', 'tests/test_end_to_end.py::',
              'tests/models/test_layers.py::test_mobilenet_v2_gradients',
              'tests/test_multihost.py::', 'tests/test_convert_cli.py::')


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))  # stable
