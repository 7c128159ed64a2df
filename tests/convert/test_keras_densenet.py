"""Keras parity for DenseNet-121/169/201 and Xception: every Keras tensor converted, and the same
logits. CI runs the smallest inputs Keras accepts (DenseNet 32x32, Xception 71x71), which still
cross every padding, stride, pool, shortcut and the head. DenseNet-169/201 differ from 121 only in
Table 1's block sizes, so CI checks their conversion (every tensor mapped and shape-checked) and
leaves their forward passes (8-15 s of XLA compilation each) to the run by hand, which compares
all four at 32/71 and at the native resolutions (224, 299):

  PYTHONPATH=. python -m tests.convert.test_keras_densenet
"""

import jax
import numpy as np
import pytest
import tensorflow as tf

from cnn_history import models
from cnn_history.convert import keras as keras_convert

KERAS = {'densenet121': 'DenseNet121', 'densenet169': 'DenseNet169',
         'densenet201': 'DenseNet201', 'xception': 'Xception'}


def _keras(name, side):
  """A randomly initialised Keras application with random BN statistics (else 0/1 hide errors)."""
  model = getattr(tf.keras.applications, KERAS[name])(
      weights=None, input_shape=(side, side, 3), classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      c = layer.get_weights()[0].shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.5, c), rng.normal(0, 0.5, c),
                         rng.uniform(0.5, 2.0, c)])
  return model


def max_logit_difference(name, side, forward=True):
  """Converts a random Keras model (checking every tensor); max |logits Flax - logits Keras|."""
  keras_model = _keras(name, side)
  module, variables = keras_convert.keras_to_flax(name, keras_model)
  assert sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights) == (
      models.get_spec(name).expected_params)
  if not forward:
    return 0.0
  x = np.random.default_rng(1).normal(size=(2, side, side, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(module.apply)(variables, x))
  theirs = keras_model(x, training=False).numpy()
  assert np.abs(theirs).max() > 0.1  # the comparison is not between near-zero logits
  return float(np.abs(ours - theirs).max())


@pytest.mark.parametrize('name, side, forward', [
    ('densenet121', 32, True), ('densenet169', 32, False), ('densenet201', 32, False),
    ('xception', 71, True)])
def test_keras_parity(name, side, forward):
  assert max_logit_difference(name, side, forward) <= 1e-4


def test_block_sizes_must_match_the_keras_model():
  with pytest.raises(keras_convert.ConversionError, match=r'dense blocks \(6, 12, 24, 16\); the '
                     r'Keras model has \(6, 12, 32, 32\)'):
    keras_convert.keras_to_flax('densenet121', tf.keras.applications.DenseNet169(
        weights=None, input_shape=(32, 32, 3)))


if __name__ == '__main__':
  for model_name, sides in [('densenet121', (32, 224)), ('densenet169', (32, 224)),
                            ('densenet201', (32, 224)), ('xception', (71, 299))]:
    for s in sides:
      print(f'{model_name} {s}x{s}: max |logits difference| = '
            f'{max_logit_difference(model_name, s):.2e}', flush=True)
