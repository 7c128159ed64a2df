"""keras.applications NASNet -> Flax: the converted networks compute Keras's logits.

NASNetMobile runs whole at 64x64 (Keras accepts any size >= 32 without ImageNet weights).
NASNetLarge costs ~60 s here for Keras to build and XLA to compile alone, whatever the
resolution, so CI runs the smallest Keras NASNet with Large's structure instead (96 stem
filters, skip_reduction, two Normal cells per stack so that every kind of input adjustment
occurs); the native 224 / 331 comparisons were run by hand (report in the model docstring).
"""

import jax
import numpy as np
import pytest
import tensorflow as tf
from keras.src.applications import nasnet as keras_nasnet  # the general NASNet(...) builder

from cnn_history import models  # noqa: F401  (first: convert.keras and the zoo import each other)
from cnn_history.convert import keras as keras_convert
from cnn_history.models import summary

RESOLUTION = 64  # stem 31 -> 16 -> 8 -> 4 -> 2: odd and even maps meet every stride-2 op


def _randomise_batchnorm(keras_model, seed=0):
  """Non-trivial BN statistics and affine parameters (fresh ones, 0/1, hide mistakes)."""
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      c = layer.get_weights()[0].shape
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c),
                         rng.normal(0.0, 0.2, c), rng.uniform(0.5, 2.0, c)])


def _max_logit_difference(name, keras_model):
  _randomise_batchnorm(keras_model)
  module, variables = keras_convert.keras_to_flax(name, keras_model)
  x = np.random.default_rng(1).normal(size=(2, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
  theirs = keras_model(x, training=False).numpy()
  ours = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
  trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
  assert summary.count_params(variables) == trainable
  return module, np.abs(ours - theirs).max()


def test_nasnet_mobile_matches_keras():
  keras_model = tf.keras.applications.NASNetMobile(
      weights=None, input_shape=(RESOLUTION, RESOLUTION, 3), classifier_activation=None)
  module, difference = _max_logit_difference('nasnet_a_mobile', keras_model)
  assert (module.normal_cells_per_stack, module.penultimate_filters, module.stem_filters,
          module.skip_reduction) == (4, 1056, 32, False)
  assert module.reduction_pool_padding == 'zeros' and module.bn_epsilon == pytest.approx(1e-3)
  assert difference <= 1e-4


def test_nasnet_large_structure_matches_keras():
  keras_model = keras_nasnet.NASNet(
      input_shape=(RESOLUTION, RESOLUTION, 3), penultimate_filters=384, num_blocks=2,
      stem_block_filters=96, skip_reduction=True, filter_multiplier=2, weights=None,
      classes=10, classifier_activation=None)
  module, difference = _max_logit_difference('nasnet_a_large', keras_model)
  assert (module.normal_cells_per_stack, module.penultimate_filters, module.stem_filters,
          module.skip_reduction, module.num_classes) == (2, 384, 96, True, 10)
  assert difference <= 1e-4
