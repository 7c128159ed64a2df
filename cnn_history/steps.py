"""Pure step functions, each compiled once for the mesh: init, train, eval, SDLM curvature.

The state is replicated and donated; batches are sharded over 'data'. A train step performs
batch/examples_per_update sequential optimizer updates (`lax.scan`), so LeNet-5's online
learning (one example per update) costs no Python dispatch per example.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from cnn_history import losses, optim, parallel
from cnn_history.state import TrainState


LOSS_SCALE_INIT = 2.0 ** 15   # float16 dynamic loss scaling: the initial scale ...
LOSS_SCALE_PERIOD = 2000      # ... doubled after this many finite steps, halved on overflow


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where fewer than k classes score strictly higher than the label (ties count for it).

  Written as a comparison and a sum over classes rather than lax.top_k, which XLA's SPMD
  partitioner all-gathers across the batch shards.
  """
  label_score = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  higher = jnp.sum(logits > label_score, axis=-1)
  return (higher < k).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Steps:
  init: Callable[[jax.Array], TrainState]
  train: Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]
  evaluate: Callable[..., dict[str, jax.Array]]   # (state, batch, ema=False) -> metric sums
  curvature: Callable[[TrainState, jax.Array, jax.Array], TrainState] | None
  plateau: Callable[[TrainState, jax.Array], TrainState] | None  # after an evaluation
  abstract_state: TrainState
  state_sharding: Any   # NamedShardings of the state (replicated, or FSDP-sharded)


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A trained network whose softened outputs the student also learns (distillation)."""
  model: nn.Module
  variables: Any


def ramped_fields(model: nn.Module, fields, total_steps: int) -> tuple[str, ...]:
  """Checks config.model.ramp: numeric switches of `model`, and a known training length."""
  fields = tuple(fields)
  for field in fields:
    value = getattr(model, field, None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f'config.model.ramp names {field!r}, which is not a numeric switch of '
                       f'{type(model).__name__} (got {value!r}); name fields such as '
                       "'drop_path_rate' (NASNet's ScheduledDropPath).")
  if fields and total_steps <= 0:
    raise ValueError('config.model.ramp needs the number of training steps (make_steps('
                     'total_steps=...)).')
  return fields


def make_steps(model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
               config, mesh: Mesh, image_shape: tuple[int, ...],
               teacher: Teacher | None = None, total_steps: int = 0) -> Steps:
  """Builds and jit-compiles (lazily) the step functions of a run.

  The compiled steps take batches of any image shape (one compilation per shape: SPP-net's
  multi-size training); `image_shape` is the one the parameters are initialised with.
  """
  loss_cfg = config.loss
  loss_kwargs = dict(label_smoothing=loss_cfg.label_smoothing,
                     label_smoothing_form=loss_cfg.label_smoothing_form, rbf_j=loss_cfg.rbf_j)
  repl, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  ema_decay = config.ema_decay
  loss_scaling = config.dtype == 'float16'
  ramp = ramped_fields(model, config.model.ramp, total_steps)

  def init(rng: jax.Array) -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      rng=state_rng, ema_params=params if ema_decay > 0 else {},
                      loss_scale=({'scale': jnp.float32(LOSS_SCALE_INIT),
                                   'good_steps': jnp.zeros((), jnp.int32)} if loss_scaling else {}))

  abstract_state = jax.eval_shape(init, jax.random.key(0))
  has_bn = bool(abstract_state.batch_stats)
  state_sh = parallel.state_sharding(abstract_state, mesh, config.sharding)

  def update(state: TrainState, images, labels, rng, teacher_variables, net):
    """One optimizer update of `net` (the model, its ramped switches at this step's values) on
    (images, labels); returns the new state and per-example stats."""
    targets = None
    if loss_cfg.mixup_alpha > 0:
      mix_rng, rng = jax.random.split(rng)
      targets = losses.smoothed_targets(labels, model.num_classes, loss_cfg.label_smoothing,
                                        loss_cfg.label_smoothing_form)
      images, targets = losses.mixup(mix_rng, images, targets, loss_cfg.mixup_alpha)
    teacher_logits = None
    if teacher is not None:
      teacher_logits = teacher.model.apply(teacher_variables, images, train=False)

    def loss_fn(params):
      variables = {'params': params}
      if has_bn:
        variables['batch_stats'] = state.batch_stats
      mutable = ['batch_stats', 'intermediates'] if has_bn else ['intermediates']
      logits, new_vars = net.apply(variables, images, train=True, rngs={'dropout': rng},
                                   mutable=mutable)
      per_example = losses.per_example_loss(loss_cfg.name, logits, labels, targets=targets,
                                            **loss_kwargs)
      terms = {}  # the other terms of the objective, per example, logged beside 'loss'
      loss = per_example.mean()
      if teacher_logits is not None:
        terms['distill_loss'] = losses.distillation_loss(logits, teacher_logits,
                                                         config.distill.temperature)
        loss += config.distill.weight * terms['distill_loss'].mean()
      aux = new_vars.get('intermediates', {}).get('aux_logits', ())
      if len(aux) != len(loss_cfg.aux_weights):
        raise ValueError(f'{type(model).__name__} returns {len(aux)} auxiliary heads but '
                         f'config.loss.aux_weights has {len(loss_cfg.aux_weights)} weights; give '
                         'one weight per head (e.g. GoogLeNet: (0.3, 0.3)) or switch the heads off.')
      for i, (weight, aux_logits) in enumerate(zip(loss_cfg.aux_weights, aux)):
        terms[f'aux{i}_loss'] = losses.per_example_loss(loss_cfg.name, aux_logits, labels,
                                                        targets=targets, **loss_kwargs)
        loss += weight * terms[f'aux{i}_loss'].mean()
      if terms:
        terms['total_loss'] = loss  # the objective differentiated (a scalar)
      if loss_scaling:  # float16: gradients of loss x S, so that small ones do not underflow
        loss = loss * state.loss_scale['scale']
      return loss, (logits, per_example, terms, new_vars)

    grads, (logits, per_example, terms, new_vars) = jax.grad(loss_fn, has_aux=True)(
        state.params)
    if loss_scaling:
      grads = jax.tree_util.tree_map(lambda g: g / state.loss_scale['scale'], grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if config.optimizer.max_filter_rms > 0:
      params = optim.renormalize_filters(params, config.optimizer.max_filter_rms)
    new_state = state.replace(params=params, opt_state=opt_state,
                              batch_stats=new_vars['batch_stats'] if has_bn else state.batch_stats)
    if loss_scaling:  # skip a step whose gradients overflowed and halve S; double S when stable
      ok = jnp.isfinite(optax.tree.norm(grads))
      new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), new_state,
                                         state)
      good = jnp.where(ok, state.loss_scale['good_steps'] + 1, 0)
      scale = jnp.where(ok, state.loss_scale['scale'], state.loss_scale['scale'] / 2)
      grow = good >= LOSS_SCALE_PERIOD
      new_state = new_state.replace(loss_scale={'scale': jnp.where(grow, scale * 2, scale),
                                                'good_steps': jnp.where(grow, 0, good)})
    state = new_state
    if ema_decay > 0:
      state = state.replace(ema_params=jax.tree_util.tree_map(
          lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params))
    stats = dict(loss=per_example, top1=top_k_correct(logits, labels, 1),
                 top5=top_k_correct(logits, labels, 5), **terms)
    return state, stats, optax.tree.norm(grads)

  def train_step(state: TrainState, batch: dict[str, jax.Array], teacher_variables=None):
    images, labels = batch['image'], batch['label']
    n = images.shape[0]
    k = config.examples_per_update or n
    step_rng = jax.random.fold_in(state.rng, state.step)
    net, progress = model, None
    if ramp:  # linear from 0 at the first step to the configured value at the last
      progress = jnp.minimum(state.step.astype(jnp.float32) / total_steps, 1.0)
      net = model.clone(**{f: getattr(model, f) * progress for f in ramp})
    if k == n:
      new_state, stats, grad_norm = update(state, images, labels, step_rng, teacher_variables,
                                           net)
    else:
      def body(s, xs):
        x, y, i = xs
        s, st, g = update(s, x, y, jax.random.fold_in(step_rng, i), teacher_variables, net)
        return s, (st, g)

      xs = (images.reshape((n // k, k) + images.shape[1:]), labels.reshape(n // k, k),
            jnp.arange(n // k))
      new_state, (stats, grad_norms) = jax.lax.scan(body, state, xs)
      grad_norm = grad_norms.mean()
    updates_done = (state.step + 1) * (n // k)
    metrics = {name: value.mean() for name, value in stats.items()}
    lr = schedule(updates_done - 1)
    plateau = optim.find_plateau(new_state.opt_state)
    if plateau is not None:
      lr = lr * plateau.scale
    metrics.update(grad_norm=grad_norm, learning_rate=lr)
    for f in ramp:
      metrics[f] = getattr(model, f) * progress
    metrics['finite'] = jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)
    if loss_scaling:  # overflowing steps are skipped; only a scale below 1 means divergence
      metrics['finite'] = new_state.loss_scale['scale'] >= 1.0
      metrics['loss_scale'] = new_state.loss_scale['scale']
    return new_state.replace(step=state.step + 1), metrics

  def eval_step(state: TrainState, batch: dict[str, jax.Array], ema: bool = False):
    mask, labels = batch['mask'], batch['label']
    branches = [batch[k] for k in sorted(batch) if k.startswith('image')]
    if len(branches) == 1 and branches[0].ndim == 4:  # one view: the configured loss
      logits = model.apply(state.variables(ema), branches[0], train=False)
      per_example = losses.per_example_loss(loss_cfg.name, logits, labels, **loss_kwargs)
      scores = logits
    else:  # views (crops, flips, scales): softmax averaged over views, then branches
      probs = []
      for images in branches:
        views = images.shape[1] if images.ndim == 5 else 1
        flat = images.reshape((-1,) + images.shape[-3:])
        logits = model.apply(state.variables(ema), flat, train=False)
        probs.append(jax.nn.softmax(logits.astype(jnp.float32)).reshape(
            labels.shape[0], views, -1).mean(axis=1))
      scores = jnp.mean(jnp.stack(probs), axis=0)
      per_example = -jnp.log(jnp.take_along_axis(scores, labels[:, None], -1)[:, 0] + 1e-12)
    return dict(loss=jnp.sum(per_example * mask),
                top1=jnp.sum(top_k_correct(scores, labels, 1) * mask),
                top5=jnp.sum(top_k_correct(scores, labels, 5) * mask),
                count=jnp.sum(mask))

  curvature = None
  if optim.uses_sdlm(config):
    if not hasattr(model, 'diagonal_hessian'):
      raise ValueError(f"optimizer 'sdlm' needs the curvature estimate h_kk of the model, which "
                       f'{type(model).__name__} does not define (LeNet-5 does: its '
                       'diagonal_hessian method).')

    def curvature_step(state: TrainState, images, mask) -> TrainState:
      h = model.apply(state.variables(), images, mask, method='diagonal_hessian')
      return state.replace(opt_state=optim.with_curvature(state.opt_state, h))

    curvature = jax.jit(curvature_step, in_shardings=(state_sh, sharded, sharded),
                        out_shardings=state_sh, donate_argnums=0)

  plateau = None
  if config.schedule.plateau_factor > 0:
    def plateau_step(state: TrainState, error: jax.Array) -> TrainState:
      new = optim.plateau_update(optim.find_plateau(state.opt_state), error, config.schedule)
      return state.replace(opt_state=optim.with_plateau(state.opt_state, new))

    plateau = jax.jit(plateau_step, in_shardings=(state_sh, repl), out_shardings=state_sh,
                      donate_argnums=0)

  if teacher is None:
    train = jax.jit(train_step, in_shardings=(state_sh, sharded),
                    out_shardings=(state_sh, repl), donate_argnums=0)
  else:
    teacher_variables = jax.device_put(teacher.variables, repl)
    jitted = jax.jit(train_step, in_shardings=(state_sh, sharded, repl),
                     out_shardings=(state_sh, repl), donate_argnums=0)

    def train(state, batch):
      return jitted(state, batch, teacher_variables)

  return Steps(
      init=jax.jit(init, out_shardings=state_sh),
      train=train,
      evaluate=jax.jit(eval_step, in_shardings=(state_sh, sharded), out_shardings=repl,
                       static_argnums=2),
      curvature=curvature,
      plateau=plateau,
      abstract_state=abstract_state,
      state_sharding=state_sh)
