"""Keras Applications -> Flax: every tensor mapped, checked, and accounted for.

Each registry model with a Keras counterpart registers a converter:

    @keras_converter('vgg16', 'vgg19')
    def _vgg(keras_model, weights: KerasWeights, name: str) -> dict:
      weights.conv('block1_conv1', ('features_0', 'conv'))      # Flax path of the module
      ...
      return {'some_switch': value}   # the model options that match the Keras network

`keras_to_flax(name, keras_model)` runs it, builds the Flax module with those options, and
checks the result against the module's own variables: a missing, unexpected or mis-shaped
tensor, or a Keras weight that no converter line consumed, is an error naming it.
Layouts: Keras and Flax both store conv kernels HWIO and dense kernels (in, out); a Keras
depthwise kernel (h, w, C, multiplier) becomes Flax's grouped kernel (h, w, 1, C*multiplier).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import flax.linen as nn
import numpy as np

from cnn_history.convert.common import (ConversionError, VariableWriter, check_variables,
                                        report_unused)

_CONVERTERS: dict[str, Callable[..., dict[str, Any]]] = {}


def keras_converter(*names: str):
  """Registers a converter for the registry models `names`."""

  def decorator(fn):
    for name in names:
      _CONVERTERS[name] = fn
    return fn

  return decorator


def supported_keras_models() -> list[str]:
  _import_converters()
  return sorted(_CONVERTERS)


class KerasWeights(VariableWriter):
  """Reads a Keras model's weights by layer name and writes them into Flax variable trees."""

  def __init__(self, keras_model):
    super().__init__()
    self.layers = {layer.name: layer for layer in _all_layers(keras_model)}
    self._used: set[str] = set()

  # -- reading ---------------------------------------------------------------------------------
  def layer(self, name: str):
    try:
      return self.layers[name]
    except KeyError:
      close = difflib.get_close_matches(name, list(self.layers), n=3)
      raise ConversionError(f'The Keras model has no layer {name!r}; close: {close}.') from None

  def take(self, name: str) -> list[np.ndarray]:
    """The weights of Keras layer `name`, marked as consumed."""
    layer = self.layer(name)
    if name in self._used:
      raise ConversionError(f'Keras layer {name!r} is mapped twice.')
    self._used.add(name)
    return [np.asarray(w) for w in layer.get_weights()]

  def unused(self) -> list[str]:
    return sorted(n for n, l in self.layers.items() if l.get_weights() and n not in self._used)

  # -- writing (put: VariableWriter) ----------------------------------------------------
  def conv(self, keras_name: str, path: tuple[str, ...]) -> None:
    """Conv2D/Dense (kernel [, bias]) -> a Flax Conv/Dense at `path`."""
    weights = self.take(keras_name)
    self.put('params', path, 'kernel', weights[0])
    if len(weights) > 1:
      self.put('params', path, 'bias', weights[1])

  dense = conv

  def depthwise(self, keras_name: str, path: tuple[str, ...]) -> None:
    """DepthwiseConv2D (h, w, C, m) [+ bias] -> a grouped Flax Conv (h, w, 1, C*m)."""
    weights = self.take(keras_name)
    h, w, c, m = weights[0].shape
    self.put('params', path, 'kernel', weights[0].reshape(h, w, 1, c * m))
    if len(weights) > 1:
      self.put('params', path, 'bias', weights[1])

  def separable(self, keras_name: str, depthwise_path: tuple[str, ...],
                pointwise_path: tuple[str, ...]) -> None:
    """SeparableConv2D (depthwise, pointwise [, bias]) -> two Flax Convs."""
    weights = self.take(keras_name)
    h, w, c, m = weights[0].shape
    self.put('params', depthwise_path, 'kernel', weights[0].reshape(h, w, 1, c * m))
    self.put('params', pointwise_path, 'kernel', weights[1])
    if len(weights) > 2:
      self.put('params', pointwise_path, 'bias', weights[2])

  def bn(self, keras_name: str, path: tuple[str, ...]) -> float:
    """BatchNormalization -> our BatchNorm at `path`; returns the layer's epsilon."""
    layer = self.layer(keras_name)
    weights = dict(zip([w.name.split('/')[-1].split(':')[0] for w in layer.weights],
                       self.take(keras_name)))
    if 'gamma' in weights:
      self.put('params', path, 'scale', weights['gamma'])
    if 'beta' in weights:
      self.put('params', path, 'bias', weights['beta'])
    self.put('batch_stats', path, 'mean', weights['moving_mean'])
    self.put('batch_stats', path, 'var', weights['moving_variance'])
    return float(layer.epsilon)


def _all_layers(model):
  for layer in model.layers:
    if hasattr(layer, 'layers') and layer.layers:  # nested functional models
      yield from _all_layers(layer)
    else:
      yield layer


def collect(weights: KerasWeights, module: nn.Module,
            input_shape: tuple[int, ...]) -> dict[str, Any]:
  """The mapped variables, checked against `module`'s own and against unused Keras weights."""
  report_unused(weights.unused(), 'Keras')
  return check_variables(weights.variables, module, input_shape, 'Keras')


def convert_keras(keras_model, module: nn.Module, mapping: Callable[[Any, KerasWeights], None],
                  input_shape: tuple[int, ...]) -> dict[str, Any]:
  """Runs `mapping(keras_model, weights)` and returns the checked variables of `module`."""
  weights = KerasWeights(keras_model)
  mapping(keras_model, weights)
  return collect(weights, module, input_shape)


def _import_converters() -> None:
  """The converters live beside their models; importing the zoo registers them."""
  import cnn_history.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


def keras_to_flax(name: str, keras_model) -> tuple[nn.Module, dict[str, Any]]:
  """The registry model `name` configured like `keras_model`, and its weights."""
  from cnn_history.models import registry  # pylint: disable=g-import-not-at-top  (a cycle: models register converters)
  _import_converters()
  if name not in _CONVERTERS:
    raise ConversionError(f'No Keras converter for {name!r}; models with one: '
                          f'{", ".join(sorted(_CONVERTERS))}.')
  weights = KerasWeights(keras_model)
  overrides = _CONVERTERS[name](keras_model, weights, name) or {}
  num_classes = int(keras_model.outputs[0].shape[-1])
  module = registry.create_model(name, num_classes=num_classes, **overrides)
  input_shape = tuple(int(d) for d in keras_model.inputs[0].shape[1:])
  return module, collect(weights, module, input_shape)
