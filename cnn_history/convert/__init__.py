"""Weights from other frameworks: Keras Applications (and, later, torchvision/timm).

  model, variables = cnn_history.convert.keras_to_flax('vgg16', keras_model)
"""

from cnn_history.convert.keras import (KerasWeights, convert_keras, keras_converter,
                                       keras_to_flax, supported_keras_models)

__all__ = ['KerasWeights', 'convert_keras', 'keras_converter', 'keras_to_flax',
           'supported_keras_models']
