"""keras.applications InceptionV3 / InceptionResNetV2 -> inception_v3 / inception_resnet_v2.

The nets are convolutional up to the global pool, so parity runs at 75x75, the smallest input
Keras accepts (the 3x3 pool branches then sit mostly on borders, where TF's 'SAME' average
excludes the padding: the resolution that tests it hardest). 299x299 was checked by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from cnn_history import models
from cnn_history.convert import keras as keras_convert
from cnn_history.models import summary

RESOLUTION = 75


def _keras_model(constructor):
  km = constructor(weights=None, input_shape=(RESOLUTION, RESOLUTION, 3),
                   classifier_activation=None)
  rng = np.random.default_rng(0)  # non-trivial BN statistics (Keras starts them at 0 and 1)
  for layer in km.layers:
    if type(layer).__name__ == 'BatchNormalization':
      c = layer.moving_mean.shape[0]
      layer.set_weights([np.asarray(w, np.float32) for w in
                         ([rng.uniform(0.5, 1.5, c)] if layer.scale else [])
                         + [rng.normal(0, 0.2, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 2, c)]])
  return km


@pytest.mark.parametrize('name, constructor, options', [
    ('inception_v3', tf.keras.applications.InceptionV3,
     {'aux_logits': False, 'bn_scale': False, 'bn_epsilon': 1e-3}),
    ('inception_resnet_v2', tf.keras.applications.InceptionResNetV2,
     {'bn_scale': False, 'bn_epsilon': 1e-3}),
])
def test_keras_logits_match(name, constructor, options):
  km = _keras_model(constructor)
  module, variables = keras_convert.keras_to_flax(name, km)
  assert {k: getattr(module, k) for k in options} == options
  trainable = sum(int(np.prod(w.shape)) for w in km.trainable_weights)
  assert summary.count_params(variables) == trainable  # 23,817,352 / 55,813,192
  x = np.random.default_rng(1).uniform(-1, 1, (2, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
  ours = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, jnp.asarray(x))
  theirs = km(x, training=False).numpy()
  assert np.abs(theirs).max() > 0.1  # a signal worth comparing
  assert np.abs(np.asarray(ours) - theirs).max() <= 1e-4
  assert name in keras_convert.supported_keras_models()
  assert models.get_spec(name).module is type(module)
