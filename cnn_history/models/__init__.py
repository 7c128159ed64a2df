"""The model zoo: `create_model(name, ...)`, `list_models(pattern)`, `input_shape(name)`.

Importing this package registers every architecture (one module per paper).
"""

from cnn_history.models import lenet  # noqa: F401  (registers its models)
from cnn_history.models.registry import (ModelSpec, create_model, get_spec, input_shape,
                                         list_models, register)

__all__ = ['ModelSpec', 'create_model', 'get_spec', 'input_shape', 'list_models', 'register']
