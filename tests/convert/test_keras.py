"""The Keras importer's bookkeeping: every tensor mapped, checked and accounted for."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from cnn_history.convert import keras as keras_convert
from cnn_history.models import layers


class Small(nn.Module):
  """conv(bias)+BN+ReLU -> depthwise -> GAP -> dense, as Flax modules of the zoo."""
  num_classes: int = 5

  @nn.compact
  def __call__(self, x, train=False):
    x = layers.ConvBN(8, 3, 1, 'SAME', use_bias=True, bn_epsilon=1e-3, name='stem')(x, train)
    x = layers.ConvBN(16, 3, 2, 'SAME', groups=8, use_bn=False, act='relu', name='dw')(x, train)
    return nn.Dense(self.num_classes, name='head')(layers.global_avg_pool(x))


def _keras_small():
  inputs = tf.keras.Input((12, 12, 3))
  x = tf.keras.layers.Conv2D(8, 3, padding='same', name='conv')(inputs)
  x = tf.keras.layers.BatchNormalization(epsilon=1e-3, name='bn')(x)
  x = tf.keras.layers.ReLU()(x)
  x = tf.keras.layers.DepthwiseConv2D(3, 2, padding='same', depth_multiplier=2, use_bias=False,
                                      name='dw')(x)
  x = tf.keras.layers.ReLU()(x)
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  outputs = tf.keras.layers.Dense(5, name='fc')(x)
  model = tf.keras.Model(inputs, outputs)
  rng = np.random.default_rng(0)  # non-trivial BN statistics
  bn = model.get_layer('bn')
  bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(size=8), rng.normal(size=8),
                  rng.uniform(0.5, 2.0, 8)])
  return model


def _mapping(km, w):
  del km
  w.conv('conv', ('stem', 'conv'))
  w.bn('bn', ('stem', 'bn'))
  w.depthwise('dw', ('dw', 'conv'))
  w.dense('fc', ('head',))


def test_converted_weights_give_the_keras_logits():
  km = _keras_small()
  variables = keras_convert.convert_keras(km, Small(), _mapping, (12, 12, 3))
  x = np.random.default_rng(1).normal(size=(4, 12, 12, 3)).astype(np.float32)
  ours = Small().apply(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(ours, km(x, training=False).numpy(), atol=1e-5)


def test_missing_unused_and_misshaped_tensors_are_named():
  km = _keras_small()

  def forgets_dense(km, w):
    w.conv('conv', ('stem', 'conv'))
    w.bn('bn', ('stem', 'bn'))
    w.depthwise('dw', ('dw', 'conv'))

  with pytest.raises(keras_convert.ConversionError, match=r"not mapped.*\['fc'\]"):
    keras_convert.convert_keras(km, Small(), forgets_dense, (12, 12, 3))

  def wrong_place(km, w):
    _mapping(km, w)
    w.put('params', ('extra',), 'kernel', np.zeros(3))

  with pytest.raises(keras_convert.ConversionError, match=r"unexpected params \[\"\['extra'\]"):
    keras_convert.convert_keras(km, Small(), wrong_place, (12, 12, 3))
  with pytest.raises(keras_convert.ConversionError,
                     match=r"\['head'\]\['kernel'\]: Keras gives \(16, 5\), the Flax model has \(16, 7\)"):
    keras_convert.convert_keras(km, Small(num_classes=7), _mapping, (12, 12, 3))
  with pytest.raises(keras_convert.ConversionError, match="no layer 'fc2'"):
    keras_convert.convert_keras(km, Small(), lambda km, w: w.dense('fc2', ('head',)), (12, 12, 3))


def test_unknown_model_names_the_supported_ones():
  with pytest.raises(keras_convert.ConversionError, match='No Keras converter for'):
    keras_convert.keras_to_flax('lenet5', None)
