r"""Speed of a registry model's train or eval step on this machine.

  python -m cnn_history.benchmark --model resnet50 [--batch 32] [--mode train|eval] \
      [--dtype float32|bfloat16|float16] [--devices N] [--synthetic | --config FILE[:ARG]] \
      [--steps 20] [--warmup 3] [--json out.json] [--set FIELD=VALUE ...] \
      [--reference-convolutions]

Prints a table (and writes JSON): compile time, median step time over the timed steps, images/s,
achieved GFLOP/s from the model's multiply-adds (training counts 3x the forward pass) and its
fraction of a measured matmul peak, and peak memory. With a real input pipeline (--config),
two input costs: "data wait", the share of each step spent fetching its batch (the next batch
is fetched after the step ends, so this includes the copy to the device), and "in loop", how
much slower the trainer's own loop (which fetches the next batch while the step runs) is than
with a batch already on the devices. The JSON records which convolutions ran ('lax' with
--reference-convolutions; 'cnn_history+onednn' where the oneDNN custom call is in use). With --synthetic (the default) the batch lives on
the devices and only the step is timed. More than the visible devices on a CPU needs
XLA_FLAGS=--xla_force_host_platform_device_count=N set before the run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import statistics
import time
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cnn_history  # noqa: E402
from cnn_history import config as config_lib  # noqa: E402
from cnn_history import models, optim, parallel  # noqa: E402
from cnn_history.models import layers, summary  # noqa: E402
from cnn_history.steps import make_steps  # noqa: E402


def matmul_peak_gflops(dtype: str = 'float32', size: int = 0, repeats: int = 5) -> float:
  """Measured dense matmul throughput of one device (GFLOP/s), the reference for utilisation.

  On a CPU one 2048x2048 product per call; on an accelerator a chain of ten 8192x8192 products
  in one call (smaller ones, or one per call, measure dispatch rather than the chip: 2048 on an
  H200 gave 117 TFLOP/s in bfloat16, about a seventh of its peak).
  """
  accelerator = jax.default_backend() != 'cpu'
  size = size or (8192 if accelerator else 2048)
  chain = 10 if accelerator else 1
  a = (jax.random.normal(jax.random.key(0), (size, size)) / np.sqrt(size)).astype(dtype)
  f = jax.jit(lambda x: jax.lax.fori_loop(0, chain, lambda _, y: y @ x, x))
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size ** 3 * chain / min(times) / 1e9


def _config_for(args) -> Any:
  if args.config:
    path, _, arg = args.config.partition(':')
    import runpy  # pylint: disable=g-import-not-at-top
    config = runpy.run_path(path)['get_config'](arg or None)
  else:
    config = config_lib.default_config()
    config_lib.set_model(config, args.model)
    config.optimizer.name = 'momentum'
    config.data.source = 'synthetic'
  if args.model:
    config_lib.set_model(config, args.model)
  for item in getattr(args, 'set', None) or ():  # --set data.source=folder ...
    key, sep, text = item.partition('=')
    if not sep:
      raise ValueError(f'--set {item!r}: write FIELD=VALUE, e.g. --set data.path=/tmp/images.')
    *parents, last = key.split('.')
    group = config
    for part in parents:
      group = group[part]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    group[last] = value  # a locked ConfigDict names a misspelt field
  if args.batch:
    config.batch_size = args.batch
  config.dtype = args.dtype
  return config


def peak_memory_bytes() -> dict[str, float]:
  stats = jax.local_devices()[0].memory_stats() or {}
  out = {'host_max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0}
  if 'peak_bytes_in_use' in stats:
    out['device_peak_bytes'] = float(stats['peak_bytes_in_use'])
  return out


def run(args) -> dict[str, Any]:
  if getattr(args, 'reference_convolutions', False):  # lax's convolutions, to compare
    with layers.reference_convolutions():
      return {**_run(args), 'convolutions': 'lax'}
  from cnn_history import onednn  # pylint: disable=g-import-not-at-top
  custom = onednn.in_use()
  return {**_run(args), 'convolutions': 'cnn_history+onednn' if custom else 'cnn_history',
          'fused_batch_norm': custom and onednn.FUSED_BATCH_NORM,
          'tap_max_pool': layers.TAP_MAX_POOL and jax.default_backend() == 'cpu',
          'malloc_defaults': cnn_history.MALLOC_TUNED}


def _run(args) -> dict[str, Any]:
  config = _config_for(args)
  name = config.model.name
  mesh = parallel.make_mesh(args.devices)
  parallel.check_divisible(config.batch_size, mesh, 'batch_size')
  spec = models.get_spec(name)
  shape = (args.resolution, args.resolution, spec.input_shape[-1]) if args.resolution else \
      spec.input_shape
  num_classes = spec.default_num_classes
  model = models.create_model(name, num_classes=num_classes, dtype=jnp.dtype(config.dtype),
                              **config.model.overrides.to_dict())
  macs = summary.count_macs(model, shape)
  schedule = optim.build_schedule(config.schedule, 1000, 1, 10**6, config.batch_size)
  tx = optim.build_optimizer(config.optimizer, schedule)
  steps = make_steps(model, tx, schedule, config, mesh, shape)
  state = steps.init(jax.random.key(0))
  batch_size = config.batch_size

  # Batches: device-resident random data, or the config's real input pipeline.
  if args.synthetic or not args.config:
    rng = np.random.default_rng(0)
    local = {'image': rng.normal(size=(batch_size,) + shape).astype(np.float32),
             'label': rng.integers(0, num_classes, batch_size).astype(np.int32),
             'mask': np.ones(batch_size, np.float32)}
    fixed = parallel.global_batch(local, mesh)
    next_batch = lambda: fixed
  else:
    from cnn_history.data import pipeline, sources  # pylint: disable=g-import-not-at-top
    pipeline.hide_accelerators_from_tensorflow()
    host = pipeline.HostSlice(jax.process_index(), jax.process_count())
    split = sources.load_split(config.data, config.data.train_split, config.seed)
    if args.mode == 'train':
      batches = pipeline.train_batches(split, config.data.train_preprocess, batch_size,
                                       config.seed, 0, host, config.data.prefetch)
    else:
      batches = (b for _ in iter(int, 1) for b in pipeline.eval_batches(
          split, config.data.eval_preprocess, batch_size, config.seed, host))
    next_batch = lambda: parallel.global_batch(next(batches), mesh)

  if args.mode == 'train':
    def step(state, batch):
      return steps.train(state, {'image': batch['image'], 'label': batch['label']})
  else:
    def step(state, batch):
      return state, steps.evaluate(state, batch)

  first = next_batch()
  start = time.perf_counter()
  if args.mode == 'train':
    compiled = steps.train.lower(state, {'image': first['image'], 'label': first['label']})
  else:
    compiled = steps.evaluate.lower(state, first)
  compiled.compile()
  compile_s = time.perf_counter() - start

  wait, times = [], []
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    batch = next_batch()
    jax.block_until_ready(batch)
    t1 = time.perf_counter()
    state, out = step(state, batch)
    jax.block_until_ready(out)
    t2 = time.perf_counter()
    if i >= args.warmup:
      wait.append(t1 - t0)
      times.append(t2 - t0)
  step_s = statistics.median(times)
  # The trainer's loop does not block on a step's results (JAX dispatches multi-device steps
  # asynchronously; one-device CPU steps run inline under the malloc defaults, while
  # tf.data prefetches): the input's cost to it is how much slower
  # that loop runs with the real pipeline than with one batch already on the devices (best of
  # 3 interleaved runs each).
  loop_slowdown = 0.0
  if args.config and not args.synthetic:
    def loop(get_batch) -> float:
      nonlocal state
      start, out = time.perf_counter(), None
      for _ in range(args.steps):
        state, out = step(state, get_batch())
      jax.block_until_ready((state, out))
      return time.perf_counter() - start
    piped, fixed = [], []
    for _ in range(3):
      piped.append(loop(next_batch))
      fixed.append(loop(lambda: first))
    loop_slowdown = max(0.0, 1.0 - min(fixed) / min(piped))
  flops_per_image = 2 * macs * (3 if args.mode == 'train' else 1)
  achieved = flops_per_image * batch_size / step_s / 1e9
  peak = matmul_peak_gflops('bfloat16' if config.dtype == 'bfloat16' else 'float32') * mesh.size
  return {
      'model': name, 'mode': args.mode, 'batch': batch_size, 'dtype': config.dtype,
      'devices': mesh.size, 'platform': jax.devices()[0].platform,
      'input': 'synthetic' if (args.synthetic or not args.config) else args.config,
      'resolution': 'x'.join(map(str, shape)), 'macs_per_image': macs,
      'compile_s': compile_s, 'step_s': step_s, 'images_per_s': batch_size / step_s,
      'gflops': achieved, 'peak_matmul_gflops': peak, 'utilisation': achieved / peak,
      'data_wait_fraction': sum(wait) / sum(times), 'input_loop_slowdown': loop_slowdown,
      'steps': args.steps,
      **peak_memory_bytes()}


def format_row(r: dict[str, Any]) -> str:
  memory = r.get('device_peak_bytes', r['host_max_rss_bytes']) / 2**20
  return (f'{r["model"]:<18} {r["mode"]:<5} {r["batch"]:>5} {r["dtype"]:<8} {r["devices"]:>3} '
          f'{r["compile_s"]:>8.1f} {1000 * r["step_s"]:>9.1f} {r["images_per_s"]:>10.1f} '
          f'{r["gflops"]:>8.1f} {100 * r["utilisation"]:>6.1f}% '
          f'{100 * r["data_wait_fraction"]:>6.1f}% {100 * r["input_loop_slowdown"]:>6.1f}% '
          f'{memory:>9.0f}')


HEADER = (f'{"model":<18} {"mode":<5} {"batch":>5} {"dtype":<8} {"dev":>3} {"compile s":>8} '
          f'{"step ms":>9} {"images/s":>10} {"GFLOP/s":>8} {"of peak":>7} {"data wait":>7} '
          f'{"in loop":>7} {"peak MiB":>9}')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='', help='registry name (default: the config\'s)')
  parser.add_argument('--batch', type=int, default=0, help='global batch (default: 32 or config)')
  parser.add_argument('--mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default='float32')
  parser.add_argument('--devices', type=int, default=-1, help='devices of the mesh (-1: all)')
  parser.add_argument('--resolution', type=int, default=0, help='square input size')
  group = parser.add_mutually_exclusive_group()
  group.add_argument('--synthetic', action='store_true', help='device-resident random batches')
  group.add_argument('--config', default='', help='a config file[:arg]: its real input pipeline')
  parser.add_argument('--steps', type=int, default=20, help='timed steps')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps after compilation')
  parser.add_argument('--json', default='', help='append the result to this JSON-lines file')
  parser.add_argument('--set', action='append', metavar='FIELD=VALUE',
                      help='override a config field, e.g. --set data.source=folder '
                           '--set data.path=/tmp/jpegs (repeatable)')
  parser.add_argument('--reference-convolutions', action='store_true',
                      help="every convolution as lax's: no depthwise tap loop, 1x1 gradient "
                           'VJP or oneDNN custom call (to measure what they save)')
  args = parser.parse_args(argv)
  if not args.model and not args.config:
    parser.error('give --model or --config')
  if not args.batch and not args.config:
    args.batch = 32
  result = run(args)
  print(HEADER)
  print(format_row(result))
  if args.json:
    with open(args.json, 'a') as f:
      f.write(json.dumps(result) + '\n')


if __name__ == '__main__':
  main()
