"""train_and_evaluate(config, workdir): the training loop, top to bottom.

The loop holds no paper-specific constant: the model, data, loss, optimizer, schedule and
their hyperparameters all come from the config (cnn_history/config.py lists every field).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnn_history import checkpoint, models, optim, parallel, pretrained
from cnn_history import metrics as metrics_lib
from cnn_history.config import check_choice
from cnn_history.data import pipeline, sources
from cnn_history.steps import Teacher, make_steps


class NonFiniteError(FloatingPointError):
  """The loss or the gradients became NaN/Inf."""


def check_input_shape(name: str, image_shape: tuple[Any, ...], where: str,
                      model: Any = None) -> None:
  """A network with a fixed input size must get exactly that size from the data pipeline
  (unless its switches make it size-agnostic, e.g. VGG's fully-convolutional head)."""
  spec = models.get_spec(name)
  if None in image_shape:
    raise ValueError(f'{where} produces images of variable size {image_shape}; add a resize or '
                     "crop op to it (e.g. 'resize_small(256)|center_crop(224)').")
  if spec.fixed_input and tuple(image_shape) != spec.input_shape:
    if model is not None:
      try:
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)),
                                          train=False))
        return
      except Exception:  # pylint: disable=broad-except  (reported below, with the fix)
        pass
    h, w, c = spec.input_shape
    raise ValueError(
        f'{name} takes {h}x{w}x{c} images, but {where} produces '
        f'{"x".join(map(str, image_shape))}. Adjust the preprocessing (e.g. pad(2) centres '
        f'28x28 digits in 32x32, resize({h}) scales) or the dataset.')


def evaluate(steps, state, split: sources.Split, config, mesh, host,
             preprocess: str | None = None) -> dict[str, float]:
  """Top-1/top-5 and loss over every example of `split` (padded batches are masked), with the
  evaluation protocol `preprocess` (default config.data.eval_preprocess); with weight averaging
  on, the averaged weights too ('ema_top1', ...), in the same pass."""
  variants = {'': False, 'ema_': True} if state.ema_params else {'': False}
  preprocess = config.data.eval_preprocess if preprocess is None else preprocess
  totals = None
  for local in pipeline.eval_batches(split, preprocess, config.eval_batch_size,
                                     config.seed, host, config.data.prefetch):
    batch = parallel.global_batch(local, mesh)
    sums = {prefix: steps.evaluate(state, batch, ema) for prefix, ema in variants.items()}
    totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
  totals = parallel.to_host(totals)
  result = {}
  for prefix, sums in totals.items():
    count = float(sums['count'])
    if count != split.num_examples:
      raise AssertionError(f'evaluated {count} examples of {split.num_examples}')
    result.update({f'{prefix}{k}': float(sums[k]) / count for k in ('loss', 'top1', 'top5')})
  result['count'] = float(totals['']['count'])
  return result


def load_teacher(config, num_classes: int) -> Teacher | None:
  """The distillation teacher: the model of config.distill.teacher_workdir and its weights."""
  workdir = config.distill.teacher_workdir
  if not workdir:
    return None
  path = checkpoint.as_path(workdir) / 'config.json'
  conversion = pretrained.read_conversion(workdir)
  if path.exists():
    teacher_model = json.loads(path.read_text())['model']
  elif conversion is not None:  # imported weights (python -m cnn_history.convert)
    teacher_model = {'name': conversion['model'], 'num_classes': conversion['num_classes'],
                     'overrides': conversion['overrides']}
    logging.info('The imported teacher was evaluated with %r; it sees this run\'s '
                 'preprocessing.', conversion['eval_preprocess'])
  else:
    raise checkpoint.CheckpointError(f'config.distill.teacher_workdir={workdir!r} has no '
                                     'config.json: give the workdir of a finished training run '
                                     '(or of an import).')
  name, classes = teacher_model['name'], teacher_model['num_classes']
  model = models.create_model(name, num_classes=num_classes if classes <= 0 else classes,
                              **teacher_model['overrides'])
  _, state = checkpoint.restore_arrays(checkpoint.as_path(workdir) / 'checkpoints')
  variables = {'params': state['params']}
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  logging.info('Distilling from %s (%s, temperature %.1f, weight %.2f).', workdir, name,
               config.distill.temperature, config.distill.weight)
  return Teacher(model, variables)


_IMPORTED_NOT_A_RUN = ('{workdir} holds imported weights, not a training run: fine-tune them '
                       'with --config.init_from={workdir} and a new --workdir, or evaluate them '
                       'with --config.mode=eval.')


def adopt_imports(config, workdir: str):
  """A copy of `config` that builds (and, in eval mode, evaluates) imported weights as
  converted: conversion.json of the workdir evaluated, or of config.init_from, supplies the
  model switches, class count and evaluation preprocessing (pretrained.adopt_conversion)."""
  evaluated = pretrained.read_conversion(workdir)
  if evaluated is not None and config.mode != 'eval':
    raise checkpoint.CheckpointError(_IMPORTED_NOT_A_RUN.format(workdir=workdir))
  initial = pretrained.read_conversion(config.init_from)
  if evaluated is None and initial is None:
    return config
  config = copy.deepcopy(config)
  if evaluated is not None:
    pretrained.adopt_conversion(config, evaluated, workdir, evaluate=True)
  if initial is not None:  # evaluated itself when eval mode finds no checkpoint in workdir
    directory = checkpoint.as_path(workdir) / 'checkpoints'
    fresh = not (directory.exists() and any(d.name.isdigit() for d in directory.iterdir()))
    pretrained.adopt_conversion(config, initial, config.init_from,
                                evaluate=config.mode == 'eval' and fresh)
  return config


def init_from(config, state, steps, num_classes: int, image_shape: tuple[int, ...], mesh):
  """`state` with the params and batch_stats of config.init_from's newest checkpoint; with
  another number of classes, the classifier head keeps its fresh initialisation."""
  directory = checkpoint.as_path(config.init_from) / 'checkpoints'
  if not directory.exists():
    raise checkpoint.CheckpointError(f'config.init_from={config.init_from!r} has no '
                                     'checkpoints/ directory: give a run\'s (or an import\'s) '
                                     'workdir.')
  abstract = {c: pretrained.flatten(getattr(steps.abstract_state, c))
              for c in ('params', 'batch_stats')}
  sharded = {c: pretrained.flatten(getattr(steps.state_sharding, c))
             for c in ('params', 'batch_stats')}

  def sharding_for(collection, path, shape):
    mine = abstract[collection].get(path)
    if mine is not None and tuple(mine.shape) == shape:
      return sharded[collection][path]
    return parallel.replicated(mesh)

  record, weights = checkpoint.read_weights(directory, sharding_for)
  if record.get('model') != config.model.name:
    raise checkpoint.CheckpointError(
        f'config.init_from={config.init_from!r} holds {record.get("model")!r} weights; this '
        f'run builds {config.model.name!r}.')
  overrides = config.model.overrides.to_dict()
  head = pretrained.head_paths(
      lambda n: models.create_model(config.model.name, num_classes=n, **overrides),
      int(record['num_classes']), num_classes, image_shape)
  merged = pretrained.transfer({'params': state.params, 'batch_stats': state.batch_stats},
                               weights, head, config.init_from)
  return state.replace(params=merged['params'], batch_stats=merged['batch_stats'],
                       ema_params=merged['params'] if state.ema_params else state.ema_params)


def _every(epochs: float, steps: int, steps_per_epoch: int) -> int:
  """An interval in steps from 'every N epochs' (or N steps when given); 0 = never."""
  if steps > 0:
    return steps
  return max(1, round(epochs * steps_per_epoch)) if epochs > 0 else 0


def _sdlm_sample(split: sources.Split, config, epoch: int, mesh, host) -> dict[str, jax.Array]:
  """The examples SDLM re-estimates its curvature on before pass `epoch` (padded to the mesh)."""
  n = config.optimizer.sdlm_samples
  global_n = math.ceil(n / mesh.size) * mesh.size
  rng = np.random.default_rng([config.seed, epoch, 1])
  if split.in_memory:
    picked = rng.choice(split.num_examples, n, replace=False)
    sub = sources.Split(split.name, n, split.num_classes, split.image_shape,
                        split.images[picked], split.labels[picked])
  else:
    sub = split
  batch = next(pipeline.eval_batches(sub, config.data.train_preprocess, global_n,
                                     config.seed + epoch, host))
  return parallel.global_batch(batch, mesh)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains (or, with config.mode='eval', only evaluates) and returns the summary."""
  start_time = time.time()
  check_choice('mode', config.mode, ('train', 'eval'))
  check_choice('data.eval_preprocess_from', config.data.eval_preprocess_from, ('auto', 'config'))
  config = adopt_imports(config, workdir)
  pipeline.hide_accelerators_from_tensorflow()
  if config.compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(config.compilation_cache_dir))
  checkpoint.as_path(workdir).mkdir(parents=True, exist_ok=True)

  # ---- Devices and batches -------------------------------------------------------------------
  mesh = parallel.make_mesh(config.num_devices)
  host = pipeline.HostSlice(jax.process_index(), jax.process_count())
  parallel.check_divisible(config.batch_size, mesh, 'batch_size')
  parallel.check_divisible(config.eval_batch_size, mesh, 'eval_batch_size')
  k = config.examples_per_update
  if k < 0 or (k and config.batch_size % k):
    raise ValueError(f'config.examples_per_update={k} must be 0 or divide '
                     f'config.batch_size={config.batch_size}.')
  logging.info('Process %d of %d; %d local of %d devices (%s); global batch %d.',
               host.process_index, host.process_count, jax.local_device_count(), mesh.size,
               jax.devices()[0].platform, config.batch_size)

  # ---- Data --------------------------------------------------------------------------------
  evaluating = config.mode == 'eval'
  eval_split = sources.load_split(config.data, config.data.eval_split, config.seed)
  train_split = eval_split if evaluating else sources.load_split(  # eval needs no training data
      config.data, config.data.train_split, config.seed)
  eval_shape = pipeline.output_image_shape(eval_split, config.data.eval_preprocess)
  image_shape = eval_shape if evaluating else pipeline.output_image_shape(
      train_split, config.data.train_preprocess)
  steps_per_epoch = train_split.num_examples // config.batch_size
  if evaluating:
    steps_per_epoch = max(steps_per_epoch, 1)
  elif steps_per_epoch == 0:
    raise ValueError(f'config.batch_size={config.batch_size} exceeds the {train_split.num_examples}'
                     ' training examples.')
  total_steps = (config.num_steps if config.num_steps > 0
                 else math.ceil(config.num_epochs * steps_per_epoch))

  # ---- Model, optimizer, steps ----------------------------------------------------------------
  num_classes = config.model.num_classes if config.model.num_classes > 0 else train_split.num_classes
  check_choice('dtype', config.dtype, ('float32', 'bfloat16', 'float16'))
  model = models.create_model(config.model.name, num_classes=num_classes,
                              dtype=jnp.dtype(config.dtype), **config.model.overrides.to_dict())
  if not evaluating:
    check_input_shape(config.model.name, image_shape, 'config.data.train_preprocess', model)
    for i, ops in enumerate(config.data.train_preprocess_cycle):
      check_input_shape(config.model.name, pipeline.output_image_shape(train_split, ops),
                        f'config.data.train_preprocess_cycle[{i}]', model)
  check_input_shape(config.model.name, eval_shape, 'config.data.eval_preprocess', model)
  for name, ops in config.data.eval_protocols.items():
    check_input_shape(config.model.name, pipeline.output_image_shape(eval_split, ops),
                      f'config.data.eval_protocols.{name}', model)
  updates_per_step = config.batch_size // k if k else 1
  schedule = optim.build_schedule(config.schedule, steps_per_epoch * updates_per_step,
                                  updates_per_step, total_steps * updates_per_step,
                                  config.batch_size)
  tx = optim.build_optimizer(config.optimizer, schedule,
                             plateau=config.schedule.plateau_factor > 0)
  steps = make_steps(model, tx, schedule, config, mesh, image_shape,
                     teacher=load_teacher(config, num_classes), total_steps=total_steps)
  if jax.process_index() == 0:  # what this run is, for its readers (and a later teacher)
    resolved = config.to_dict()
    resolved['model']['num_classes'] = num_classes
    checkpoint.write_json(checkpoint.as_path(workdir) / 'config.json', resolved)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(steps.abstract_state.params))
  logging.info('Model %s: %s parameters; %d steps of %d examples (%d per epoch).',
               config.model.name, f'{num_params:,}', total_steps, config.batch_size,
               steps_per_epoch)

  # ---- State: resume, or start (optionally from another run's weights) ---------------------
  abstract = jax.tree_util.tree_map(
      lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      steps.abstract_state, steps.state_sharding)
  identity = {'model': config.model.name, 'num_classes': num_classes,
              'params': checkpoint.fingerprint(steps.abstract_state.params)}
  ckpt = checkpoint.Checkpoints(checkpoint.as_path(workdir) / 'checkpoints', config.keep_checkpoints,
                                identity)
  restored = ckpt.restore_latest(abstract)
  # Evaluation reads no training data: the epoch count is the checkpoint's own.
  checkpoint_epoch = float(restored[1].get('epoch', 0.0)) if restored is not None else 0.0
  if restored is not None and restored[1].get('contents') == checkpoint.WEIGHTS_ONLY:
    weights, record = restored  # imported weights: no optimizer state to resume
    if not evaluating:
      ckpt.close()
      raise checkpoint.CheckpointError(_IMPORTED_NOT_A_RUN.format(workdir=workdir))
    state = steps.init(jax.random.key(config.seed))
    state = state.replace(params=weights['params'], batch_stats=weights.get('batch_stats', {}),
                          ema_params=weights['params'] if state.ema_params else {})
    logging.info('Loaded the imported weights of %s (%s).', workdir, record.get('source'))
  elif restored is not None:
    state, record = restored
    logging.info('Resumed from the checkpoint at step %d (epoch %.2f).', record['step'],
                 checkpoint_epoch if evaluating else record['step'] / steps_per_epoch)
  else:
    state = steps.init(jax.random.key(config.seed))
    if config.init_from:
      state = init_from(config, state, steps, num_classes, image_shape, mesh)
  start_step = int(parallel.to_host(state.step))

  def protocols() -> dict[str, float]:
    """The final evaluation under each extra protocol (config.data.eval_protocols)."""
    out = {}
    for name, ops in config.data.eval_protocols.items():
      result = evaluate(steps, state, eval_split, config, mesh, host, ops)
      logging.info('Evaluation protocol %s: top-1 %.4f top-5 %.4f', name, result['top1'],
                   result['top5'])
      out.update({f'{name}_{k}': v for k, v in result.items() if k != 'count'})
    return out

  def finish(summary_extra: dict[str, Any], final_eval: dict[str, float] | None):
    summary = {'model': config.model.name, 'num_params': int(num_params),
               'steps': int(parallel.to_host(state.step)),
               'epochs': (checkpoint_epoch if evaluating
                          else int(parallel.to_host(state.step)) / steps_per_epoch),
               'wall_time_s': time.time() - start_time, **summary_extra}
    if final_eval is not None:
      summary.update({f'eval_{k}': v for k, v in final_eval.items()})
    if jax.process_index() == 0:
      checkpoint.write_json(checkpoint.as_path(workdir) / 'summary.json', summary)
    return summary

  if config.mode == 'eval':
    result = evaluate(steps, state, eval_split, config, mesh, host)
    logging.info('Evaluation of %s at step %d: top-1 %.4f, top-5 %.4f, loss %.4f.',
                 config.model.name, start_step, result['top1'], result['top5'], result['loss'])
    result.update(protocols())
    ckpt.close()
    return finish({}, result)

  # ---- Train -----------------------------------------------------------------------------
  writer = metrics_lib.Writer(workdir, resume_step=start_step)
  progress = metrics_lib.Progress(total_steps, start_step, config.batch_size, config.progress_bar)
  watch = checkpoint.PreemptionWatch()
  eval_every = _every(config.eval_every_epochs, -1, steps_per_epoch)
  ckpt_every = _every(config.checkpoint_every_epochs, config.checkpoint_every_steps,
                      steps_per_epoch)
  batches = pipeline.train_batches(
      train_split, (config.data.train_preprocess, *config.data.train_preprocess_cycle),
      config.batch_size, config.seed, start_step, host, config.data.prefetch,
      config.data.shuffle_buffer)
  pending: list[tuple[int, dict[str, jax.Array]]] = []  # device metrics not yet fetched
  epoch_losses: dict[int, list[float]] = {}  # epoch -> training loss of each step
  last_eval: dict[str, float] | None = None
  preempted = False
  clock = {'first_step_done': None, 'last_step_done': None, 'steps': 0}

  def flush_metrics(step: int) -> None:
    """Fetches the pending step metrics, stops on NaN/Inf, and writes their means."""
    if not pending:
      return
    fetched = [(s, parallel.to_host(m)) for s, m in pending]
    pending.clear()
    for s, m in fetched:
      if not m['finite']:
        bad = [k for k in ('loss', 'grad_norm') if not np.isfinite(m[k])]
        raise NonFiniteError(f'Non-finite {" and ".join(bad)} at step {s} '
                             f'({", ".join(f"{k}={m[k]}" for k in ("loss", "grad_norm"))}); '
                             'stopping. The last checkpoint before it is kept; lower the '
                             'learning rate or check the data.')
      epoch_losses.setdefault((s - 1) // steps_per_epoch, []).append(float(m['loss']))
    values = [m for _, m in fetched]
    # Means over the interval; the rate (and the float16 loss scale) as at its last step.
    scalars = {k: metrics_lib.mean_of(values, k) for k in values[0]
               if k not in ('finite', 'learning_rate', 'loss_scale')}
    for k in ('learning_rate', 'loss_scale'):
      if k in values[-1]:
        scalars[k] = float(values[-1][k])
    timing = progress.update(step)
    scalars['images_per_s'] = timing['images_per_s']
    writer.write(step, 'train', scalars)
    if jax.process_index() == 0:
      metrics_lib.log_line(step, total_steps, step / steps_per_epoch, scalars, timing['eta_s'])

  profile = tuple(config.profile_steps)
  if profile and (len(profile) != 2 or not 0 <= profile[0] < profile[1]):
    raise ValueError(f'config.profile_steps={profile} must be (first, last) with first < last.')
  try:
    for step in range(start_step, total_steps):
      if profile and step == profile[0]:
        jax.profiler.start_trace(str(checkpoint.as_path(workdir)))
      if profile and step == profile[1]:
        jax.profiler.stop_trace()
        logging.info('Wrote a profile of steps %d-%d to %s/plugins/profile.', *profile, workdir)
      if steps.curvature is not None and step % steps_per_epoch == 0:
        sample = _sdlm_sample(train_split, config, step // steps_per_epoch, mesh, host)
        state = steps.curvature(state, sample['image'], sample['mask'])
      state, step_metrics = steps.train(state, parallel.global_batch(next(batches), mesh))
      done = step + 1
      pending.append((done, step_metrics))
      if clock['first_step_done'] is None:  # the first step includes compilation
        jax.block_until_ready(step_metrics)
        clock['first_step_done'] = time.perf_counter()
      else:
        clock['steps'] += 1
      if done % config.log_every_steps == 0 or done == total_steps:
        flush_metrics(done)
      if eval_every and done % eval_every == 0 and done != total_steps:
        last_eval = evaluate(steps, state, eval_split, config, mesh, host)
        if steps.plateau is not None:  # "divide the rate when the error stops improving"
          state = steps.plateau(state, jnp.float32(1.0 - last_eval['top1']))
        writer.write(done, 'eval', last_eval)
        logging.info('Eval at step %d (epoch %.2f): top-1 %.4f top-5 %.4f loss %.4f', done,
                     done / steps_per_epoch, last_eval['top1'], last_eval['top5'],
                     last_eval['loss'])
      stop = watch.should_stop(done)
      if (ckpt_every and done % ckpt_every == 0) or stop or done == total_steps:
        flush_metrics(done)  # never checkpoint a NaN state
        ckpt.save(done, state, {'epoch': done / steps_per_epoch}, force=stop)
      if stop:
        logging.warning('Stopped at step %d on request (preemption); the checkpoint is saved. '
                        'Run the same command again to resume.', done)
        preempted = True
        break
    clock['last_step_done'] = time.perf_counter()
  finally:
    ckpt.close()  # waits for async saves: a checkpoint is never half-written at exit
    watch.close()
    progress.close()

  # The training loss of the last epoch (of the steps this process ran).
  extra = {'train_loss': float(np.mean(epoch_losses[max(epoch_losses)])) if epoch_losses
                         else float('nan'),
           'preempted': preempted}
  if clock['steps']:  # throughput after the first (compiling) step, evaluations included
    extra['train_images_per_s'] = clock['steps'] * config.batch_size / (
        clock['last_step_done'] - clock['first_step_done'])
  if preempted:
    writer.close()
    return finish(extra, None)
  final = evaluate(steps, state, eval_split, config, mesh, host)
  final.update(protocols())
  writer.write(total_steps, 'eval', final)
  writer.close()
  logging.info('Final evaluation of %s after %d steps: top-1 %.4f, top-5 %.4f, loss %.4f.',
               config.model.name, total_steps, final['top1'], final['top5'], final['loss'])
  return finish(extra, final)
