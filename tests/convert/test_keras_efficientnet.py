"""keras.applications.EfficientNetB0 ... B7 -> our efficientnet_b0 ... b7: the same logits.

The networks are fully convolutional up to the pool, so parity runs at a reduced 72x88 input
(every padding case: 72 -> 36 -> 18 -> 9 -> 5 -> 3 meets stride-2 3x3 and 5x5 convs on even and
odd sizes, and 88 -> 44 -> 22 -> 11 -> 6 -> 3 differs from the height where it matters).
Every BN gets a random scale and offset, and moving statistics far from Keras' initial 0/1
(which would hide a swapped mean/variance or a wrong epsilon): a training-mode pass with BN
momentum 0 sets them to the statistics of a random batch, then each variance is inflated by a
random factor in [1, 2]. With 0/1 statistics the signal dies out (any difference would be
tiny); with the exact batch statistics the random network is chaotic enough that float32
rounding alone reaches 3e-4 at the logits (measured against float64); the inflation keeps the
logits at O(1) and the float32 noise at ~5e-6.
"""

import jax
import numpy as np
import pytest
import tensorflow as tf

from cnn_history.convert import keras as keras_convert
from cnn_history.models import efficientnet, summary

INPUT = (72, 88, 3)


def _keras_efficientnet(variant: int, input_shape=INPUT, classes: int = 17, seed: int = 0,
                        batch: int = 8):
  keras_model = getattr(tf.keras.applications, f'EfficientNetB{variant}')(
      weights=None, input_shape=input_shape, classes=classes, classifier_activation=None)
  rng = np.random.default_rng(seed)
  normalization = next(l for l in keras_model.layers if type(l).__name__ == 'Normalization')
  mean, variance = rng.uniform(100, 150, 3), rng.uniform(50, 70, 3) ** 2
  normalization.set_weights([mean, variance, np.array(0)])
  normalization.finalize_state()  # Keras recomputes its constants from the weights here
  norms = [l for l in keras_model.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
  for bn in norms:
    gamma, beta, moving_mean, moving_var = bn.get_weights()
    bn.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                    moving_mean, moving_var])
    bn.momentum = 0.0
  keras_model(rng.uniform(0, 255, (batch,) + input_shape).astype(np.float32), training=True)
  for bn in norms:  # the statistics of that batch, variances inflated at random
    gamma, beta, moving_mean, moving_var = bn.get_weights()
    bn.set_weights([gamma, beta, moving_mean, moving_var * rng.uniform(1.0, 2.0, gamma.shape)])
  return keras_model, (mean, np.sqrt(variance))


@pytest.mark.parametrize('variant', range(8))
def test_keras_efficientnet_gives_the_same_logits(variant):
  keras_model, (mean, std) = _keras_efficientnet(variant, seed=variant)
  module, variables = keras_convert.keras_to_flax(f'efficientnet_b{variant}', keras_model)
  # Keras takes 0-255 pixels: Rescaling(1/255) then Normalization, folded into one option.
  np.testing.assert_allclose(module.input_mean, 255 * mean, rtol=1e-6)
  np.testing.assert_allclose(module.input_std, 255 * std, rtol=1e-6)
  assert (module.bn_epsilon, module.padding) == (1e-3, 'same')
  trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
  assert summary.count_params(variables) == trainable
  pixels = np.random.default_rng(10 + variant).uniform(0, 255, (2,) + INPUT).astype(np.float32)
  expected = keras_model(pixels, training=False).numpy()
  ours = np.asarray(jax.jit(module.apply)(variables, pixels))  # jit: compiling beats eager here
  assert 1.0 < np.abs(expected).max() < 100.0  # a real signal reaches the logits
  assert np.abs(ours - expected).max() <= 1e-4


def test_imagenet_preprocessing_folds_into_mean_and_std():
  """With weights='imagenet' Keras adds Rescaling(1/sqrt(std)) after Normalization (whose
  'variance' holds the std): the net computes (x/255 - mean) / std."""
  imagenet_mean, imagenet_std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  inputs = tf.keras.Input((8, 8, 3))
  x = tf.keras.layers.Rescaling(1 / 255)(inputs)
  x = tf.keras.layers.Normalization(mean=imagenet_mean, variance=imagenet_std)(x)
  x = tf.keras.layers.Rescaling(list(1 / np.sqrt(imagenet_std)))(x)
  x = tf.keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name='stem_conv_pad')(x)
  model = tf.keras.Model(inputs, x)
  options = efficientnet.keras_preprocessing(model, keras_convert.KerasWeights(model))
  np.testing.assert_allclose(options['input_mean'], [123.675, 116.28, 103.53], rtol=1e-6)
  np.testing.assert_allclose(options['input_std'], [58.395, 57.12, 57.375], rtol=1e-6)


def test_unknown_layer_before_the_stem_is_an_error():
  inputs = tf.keras.Input((8, 8, 3))
  x = tf.keras.layers.ReLU(name='surprise')(inputs)
  x = tf.keras.layers.ZeroPadding2D(name='stem_conv_pad')(x)
  model = tf.keras.Model(inputs, x)
  with pytest.raises(keras_convert.ConversionError, match="'surprise' \\(ReLU\\) before the stem"):
    efficientnet.keras_preprocessing(model, keras_convert.KerasWeights(model))
