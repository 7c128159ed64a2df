"""Metric writing: TensorBoard and logs (clu), `metrics.jsonl`, progress with images/s and ETA."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import jax
import numpy as np
from clu import metric_writers


class Writer:
  """Writes scalars to TensorBoard + the log (clu) and to workdir/metrics.jsonl (process 0).

  workdir may be local or remote (gs://): remote files cannot be appended to, so the JSON lines
  are kept and the file rewritten at each write there.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    from cnn_history.checkpoint import as_path  # pylint: disable=g-import-not-at-top
    self.enabled = jax.process_index() == 0
    self._clu = metric_writers.create_default_writer(str(workdir), just_logging=not self.enabled)
    self._path = as_path(workdir) / 'metrics.jsonl'
    self._remote = '://' in str(workdir)
    self._lines: list[str] = []
    if self.enabled and self._path.exists():
      # A resumed run rewrites what came after its checkpoint, so curves have no duplicates.
      self._lines = [line + '\n' for line in self._path.read_text().splitlines()
                     if line.strip() and json.loads(line)['step'] <= resume_step]
      self._path.write_text(''.join(self._lines))

  def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    self._clu.write_scalars(step, {f'{split}/{k}': v for k, v in scalars.items()})
    if not self.enabled:
      return
    line = json.dumps({'step': int(step), 'split': split, 'time': time.time(), **scalars}) + '\n'
    self._lines.append(line)
    if self._remote:
      self._path.write_text(''.join(self._lines))
    else:
      with open(self._path, 'a') as f:
        f.write(line)

  def close(self) -> None:
    self._clu.flush()
    self._clu.close()


class Progress:
  """Periodic log lines (always) and a tqdm bar (on a terminal) with images/s and ETA."""

  def __init__(self, total_steps: int, start_step: int, batch_size: int, bar: bool):
    self.total, self.batch_size = total_steps, batch_size
    self._last_step, self._last_time = start_step, time.perf_counter()
    self._start_step, self._start_time = start_step, self._last_time
    self._bar = None
    if bar and jax.process_index() == 0 and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)

  def update(self, step: int) -> dict[str, float]:
    """Marks `step` done; returns images/s over the interval since the last call, and the ETA."""
    now = time.perf_counter()
    images_per_s = (step - self._last_step) * self.batch_size / max(now - self._last_time, 1e-9)
    rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
    eta = (self.total - step) / max(rate, 1e-9)
    if self._bar is not None:
      self._bar.update(step - self._last_step)
      self._bar.set_postfix(img_s=f'{images_per_s:.0f}', refresh=False)
    self._last_step, self._last_time = step, now
    return {'images_per_s': images_per_s, 'eta_s': eta}

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def mean_of(steps: list[dict[str, np.ndarray]], key: str) -> float:
  return float(np.mean([m[key] for m in steps]))


def format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


_LOGGED = ('loss', 'top1', 'top5', 'learning_rate', 'grad_norm', 'images_per_s')


def log_line(step: int, total: int, epoch: float, scalars: dict[str, float], eta: float) -> None:
  """One progress line; the objective's other terms (distill_loss, aux0_loss, total_loss ...)
  and ramped switches follow the standard fields."""
  extra = ''.join(f' {k} {v:.4g}' for k, v in scalars.items() if k not in _LOGGED)
  logging.info('step %d/%d (epoch %.2f) loss %.4f top1 %.4f lr %.3g grad_norm %.3g%s  '
               '%.0f images/s  ETA %s', step, total, epoch, scalars['loss'], scalars['top1'],
               scalars['learning_rate'], scalars['grad_norm'], extra, scalars['images_per_s'],
               format_eta(eta))
