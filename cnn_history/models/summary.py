r"""Per-layer summary of a registry model: output shapes, parameters, multiply-adds.

  python -m cnn_history.models.summary vgg16 [--resolution 224] [--depth 2] [--set key=value]

MACs (multiply-accumulates) count convolutions and dense layers only, at the model's native
resolution unless --resolution is given: the convention of the papers ("FLOPs" in the ResNet,
MobileNet and EfficientNet papers are multiply-adds; see papers.md §1). They are read off the
model's jaxpr (every `conv_general_dilated` and `dot_general`), so they count what the network
computes, whatever layer classes build it; module names come from Flax's named scopes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from cnn_history.models import layers, registry


@dataclasses.dataclass
class Row:
  path: str            # module path, e.g. 'features_3/conv'
  kind: str            # module class
  output_shape: tuple  # of its __call__ (batch 1)
  params: int          # parameters owned by the module and its children
  macs: int            # conv + dense multiply-accumulates in the module and its children


def _prod(xs) -> int:
  return int(math.prod(xs))


def _eqn_macs(eqn) -> int:
  name = eqn.primitive.name
  if name == 'conv_general_dilated':
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params['dimension_numbers'].rhs_spec  # (out feature, in feature, *spatial)
    per_output = rhs[spec[1]] * _prod(rhs[d] for d in spec[2:])
    return _prod(eqn.outvars[0].aval.shape) * per_output
  if name == 'dot_general':
    (lhs_contract, _), _ = eqn.params['dimension_numbers']
    lhs = eqn.invars[0].aval.shape
    return _prod(eqn.outvars[0].aval.shape) * _prod(lhs[d] for d in lhs_contract)
  return 0


def _sub_jaxprs(eqn):
  """(jaxpr, multiplier) for each sub-computation of an equation (jit, scan, remat, ...)."""
  for key, value in eqn.params.items():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      jaxpr = v.jaxpr if isinstance(v, jex_core.ClosedJaxpr) else v
      if isinstance(jaxpr, jex_core.Jaxpr):
        times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
        if eqn.primitive.name == 'cond' and key == 'branches':
          times = 1.0 / len(values)  # an average branch
        yield jaxpr, times


def _walk(jaxpr, prefix: str, times: float, out: dict[str, float]) -> None:
  for eqn in jaxpr.eqns:
    # Method scopes ('LeNet5._forward') add no layer: keep module names only.
    scope = '/'.join(p for p in str(eqn.source_info.name_stack).split('/') if '.' not in p)
    path = '/'.join(p for p in (prefix, scope) if p)
    macs = _eqn_macs(eqn)
    if macs:
      out[path] = out.get(path, 0) + macs * times
    for sub, mult in _sub_jaxprs(eqn):
      _walk(sub, path, times * mult, out)


def macs_by_scope(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
  """Multiply-accumulates of one image's forward pass, keyed by named scope."""
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  # Depthwise convolutions run as elementwise taps (layers.depthwise_conv): count them as the
  # convolutions they are.
  with nn.override_named_call(True), layers.reference_convolutions():
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
  out: dict[str, float] = {}
  _walk(closed.jaxpr, '', 1.0, out)
  return {k: int(round(v)) for k, v in out.items()}


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
  """Total conv + dense multiply-accumulates of one image at `input_shape`."""
  return sum(macs_by_scope(model, input_shape).values())


def count_params(variables: Any) -> int:
  """Parameters only (the 'params' collection; BN statistics excluded, as torchvision counts)."""
  return sum(_prod(x.shape) for x in jax.tree_util.tree_leaves(variables['params']))


def summarize(name: str, resolution: int | None = None, **overrides: Any) -> tuple[list[Row], int, int]:
  """(rows, total params, total MACs) of registry model `name` at its native resolution."""
  model = registry.create_model(name, **overrides)
  h, w, c = registry.input_shape(name)
  shape = (resolution, resolution, c) if resolution else (h, w, c)
  x = jnp.zeros((1,) + shape)
  calls: list[tuple[tuple[str, ...], str, tuple]] = []

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.scope is not None:
      shape = y.shape if hasattr(y, 'shape') else ()
      calls.append((tuple(context.module.scope.path), type(context.module).__name__, tuple(shape)))
    return y

  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  params = variables['params']
  scope_macs = macs_by_scope(model, shape)
  root = type(model).__name__

  def owned(tree, path):
    for p in path:
      if not isinstance(tree, dict) or p not in tree:
        return 0
      tree = tree[p]
    return sum(_prod(x.shape) for x in jax.tree_util.tree_leaves(tree))

  def macs_under(path):
    prefix = '/'.join((root,) + tuple(path))
    return sum(v for k, v in scope_macs.items() if k == prefix or k.startswith(prefix + '/'))

  rows, seen = [], set()
  for path, kind, out_shape in calls:
    if not path or path in seen:
      continue
    seen.add(path)
    rows.append(Row('/'.join(path), kind, out_shape, owned(params, path), macs_under(path)))
  # Layers written as parameters + named scopes rather than submodules (e.g. LeNet-5's).
  top = {r.path.split('/')[0] for r in rows}
  order = [k.split('/')[1] for k in scope_macs if k.count('/') >= 1] + list(params)
  for name in dict.fromkeys(n for n in order if n not in top):  # execution order, unique
    rows.append(Row(name, 'layer', (), owned(params, (name,)), macs_under((name,))))
  return rows, count_params(variables), sum(scope_macs.values())


def format_table(rows: list[Row], total_params: int, total_macs: int, depth: int | None) -> str:
  keep = [r for r in rows if depth is None or r.path.count('/') < depth]
  keep = [r for r in keep if r.params or r.macs or depth is not None]
  width = max([len(r.path) for r in keep] + [10])
  lines = [f'{"layer":<{width}}  {"type":<18} {"output":<20} {"params":>13} {"MACs":>16}',
           '-' * (width + 72)]
  for r in keep:
    shape = 'x'.join(map(str, r.output_shape[1:])) if r.output_shape else '-'
    lines.append(f'{r.path:<{width}}  {r.kind:<18} {shape:<20} {r.params:>13,} {r.macs:>16,}')
  lines.append('-' * (width + 72))
  lines.append(f'{"total":<{width}}  {"":<18} {"":<20} {total_params:>13,} {total_macs:>16,}')
  return '\n'.join(lines)


def main(argv=None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  import ast  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('name', help='a registry name (cnn_history.models.list_models())')
  parser.add_argument('--resolution', type=int, default=None, help='square input size')
  parser.add_argument('--depth', type=int, default=None,
                      help='show modules up to this nesting depth (default: those with params/MACs)')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='a model switch, e.g. --set lrn=False (repeatable)')
  args = parser.parse_args(argv)
  overrides = {}
  for item in args.set:
    key, _, value = item.partition('=')
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  rows, params, macs = summarize(args.name, args.resolution, **overrides)
  spec = registry.get_spec(args.name)
  h, w, c = spec.input_shape
  res = f'{args.resolution}x{args.resolution}x{c}' if args.resolution else f'{h}x{w}x{c}'
  print(f'{args.name} — {spec.paper} ({spec.year}); input {res}')
  print(format_table(rows, params, macs, args.depth))
  print(f'{params / 1e6:.3f}M parameters, {macs / 1e9:.3f}G ({macs / 1e6:,.1f}M) multiply-adds '
        'per image')


if __name__ == '__main__':
  main()
