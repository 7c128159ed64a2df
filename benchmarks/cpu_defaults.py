r"""What each of the package's CPU defaults is worth: the benchmark, defaults on one by one.

  python benchmarks/cpu_defaults.py [--cases lenet5:256,resnet20:128,resnet50:32] \
      [--modes train,eval] [--steps 10] [--out results/benchmarks/cpu_defaults]

Each cell is one process of `python -m cnn_history.benchmark --model M --batch B --mode MODE
--devices 1 --synthetic --steps S`, with the environment of its column (cumulative, left to
right; the oneDNN convolutions and the YNNPACK flag are on throughout):

  none        CNN_HISTORY_MALLOC_DEFAULTS=0 CNN_HISTORY_FUSED_BATCH_NORM=0
              CNN_HISTORY_TAP_MAX_POOL=0
  +malloc     glibc keeps XLA's temporary block in the heap; inline single-device dispatch
  +fused BN   BatchNorm (+ residual + ReLU) as one custom call in training
  +tap pool   max-pooling's gradient as a loop over the window's taps (the defaults)

It prints a markdown table of images/s and writes it, with every run's JSON, under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from compare_pytorch import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = (
    ('none', {'CNN_HISTORY_MALLOC_DEFAULTS': '0', 'CNN_HISTORY_FUSED_BATCH_NORM': '0',
              'CNN_HISTORY_TAP_MAX_POOL': '0'}),
    ('+malloc', {'CNN_HISTORY_FUSED_BATCH_NORM': '0', 'CNN_HISTORY_TAP_MAX_POOL': '0'}),
    ('+fused BN', {'CNN_HISTORY_TAP_MAX_POOL': '0'}),
    ('+tap pool (defaults)', {}),
)
SWITCHES = ('CNN_HISTORY_MALLOC_DEFAULTS', 'CNN_HISTORY_FUSED_BATCH_NORM',
            'CNN_HISTORY_TAP_MAX_POOL')


def run(model: str, batch: int, mode: str, steps: int, env: dict[str, str]) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'run.jsonl')
    base = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    subprocess.run([sys.executable, '-m', 'cnn_history.benchmark', '--model', model, '--batch',
                    str(batch), '--mode', mode, '--devices', '1', '--synthetic', '--steps',
                    str(steps), '--json', out], env={**base, **env, 'PYTHONPATH': ROOT},
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=3600)
    with open(out) as f:
      return json.loads(f.read().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--cases', default='lenet5:256,resnet20:128,resnet50:32')
  parser.add_argument('--modes', default='train,eval')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  header = ('| model | batch | mode | ' + ' | '.join(name for name, _ in SETTINGS)
            + ' | all / none |')
  lines = [header, '|' + '---|' * (len(SETTINGS) + 4)]
  print(header, flush=True)
  records = []
  for case in args.cases.split(','):
    model, batch = case.split(':')
    for mode in args.modes.split(','):
      cells = []
      for name, env in SETTINGS:
        record = run(model, int(batch), mode, args.steps, env)
        records.append({**record, 'setting': name})
        cells.append(record['images_per_s'])
      line = (f'| {model} | {batch} | {mode} | ' + ' | '.join(f'{v:,.1f}' for v in cells)
              + f' | {cells[-1] / cells[0]:.2f}x |')
      lines.append(line)
      print(line, flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    command = ' '.join(['python', 'benchmarks/cpu_defaults.py', *sys.argv[1:]])
    with open(os.path.join(args.out, 'cpu_defaults.md'), 'w') as f:
      f.write(f'# The CPU defaults one by one\n\n{machine()}; images/s, median of '
              f'{args.steps} steps, one process per cell.\n\n`{command}`\n\n'
              + '\n'.join(lines) + '\n')
    with open(os.path.join(args.out, 'cpu_defaults.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)


if __name__ == '__main__':
  main()
