"""Imported weights end to end: the convert CLI, evaluation with the stored preprocessing, and
fine-tuning with a new classifier head (cnn_history/pretrained.py)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from cnn_history import checkpoint, pretrained, train
from cnn_history import config as config_lib
from cnn_history.data import augment
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_HW = (40, 48)  # evaluation images, larger than the 32x32 network input


def keras_reference_preprocess(images: np.ndarray, size: int, crop: int, family) -> np.ndarray:
  """Shorter side to `size` (bilinear, antialiased), central crop, then Keras's own
  preprocess_input of `family` (e.g. keras.applications.mobilenet)."""
  h, w = images.shape[1:3]
  scale = size / min(h, w)
  resized = tf.image.resize(images.astype(np.float32), (round(h * scale), round(w * scale)),
                            antialias=True).numpy()
  top, left = (resized.shape[1] - crop) // 2, (resized.shape[2] - crop) // 2
  return family.preprocess_input(resized[:, top:top + crop, left:left + crop].copy())


def apply_ops(ops: str, image: np.ndarray) -> np.ndarray:
  return augment.parse(ops)(tf.constant(image), tf.constant([0, 0])).numpy()


@pytest.mark.parametrize('name, family', [('vgg16', 'vgg16'), ('mobilenet_v1', 'mobilenet'),
                                          ('densenet121', 'densenet')])
def test_keras_preprocessing_matches_preprocess_input(name, family):
  """Each Keras mode ('caffe', 'tf', 'torch') as ops equals keras.applications' own."""
  image = np.random.default_rng(0).integers(0, 256, IMAGE_HW + (3,)).astype(np.uint8)
  ops = pretrained.preprocess_from_info(pretrained.keras_preprocessing(name, (32, 32)))
  ours = apply_ops(ops, image)
  theirs = keras_reference_preprocess(image[None], 36, 32,
                                      getattr(tf.keras.applications, family))[0]
  assert ours.shape == theirs.shape == (32, 32, 3)
  assert theirs.std() > 0.1
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-5)


def test_timm_style_description_becomes_ops():
  info = {'resolution': (3, 224, 224), 'crop_pct': 0.9, 'interpolation': 'bicubic',
          'mean': pretrained.IMAGENET_MEAN, 'std': pretrained.IMAGENET_STD}
  assert pretrained.preprocess_from_info(info) == (
      "resize_small(248, 'bicubic', antialias=True)|center_crop(224, 224)|scale(0.0, 1.0)|"
      'normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))')
  assert pretrained.preprocess_from_info({'resolution': 224, 'crop_pct': 0.875}).startswith(
      "resize_small(256, 'bilinear', antialias=True)|center_crop(224, 224)|scale(0.0, 1.0)")
  # torchvision's description names the resize; a BGR channel order adds the reversal.
  assert pretrained.preprocess_from_info(
      {'resolution': 300, 'resize': 320, 'crop_pct': 0.9375, 'interpolation': 'bicubic',
       'mean': (0.5,) * 3, 'std': (0.5,) * 3, 'channel_order': 'BGR'}) == (
           "resize_small(320, 'bicubic', antialias=True)|center_crop(300, 300)|rgb_to_bgr()|"
           'scale(0.0, 1.0)|normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))')


def random_keras_mobilenet(seed=0):
  """keras.applications.MobileNet (alpha 0.25, 32x32, 10 classes) with random weights whose
  logits depend on the image: each BatchNorm's moving statistics are those of its input on
  random images (at Keras's initial values the signal fades), with random scales/offsets."""
  model = tf.keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None,
                                          classes=10, classifier_activation=None)
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      inputs = tf.keras.Model(model.inputs, layer.input)(x, training=False).numpy()
      n = inputs.shape[-1]
      layer.set_weights([rng.uniform(0.8, 1.2, n), rng.normal(0, 0.1, n),
                         inputs.mean((0, 1, 2)), inputs.var((0, 1, 2)) + 1e-3])
  return model


def write_folder(path, images, labels, split='test'):
  for i, (image, label) in enumerate(zip(images, labels)):
    directory = path / split / f'class_{label}'
    directory.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(directory / f'{i}.png'), tf.io.encode_png(image))


def run_convert(*flags):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-m', 'cnn_history.convert', *flags], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  return result


def eval_config(data_path):
  config = config_lib.default_config()
  config.mode = 'eval'
  config_lib.set_model(config, 'mobilenet_v1')
  config.data.source = 'folder'
  config.data.path = str(data_path)
  config.data.eval_preprocess = 'resize(32)'  # replaced by the import's, unless 'config'
  config.eval_batch_size = 8
  config.num_devices = 1
  config.progress_bar = False
  return config


def test_convert_cli_then_eval_equals_keras(tmp_path):
  keras_model = random_keras_mobilenet()
  keras_model.save(tmp_path / 'mobilenet.keras')
  out = tmp_path / 'imported'
  result = run_convert('--source=keras', '--model=mobilenet_v1',
                       f'--checkpoint={tmp_path / "mobilenet.keras"}', f'--workdir={out}')
  assert result.returncode == 0, result.stdout + result.stderr
  conversion = json.loads((out / 'conversion.json').read_text())
  assert conversion['source'] == 'keras' and conversion['model'] == 'mobilenet_v1'
  assert conversion['num_classes'] == 10
  # The switches that make our MobileNet the Keras one travel with the weights.
  assert conversion['overrides']['width_multiplier'] == 0.25
  assert conversion['overrides']['activation'] == 'relu6'
  assert conversion['eval_preprocess'] == (
      "resize_small(36, 'bilinear', antialias=True)|center_crop(32, 32)|scale(-1.0, 1.0)")
  record = checkpoint.read_record(out / 'checkpoints', 0)
  assert record['contents'] == checkpoint.WEIGHTS_ONLY and record['num_classes'] == 10

  # 7 images of 3 classes (a last batch of 8 that is padded), evaluated from a folder.
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (7,) + IMAGE_HW + (3,)).astype(np.uint8)
  labels = np.array([0, 1, 2, 0, 1, 2, 0])
  write_folder(tmp_path / 'data', images, labels)
  summary = train.train_and_evaluate(eval_config(tmp_path / 'data'), str(out))

  inputs = keras_reference_preprocess(images, 36, 32, tf.keras.applications.mobilenet)
  logits = keras_model(inputs, training=False).numpy().astype(np.float64)
  assert logits.std(0).mean() > 0.1  # the logits depend on the image
  log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                                                          keepdims=True)) \
      - logits.max(1, keepdims=True)
  loss = -log_probs[np.arange(7), labels].mean()
  rank = (logits > logits[np.arange(7), labels][:, None]).sum(1)
  assert summary['eval_count'] == 7
  assert summary['eval_loss'] == pytest.approx(loss, abs=1e-4)
  assert summary['eval_top1'] == pytest.approx(np.mean(rank < 1))
  assert summary['eval_top5'] == pytest.approx(np.mean(rank < 5))

  # Evaluating the import through init_from (an empty workdir) is the same evaluation.
  config = eval_config(tmp_path / 'data')
  config.init_from = str(out)
  again = train.train_and_evaluate(config, str(tmp_path / 'via_init_from'))
  assert again['eval_loss'] == pytest.approx(loss, abs=1e-4)

  # The user's explicit preprocessing wins over the stored one ('config'), and differs.
  config = eval_config(tmp_path / 'data')
  config.data.eval_preprocess = 'resize(32)|scale(0, 1)'
  config.data.eval_preprocess_from = 'config'
  other = train.train_and_evaluate(config, str(out))
  assert abs(other['eval_loss'] - loss) > 1e-3


def import_in_process(workdir, keras_model):
  from cnn_history.convert.keras import keras_to_flax  # pylint: disable=g-import-not-at-top
  module, variables = keras_to_flax('mobilenet_v1', keras_model)
  return pretrained.save_imported(
      str(workdir), source='keras', name='mobilenet_v1', module=module, variables=variables,
      preprocessing=pretrained.keras_preprocessing('mobilenet_v1', (32, 32)), origin='memory')


def test_imported_workdir_is_not_resumed_as_a_training_run(tmp_path):
  import_in_process(tmp_path / 'imported', random_keras_mobilenet())
  config = eval_config(tmp_path / 'data')
  config.mode = 'train'
  with pytest.raises(checkpoint.CheckpointError, match='--config.init_from=.*imported'):
    train.train_and_evaluate(config, str(tmp_path / 'imported'))


def test_fine_tuning_imported_weights_with_a_new_head(tmp_path):
  """init_from an import: its switches are adopted (relu6, width 0.25 would otherwise not fit),
  the trunk is copied, and the 10-class classifier becomes a fresh 3-class one."""
  import_in_process(tmp_path / 'imported', random_keras_mobilenet())
  _, imported = checkpoint.restore_arrays(tmp_path / 'imported' / 'checkpoints')
  config = config_lib.default_config()
  config_lib.set_model(config, 'mobilenet_v1')
  config.init_from = str(tmp_path / 'imported')
  config.data.source = 'synthetic'
  config.data.synthetic_shape = (32, 32, 3)
  config.data.synthetic_classes = 3
  config.data.synthetic_train_size = 8
  config.data.synthetic_eval_size = 8
  config.batch_size = config.eval_batch_size = 8
  config.num_steps = 1
  config.num_devices = 1
  config.schedule.learning_rate = 0.0
  config.progress_bar = False
  train.train_and_evaluate(config, str(tmp_path / 'tuned'))
  _, tuned = checkpoint.restore_arrays(tmp_path / 'tuned' / 'checkpoints')
  want, got = flat(imported['params']), flat(tuned['params'])
  assert set(want) == set(got)
  head = {k for k in got if got[k].shape != want[k].shape}
  assert head == {'classifier/kernel', 'classifier/bias'}
  assert got['classifier/kernel'].shape == (256, 3)
  for key in set(got) - head:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  run = json.loads((tmp_path / 'tuned' / 'config.json').read_text())
  assert run['model']['overrides']['width_multiplier'] == 0.25
  assert run['model']['overrides']['activation'] == 'relu6'


def test_conversion_switches_merge_into_the_config_or_conflict():
  conversion = {'model': 'mobilenet_v1', 'num_classes': 10, 'eval_preprocess': 'scale(-1, 1)',
                'overrides': {'width_multiplier': 0.25, 'activation': 'relu6'}}
  config = config_lib.default_config()
  config_lib.set_model(config, 'mobilenet_v1')
  config.mode = 'eval'
  config.data.eval_protocols.ten_crop = 'resize_small(256)|ten_crop(224)'
  pretrained.adopt_conversion(config, conversion, 'OUT', evaluate=True)
  assert config.model.overrides.width_multiplier == 0.25
  assert config.model.overrides.activation == 'relu6'
  assert config.model.num_classes == 10
  assert config.data.eval_preprocess == 'scale(-1, 1)'
  assert not config.data.eval_protocols  # they assume the config's normalisation
  config.model.num_classes = 1000
  with pytest.raises(ValueError, match='have 10 classes'):
    pretrained.adopt_conversion(config, conversion, 'OUT', evaluate=True)

  config = config_lib.default_config()
  config_lib.set_model(config, 'mobilenet_v1', activation='relu', width_multiplier=0.5)
  with pytest.raises(ValueError, match='width_multiplier=0.5 contradicts'):
    pretrained.adopt_conversion(config, conversion, 'OUT', evaluate=False)

  # A training-only switch of the config (BN momentum) is kept; the others are adopted.
  config = config_lib.default_config()
  config_lib.set_model(config, 'mobilenet_v1', bn_momentum=0.95)
  pretrained.adopt_conversion(config, dict(conversion, overrides={
      'bn_momentum': 0.99, 'activation': 'relu6'}), 'OUT', evaluate=False)
  assert config.model.overrides.bn_momentum == 0.95
  assert config.model.overrides.activation == 'relu6'

  config = config_lib.default_config()
  config_lib.set_model(config, 'vgg16')
  with pytest.raises(ValueError, match='use a config of mobilenet_v1'):
    pretrained.adopt_conversion(config, conversion, 'OUT', evaluate=True)


# ---- Fine-tuning with a new head -----------------------------------------------------------
def flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_init_from_with_other_classes_reinitialises_only_the_head(tmp_path):
  source = tiny_config(num_steps=2, num_devices=1)  # 10 classes; the runs below use 8 devices
  train.train_and_evaluate(source, str(tmp_path / 'source'))
  _, source_state = checkpoint.restore_arrays(tmp_path / 'source' / 'checkpoints')

  # Learning rate 0 and BN momentum 1: the 3-class run's checkpoint after one step holds
  # exactly its initial weights and statistics.
  target = tiny_config(num_steps=1, **{'data.synthetic_classes': 3,
                                       'schedule.learning_rate': 0.0,
                                       'model.overrides.bn_momentum': 1.0})
  fresh = train.train_and_evaluate(target, str(tmp_path / 'fresh'))
  target.init_from = str(tmp_path / 'source')
  tuned = train.train_and_evaluate(target, str(tmp_path / 'tuned'))
  assert fresh['steps'] == tuned['steps'] == 1
  _, fresh_state = checkpoint.restore_arrays(tmp_path / 'fresh' / 'checkpoints')
  _, tuned_state = checkpoint.restore_arrays(tmp_path / 'tuned' / 'checkpoints')

  want, got, new = (flat({'params': s['params'], 'batch_stats': s['batch_stats']})
                    for s in (source_state, tuned_state, fresh_state))
  head = {k for k in got if k.startswith('params/output/')}
  assert head == {'params/output/kernel', 'params/output/bias'}
  assert got['params/output/kernel'].shape == (84, 3)
  assert want['params/output/kernel'].shape == (84, 10)
  for key in head:  # the run's own initialisation, not the source's
    np.testing.assert_array_equal(got[key], new[key])
  trunk = sorted(set(got) - head)
  assert len(trunk) > 10 and any(k.startswith('batch_stats/') for k in trunk)
  for key in trunk:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  for key in ('params/C1/kernel', 'batch_stats/norms_C1/mean'):  # so the copies show
    assert not np.array_equal(new[key], want[key])


def test_init_from_with_a_mis_shaped_trunk_tensor_is_an_error(tmp_path):
  source = tiny_config(num_steps=1, num_devices=1)
  train.train_and_evaluate(source, str(tmp_path / 'source'))
  _, state = checkpoint.restore_arrays(tmp_path / 'source' / 'checkpoints')
  params = dict(state['params'])
  params['F6'] = dict(params['F6'], kernel=np.zeros((120, 80), np.float32))
  state = dict(state, params=params)
  bad = checkpoint.Checkpoints(tmp_path / 'bad' / 'checkpoints', 1,
                               {'model': 'lenet5', 'num_classes': 10})
  bad.save(1, state, {})
  bad.close()
  target = tiny_config(num_steps=1, num_devices=1, **{'data.synthetic_classes': 3})
  target.init_from = str(tmp_path / 'bad')
  with pytest.raises(checkpoint.CheckpointError, match=r'params/F6/kernel is \(120, 80\) there'):
    train.train_and_evaluate(target, str(tmp_path / 'tuned'))


def test_convert_cli_torchvision_state_dict(tmp_path):
  """The torch path: a torchvision-named ResNet-18 state dict in .safetensors (the one the
  torch converter's tests build) becomes an import with torchvision's preprocessing."""
  from cnn_history.convert import torch as torch_convert  # pylint: disable=g-import-not-at-top
  from tests.test_convert_torch import _numpy_resnet18_state_dict  # noqa: E402
  state = _numpy_resnet18_state_dict()
  torch_convert.write_safetensors(str(tmp_path / 'r18.safetensors'), state)
  conversion = pretrained.import_weights('torchvision', 'resnet18',
                                         str(tmp_path / 'r18.safetensors'), str(tmp_path / 'out'))
  assert conversion['num_classes'] == 10
  assert conversion['eval_preprocess'] == (
      "resize_small(256, 'bilinear', antialias=True)|center_crop(224, 224)|scale(0.0, 1.0)|"
      'normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))')
  _, restored = checkpoint.restore_arrays(tmp_path / 'out' / 'checkpoints')
  np.testing.assert_array_equal(restored['params']['head']['kernel'], state['fc.weight'].T)
  np.testing.assert_array_equal(restored['batch_stats']['stem_bn1']['var'],
                                state['bn1.running_var'])


def test_keras_weights_only_h5_is_built_from_keras_applications(tmp_path):
  """An .h5 of weights only goes into keras.applications.MobileNet(weights=PATH, **args) and
  gives the same import as the full .keras file."""
  keras_model = random_keras_mobilenet()
  keras_model.save(tmp_path / 'full.keras')
  keras_model.save_weights(tmp_path / 'only.weights.h5')
  full = pretrained.import_weights('keras', 'mobilenet_v1', str(tmp_path / 'full.keras'),
                                   str(tmp_path / 'a'))
  only = pretrained.import_weights(
      'keras', 'mobilenet_v1', str(tmp_path / 'only.weights.h5'), str(tmp_path / 'b'),
      pretrained.parse_keras_args("{'alpha': 0.25, 'input_shape': (32, 32, 3), 'classes': 10}"))
  assert only['overrides'] == full['overrides'] and only['num_classes'] == 10
  assert only['eval_preprocess'] == full['eval_preprocess']
  _, a = checkpoint.restore_arrays(tmp_path / 'a' / 'checkpoints')
  _, b = checkpoint.restore_arrays(tmp_path / 'b' / 'checkpoints')
  jax.tree_util.tree_map(np.testing.assert_array_equal, a['params'], b['params'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, a['batch_stats'], b['batch_stats'])
  with pytest.raises(checkpoint.CheckpointError, match='already holds checkpoints'):
    pretrained.import_weights('keras', 'mobilenet_v1', str(tmp_path / 'full.keras'),
                              str(tmp_path / 'a'))


def test_an_import_can_teach(tmp_path):
  """config.distill.teacher_workdir may be an import: its model, switches and weights."""
  keras_model = random_keras_mobilenet()
  import_in_process(tmp_path / 'imported', keras_model)
  config = config_lib.default_config()
  config.distill.teacher_workdir = str(tmp_path / 'imported')
  teacher = train.load_teacher(config, num_classes=10)
  assert teacher.model.width_multiplier == 0.25 and teacher.model.activation == 'relu6'
  x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  ours = np.asarray(teacher.model.apply(teacher.variables, x, train=False))
  theirs = keras_model(x, training=False).numpy()
  assert theirs.std() > 0.1
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
