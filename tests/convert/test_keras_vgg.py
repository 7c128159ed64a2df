"""tf.keras.applications.VGG16/VGG19 -> our vgg16/vgg19: the same logits at 224x224."""

import jax
import numpy as np
import pytest
import tensorflow as tf

from cnn_history import models
from cnn_history.convert.keras import keras_to_flax


@pytest.mark.parametrize('name, keras_builder', [('vgg16', 'VGG16'), ('vgg19', 'VGG19')])
def test_keras_vgg_gives_the_same_logits(name, keras_builder):
  keras_model = getattr(tf.keras.applications, keras_builder)(weights=None,
                                                              classifier_activation=None)
  trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
  assert trainable == keras_model.count_params() == models.get_spec(name).expected_params
  # Keras starts with zero biases and Glorot kernels, under which the signal halves in variance
  # at every conv layer: give every layer random biases and the convs He-scaled kernels, so
  # that every tensor shows in the logits.
  rng = np.random.default_rng(0)
  for layer in keras_model.layers:
    if isinstance(layer, tf.keras.layers.Conv2D):
      layer.kernel.assign(layer.kernel * np.sqrt(2.0))
    if layer.weights:
      layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype(np.float32))
  module, variables = keras_to_flax(name, keras_model)
  x = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(module.apply)(variables, x))
  theirs = keras_model(x, training=False).numpy()
  assert ours.shape == theirs.shape == (1, 1000)
  assert theirs.std() > 0.2
  assert np.abs(ours - theirs).max() <= 1e-4
