"""The config schema: locked fields, paper configs, variants, command-line overrides."""

import importlib.util
import os

import pytest
from absl import flags
from ml_collections import config_flags

from cnn_history import config as config_lib
from cnn_history import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
  spec = importlib.util.spec_from_file_location('paper_config', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_default_config_has_the_required_top_level_fields():
  c = config_lib.default_config()
  for field in ('seed', 'num_epochs', 'num_steps', 'batch_size', 'data', 'optimizer',
                'schedule', 'loss'):
    assert field in c
  assert c.model.name in models.list_models()


def test_every_default_field_is_documented_with_a_comment():
  source = open(os.path.join(ROOT, 'cnn_history', 'config.py')).read()
  c = config_lib.default_config()
  for group, value in c.items():
    names = [f'{group}.{k}' for k in value.keys()] if hasattr(value, 'keys') else [group]
    for name in names:
      if name == 'model.overrides':
        continue
      line = next((l for l in source.splitlines() if f'c.{name} =' in l), None)
      assert line is not None and '#' in line, f'config.{name} lacks its one-line comment'


def test_misspelt_field_is_an_error_naming_it():
  c = config_lib.default_config()
  with pytest.raises(AttributeError, match='batch_szie'):
    c.batch_szie = 3
  with pytest.raises(AttributeError, match='learning_rte'):
    c.schedule.learning_rte = 0.1


def _parse(argv):
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values, lock_config=True,
                                  sys_argv=['prog'] + argv)
  values(['prog'] + argv)
  return values.config


def test_command_line_overrides_and_variants():
  config = _parse(['--config=configs/lenet5.py:variant=modern', '--config.batch_size=64',
                   '--config.model.overrides.activation=tanh'])
  assert config.batch_size == 64 and config.optimizer.name == 'adam'
  assert config.model.overrides.activation == 'tanh'
  assert config.model.overrides.head == 'dense'
  with pytest.raises(AttributeError, match='Did you mean "batch_size" instead of "batch_szie"'):
    _parse(['--config=configs/lenet5.py', '--config.batch_szie=64'])
  with pytest.raises(AttributeError, match='activaton'):
    _parse(['--config=configs/lenet5.py', '--config.model.overrides.activaton=relu'])


def test_lenet5_paper_recipe():
  c = load('configs/lenet5.py').get_config()
  assert c.model.name == 'lenet5' and c.loss.name == 'rbf'
  assert c.optimizer.name == 'sdlm' and c.optimizer.sdlm_mu == 0.02
  assert c.optimizer.sdlm_samples == 500 and c.num_epochs == 20
  assert c.examples_per_update == 1  # online, one example per update
  assert c.schedule.boundaries == (2, 5, 8, 12)
  assert c.schedule.rates == (2e-4, 1e-4, 5e-5, 1e-5) and c.schedule.learning_rate == 5e-4
  assert c.data.train_preprocess == 'pad(2)|scale(-0.1, 1.175)'
  minibatch = load('configs/lenet5.py').get_config('variant=minibatch')
  assert minibatch.examples_per_update == 0 and minibatch.optimizer.name == 'sdlm'
  modern = load('configs/lenet5.py').get_config('modern')
  assert modern.model.overrides.activation == 'relu' and modern.loss.name == 'softmax_xent'
  with pytest.raises(ValueError, match="Unknown lenet5 variant 'moden'"):
    load('configs/lenet5.py').get_config('variant=moden')


def test_set_model_lists_every_switch():
  c = config_lib.default_config()
  config_lib.set_model(c, 'lenet5', pooling='max')
  assert set(c.model.overrides) == {'activation', 'pooling', 'c3_table', 'head', 'batch_norm',
                                    'bn_momentum', 'bn_epsilon', 'bn_batch_span', 'initializer'}
  assert c.model.overrides.pooling == 'max' and c.model.overrides.activation == 'scaled_tanh'
  with pytest.raises(ValueError, match="no option 'pool'.*'pooling'"):
    config_lib.set_model(c, 'lenet5', pool='max')


def test_parse_arg():
  assert config_lib.parse_arg('depth=50,bn=True', {'depth': 18, 'bn': False}) == \
      {'depth': 50, 'bn': True}
  assert config_lib.parse_arg('modern', {'variant': 'paper'}) == {'variant': 'modern'}
  with pytest.raises(ValueError, match="Unknown config argument 'dpeth'.*depth"):
    config_lib.parse_arg('dpeth=50', {'depth': 18, 'bn': False})
