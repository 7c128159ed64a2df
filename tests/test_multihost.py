"""Two processes joined by jax.distributed on 127.0.0.1 train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from tests.test_train import ROOT, final_state

CONFIG = ['--config=tests/configs/tiny.py:variant=modern_bn', '--config.num_epochs=2',
          '--config.checkpoint_every_steps=100']


def _env(devices_per_process):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  # XLA's own CPU kernels: with the package's CPU default (the YNNPACK flag, Eigen's kernels)
  # the sums' order depends on how devices share a process's threads, and 2 processes x 2
  # devices end 16 steps ~3e-3 away from 1 x 4 (results/benchmarks/README.md).
  env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2', CNN_HISTORY_XLA_DEFAULTS='0',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_per_process}')
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
  """launch/local.sh starts 2 processes (2 CPU devices each) joined by jax.distributed."""
  env = _env(2)
  env['PYTHON'] = sys.executable
  launched = subprocess.run(['bash', 'launch/local.sh', '2', f'--workdir={tmp_path / "multi"}',
                             *CONFIG], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
  out = launched.stdout + launched.stderr
  assert launched.returncode == 0, out
  for i in range(2):
    assert f'[{i}] ' in out and f'process {i} of 2, 2 local devices, 4 devices in all' in out
  single = subprocess.run(
      [sys.executable, '-m', 'cnn_history.main', f'--workdir={tmp_path / "single"}', *CONFIG],
      env=_env(4), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr
  assert 'process 0 of 1, 4 local devices, 4 devices in all' in single.stderr
  step_m, multi = final_state(tmp_path / 'multi')
  step_s, one = final_state(tmp_path / 'single')
  assert step_m == step_s == 16
  for a, b in zip(jax.tree_util.tree_leaves((multi['params'], multi['batch_stats'])),
                  jax.tree_util.tree_leaves((one['params'], one['batch_stats']))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert '[0] eval_top1=' in out  # process 0 printed the final evaluation of all 100 examples


def test_local_launcher_stops_all_processes_when_one_fails(tmp_path):
  env = _env(1)
  env['PYTHON'] = sys.executable
  launched = subprocess.run(['bash', 'launch/local.sh', '2', f'--workdir={tmp_path}',
                             '--config=tests/configs/tiny.py', '--config.batch_size=3'],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert launched.returncode != 0
  assert 'batch_size=3 is not divisible' in launched.stdout + launched.stderr


def _dry_run(cmd, **env_extra):
  env = {**os.environ, **env_extra}
  result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_tpu_launcher_dry_run():
  out = _dry_run(['bash', 'launch/tpu.sh', '--name', 'r50', '--zone', 'us-central2-b',
                  '--accelerator', 'v4-32', '--bucket', 'gs://bkt/', '--config',
                  'configs/lenet5.py', '--spot', '--dry-run', '--', '--config.num_epochs=90'])
  lines = [l for l in out.splitlines() if l.startswith('+ ')]
  create = next(l for l in lines if 'queued-resources create' in l)
  assert '--accelerator-type=v4-32' in create and '--spot' in create and '--node-id=r50' in create
  ssh = [l for l in lines if 'queued-resources ssh' in l]
  assert len(ssh) == 2 and all('--worker=all' in l and '--node=all' in l for l in ssh)
  assert 'pip\\ install' in ssh[0] and 'jax\\[tpu\\]' in ssh[0]
  assert all(k in ssh[1] for k in ('--distributed', '--workdir=gs://bkt/runs/r50',
                                   '--config.data.tfds_dir=gs://bkt/tensorflow_datasets',
                                   '--config.num_epochs=90'))
  assert any('tpu-vm scp' in l and '--worker=all' in l for l in lines)
  assert 'queued-resources delete' in lines[-1]
  no_spot = _dry_run(['bash', 'launch/tpu.sh', '--name', 'x', '--zone', 'z', '--accelerator',
                      'v5litepod-8', '--bucket', 'gs://b', '--config', 'c.py', '--dry-run'])
  assert '--spot' not in no_spot
  missing = subprocess.run(['bash', 'launch/tpu.sh', '--name', 'x'], cwd=ROOT,
                           capture_output=True, text=True)
  assert missing.returncode == 2 and 'missing --zone' in missing.stderr


def test_slurm_launcher_dry_run():
  out = _dry_run(['bash', 'launch/slurm.sbatch', '--config.num_epochs=1'], DRY_RUN='1',
                 CONFIG='configs/resnet50.py', WORKDIR='/shared/run')
  assert out.startswith('srun --kill-on-bad-exit=1 ')
  assert '-m cnn_history.main --distributed --config=configs/resnet50.py' in out
  assert '--workdir=/shared/run --config.num_epochs=1' in out
  header = open(os.path.join(ROOT, 'launch', 'slurm.sbatch')).read()
  assert '#SBATCH --gpus-per-task=1' in header and '#SBATCH --requeue' in header
