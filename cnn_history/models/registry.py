"""The model registry: every architecture is created by name.

A model file registers its module class once per public name, with the keyword
arguments that make that name (e.g. VGG's configuration letter) and the paper's
facts the rest of the codebase reads (resolution, year):

    @register('lenet5', paper='LeCun et al. 1998', year=1998, input_shape=(32, 32, 1))
    class LeNet5(nn.Module): ...

`create_model(name, num_classes=..., dtype=..., **overrides)` instantiates it; an
override that the module does not have is an error naming the close fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the registry knows about one public model name."""
  name: str
  module: type[nn.Module]
  kwargs: dict[str, Any]          # the fields that make this name (fixed defaults)
  paper: str                      # short citation, e.g. 'LeCun et al., Proc. IEEE 1998'
  year: int
  input_shape: tuple[int, int, int]  # (H, W, C) at the paper's resolution
  fixed_input: bool               # True: the network only runs at `input_shape`
  default_num_classes: int
  expected_params: int | None = None  # exact parameter count (params collection) it must have
  expected_macs: float | None = None  # conv+dense multiply-adds at input_shape (tested within 2%)
  source: str = ''                # where the expected numbers come from, e.g. 'torchvision vgg16'
  paper_params: str = ''          # as the paper states them, e.g. '138M'
  paper_macs: str = ''            # as the paper states them, e.g. '3.8G'


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, paper: str, year: int, input_shape: tuple[int, int, int],
             fixed_input: bool = False, num_classes: int = 1000,
             expected_params: int | None = None, expected_macs: float | None = None,
             source: str = '', paper_params: str = '', paper_macs: str = '',
             **kwargs: Any) -> Callable[[type[nn.Module]], type[nn.Module]]:
  """Class decorator: registers `cls(**kwargs)` as model `name` (stackable).

  expected_params / expected_macs are the verified counts the tests hold the model to
  (papers.md; `source` says whose); paper_params / paper_macs are the paper's own figures.
  """

  def decorator(cls: type[nn.Module]) -> type[nn.Module]:
    if name in _REGISTRY:
      raise ValueError(f'Model name {name!r} is registered twice.')
    check_fields(cls, kwargs, f'register({name!r})')
    _REGISTRY[name] = ModelSpec(name, cls, dict(kwargs), paper, year, tuple(input_shape),
                                fixed_input, num_classes, expected_params, expected_macs, source,
                                paper_params, paper_macs)
    return cls

  return decorator


def module_fields(cls: type[nn.Module]) -> set[str]:
  return {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')}


def module_defaults(cls: type[nn.Module]) -> dict[str, Any]:
  """The module's fields that have plain defaults (its switches), with those defaults."""
  out = {}
  for f in dataclasses.fields(cls):
    if f.init and f.name not in ('parent', 'name') and f.default is not dataclasses.MISSING:
      if f.default is None or isinstance(f.default, (bool, int, float, str, tuple)):
        out[f.name] = f.default
  return out


def check_fields(cls: type[nn.Module], kwargs: dict[str, Any], where: str) -> None:
  fields = module_fields(cls)
  for key in kwargs:
    if key not in fields:
      close = difflib.get_close_matches(key, sorted(fields), n=3, cutoff=0.5)
      hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
      raise ValueError(f'{where}: {cls.__name__} has no option {key!r}.{hint} '
                       f'Valid options: {", ".join(sorted(fields))}.')


def get_spec(name: str) -> ModelSpec:
  """Returns the registry entry of `name`, or an error listing close names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.4)
    hint = f' Close names: {", ".join(close)}.' if close else ''
    raise ValueError(f'Unknown model {name!r}.{hint} '
                     'See cnn_history.models.list_models() for all names.') from None


def list_models(pattern: str = '*') -> list[str]:
  """Sorted registered names matching the shell-style `pattern`."""
  return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def input_shape(name: str) -> tuple[int, int, int]:
  """The paper's input shape (H, W, C) for model `name`."""
  return get_spec(name).input_shape


def create_model(name: str, *, num_classes: int | None = None, dtype: Any = jnp.float32,
                 **overrides: Any) -> nn.Module:
  """Builds model `name`; `overrides` set any of the module's fields (ablation switches)."""
  spec = get_spec(name)
  check_fields(spec.module, overrides, f'create_model({name!r})')
  kwargs = {**spec.kwargs, **overrides}
  num_classes = spec.default_num_classes if num_classes is None else num_classes
  return spec.module(num_classes=num_classes, dtype=dtype, **kwargs)
