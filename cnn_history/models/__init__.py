"""The model zoo: `create_model(name, ...)`, `list_models(pattern)`, `input_shape(name)`.

Importing this package imports every model module in it (one per paper), and each registers
its names with `@register`.
"""

import importlib
import pkgutil

from cnn_history.models.registry import (ModelSpec, create_model, get_spec, input_shape,
                                         list_models, register)

_NOT_MODELS = {'registry', 'layers', 'summary', 'zoo'}
for _module in pkgutil.iter_modules(__path__):
  if _module.name not in _NOT_MODELS:
    importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['ModelSpec', 'create_model', 'get_spec', 'input_shape', 'list_models', 'register']
