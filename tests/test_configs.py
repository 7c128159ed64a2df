"""Every paper config loads, builds its model and optimiser, and trains two steps on synthetic
data of its real input shape (through its own preprocessing), with a tiny batch."""

import glob
import os
import runpy

import pytest

from cnn_history import models, train
from cnn_history.models import layers
from cnn_history.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if not os.path.basename(p).startswith('_'))

# Raw images as each dataset would deliver them (the configs' preprocessing then crops/resizes).
RAW_SHAPES = {'imagenet2012': (300, 340, 3), 'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3),
              'fashion_mnist': (28, 28, 1), 'mnist': (28, 28, 1)}


def load(path, arg=None):
  return runpy.run_path(os.path.join(ROOT, path))['get_config'](arg)


def test_there_is_a_config_per_paper():
  names = {os.path.basename(p)[:-3] for p in CONFIGS}
  assert 'lenet5' in names


@pytest.mark.parametrize('path', CONFIGS)
def test_config_trains_two_steps(path, tmp_path, monkeypatch):
  config = load(path)
  assert config.model.name in models.list_models(), path
  doc = runpy.run_path(os.path.join(ROOT, path))['__doc__'] or ''
  assert 'python -m cnn_history.main --config=configs/' in doc, f'{path}: no command in docstring'
  raw = RAW_SHAPES[config.data.name] if config.data.source == 'tfds' else \
      tuple(config.data.synthetic_shape)
  with config.unlocked():
    config.data.source = 'synthetic'
    config.data.synthetic_shape = raw
    config.data.synthetic_classes = 10
    config.data.synthetic_train_size = 4
    config.data.synthetic_eval_size = 2
    config.model.num_classes = 10 if config.model.name == 'lenet5' else 12
    config.data.eval_protocols = {}
    config.batch_size = 2
    config.eval_batch_size = 2
    config.num_steps = 2
    config.num_devices = 1
    config.log_every_steps = 1
    config.progress_bar = False
    config.optimizer.sdlm_samples = 4
    config.distill.teacher_workdir = ''
    if 'bn_batch_span' in config.model.overrides:
      config.model.overrides.bn_batch_span = None
    if config.examples_per_update > 2:
      config.examples_per_update = 0
  # The evaluation pipeline runs for real; compiling the evaluation step is left to the tests of
  # the trainer (it is the same for every config), which keeps this test within CI's budget.
  def evaluate_pipeline_only(steps, state, split, cfg, mesh, host, preprocess=None):
    del steps, state, mesh
    batch = next(pipeline.eval_batches(split, cfg.data.eval_preprocess if preprocess is None
                                       else preprocess, cfg.eval_batch_size, 0, host))
    assert batch['image'].shape[-3:] == image_shape, batch['image'].shape
    return {'loss': 0.0, 'top1': 0.0, 'top5': 0.0, 'count': float(batch['mask'].sum())}

  image_shape = models.input_shape(config.model.name)
  monkeypatch.setattr(train, 'evaluate', evaluate_pipeline_only)
  # lax's convolutions: they compile up to 2x faster than the CPU forms (depthwise tap loop,
  # 1x1 gradient VJP), which tests/models/test_layers.py checks against lax's, in MobileNet v2
  # training too. This test is about the configs.
  with layers.reference_convolutions():
    summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 2 and summary['eval_count'] == 2
  assert summary['train_loss'] == summary['train_loss']  # not NaN
