"""Keras MobileNet, MobileNetV2, MobileNetV3Large/Small -> Flax: the same logits.

The networks are fully convolutional up to the pooling, so CI compares whole models (head
included) at 96x96 with 16 classes; `python -m tests.convert.test_keras_mobilenet` runs every
case at the native 224x224 with 1000 classes.
"""

import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from cnn_history.convert.keras import ConversionError, keras_to_flax

CI_RESOLUTION, CI_CLASSES = 96, 16

# case -> (registry name, Keras constructor, its keyword arguments, the options the converter
# must read off the Keras model)
CASES = {
    'v1_alpha0.75': ('mobilenet_v1', tf.keras.applications.MobileNet, {'alpha': 0.75},
                     {'width_multiplier': 0.75, 'activation': 'relu6', 'bn_epsilon': 1e-3}),
    'v2_alpha1.4': ('mobilenet_v2', tf.keras.applications.MobileNetV2, {'alpha': 1.4},
                    {'width_multiplier': 1.4, 'bn_epsilon': 1e-3, 'bn_momentum': 0.999}),
    'v3_large': ('mobilenet_v3_large', tf.keras.applications.MobileNetV3Large,
                 {'include_preprocessing': False},
                 {'width_multiplier': 1.0, 'input_mean': None, 'bn_momentum': 0.999}),
    'v3_small_alpha0.75_preprocessing': (
        'mobilenet_v3_small', tf.keras.applications.MobileNetV3Small,
        {'alpha': 0.75, 'include_preprocessing': True},
        {'width_multiplier': 0.75, 'input_mean': (127.5,) * 3, 'input_std': (127.5,) * 3}),
}


def randomised(keras_model, seed=0):
  """Random BN statistics, scales and offsets, and conv/dense biases (Keras starts them at
  0/1, which would hide a swapped or dropped tensor)."""
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    kind = type(layer).__name__
    if kind == 'BatchNormalization':
      gamma, beta, mean, var = layer.get_weights()
      n = gamma.shape
      layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                         rng.uniform(0.5, 2.0, n)])
    elif kind in ('Conv2D', 'Dense') and layer.use_bias:
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
  return keras_model


def max_logit_difference(case, resolution, classes):
  """(max |Flax logits - Keras logits|, max |Keras logits|) on two random images."""
  name, constructor, kwargs, options = CASES[case]
  keras_model = randomised(constructor(weights=None, input_shape=(resolution, resolution, 3),
                                       classes=classes, classifier_activation=None, **kwargs))
  module, variables = keras_to_flax(name, keras_model)
  for field, value in options.items():
    assert getattr(module, field) == value, (case, field)
  rng = np.random.default_rng(1)
  low, high = (0, 255) if kwargs.get('include_preprocessing') else (-1, 1)
  x = rng.uniform(low, high, (2, resolution, resolution, 3)).astype(np.float32)
  expected = keras_model(x, training=False).numpy()
  ours = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x)
  assert ours.shape == expected.shape == (2, classes)
  return float(np.max(np.abs(np.asarray(ours) - expected))), float(np.max(np.abs(expected)))


@pytest.mark.parametrize('case', list(CASES))
def test_keras_logits_match(case):
  difference, scale = max_logit_difference(case, CI_RESOLUTION, CI_CLASSES)
  assert scale > 0.1  # not a comparison of two near-zero outputs
  assert difference <= 1e-4, (case, difference, scale)


def test_minimalistic_keras_v3_is_refused():
  keras_model = tf.keras.applications.MobileNetV3Small(
      weights=None, input_shape=(64, 64, 3), classes=5, minimalistic=True)
  with pytest.raises(ConversionError, match='minimalistic'):
    keras_to_flax('mobilenet_v3_small', keras_model)


if __name__ == '__main__':
  # By hand, at the native resolution: python -m tests.convert.test_keras_mobilenet [case ...]
  for case in sys.argv[1:] or CASES:
    diff, scale = max_logit_difference(case, 224, 1000)
    print(f'{case:36s} 224x224, 1000 classes: max |logit diff| {diff:.2e} (max |logit| {scale:.2f})')
