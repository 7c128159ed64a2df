"""Weights from other frameworks: Keras Applications (and, later, torchvision/timm).

  model, variables = cnn_history.convert.keras_to_flax('vgg16', keras_model)
"""

from cnn_history.convert.keras import (KerasWeights, convert_keras, keras_converter,
                                       keras_to_flax, supported_keras_models)

__all__ = ['KerasWeights', 'convert_keras', 'keras_converter', 'keras_to_flax',
           'supported_keras_models']
from cnn_history.convert.common import ConversionError
from cnn_history.convert.torch import (TorchWeights, load_state_dict, read_safetensors,
                                       supported_torch_models, torch_converter,
                                       torch_preprocessing, torch_to_flax, write_safetensors)

__all__ += ['ConversionError', 'TorchWeights', 'load_state_dict', 'read_safetensors',
            'supported_torch_models', 'torch_converter', 'torch_preprocessing', 'torch_to_flax',
            'write_safetensors']
