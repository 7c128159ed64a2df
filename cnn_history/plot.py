r"""Training curves of one or more runs from their workdir/metrics.jsonl.

  python -m cnn_history.plot --workdir=A --workdir=B [--label=a --label=b] --out=curves.png
"""

from __future__ import annotations

import json
import os

from absl import app, flags

_WORKDIRS = flags.DEFINE_multi_string('workdir', [], 'Run directories (repeat the flag).')
_LABELS = flags.DEFINE_multi_string('label', [], 'Legend labels, one per workdir.')
_OUT = flags.DEFINE_string('out', 'curves.png', 'Output image.')
_TITLE = flags.DEFINE_string('title', '', 'Figure title.')


def read_metrics(workdir: str) -> dict[str, list[dict]]:
  """metrics.jsonl split into {'train': [...], 'eval': [...]} rows."""
  rows = {'train': [], 'eval': []}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      rows.setdefault(row['split'], []).append(row)
  return rows


def steps_per_epoch(workdir: str) -> float:
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return summary['steps'] / summary['epochs']


def plot(workdirs: list[str], labels: list[str], out: str, title: str = '') -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for workdir, label in zip(workdirs, labels):
    rows, per_epoch = read_metrics(workdir), steps_per_epoch(workdir)
    train, evals = rows['train'], rows['eval']
    ax_loss.plot([r['step'] / per_epoch for r in train], [r['loss'] for r in train], label=label)
    line, = ax_acc.plot([r['step'] / per_epoch for r in evals],
                        [100 * (1 - r['top1']) for r in evals], 'o-', ms=3, label=f'{label} (test)')
    ax_acc.plot([r['step'] / per_epoch for r in train], [100 * (1 - r['top1']) for r in train],
                color=line.get_color(), alpha=0.35, lw=1, label=f'{label} (train)')
  ax_loss.set(xlabel='epoch (pass)', ylabel='training loss', yscale='log', title='loss')
  ax_acc.set(xlabel='epoch (pass)', ylabel='error %', title='top-1 error')
  ax_acc.grid(alpha=0.3)
  ax_loss.grid(alpha=0.3)
  ax_acc.legend(fontsize=8)
  ax_loss.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def main(argv):
  del argv
  labels = _LABELS.value or [os.path.basename(os.path.normpath(w)) for w in _WORKDIRS.value]
  if len(labels) != len(_WORKDIRS.value):
    raise app.UsageError('Give one --label per --workdir.')
  plot(_WORKDIRS.value, labels, _OUT.value, _TITLE.value)


if __name__ == '__main__':
  app.run(main)
