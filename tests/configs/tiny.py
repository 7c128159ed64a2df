"""A seconds-long LeNet-5 run on synthetic data, for tests that launch real processes.

  python -m cnn_history.main --config=tests/configs/tiny.py:variant=modern_bn --workdir=W
"""

from cnn_history import config as config_lib
from tests.helpers import tiny_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, {'variant': 'modern_bn'})
  return tiny_config(args['variant'])
