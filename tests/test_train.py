"""The training system end to end: resume, preemption, checkpoints, NaN, bad input, real data."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_history import checkpoint, parallel, train
from cnn_history import config as config_lib
from cnn_history.data import pipeline, sources
from cnn_history.models import layers
from cnn_history.steps import make_steps
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_state(workdir):
  """The newest checkpointed state of a run."""
  return checkpoint.restore_arrays(os.path.join(workdir, 'checkpoints'))


def assert_bit_identical(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def stop_at(monkeypatch, step):
  """Makes the run stop as if preempted once it has done `step` steps."""
  monkeypatch.setattr(checkpoint.PreemptionWatch, 'should_stop', lambda self, s: s == step)


@pytest.mark.parametrize('variant, stop, num_devices', [('modern_bn', 5, 8), ('paper', 11, 1)])
def test_stop_and_resume_is_bit_identical(tmp_path, monkeypatch, variant, stop, num_devices):
  config = tiny_config(variant, num_epochs=2, num_devices=num_devices)
  if variant == 'paper':  # SDLM re-estimates h_kk at each epoch start (8 steps of 32)
    config.schedule.name = 'piecewise'
    config.schedule.boundaries = (1.5,)
    config.schedule.rates = (1e-4,)
  reference = train.train_and_evaluate(config, str(tmp_path / 'a'))
  stop_at(monkeypatch, stop)
  stopped = train.train_and_evaluate(config, str(tmp_path / 'b'))
  assert stopped['preempted'] and stopped['steps'] == stop and 'eval_top1' not in stopped
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  assert resumed['steps'] == reference['steps'] == 16
  step_a, state_a = final_state(tmp_path / 'a')
  step_b, state_b = final_state(tmp_path / 'b')
  assert step_a == step_b == 16
  assert_bit_identical(state_a, state_b)
  assert resumed['eval_top1'] == reference['eval_top1']
  assert resumed['eval_loss'] == reference['eval_loss']
  # metrics.jsonl of the resumed run has each step once.
  with open(tmp_path / 'b' / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f if '"train"' in line]
  assert steps == sorted(set(steps)) and steps[-1] == 16


def _run_main(workdir, *flags, env_extra=None, wait=True):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # one CPU device
  env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2', **(env_extra or {}))
  cmd = [sys.executable, '-m', 'cnn_history.main', f'--workdir={workdir}', *flags]
  if not wait:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  return result


def test_sigterm_saves_and_a_rerun_resumes_bit_identically(tmp_path):
  config = ['--config=tests/configs/tiny.py:variant=modern_bn', '--config.num_steps=100000',
            '--config.checkpoint_every_steps=100000', '--config.data.synthetic_train_size=512']
  proc = _run_main(tmp_path / 'b', *config, wait=False)
  metrics = tmp_path / 'b' / 'metrics.jsonl'
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().count('\n') >= 10):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
    time.sleep(0.2)
  logged = max(json.loads(line)['step'] for line in metrics.read_text().splitlines()
               if line.strip())
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert 'SIGTERM received' in out
  with open(tmp_path / 'b' / 'summary.json') as f:
    stopped = json.load(f)
  # Stopped at a step boundary after the last step it had logged, long before the end.
  assert stopped['preempted'] and 10 <= logged <= stopped['steps'] < 100000
  target = stopped['steps'] + 6  # constant learning rate: the total does not change the updates
  resumed = _run_main(tmp_path / 'b', *config, f'--config.num_steps={target}')
  assert f'Resumed from the checkpoint at step {stopped["steps"]}' in resumed.stderr
  _run_main(tmp_path / 'a', *config, f'--config.num_steps={target}')
  step_a, state_a = final_state(tmp_path / 'a')
  step_b, state_b = final_state(tmp_path / 'b')
  assert step_a == step_b == target
  assert_bit_identical(state_a, state_b)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  config = tiny_config(num_epochs=1, checkpoint_every_steps=3, keep_checkpoints=5)
  train.train_and_evaluate(config, str(tmp_path))
  ckpt_dir = tmp_path / 'checkpoints'
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [3, 6, 8]
  # Corrupt every data file of the newest checkpoint (a crash while writing, a bad disk).
  for root, _, files in os.walk(ckpt_dir / '8' / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  config.num_epochs = 2
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert 'cannot be read' in caplog.text and 'falling back' in caplog.text
  assert 'Resumed from the checkpoint at step 6' in caplog.text
  assert summary['steps'] == 16
  moved = [p.name for p in ckpt_dir.iterdir() if p.name.startswith('corrupt-8-')]
  assert len(moved) == 1  # kept for inspection, never deleted


def test_checkpoint_of_another_network_is_an_error(tmp_path):
  train.train_and_evaluate(tiny_config(num_steps=2), str(tmp_path))
  other = tiny_config('paper', num_steps=4)
  with pytest.raises(checkpoint.CheckpointError, match='incompatible.*new --workdir'):
    train.train_and_evaluate(other, str(tmp_path))
  assert (tmp_path / 'checkpoints' / '2').exists()


def test_non_finite_loss_stops_with_the_step_named(tmp_path):
  config = tiny_config(num_steps=6, log_every_steps=3, checkpoint_every_steps=100)
  config.schedule.learning_rate = 1e30
  with pytest.raises(train.NonFiniteError, match=r'Non-finite loss.* at step 2 \('):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints' / '6').exists()


def test_summary_and_metrics_files(tmp_path):
  summary = train.train_and_evaluate(tiny_config(num_epochs=2), str(tmp_path))
  with open(tmp_path / 'summary.json') as f:
    written = json.load(f)
  for key in ('eval_top1', 'eval_top5', 'eval_loss', 'train_loss', 'steps', 'epochs',
              'wall_time_s'):
    assert key in written
  assert written == pytest.approx(summary)
  assert written['steps'] == 16 and written['epochs'] == 2.0 and written['eval_count'] == 100
  assert 0.0 <= written['eval_top1'] <= written['eval_top5'] <= 1.0
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  train_lines = [l for l in lines if l['split'] == 'train']
  assert [l['step'] for l in train_lines] == list(range(2, 17, 2))
  for key in ('loss', 'top1', 'top5', 'learning_rate', 'images_per_s', 'grad_norm'):
    assert np.isfinite(train_lines[-1][key])
  assert [l['step'] for l in lines if l['split'] == 'eval'] == [8, 16]
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(tmp_path))


@pytest.mark.parametrize('fields, message', [
    ({'batch_size': 36}, r'batch_size=36 is not divisible by the 8 devices'),
    ({'eval_batch_size': 20}, r'eval_batch_size=20 is not divisible by the 8 devices'),
    ({'data.train_preprocess': 'scale(0, 1)', 'data.synthetic_shape': (28, 28, 1)},
     r'lenet5 takes 32x32x1 images, but config.data.train_preprocess produces 28x28x1.*pad\(2\)'),
    ({'model.name': 'lenet7'}, r"Unknown model 'lenet7'.*lenet5"),
    ({'data.source': 'tfds', 'data.name': 'fashon_mnist'}, r"no dataset 'fashon_mnist'"),
    ({'data.source': 'idx', 'data.path': '/nonexistent'}, r'apt-get install dataset-fashion-mnist'),
    ({'data.source': 'csv'}, r"Unknown config.data.source 'csv'"),
    ({'optimizer.name': 'adagrad'}, r"config.optimizer.name='adagrad' is not valid.*'sgd'"),
    ({'model.overrides.actvation': 'relu'}, r"no option 'actvation'.*'activation'"),
    ({'examples_per_update': 5}, r'examples_per_update=5 must be 0 or divide'),
])
def test_bad_input_is_a_clear_error(tmp_path, fields, message):
  config = tiny_config()
  for key, value in fields.items():
    *path, last = key.split('.')
    target = config
    for p in path:
      target = target[p]
    with target.unlocked():  # the misspelt override is added past the config's own check
      setattr(target, last, value)
  with pytest.raises((ValueError, sources.DataError), match=message):
    train.train_and_evaluate(config, str(tmp_path))


def test_eval_mode_evaluates_a_checkpoint(tmp_path):
  trained = train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path))
  config = tiny_config(num_epochs=1, mode='eval', eval_batch_size=40)
  evaluated = train.train_and_evaluate(config, str(tmp_path))
  assert evaluated['eval_count'] == 100 and evaluated['steps'] == trained['steps']
  assert evaluated['epochs'] == trained['epochs'] == 1.0  # the checkpoint's, not the eval set's
  assert evaluated['eval_top1'] == pytest.approx(trained['eval_top1'])
  assert evaluated['eval_loss'] == pytest.approx(trained['eval_loss'], rel=1e-5)


def test_weight_averaging_plateau_and_mixup(tmp_path):
  config = tiny_config(num_epochs=3, ema_decay=0.9, eval_every_epochs=1.0)
  config.loss.mixup_alpha = 0.2
  config.schedule.plateau_factor = 0.1
  config.schedule.plateau_patience = 0
  config.schedule.plateau_threshold = 0.5  # only halving the error would count as progress
  summary = train.train_and_evaluate(config, str(tmp_path))
  for key in ('eval_ema_top1', 'eval_ema_loss', 'eval_top1'):
    assert key in summary
  assert summary['eval_ema_loss'] != summary['eval_loss']
  with open(tmp_path / 'metrics.jsonl') as f:
    rates = [json.loads(l)['learning_rate'] for l in f if '"train"' in l]
  # Evaluations after epochs 1 and 2: the first sets the best error, the second is not half of
  # it and divides the rate by 10 for epoch 3.
  assert rates[0] == pytest.approx(0.05) and rates[-1] == pytest.approx(0.005)
  _, state = final_state(tmp_path)
  assert set(state['ema_params']) == set(state['params'])


def test_distillation_from_a_teacher_run(tmp_path):
  train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path / 'teacher'))
  with open(tmp_path / 'teacher' / 'config.json') as f:
    assert json.load(f)['model']['num_classes'] == 10
  student = tiny_config('modern_bn', num_epochs=1)
  student.distill.teacher_workdir = str(tmp_path / 'teacher')
  plain = train.train_and_evaluate(tiny_config('modern_bn', num_epochs=1), str(tmp_path / 'a'))
  taught = train.train_and_evaluate(student, str(tmp_path / 'b'))
  assert taught['train_loss'] != plain['train_loss']  # the teacher's term is in the loss
  # The distillation term is logged beside the label loss; their weighted sum is the objective.
  with open(tmp_path / 'b' / 'metrics.jsonl') as f:
    lines = [json.loads(l) for l in f if '"train"' in l]
  assert lines and all(l['distill_loss'] > 0 for l in lines)
  for l in lines:
    assert l['total_loss'] == pytest.approx(l['loss'] + student.distill.weight * l['distill_loss'],
                                            rel=1e-5)
  with open(tmp_path / 'a' / 'metrics.jsonl') as f:
    assert not any('distill_loss' in l for l in f)
  student.distill.teacher_workdir = str(tmp_path / 'nowhere')
  with pytest.raises(checkpoint.CheckpointError, match='has no config.json'):
    train.train_and_evaluate(student, str(tmp_path / 'c'))


def test_evaluation_protocols_with_views_and_scales(tmp_path):
  config = tiny_config(num_epochs=1)
  config.data.synthetic_shape = (36, 36, 1)
  config.data.train_preprocess = 'random_crop(32)|scale(-0.1, 1.175)'
  config.data.eval_preprocess = 'center_crop(32)|scale(-0.1, 1.175)'
  config.data.eval_protocols.ten_crop = 'ten_crop(32)|scale(-0.1, 1.175)'
  config.data.eval_protocols.two_scales = ('center_crop(32)|scale(-0.1, 1.175) + '
                                           'center_crop(32)|flips()|scale(-0.1, 1.175)')
  summary = train.train_and_evaluate(config, str(tmp_path))
  for name in ('ten_crop', 'two_scales'):
    assert 0.0 <= summary[f'eval_{name}_top1'] <= summary[f'eval_{name}_top5'] <= 1.0
  assert summary['eval_ten_crop_top1'] != summary['eval_top1'] or \
      summary['eval_ten_crop_loss'] != summary['eval_loss']
  # A protocol that gives the network a wrong size is caught before training.
  config.data.eval_protocols.bad = 'center_crop(28)'
  with pytest.raises(ValueError, match='eval_protocols.bad produces 28x28x1'):
    train.train_and_evaluate(config, str(tmp_path / 'bad'))


@pytest.mark.slow
def test_bfloat16_trains_like_float32(tmp_path, fashion_mnist_dir):
  """LeNet-5 (modern) on real Fashion-MNIST, 400 steps: bf16 compute within 2 points of fp32."""
  results = {}
  for dtype in ('float32', 'bfloat16'):
    config = tiny_config(num_steps=400, dtype=dtype, batch_size=64, eval_batch_size=1000,
                         num_devices=1, log_every_steps=100, checkpoint_every_steps=1000)
    config.data.source = 'idx'
    config.data.path = fashion_mnist_dir
    config.data.train_preprocess = config.data.eval_preprocess = 'pad(2)|scale(-0.1, 1.175)'
    config.optimizer.name = 'adam'
    config.schedule.learning_rate = 1e-3
    results[dtype] = train.train_and_evaluate(config, str(tmp_path / dtype))
  assert results['float32']['eval_top1'] > 0.80
  assert abs(results['bfloat16']['eval_top1'] - results['float32']['eval_top1']) < 0.02


def test_float16_dynamic_loss_scaling(tmp_path):
  config = tiny_config(num_steps=8, dtype='float16', log_every_steps=1)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary['train_loss'])
  _, state = final_state(tmp_path)
  scale = float(state['loss_scale']['scale'])
  assert 1.0 <= scale <= 2.0 ** 15
  for leaf in jax.tree_util.tree_leaves(state['params']):
    assert leaf.dtype == np.float32 and np.all(np.isfinite(leaf))


def test_profile_trace_is_written(tmp_path):
  train.train_and_evaluate(tiny_config(num_steps=6, profile_steps=(2, 4)), str(tmp_path))
  traces = list((tmp_path / 'plugins' / 'profile').rglob('*.xplane.pb'))
  assert traces and traces[0].stat().st_size > 1000


def test_multi_size_training_alternates_shapes_by_epoch(tmp_path, monkeypatch):
  """config.data.train_preprocess_cycle (SPP-net's multi-size training): epochs alternate
  16x16 and 12x12 inputs of one size-agnostic network (a step compiled per shape)."""
  config = tiny_config(num_epochs=3)
  config_lib.set_model(config, 'resnet20', depth=8)
  config.data.synthetic_shape = (16, 16, 3)
  config.data.synthetic_train_size = 64  # 2 steps of 32 per epoch
  config.data.train_preprocess = 'scale(0, 1)'
  config.data.train_preprocess_cycle = ('scale(0, 1)|resize(12)',)
  config.data.eval_preprocess = 'scale(0, 1)'
  seen = []
  original = pipeline.train_batches

  def spy(*args, **kwargs):
    for batch in original(*args, **kwargs):
      seen.append(batch['image'].shape[1:3])
      yield batch

  monkeypatch.setattr(pipeline, 'train_batches', spy)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 6 and np.isfinite(summary['eval_loss'])
  assert seen[:6] == [(16, 16)] * 2 + [(12, 12)] * 2 + [(16, 16)] * 2
  # A fixed-size network is told which preprocessing breaks it.
  lenet = tiny_config()
  lenet.data.train_preprocess_cycle = ('scale(-0.1, 1.175)|resize(28)',)
  with pytest.raises(ValueError, match=r'train_preprocess_cycle\[0\] produces 28x28x1'):
    train.train_and_evaluate(lenet, str(tmp_path / 'lenet'))


class _DropProbe(nn.Module):
  """Top-1 of label 0 = the fraction of examples whose path DropPath dropped: a kept example
  scores class 0 below the others, a dropped one ties them (ties count as correct)."""
  num_classes: int = 4
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train=False):
    ones = jnp.ones((x.shape[0], 1))
    kernel = lambda *_: jnp.array([[-1.0, 0.0, 0.0, 0.0]])
    return nn.Dense(4, use_bias=False, kernel_init=kernel)(
        layers.DropPath(self.drop_path_rate)(ones, train))


def test_ramped_switch_rises_linearly_over_training():
  """config.model.ramp = ('drop_path_rate',) (NASNet's ScheduledDropPath): step t of T drops
  paths at rate r * t / T, and logs that rate."""
  config = tiny_config()
  config.model.ramp = ('drop_path_rate',)
  model = _DropProbe(drop_path_rate=0.8)
  mesh = parallel.make_mesh(1)
  steps = make_steps(model, optax.sgd(0.0), optax.constant_schedule(0.0), config, mesh,
                     (2, 2, 1), total_steps=4)
  state = steps.init(jax.random.key(0))
  batch = parallel.global_batch({'image': np.zeros((4000, 2, 2, 1), np.float32),
                                 'label': np.zeros(4000, np.int32)}, mesh)
  for t in range(4):
    state, metrics = steps.train(state, batch)
    assert float(metrics['drop_path_rate']) == pytest.approx(0.8 * t / 4)
    assert float(metrics['top1']) == pytest.approx(0.8 * t / 4, abs=0.03)
  config.model.ramp = ('bogus',)
  with pytest.raises(ValueError, match="'bogus', which is not a numeric switch"):
    make_steps(model, optax.sgd(0.0), optax.constant_schedule(0.0), config, mesh, (2, 2, 1),
               total_steps=4)
  config.model.ramp = ('drop_path_rate',)
  with pytest.raises(ValueError, match='number of training steps'):
    make_steps(model, optax.sgd(0.0), optax.constant_schedule(0.0), config, mesh, (2, 2, 1))


def test_the_compilation_cache_is_on_by_default_and_a_config_field(tmp_path):
  # Tests keep theirs out of the user's home (conftest); a real run's default is ~/.cache.
  assert config_lib.default_config().compilation_cache_dir == \
      os.environ['CNN_HISTORY_COMPILATION_CACHE']
  env = {k: v for k, v in os.environ.items() if k != 'CNN_HISTORY_COMPILATION_CACHE'}
  env.update(PYTHONPATH=ROOT, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')

  def run(home, *flags):
    done = subprocess.run([sys.executable, '-m', 'cnn_history.main', '--config=tests/configs/tiny.py',
                           f'--workdir={home / "run"}', '--config.num_steps=2', *flags],
                          env={**env, 'HOME': str(home)}, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

  run(tmp_path / 'a')
  cached = list((tmp_path / 'a' / '.cache' / 'cnn_history' / 'xla').iterdir())
  assert any('train_step' in p.name for p in cached), cached
  run(tmp_path / 'b', '--config.compilation_cache_dir=')
  assert not (tmp_path / 'b' / '.cache' / 'cnn_history').exists()
