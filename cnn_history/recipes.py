r"""Pieces the paper configs share (datasets, preprocessing strings, evaluation protocols), and
the recipes table generated from the configs:

  python -m cnn_history.recipes --out results/recipes.md

A paper config (configs/*.py) composes these; everything stays a config field that an override
can change.
"""

from __future__ import annotations

import argparse
import glob
import os
import runpy
from typing import Any

# Pixel statistics on the 0-255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)      # torchvision's (0.485, 0.456, 0.406) x 255
IMAGENET_STD = (58.395, 57.12, 57.375)         # (0.229, 0.224, 0.225) x 255
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)


def normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> str:
  return f'normalize(mean={tuple(mean)}, std={tuple(std)})'


def subtract_mean(mean=IMAGENET_MEAN) -> str:
  """Per-channel mean subtraction only (VGG, ResNet v1: "subtract the mean RGB value")."""
  return f'normalize(mean={tuple(mean)})'


def to_unit_range() -> str:
  """[-1, 1] (TF-slim: Inception, Xception, MobileNet, NASNet, EfficientNet ports)."""
  return 'scale(-1.0, 1.0)'


def imagenet(config, tfds_dir: str = '') -> None:
  """ImageNet-1k through TFDS (manual download: see the error message if it is missing)."""
  config.data.source = 'tfds'
  config.data.name = 'imagenet2012'
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.tfds_dir = tfds_dir
  config.data.download = False
  config.data.in_memory = 'no'
  config.data.shuffle_buffer = 16 * 1024
  config.eval_batch_size = 1024  # divisible by any power-of-two device count up to 1024


def cifar(config, name: str = 'cifar10') -> None:
  config.data.source = 'tfds'
  config.data.name = name
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  mean, std = CIFAR10_MEAN, CIFAR10_STD
  config.data.train_preprocess = f'random_crop(32, padding=4)|flip_lr|{normalize(mean, std)}'
  config.data.eval_preprocess = normalize(mean, std)
  config.eval_batch_size = 1000


# ---- Training augmentation shared by several papers -------------------------------------------

def fb_resnet_torch_train(size: int = 224, area_min: float = 0.08,
                          post: str | None = None) -> str:
  """fb.resnet.torch's ImageNet training (ResNet reproductions, DenseNet, ShuffleNet): an
  Inception crop, colour jitter 0.4, AlexNet lighting 0.1, a flip, mean/std normalisation."""
  return (f'inception_crop({size}, area_min={area_min}, area_max=1.0)|'
          f'color_jitter(0.4, 0.4, 0.4)|lighting(0.1)|flip_lr|{post or normalize()}')


def slim_inception_train(size: int, area_min: float = 0.1, fast_mode: bool = True,
                         post: str | None = None) -> str:
  """TF-slim's inception_preprocessing for training: a crop of 10-100% of the area with aspect
  3/4-4/3, a flip, colour distortions (fast mode: brightness 32/255 and saturation only, as
  the TF-slim-trained MobileNets and NASNet; otherwise also contrast and hue, as Inception-v3),
  and [-1, 1] scaling."""
  colour = ('color_jitter(brightness=0.25, contrast=0.0, saturation=0.5, hue=0.0)' if fast_mode
            else 'color_jitter(brightness=0.25, contrast=0.5, saturation=0.5, hue=0.2)')
  return (f'inception_crop({size}, area_min={area_min}, area_max=1.0, aspect_min=0.75, '
          f'aspect_max=1.33)|flip_lr|{colour}|{post or to_unit_range()}')


# ---- Evaluation protocols (final evaluation; config.data.eval_protocols) ------------------

def ten_crop(size: int, resize: int, post: str) -> str:
  """Shorter side to `resize`, the 4 corner + centre crops and their mirrors (AlexNet, ResNet)."""
  return f'resize_small({resize})|ten_crop({size})|{post}'


def dense_multiscale(scales: tuple[int, ...], post: str) -> str:
  """VGG §3.2 dense evaluation: the fully-convolutional net on the image at each scale Q
  (shorter side Q, centre square Q x Q: a batch needs one shape), flip-averaged."""
  return ' + '.join(f'resize_small({q})|center_crop({q})|flips()|{post}' for q in scales)


def multi_crop(size: int, scales: tuple[int, ...], post: str) -> str:
  """VGG's multi-crop evaluation: a 5x5 grid of crops and their flips at each scale (150)."""
  return ' + '.join(f'resize_small({q})|grid_crops({size}, grid=5)|{post}' for q in scales)


# ---- The recipes table ------------------------------------------------------------------------

def _schedule_text(s) -> str:
  unit = 'ep' if s.unit == 'epochs' else 'steps'
  base = f'{s.learning_rate:g}'
  if s.reference_batch_size:
    base += f' x batch/{s.reference_batch_size}'
  if s.name == 'constant':
    text = f'{base} constant'
  elif s.name == 'piecewise':
    text = f'{base}, then ' + ', '.join(f'{r:g} at {b:g} {unit}' for b, r in zip(s.boundaries,
                                                                                s.rates))
  elif s.name == 'exponential':
    text = f'{base} x {s.decay_factor:g} every {s.decay_every:g} {unit}'
  elif s.name == 'polynomial':
    text = f'{base} polynomial (power {s.power:g}) to {s.end_learning_rate:g}'
  else:
    text = f'{base} cosine to {s.end_learning_rate:g}'
  if s.warmup:
    text += f', {s.warmup:g} {unit} warm-up'
  if s.plateau_factor:
    limit = '' if s.plateau_max_reductions < 0 else f' (at most {s.plateau_max_reductions}x)'
    text += f'; x{s.plateau_factor:g} on plateau{limit}'
  return text


def _optimizer_text(o) -> str:
  extra = {'momentum': f' {o.momentum:g}', 'nesterov': f' {o.momentum:g}',
           'sgd_caffe': f' {o.momentum:g}',
           'rmsprop': f' decay {o.decay:g} mom {o.momentum:g} eps {o.eps:g}',
           'rmsprop_tf': f' decay {o.decay:g} mom {o.momentum:g} eps {o.eps:g}',
           'sdlm': f' mu {o.sdlm_mu:g}'}.get(o.name, '')
  text = o.name + extra
  if o.grad_clip_norm:
    text += f', clip {o.grad_clip_norm:g}'
  return text


def row(path: str, arg: str | None = None) -> dict[str, Any]:
  c = runpy.run_path(path)['get_config'](arg)
  o, l = c.optimizer, c.loss
  duration = f'{c.num_steps} steps' if c.num_steps > 0 else f'{c.num_epochs:g} epochs'
  wd = '—' if not o.weight_decay else (
      f'{o.weight_decay:g} {o.weight_decay_mode}' + (' (no bias/BN)' if o.weight_decay_on ==
                                                     'kernels' else ''))
  loss = l.name + (f', smoothing {l.label_smoothing:g}' if l.label_smoothing else '')
  regs = []
  if l.aux_weights:
    regs.append(f'aux {", ".join(f"{w:g}" for w in l.aux_weights)}')
  if l.mixup_alpha:
    regs.append(f'mixup {l.mixup_alpha:g}')
  if c.distill.teacher_workdir:
    regs.append(f'distill T={c.distill.temperature:g}')
  if c.ema_decay:
    regs.append(f'EMA {c.ema_decay:g}')
  for key in ('dropout_rate', 'block_dropout_rate', 'drop_path_rate', 'stochastic_depth_rate'):
    if key in c.model.overrides and c.model.overrides[key]:
      ramp = '0 → ' if key in c.model.ramp else ''  # linear over training (ScheduledDropPath)
      regs.append(f'{key.replace("_rate", "")} {ramp}{c.model.overrides[key]:g}')
  protocols = ['single'] + list(c.data.eval_protocols.keys())
  return {'config': os.path.basename(path) + (f':{arg}' if arg else ''), 'model': c.model.name,
          'optimizer': _optimizer_text(o), 'schedule': _schedule_text(c.schedule),
          'batch': c.batch_size, 'duration': duration, 'weight decay': wd,
          'augmentation': ' / by epoch: '.join(
              ops.replace('|', ' → ')
              for ops in (c.data.train_preprocess, *c.data.train_preprocess_cycle)),
          'loss': loss,
          'regularisation': ', '.join(regs) or '—', 'evaluation': ', '.join(protocols)}


def table(paths: list[str]) -> str:
  rows = [row(p) for p in paths]
  keys = list(rows[0])
  lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  for r in rows:
    lines.append('| ' + ' | '.join(str(r[k]).replace('|', '\\|') for k in keys) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='The recipes table, generated from configs/.')
  parser.add_argument('--out', default='', help='write markdown here (default: stdout)')
  parser.add_argument('--configs', default='configs/*.py', help='glob of config files')
  args = parser.parse_args(argv)
  paths = sorted(p for p in glob.glob(args.configs) if not os.path.basename(p).startswith('_'))
  text = ('# Paper recipes\n\nGenerated by `python -m cnn_history.recipes --out '
          'results/recipes.md` from the default variant of every config in `configs/` (each '
          "config's docstring has the paper's own words, the readings chosen, the command and "
          'the target).\n\n' + table(paths) + '\n')
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text)
    print(f'wrote {args.out} ({len(paths)} configs)')
  else:
    print(text)


if __name__ == '__main__':
  main()
