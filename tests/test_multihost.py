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
  env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_per_process}')
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'cnn_history.main', f'--workdir={tmp_path / "multi"}',
       '--distributed', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}', *CONFIG],
      env=_env(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=300)[0])
  finally:
    for p in procs:
      p.kill()
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, out
    assert f'process {i} of 2, 2 local devices, 4 devices in all' in out
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
  # Process 0 printed the final evaluation of all 100 examples.
  assert 'eval_top1=' in outputs[0]
