"""tf.keras.applications ResNet{50,101,152} and ResNet{50,101,152}V2 -> our resnet*/resnetv2_*:
the same logits. The networks are fully convolutional up to the pool, so CI runs them at a small
non-square input (odd sizes reach the stride-2 layers); 224x224 was checked by hand."""

import jax
import numpy as np
import pytest
import tensorflow as tf

from cnn_history import models
from cnn_history.convert.keras import keras_to_flax
from cnn_history.models import summary

INPUT = (72, 104, 3)  # 36x52 -> 18x26 -> 9x13 -> 5x7 -> 3x4


def randomise(keras_model, rng):
  """Random BN statistics and affine terms, and random conv/dense biases: Keras starts them at
  0/1 and zero, which would hide a swapped mean/variance or a dropped bias."""
  for layer in keras_model.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      c = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.3, 0.8, c), rng.normal(0.0, 0.2, c),
                         rng.normal(0.0, 0.2, c), rng.uniform(0.5, 1.5, c)])
    elif isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)) and layer.use_bias:
      layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype(np.float32))


@pytest.mark.parametrize('name, keras_builder', [
    ('resnet50', 'ResNet50'), ('resnet101', 'ResNet101'), ('resnet152', 'ResNet152'),
    ('resnetv2_50', 'ResNet50V2'), ('resnetv2_101', 'ResNet101V2'),
    ('resnetv2_152', 'ResNet152V2')])
def test_keras_resnet_gives_the_same_logits(name, keras_builder):
  keras_model = getattr(tf.keras.applications, keras_builder)(
      weights=None, input_shape=INPUT, classifier_activation=None)
  rng = np.random.default_rng(0)
  randomise(keras_model, rng)
  module, variables = keras_to_flax(name, keras_model)
  # The options that make our network Keras's: its conv biases and BN epsilon (and for v2 its
  # stride placement and zero-padded stem pool) -- none of them is the paper default.
  assert module.conv_bias and module.bn_epsilon == pytest.approx(1.001e-5)
  assert module.stride_in_last_block == name.startswith('resnetv2')
  trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
  assert summary.count_params(variables) == trainable
  # Less its conv biases, Keras's network has exactly the reference count we hold ours to.
  biases = sum(int(np.prod(layer.bias.shape)) for layer in keras_model.layers
               if isinstance(layer, tf.keras.layers.Conv2D) and layer.use_bias)
  assert trainable - biases == models.get_spec(name).expected_params
  x = rng.normal(size=(2,) + INPUT).astype(np.float32)
  ours = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
  theirs = keras_model(x, training=False).numpy()
  assert np.abs(theirs).max() > 0.5  # the logits carry signal
  assert np.abs(ours - theirs).max() <= 1e-4
