"""The benchmark tool (python -m cnn_history.benchmark): what it measures and reports. Speed
itself is never asserted (results/benchmarks/ has the numbers); the fields' meaning is."""

import json
import os
import re
import subprocess
import sys

import pytest

from cnn_history import benchmark
from cnn_history.models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *argv):
  out = tmp_path / 'bench.jsonl'
  benchmark.main([*argv, '--steps', '2', '--warmup', '1', '--json', str(out)])
  return [json.loads(line) for line in out.read_text().splitlines()]


def test_synthetic_train_step_report(tmp_path, capsys):
  (result,) = _run(tmp_path, '--model', 'lenet5', '--batch', '16', '--devices', '1')
  assert (result['model'], result['mode'], result['batch'], result['devices']) == (
      'lenet5', 'train', 16, 1)
  assert result['macs_per_image'] == registry.get_spec('lenet5').expected_macs
  assert result['images_per_s'] == pytest.approx(16 / result['step_s'])
  # Achieved FLOP/s: 2 FLOPs per MAC, 3 passes (forward, two backward) per training image.
  assert result['gflops'] == pytest.approx(
      2 * 3 * result['macs_per_image'] * 16 / result['step_s'] / 1e9)
  assert result['utilisation'] == pytest.approx(result['gflops'] / result['peak_matmul_gflops'])
  assert 0.0 <= result['data_wait_fraction'] < 1.0 and result['steps'] == 2
  assert result['input_loop_slowdown'] == 0.0  # no input pipeline: nothing to slow the loop
  assert result['convolutions'] == 'cnn_history'  # 8 devices here: no oneDNN custom call
  assert result['host_max_rss_bytes'] > 0
  table = capsys.readouterr().out.splitlines()
  assert table[0].split()[:3] == ['model', 'mode', 'batch'] and table[1].startswith('lenet5')


def test_real_input_pipeline_and_field_overrides(tmp_path, fashion_mnist_dir):
  """--config times the config's own input pipeline (Fashion-MNIST from the Debian files);
  --set overrides its fields, and a misspelt field is an error that names it."""
  del fashion_mnist_dir
  (result,) = _run(tmp_path, '--config', os.path.join(ROOT, 'configs/lenet5.py:modern'),
                   '--mode', 'eval', '--set', 'batch_size=100', '--set', 'data.source=idx',
                   '--set', 'data.path=/usr/share/datasets/fashion-mnist', '--devices', '1')
  assert result['batch'] == 100 and result['mode'] == 'eval'
  assert result['input'].endswith('lenet5.py:modern')
  assert 0.0 < result['data_wait_fraction'] < 1.0  # each step fetches a real batch
  assert 0.0 <= result['input_loop_slowdown'] < 1.0
  with pytest.raises(KeyError, match='Did you mean "shuffle_buffer"'):
    _run(tmp_path, '--config', os.path.join(ROOT, 'configs/lenet5.py'),
         '--set', 'data.shufle_buffer=10')
  with pytest.raises(ValueError, match='FIELD=VALUE'):
    _run(tmp_path, '--model', 'lenet5', '--set', 'batch_size')


def test_cpu_xla_defaults_and_their_opt_out(monkeypatch):
  """import cnn_history adds the YNNPACK flag on a CPU-only install, keeps the user's flags and
  a user's own value for it, and adds nothing with CNN_HISTORY_XLA_DEFAULTS=0."""
  import cnn_history  # pylint: disable=g-import-not-at-top
  flag = cnn_history.CPU_XLA_FLAGS[0]
  cases = [({'XLA_FLAGS': '--xla_force_host_platform_device_count=2'},
            f'--xla_force_host_platform_device_count=2 {flag}'),
           ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type='},
            '--xla_cpu_experimental_ynn_fusion_type='),
           ({'XLA_FLAGS': '', 'CNN_HISTORY_XLA_DEFAULTS': '0'}, ''),
           ({'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cuda'}, '')]
  for env, expected in cases:
    for key in ('XLA_FLAGS', 'CNN_HISTORY_XLA_DEFAULTS', 'JAX_PLATFORMS'):
      monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
      monkeypatch.setenv(key, value)
    cnn_history._set_cpu_xla_defaults()  # pylint: disable=protected-access
    assert os.environ['XLA_FLAGS'] == expected, env


_FAULTS = '''
import resource, jax, jax.numpy as jnp
import cnn_history
# Two 64 MB temporaries (sin(x), cos(x).T): XLA:CPU allocates them as one block per execution.
f = jax.jit(lambda x: jnp.tanh(jnp.sin(x) @ jnp.ones((4096, 8))).sum() + jnp.cos(x).T.sum(0).max())
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(3):  # compiles; the heap reaches its steady size
  f(x).block_until_ready()
faults = []
for _ in range(7):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(cnn_history.MALLOC_TUNED, sorted(faults)[3])  # the median execution's
'''


def _with_and_without_malloc_defaults(code: str) -> dict[str, tuple[str, int]]:
  """Runs `code` (which prints MALLOC_TUNED and a fault count) in a one-device process with
  CNN_HISTORY_MALLOC_DEFAULTS=1 and =0: {setting: (tuned, faults)}."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(('CNN_HISTORY_MALLOC', 'XLA_'))}
  runs = {}
  for setting in ('1', '0'):
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env={**env, 'PYTHONPATH': ROOT, 'CNN_HISTORY_MALLOC_DEFAULTS': setting},
                         cwd=ROOT, check=True)
    tuned, faults = out.stdout.split()[-2:]
    runs[setting] = (tuned, int(faults))
  return runs


def test_cpu_malloc_defaults_stop_per_step_page_faults():
  """With glibc's defaults XLA:CPU's temporary block is mmapped afresh, and page-faulted, on
  every execution; import cnn_history keeps it in the heap (CNN_HISTORY_MALLOC_DEFAULTS=0 does
  not). Page faults are counted, not time: the median of 7 executions (the heap may still grow
  once when Python's own allocations take part of the freed block)."""
  runs = _with_and_without_malloc_defaults(_FAULTS)
  pages = 64 * 2**20 // 4096  # at least one temporary's pages
  assert runs['0'][0] == 'False' and runs['0'][1] > pages, runs
  assert runs['1'][0] == 'True' and runs['1'][1] < pages // 100, runs


_LARGE_BLOCK = r'''
import ctypes, resource
import cnn_history
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 2560 * 2**20  # larger than 2 GiB, like ResNet-50's temporary block at batch 32
faults = []
for _ in range(2):  # the second block is where the first one was, if glibc kept it
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(cnn_history.MALLOC_TUNED, faults[-1])
'''


def test_cpu_malloc_defaults_keep_a_block_over_2_gib():
  """A freed 2.5 GiB block stays in the heap for the next allocation under the defaults (no
  trimming at all: a 2 GiB trim threshold gave it back, and ResNet-50's training step at
  batch 32 faulted 675,278 pages a step); glibc's defaults map and fault it every time."""
  runs = _with_and_without_malloc_defaults(_LARGE_BLOCK)
  pages = 2560 * 2**20 // 4096
  assert runs['0'][0] == 'False' and runs['0'][1] > pages // 2, runs
  assert runs['1'][0] == 'True' and runs['1'][1] < pages // 1000, runs


def test_cpu_defaults_ablation_switches_one_default_per_column(tmp_path):
  """benchmarks/cpu_defaults.py: each column's runs record the defaults that were in effect,
  switched on one by one (none -> malloc -> fused BatchNorm -> tap max-pool)."""
  subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'cpu_defaults.py'), '--cases',
                  'lenet5:8', '--modes', 'eval', '--steps', '1', '--out', str(tmp_path)],
                 check=True, capture_output=True, text=True, cwd=ROOT,
                 env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'})
  lines = (tmp_path / 'cpu_defaults.jsonl').read_text().splitlines()
  records = [json.loads(line) for line in lines]
  switches = [(r['malloc_defaults'], r['fused_batch_norm'], r['tap_max_pool']) for r in records]
  assert switches == [(False, False, False), (True, False, False), (True, True, False),
                      (True, True, True)], switches
  assert all(r['convolutions'] == 'cnn_history+onednn' and r['images_per_s'] > 0 for r in records)
  table = (tmp_path / 'cpu_defaults.md').read_text()
  assert '| lenet5 | 8 | eval |' in table and 'benchmarks/cpu_defaults.py --cases lenet5:8' in table


@pytest.mark.parametrize('mode, title', [('train', 'training'), ('eval', 'evaluation')])
def test_profile_step_sums_the_trace_of_a_step(mode, title):
  """benchmarks/profile_step.py: the step time, and per operation kind its time and calls a
  step (LeNet-5's C1 and C3 are two oneDNN forward calls in a one-device process)."""
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'profile_step.py'),
                        '--model', 'lenet5', '--batch', '8', '--mode', mode, '--steps', '3'],
                       check=True, capture_output=True, text=True, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}).stdout
  lines = out.splitlines()
  step = re.match(rf'lenet5 batch 8 {title} step: ([\d.]+) ms', lines[0])
  assert step, out
  # C5 and F6 are matrix products (C5: a window over its whole input); the rest is not.
  dots = re.match(r'temporary buffer [\d,]+ MiB a step; (\d+) XLA matrix products', lines[1])
  assert dots and int(dots.group(1)) >= 2, out
  traced = float(next(l for l in lines if l.endswith('all operations in the trace')).split()[0])
  assert float(step.group(1)) > 0 and traced > 0, out
  convolutions = next(l for l in lines if l.endswith(' cnn_history_conv_forward')).split()
  assert int(convolutions[1]) == 2 and float(convolutions[0]) > 0, out
  assert any('between traced operations' in l for l in lines), out
