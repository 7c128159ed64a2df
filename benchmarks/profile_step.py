r"""Where a training step's time goes on XLA:CPU: a jax.profiler trace of a few steps, summed.

  python benchmarks/profile_step.py --model resnet20 --batch 128 [--mode train|eval] [--steps 3] \
      [--top 12]

Prints the median step time (a training step, or with --mode eval the evaluation step), the
minor page faults per step (getrusage), the step's temporary buffer and its matrix products'
FLOPs (from the compiled executable), and the time per kind of XLA operation in the trace
(fusions by kind, each custom call by its target), per step.
With CNN_HISTORY_MALLOC_DEFAULTS / CNN_HISTORY_FUSED_BATCH_NORM / CNN_HISTORY_TAP_MAX_POOL /
CNN_HISTORY_ONEDNN set to 0 it profiles the step without that default.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  pylint: disable=wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from cnn_history import benchmark, models, optim, parallel  # noqa: E402  pylint: disable=C0413
from cnn_history.steps import make_steps  # noqa: E402  pylint: disable=wrong-import-position


def build(name: str, batch: int):
  config = benchmark._config_for(argparse.Namespace(  # pylint: disable=protected-access
      config=None, model=name, batch=batch, dtype='float32', set=None))
  mesh = parallel.make_mesh(1)
  spec = models.get_spec(name)
  model = models.create_model(name, num_classes=spec.default_num_classes, dtype=jnp.float32,
                              **config.model.overrides.to_dict())
  schedule = optim.build_schedule(config.schedule, 1000, 1, 10**6, batch)
  steps = make_steps(model, optim.build_optimizer(config.optimizer, schedule), schedule, config,
                     mesh, spec.input_shape)
  rng = np.random.default_rng(0)
  data = parallel.global_batch({
      'image': rng.normal(size=(batch,) + spec.input_shape).astype(np.float32),
      'label': rng.integers(0, spec.default_num_classes, batch).astype(np.int32),
      'mask': np.ones(batch, np.float32)}, mesh)
  return steps, steps.init(jax.random.key(0)), data


def custom_call_targets(hlo: str) -> dict[str, str]:
  """Instruction name -> custom-call target, from the compiled HLO text."""
  targets = {}
  for line in hlo.splitlines():
    m = re.match(r'\s*%([\w.\-]+) = .*? custom-call\(.*custom_call_target="([\w.\-]+)"', line)
    if m:
      targets[m.group(1)] = m.group(2)
  return targets


def dot_flops(hlo: str) -> tuple[int, float]:
  """The entry computation's dot instructions: how many, and their FLOPs (2 x output size x
  contracted size), from the compiled HLO text."""
  entry = hlo[hlo.index('\nENTRY'):]
  shapes = {m.group(1): [int(v) for v in m.group(2).split(',') if v]
            for m in re.finditer(r'%([\w.\-]+) = \w+\[([\d,]*)\]', entry)}
  count, flops = 0, 0.0
  for m in re.finditer(r'= \w+\[([\d,]*)\]\S* dot\(%([\w.\-]+), %[\w.\-]+\), '
                       r'lhs_contracting_dims=\{([\d,]*)\}', entry):
    out = np.prod([int(v) for v in m.group(1).split(',') if v])
    contracted = np.prod([shapes[m.group(2)][int(d)] for d in m.group(3).split(',') if d])
    count, flops = count + 1, flops + 2.0 * out * contracted
  return count, flops


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='resnet20')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=12)
  args = parser.parse_args()
  steps, state, data = build(args.model, args.batch)
  if args.mode == 'train':
    data = {k: v for k, v in data.items() if k != 'mask'}
    step = steps.train
  else:
    step = lambda state, data: (state, steps.evaluate(state, data))
    step.lower = steps.evaluate.lower
  compiled = step.lower(state, data).compile()
  hlo = compiled.as_text()
  targets = custom_call_targets(hlo)
  dots, flops = dot_flops(hlo)
  temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
  for _ in range(3):
    state, out = step(state, data)
  jax.block_until_ready(out)
  times, faults = [], []
  for _ in range(max(args.steps, 3)):
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    state, out = step(state, data)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(args.steps):
      state, out = step(state, data)
      jax.block_until_ready(out)
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True))[-1]
    with gzip.open(path) as f:
      events = json.load(f)['traceEvents']
  kinds: collections.Counter = collections.Counter()
  counts: collections.Counter = collections.Counter()
  for e in events:
    name = e.get('name', '')
    if e.get('ph') != 'X' or name.startswith(('$', 'ThunkExecutor', 'PjitFunction', 'end: ',
                                                'CommonPjRt', 'Wait', 'Slinky', 'Parse',
                                                'Handle', 'Allocate')):
      continue
    kind = targets.get(name) or re.sub(r'\.\d+$', '', name)
    kinds[kind] += e['dur'] / 1e3 / args.steps
    counts[kind] += 1
  title = 'training' if args.mode == 'train' else 'evaluation'
  print(f'{args.model} batch {args.batch} {title} step: {1e3 * statistics.median(times):.1f} ms '
        f'(median of {len(times)}), {statistics.median(faults):,.0f} minor page faults a step')
  print(f'temporary buffer {temp_mib:,.0f} MiB a step; {dots} XLA matrix products (dot), '
        f'{flops / 1e9:,.1f} GFLOP a step')
  print(f'{"ms / step":>10} {"calls":>6}  operation (fusion kind or custom-call target)')
  for kind, ms in kinds.most_common(args.top):
    print(f'{ms:>10.1f} {counts[kind] // args.steps:>6}  {kind}')
  print(f'{sum(kinds.values()):>10.1f}         all operations in the trace')
  # The trace event of an XLA:CPU dot ends before its matrix product does (ResNet-50 at batch
  # 32: hundreds of GFLOP of dots a training step, a few tens of ms in their events; see
  # results/benchmarks/profile/README.md). That time falls between traced operations, in gaps
  # that end where a dot's consumer starts.
  print(f'{1e3 * statistics.median(times) - sum(kinds.values()):>10.1f}         between traced '
        'operations (mostly XLA\'s matrix products)')


if __name__ == '__main__':
  main()
