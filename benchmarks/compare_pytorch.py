r"""cnn_history (JAX/XLA) against PyTorch eager on the same machine, in one run.

  python benchmarks/compare_pytorch.py --torch-python /path/to/venv-with-torch/bin/python \
      [--cases lenet5:256,resnet20:128,resnet50:32] [--steps 10] [--out results/benchmarks]

For each case and mode (train, eval) it times the cnn_history step (benchmark.run, synthetic
batch on the device, float32) and the PyTorch eager twin in benchmarks/torch_models.py (NCHW and
channels_last) with the same threads, and prints a table of images/s and the JAX/PyTorch ratio
against PyTorch's faster layout. torch runs in its own Python (`pip install torch==2.13.0` in a
separate venv): it is not a dependency of the project.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


# The package's CPU defaults each JAX run records (benchmarks/cpu_defaults.py measures them).
DEFAULTS = {'fused_batch_norm': 'fused BatchNorm', 'tap_max_pool': 'tap max-pool gradient',
            'malloc_defaults': 'malloc defaults'}


def torch_case(python: str, model: str, batch: int, mode: str, layout: str, steps: int,
               threads: int) -> dict:
  out = subprocess.run([python, os.path.join(HERE, 'torch_models.py'), '--model', model,
                        '--batch', str(batch), '--mode', mode, '--layout', layout, '--steps',
                        str(steps), '--threads', str(threads)], capture_output=True, text=True,
                       check=True, timeout=3600)
  return json.loads(out.stdout.strip().splitlines()[-1])


def jax_case(model: str, batch: int, mode: str, steps: int) -> dict:
  from cnn_history import benchmark  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(model=model, batch=batch, mode=mode, dtype='float32', devices=1,
                            resolution=0, synthetic=True, config='', steps=steps, warmup=3,
                            json='')
  return benchmark.run(args)


def machine() -> str:
  cpu = ''
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{cpu or platform.processor()}, {os.cpu_count()} cores, {platform.platform()}'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--torch-python', required=True, help='a python that imports torch')
  parser.add_argument('--cases', default='lenet5:256,resnet20:128,resnet50:32')
  parser.add_argument('--modes', default='train,eval')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--out', default='', help='directory for comparison.json / .md')
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  threads = os.cpu_count()
  rows = []
  for case in args.cases.split(','):
    model, batch = case.split(':')
    for mode in args.modes.split(','):
      j = jax_case(model, int(batch), mode, args.steps)
      t = {layout: torch_case(args.torch_python, model, int(batch), mode, layout, args.steps,
                              threads) for layout in ('nchw', 'channels_last')}
      best = max(t.values(), key=lambda r: r['images_per_s'])
      jax_defaults = j
      rows.append({'model': model, 'batch': int(batch), 'mode': mode,
                   'jax_images_per_s': j['images_per_s'], 'jax_compile_s': j['compile_s'],
                   'torch_nchw_images_per_s': t['nchw']['images_per_s'],
                   'torch_channels_last_images_per_s': t['channels_last']['images_per_s'],
                   'ratio_vs_best_torch': j['images_per_s'] / best['images_per_s']})
      print(json.dumps(rows[-1]), flush=True)
  header = ('| model | batch | mode | cnn_history (JAX) img/s | PyTorch NCHW img/s | PyTorch '
            'channels_last img/s | JAX / best PyTorch |\n|---|---|---|---|---|---|---|')
  lines = [header] + [
      f'| {r["model"]} | {r["batch"]} | {r["mode"]} | {r["jax_images_per_s"]:.1f} | '
      f'{r["torch_nchw_images_per_s"]:.1f} | {r["torch_channels_last_images_per_s"]:.1f} | '
      f'{r["ratio_vs_best_torch"]:.2f}x |' for r in rows]
  table = '\n'.join(lines)
  print(table)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    from cnn_history import onednn  # pylint: disable=g-import-not-at-top
    meta = {'machine': machine(), 'jax': jax.__version__, 'xla_flags':
            os.environ.get('XLA_FLAGS', ''), 'onednn_convolutions': onednn.in_use(),
            **{key: jax_defaults[key] for key in DEFAULTS},
            'threads': threads, 'steps': args.steps,
            'date': time.strftime('%Y-%m-%d'), 'command': ' '.join(sys.argv)}
    with open(os.path.join(args.out, 'comparison.json'), 'w') as f:
      json.dump({'meta': meta, 'rows': rows}, f, indent=2)
    with open(os.path.join(args.out, 'comparison.md'), 'w') as f:
      f.write(f'# cnn_history vs PyTorch eager, float32\n\n{meta["machine"]}; JAX '
              f'{meta["jax"]}; XLA_FLAGS="{meta["xla_flags"]}"; oneDNN convolutions '
              f'(cnn_history/onednn.py): {"on" if meta["onednn_convolutions"] else "off"}; '
              + ''.join(f'{name}: {"on" if meta[key] else "off"}; '
                        for key, name in DEFAULTS.items()) +
              f'{threads} threads; median of '
              f'{args.steps} steps after warm-up; {meta["date"]}.\n\n`{meta["command"]}`\n\n'
              f'{table}\n')


if __name__ == '__main__':
  main()
