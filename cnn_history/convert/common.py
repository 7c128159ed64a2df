"""What every importer shares: writing Flax variable trees and checking them against a module.

An importer (keras.py, torch.py) reads the source framework's tensors by name, writes them with
`VariableWriter.put` at the Flax path of the module that owns them, and hands the result to
`check_variables`, which compares it with the module's own abstract variables: a missing,
unexpected or mis-shaped tensor is a ConversionError naming it. Tensors of the source that no
converter line consumed are the importer's to report (`report_unused`).
"""

from __future__ import annotations

from typing import Any, Iterable

import flax.linen as nn
import jax
import numpy as np


class ConversionError(ValueError):
  """A tensor is missing, unexpected, mis-shaped, or left unused."""


def first_few(names: Iterable[str], n: int = 10) -> str:
  """`names` as a list literal, cut after `n` entries."""
  names = list(names)
  return f'{names[:n]}{" ..." if len(names) > n else ""}'


class VariableWriter:
  """Accumulates Flax variables ('params', 'batch_stats') written at module paths."""

  def __init__(self):
    self.variables: dict[str, dict] = {'params': {}, 'batch_stats': {}}

  def put(self, collection: str, path: tuple[str, ...], leaf: str, value: np.ndarray) -> None:
    node = self.variables[collection]
    for p in path:
      node = node.setdefault(p, {})
    if leaf in node:
      raise ConversionError(f'{collection}/{"/".join(path)}/{leaf} is written twice.')
    node[leaf] = np.asarray(value, np.float32)


def report_unused(unused: list[str], source: str) -> None:
  if unused:
    raise ConversionError(f'{source} weights not mapped to the Flax model: {first_few(unused)}')


def _check_against(abstract: Any, tree: Any, collection: str, source: str) -> None:
  want = {jax.tree_util.keystr(p): x.shape
          for p, x in jax.tree_util.tree_leaves_with_path(abstract)}
  have = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  wrong = sorted(k for k in set(want) & set(have) if tuple(want[k]) != tuple(have[k]))
  problems = []
  if missing:
    problems.append(f'missing {collection} {first_few(missing)}')
  if unexpected:
    problems.append(f'unexpected {collection} {first_few(unexpected)}')
  for k in wrong[:10]:
    problems.append(f'{collection}{k}: {source} gives {have[k]}, the Flax model has {want[k]}')
  if problems:
    raise ConversionError('; '.join(problems))


def check_variables(variables: dict[str, Any], module: nn.Module, input_shape: tuple[int, ...],
                    source: str) -> dict[str, Any]:
  """`variables` without empty collections, once every leaf matches `module`'s at `input_shape`
  (H, W, C); `source` names the framework in the messages ('Keras', 'PyTorch')."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                np.zeros((1,) + tuple(input_shape), np.float32),
                                                train=False))
  variables = {k: v for k, v in variables.items() if v}
  for collection in set(abstract) | set(variables):
    _check_against(abstract.get(collection, {}), variables.get(collection, {}), collection,
                   source)
  return variables
