r"""Trains and evaluates a network from a config.

  python -m cnn_history.main --config=configs/lenet5.py --workdir=/tmp/lenet5 \
      [--config.num_epochs=2 ...] [--config=configs/lenet5.py:variant=modern]

Multi-host (Cloud TPU pods, SLURM, several local processes): pass --distributed (or set
CNN_HISTORY_DISTRIBUTED=1). On Cloud TPU and SLURM jax.distributed finds its peers itself;
elsewhere give --coordinator_address, --num_processes and --process_id.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A config file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and summary.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', os.environ.get('CNN_HISTORY_DISTRIBUTED') == '1',
                                 'Initialise jax.distributed (multi-host) first.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries:
  """Drops the INFO chatter of orbax, TFDS and clu's log writer (warnings still show)."""
  NOISY = ('/orbax/', '/tensorflow_datasets/', '/clu/metric_writers/')

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(p in record.pathname for p in self.NOISY)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top

  if _DISTRIBUTED.value:  # first thing: before any other JAX call
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info('JAX %s: process %d of %d, %d local devices, %d devices in all (%s).',
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.default_backend())
  from cnn_history import train  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if ('data.eval_preprocess' in config_flags.get_override_values(flags.FLAGS['config'])
      and config.data.eval_preprocess_from == 'auto'):
    config.data.eval_preprocess_from = 'config'  # given explicitly: it beats an import's
  logging.info('Config:\n%s', config)
  summary = train.train_and_evaluate(config, _WORKDIR.value)
  if jax.process_index() == 0:
    keys = ('eval_top1', 'eval_top5', 'eval_loss', 'train_loss', 'steps', 'epochs', 'wall_time_s')
    print(' '.join(f'{k}={summary[k]:.4f}' if isinstance(summary.get(k), float) else
                   f'{k}={summary.get(k)}' for k in keys if k in summary), flush=True)


if __name__ == '__main__':
  app.run(main)
