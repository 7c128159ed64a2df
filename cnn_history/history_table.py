r"""The table, curves and accuracy-versus-MACs plot of the CNN-history benchmark.

  python -m cnn_history.history_table --root=workdirs/fmnist --out=results/fashion_mnist \
      [--config=configs/fashion_mnist_history.py] \
      [--extra='LABEL|RUN_DIR|COMMAND' ...]

Reads every `ROOT/<family>/` that holds a summary.json (families in the config's FAMILIES
order, then any others), and writes into OUT:
  README.md           the table (family, model, year, test top-1, parameters, MACs at the
                      input size, train wall time, images/s), the commands, the per-family
                      changes, the machine and date, and OUT/notes.md when it exists
  table.json          the same rows as data
  curves.png          training loss and training top-1 against images seen, every family
  acc_vs_macs.png     test top-1 against MACs (log x), each point labelled by its family
  <family>/           a copy of each run's summary.json, metrics.jsonl, config.json, train.log
                      and command.txt (the checkpoints stay in the workdir); extra/<dir>/ the
                      same for --extra runs outside OUT's parent directory
`--extra` adds rows from other runs (e.g. LeNet-5's paper recipe in results/lenet5/paper).
MACs are counted by cnn_history.models.summary (convolutions and dense layers, one image).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import runpy
import shutil
from typing import Any

from absl import app, flags

COPIED = ('summary.json', 'metrics.jsonl', 'config.json', 'train.log', 'command.txt')


def _read_json(path: str) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_text(path: str) -> str:
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    return f.read().strip()


def model_of(run_dir: str) -> tuple[str, dict[str, Any], int]:
  """(registry name, overrides, num_classes) of a run: its config.json, else its summary's
  model with the registry's defaults."""
  config = _read_json(os.path.join(run_dir, 'config.json'))
  if config is not None:
    model = config['model']
    return model['name'], dict(model.get('overrides') or {}), int(model['num_classes'])
  summary = _read_json(os.path.join(run_dir, 'summary.json')) or {}
  return summary['model'], {}, 10


def count(name: str, overrides: dict[str, Any], num_classes: int,
          input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
  """(parameters, MACs of one image at input_shape, year) of a registry model."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cnn_history import models  # pylint: disable=g-import-not-at-top
  from cnn_history.models import summary  # pylint: disable=g-import-not-at-top
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  model = models.create_model(name, num_classes=num_classes, **overrides)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros((1,) + input_shape), train=False))
  return (summary.count_params(variables), summary.count_macs(model, input_shape),
          models.get_spec(name).year)


def read_run(label: str, run_dir: str, command: str,
             input_shape: tuple[int, int, int]) -> dict[str, Any]:
  """One table row from a run directory."""
  summary = _read_json(os.path.join(run_dir, 'summary.json'))
  if summary is None:
    raise FileNotFoundError(f'{run_dir} has no summary.json: the run has not finished.')
  name, overrides, num_classes = model_of(run_dir)
  params, macs, year = count(name, overrides, num_classes, input_shape)
  process_wall = _read_text(os.path.join(run_dir, 'process_wall_s.txt'))
  return {
      'family': label, 'model': name, 'overrides': overrides, 'year': year,
      'test_top1': summary.get('eval_top1'), 'test_top5': summary.get('eval_top5'),
      'params': params, 'macs': macs, 'steps': summary.get('steps'),
      'epochs': summary.get('epochs'), 'train_wall_s': summary.get('wall_time_s'),
      'process_wall_s': float(process_wall) if process_wall else None,
      'images_per_s': summary.get('train_images_per_s'),
      'command': command or _read_text(os.path.join(run_dir, 'command.txt')),
      'run_dir': run_dir,
  }


def family_dirs(root: str, order: list[str]) -> list[tuple[str, str]]:
  """(family, workdir) of every finished run under root, in `order` first."""
  present = [d for d in sorted(os.listdir(root)) if os.path.exists(
      os.path.join(root, d, 'summary.json'))] if os.path.isdir(root) else []
  ordered = [f for f in order if f in present] + [f for f in present if f not in order]
  return [(f, os.path.join(root, f)) for f in ordered]


def _fmt_time(seconds: float | None) -> str:
  if seconds is None:
    return '—'
  minutes, secs = divmod(int(round(seconds)), 60)
  return f'{minutes} min {secs:02d} s' if minutes else f'{secs} s'


def _fmt_count(n: float) -> str:
  if n >= 1e9:
    return f'{n / 1e9:.2f}G'
  if n >= 1e6:
    return f'{n / 1e6:.2f}M'
  return f'{n / 1e3:.1f}K'


def _pct(x: float | None) -> str:
  return '—' if x is None else f'{100 * x:.2f}%'


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    if names:
      cpu = names[0]
  except OSError:
    pass
  import jax  # pylint: disable=g-import-not-at-top
  return (f'{cpu}, {os.cpu_count()} cores visible, {jax.default_backend()} backend, '
          f'jax {jax.__version__}, Python {platform.python_version()}')


def markdown(rows: list[dict[str, Any]], families: dict[str, Any], recipe: str,
             input_shape: tuple[int, int, int], notes: str) -> str:
  h, w, c = input_shape
  lines = [
      '# The CNN history on Fashion-MNIST, one shared CPU budget',
      '',
      'Every family of the registry in a small-input form (CIFAR-style stems, reduced width or '
      'depth where needed), trained on Fashion-MNIST with the same budget and recipe. Generated '
      'by `python -m cnn_history.history_table` from the run directories; numbers are from real '
      f'runs on {datetime.date.today().isoformat()} ({machine()}).',
      '',
      recipe,
      '',
      f'| # | family | model | year | test top-1 | params | MACs ({h}×{w}×{c}) | steps | '
      'train wall | images/s |',
      '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for i, r in enumerate(rows, 1):
    speed = '—' if r['images_per_s'] is None else f"{r['images_per_s']:,.0f}"
    lines.append(
        f"| {i} | {r['family']} | `{r['model']}` | {r['year']} | **{_pct(r['test_top1'])}** | "
        f"{_fmt_count(r['params'])} | {_fmt_count(r['macs'])} | {r['steps']} | "
        f"{_fmt_time(r['train_wall_s'])} | {speed} |")
  lines += [
      '',
      '"train wall" is `summary.json`\'s `wall_time_s` (data loading, compilation, training and '
      'the final test evaluation); "images/s" is its `train_images_per_s` (training steps after '
      'the first, compiling one). MACs: convolutions and dense layers of one image '
      '(`cnn_history.models.summary.count_macs`).',
      '',
      '![accuracy versus MACs](acc_vs_macs.png)',
      '',
      '![training curves](curves.png)',
      '',
  ]
  if notes:
    lines += [notes, '']
  changed = [r for r in rows if r['family'] in families]
  if changed:
    lines += ['## What each family changes from its paper\'s ImageNet form', '',
              '| family | model | switches | change |', '|---|---|---|---|']
    for r in changed:
      spec = families[r['family']]
      switches = ', '.join(f'{k}={v!r}' for k, v in spec.overrides.items()) or '—'
      lines.append(f"| {r['family']} | `{spec.model}` | `{switches}` | {spec.note} |")
    lines += ['']
  lines += ['## Commands', '', '```bash']
  lines += [r['command'] for r in rows if r['command']]
  lines += ['```', '']
  return '\n'.join(lines)


def train_metrics(run_dir: str) -> list[dict[str, Any]]:
  """The 'train' rows of run_dir/metrics.jsonl (cnn_history.plot defines absl flags at import,
  so its reader is not imported here)."""
  path = os.path.join(run_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if r.get('split') == 'train']


def plot_curves(rows: list[dict[str, Any]], out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5))
  cmap = plt.get_cmap('tab20')
  for i, r in enumerate(rows):
    metrics = train_metrics(r['run_dir'])
    if not metrics:
      continue
    config = _read_json(os.path.join(r['run_dir'], 'config.json')) or {}
    batch = config.get('batch_size', 128)
    seen = [m['step'] * batch / 1000 for m in metrics]
    color = cmap(i % 20)
    ax_loss.plot(seen, [m['loss'] for m in metrics], color=color, lw=1.2, label=r['family'])
    ax_acc.plot(seen, [100 * m['top1'] for m in metrics], color=color, lw=1.2,
                label=r['family'])
  ax_loss.set(xlabel='training images seen (thousands)', ylabel='training loss', yscale='log',
              title='training loss (per logged step, shared recipe)')
  ax_acc.set(xlabel='training images seen (thousands)', ylabel='top-1 %', ylim=(0, 100),
             title='training top-1 (per logged step, augmented batches)')
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  ax_acc.legend(fontsize=7, ncol=2, loc='lower right')
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def plot_scatter(rows: list[dict[str, Any]], out: str, input_shape) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(9, 6))
  points = [r for r in rows if r['test_top1'] is not None]
  years = [r['year'] for r in points]
  sc = ax.scatter([r['macs'] for r in points], [100 * r['test_top1'] for r in points],
                  c=years, cmap='viridis', s=[20 + r['params'] / 2e4 for r in points],
                  edgecolors='k', linewidths=0.5, zorder=3)
  # Neighbours with about the same MACs and accuracy get their labels stacked, not overprinted.
  placed: list[tuple[float, float]] = []
  for r in sorted(points, key=lambda r: (r['macs'], r['test_top1'])):
    x, y = r['macs'], 100 * r['test_top1']
    near = sum(1 for px, py in placed if abs(px / x - 1) < 0.25 and abs(py - y) < 2.0)
    placed.append((x, y))
    ax.annotate(r['family'], (x, y), textcoords='offset points', xytext=(5, 4 - 10 * near),
                fontsize=8)
  fig.colorbar(sc, ax=ax, label='paper year', format='%d')
  h, w, c = input_shape
  ax.set(xscale='log', xlabel=f'multiply-adds per {h}x{w}x{c} image (log)',
         ylabel='test top-1 %', title='Fashion-MNIST test top-1 vs MACs (marker area ~ params)')
  ax.grid(alpha=0.3, which='both')
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def recipe_text(config_module: dict[str, Any], steps: int | None = None) -> str:
  """The shared recipe in words; `steps`: the budget the runs used (default: the config's)."""
  c = config_module
  steps = steps or c['STEPS']
  return (f"Shared recipe (`configs/fashion_mnist_history.py`): {steps} steps of batch "
          f"{c['BATCH_SIZE']} (about {steps * c['BATCH_SIZE'] / 60000:.2f} epochs) unless a "
          f"row's steps say otherwise; SGD with Nesterov momentum 0.9, base rate "
          f"{c['LEARNING_RATE']}, linear warm-up over the first {c['WARMUP_FRACTION']:.0%} of "
          f"the steps then cosine decay to 0; weight decay {c['WEIGHT_DECAY']} on every "
          'parameter; softmax cross-entropy, no label smoothing; BatchNorm momentum '
          f"{c['BN_MOMENTUM']} wherever the network has BN; input: the 28×28 image scaled to "
          '[0, 1], zero-padded to 32×32 and normalised; training adds a random 32×32 crop of the '
          '2-pixel-padded image and a horizontal flip. Test top-1 on all 10,000 test images, '
          'once, at the end.')


def build(root: str, out: str, config_path: str, extras: list[str],
          input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
  config_module = runpy.run_path(config_path)
  families = config_module['FAMILIES']
  rows = []
  for label, run_dir in family_dirs(root, list(families)):
    row = read_run(label, run_dir, '', input_shape)
    row['shared_recipe'] = True
    if label in families and families[label].year:  # e.g. SENet's 2017 on ResNet-20 (2015)
      row['year'] = families[label].year
    rows.append(row)
  for extra in extras:
    parts = extra.split('|')
    if len(parts) != 3:
      raise ValueError(f"--extra must be 'LABEL|RUN_DIR|COMMAND', got {extra!r}.")
    label, run_dir, command = (p.strip() for p in parts)
    rows.append(dict(read_run(label, run_dir, command, input_shape), shared_recipe=False))
  if not rows:
    raise FileNotFoundError(f'No finished runs (summary.json) under {root}.')
  os.makedirs(out, exist_ok=True)
  results_root = os.path.dirname(os.path.abspath(out)) + os.sep
  for r in rows:
    run_dir = os.path.abspath(r['run_dir'])
    if r['shared_recipe']:
      dest = os.path.join(out, r['family'])
    elif not run_dir.startswith(results_root):  # an extra run kept only in a workdir
      dest = os.path.join(out, 'extra', os.path.basename(run_dir))
    else:
      continue
    os.makedirs(dest, exist_ok=True)
    for name in COPIED:
      src = os.path.join(r['run_dir'], name)
      if os.path.exists(src):
        shutil.copyfile(src, os.path.join(dest, name))
  with open(os.path.join(out, 'table.json'), 'w') as f:
    json.dump(rows, f, indent=1, default=str)
  notes = _read_text(os.path.join(out, 'notes.md'))
  with open(os.path.join(out, 'README.md'), 'w') as f:
    budgets = [r['steps'] for r in rows if r['shared_recipe']]
    budget = max(set(budgets), key=budgets.count) if budgets else None  # the most common
    f.write(markdown(rows, families, recipe_text(config_module, budget), input_shape, notes))
  # Curves of the shared budget only: an --extra run (e.g. 20 passes) would set the scale.
  plot_curves([r for r in rows if r['shared_recipe']], os.path.join(out, 'curves.png'))
  plot_scatter(rows, os.path.join(out, 'acc_vs_macs.png'), input_shape)
  return rows


def _define_flags() -> None:
  """The command's flags, defined only when it runs as a program: other modules of the
  package (main.py, data/stats.py) define --config too, and tests import them together."""
  flags.DEFINE_string('root', 'workdirs/fmnist', 'Directory of the per-family workdirs.')
  flags.DEFINE_string('out', 'results/fashion_mnist', 'Output directory.')
  flags.DEFINE_string('config', 'configs/fashion_mnist_history.py',
                      'The benchmark config (its FAMILIES table gives order and notes).')
  flags.DEFINE_multi_string('extra', [], "Another run: 'LABEL|RUN_DIR|COMMAND'.")
  flags.DEFINE_string('input_shape', '32,32,1', 'H,W,C at which MACs are counted.')


def main(argv):
  del argv
  f = flags.FLAGS
  shape = tuple(int(x) for x in f.input_shape.split(','))
  if len(shape) != 3:
    raise app.UsageError(f'--input_shape must be H,W,C, got {f.input_shape!r}.')
  rows = build(f.root, f.out, f.config, f.extra, shape)
  for r in rows:
    print(f"{r['family']:<28} {r['model']:<20} top-1 {_pct(r['test_top1']):>7}  "
          f"{_fmt_count(r['params']):>7} params  {_fmt_count(r['macs']):>7} MACs  "
          f"{_fmt_time(r['train_wall_s'])}")


if __name__ == '__main__':
  _define_flags()
  app.run(main)
