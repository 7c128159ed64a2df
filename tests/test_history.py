"""The CNN-history benchmark: its family table (configs/fashion_mnist_history.py) and its table
builder (cnn_history/history_table.py)."""

import json
import os
import runpy

import jax
import jax.numpy as jnp
import pytest

from cnn_history import history_table, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'configs', 'fashion_mnist_history.py')
MODULE = runpy.run_path(CONFIG)
FAMILIES = list(MODULE['FAMILIES'])


def test_every_family_of_the_history_is_there():
  for family in ('lenet5', 'alexnet', 'vgg', 'googlenet', 'bn_inception', 'resnet',
                 'preact_resnet', 'resnext', 'senet', 'densenet', 'xception', 'mobilenet_v1',
                 'mobilenet_v2', 'mobilenet_v3', 'shufflenet_v1', 'shufflenet_v2', 'mnasnet',
                 'efficientnet'):
    assert family in FAMILIES


@pytest.mark.parametrize('family', FAMILIES)
def test_family_builds_and_gives_ten_logits_at_32x32(family):
  config = MODULE['get_config'](f'family={family}')
  assert config.model.num_classes == 10 and config.num_steps == MODULE['STEPS']
  model = models.create_model(config.model.name, num_classes=10, **config.model.overrides)
  x = jnp.zeros((2, 32, 32, 1))
  # Shapes only (jax.eval_shape): a real forward of the larger nets is slow on a CPU.
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert logits.shape == (2, 10)


def test_shared_recipe_is_shared():
  configs = [MODULE['get_config'](f'family={f}') for f in FAMILIES]
  for field in ('batch_size', 'num_steps', 'optimizer', 'schedule', 'loss', 'data'):
    values = {json.dumps(c[field].to_dict() if hasattr(c[field], 'to_dict') else c[field],
                         sort_keys=True, default=str) for c in configs}
    assert len(values) == 1, field
  assert MODULE['get_config']('family=resnet,steps=7').num_steps == 7


def test_unknown_family_lists_the_valid_ones():
  with pytest.raises(ValueError, match='unknown family .*valid families: lenet5, alexnet'):
    MODULE['get_config']('family=inception_v9')


def _fake_run(root, family, model, overrides, top1):
  workdir = root / family
  workdir.mkdir(parents=True)
  (workdir / 'summary.json').write_text(json.dumps({
      'model': model, 'eval_top1': top1, 'eval_top5': 0.99, 'steps': 20, 'epochs': 0.04,
      'wall_time_s': 75.0, 'train_images_per_s': 512.0, 'num_params': 1}))
  (workdir / 'config.json').write_text(json.dumps({
      'batch_size': 128, 'model': {'name': model, 'num_classes': 10, 'overrides': overrides}}))
  (workdir / 'metrics.jsonl').write_text('\n'.join(json.dumps(
      {'step': s, 'split': 'train', 'loss': 2.0 / s, 'top1': 0.5, 'top5': 0.9})
      for s in (10, 20)) + '\n')
  (workdir / 'command.txt').write_text(f'python -m cnn_history.main --family={family}\n')
  return workdir


def test_table_builder_on_fake_runs(tmp_path):
  root, out = tmp_path / 'runs', tmp_path / 'results'
  _fake_run(root, 'resnet', 'resnet20', {}, 0.91)
  _fake_run(root, 'lenet5', 'lenet5', {'head': 'dense'}, 0.85)
  (root / 'unfinished').mkdir()  # no summary.json: not a row
  paper = _fake_run(tmp_path / 'other', 'paper', 'lenet5', {}, 0.8486)
  os.remove(paper / 'config.json')  # an older run: the registry defaults are its model

  rows = history_table.build(str(root), str(out), CONFIG,
                             [f'lenet5 (paper recipe)|{paper}|python -m x'], (32, 32, 1))

  assert [r['family'] for r in rows] == ['lenet5', 'resnet', 'lenet5 (paper recipe)']
  resnet = rows[1]
  assert resnet['year'] == 2015 and resnet['test_top1'] == 0.91
  assert resnet['params'] == 269_434  # ResNet-20 on one input channel, 10 classes
  assert 39e6 < resnet['macs'] < 42e6
  assert rows[0]['params'] == 60_850 and rows[2]['params'] == 60_000  # dense head vs RBF
  readme = (out / 'README.md').read_text()
  assert '| 2 | resnet | `resnet20` | 2015 | **91.00%** |' in readme
  assert 'python -m cnn_history.main --family=resnet' in readme and 'python -m x' in readme
  assert 'Table I' in readme  # the per-family notes
  assert 'Shared recipe (`configs/fashion_mnist_history.py`): 20 steps of batch' in readme
  for name in ('curves.png', 'acc_vs_macs.png', 'table.json', 'resnet/summary.json',
               'lenet5/command.txt'):
    assert (out / name).exists(), name
  assert not (out / 'lenet5 (paper recipe)').exists()  # runs outside root are not copied


def test_table_builder_without_runs_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No finished runs'):
    history_table.build(str(tmp_path), str(tmp_path / 'out'), CONFIG, [], (32, 32, 1))
