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


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k largest logits (ties broken towards lower index)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Steps:
  init: Callable[[jax.Array], TrainState]
  train: Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]
  evaluate: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]]
  curvature: Callable[[TrainState, jax.Array, jax.Array], TrainState] | None
  abstract_state: TrainState


def make_steps(model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
               config, mesh: Mesh, image_shape: tuple[int, ...]) -> Steps:
  """Builds and jit-compiles (lazily) the step functions of a run."""
  loss_cfg = config.loss
  loss_kwargs = dict(label_smoothing=loss_cfg.label_smoothing, rbf_j=loss_cfg.rbf_j)
  repl, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def init(rng: jax.Array) -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      rng=state_rng)

  abstract_state = jax.eval_shape(init, jax.random.key(0))
  has_bn = bool(abstract_state.batch_stats)

  def update(state: TrainState, images, labels, rng):
    """One optimizer update on (images, labels); returns the new state and per-example stats."""

    def loss_fn(params):
      variables = {'params': params}
      if has_bn:
        variables['batch_stats'] = state.batch_stats
      mutable = ['batch_stats', 'intermediates'] if has_bn else ['intermediates']
      logits, new_vars = model.apply(variables, images, train=True, rngs={'dropout': rng},
                                     mutable=mutable)
      per_example = losses.per_example_loss(loss_cfg.name, logits, labels, **loss_kwargs)
      loss = per_example.mean()
      aux = new_vars['intermediates'].get('aux_logits', ())
      if len(aux) != len(loss_cfg.aux_weights):
        raise ValueError(f'{type(model).__name__} returns {len(aux)} auxiliary heads but '
                         f'config.loss.aux_weights has {len(loss_cfg.aux_weights)} weights; give '
                         'one weight per head (e.g. GoogLeNet: (0.3, 0.3)) or switch the heads off.')
      for weight, aux_logits in zip(loss_cfg.aux_weights, aux):
        loss += weight * losses.per_example_loss(loss_cfg.name, aux_logits, labels,
                                                 **loss_kwargs).mean()
      return loss, (logits, per_example, new_vars)

    grads, (logits, per_example, new_vars) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                          batch_stats=new_vars['batch_stats'] if has_bn else state.batch_stats)
    stats = dict(loss=per_example, top1=top_k_correct(logits, labels, 1),
                 top5=top_k_correct(logits, labels, 5))
    return state, stats, optax.tree.norm(grads)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    images, labels = batch['image'], batch['label']
    n = images.shape[0]
    k = config.examples_per_update or n
    step_rng = jax.random.fold_in(state.rng, state.step)
    if k == n:
      new_state, stats, grad_norm = update(state, images, labels, step_rng)
    else:
      def body(s, xs):
        x, y, i = xs
        s, st, g = update(s, x, y, jax.random.fold_in(step_rng, i))
        return s, (st, g)

      xs = (images.reshape((n // k, k) + images.shape[1:]), labels.reshape(n // k, k),
            jnp.arange(n // k))
      new_state, (stats, grad_norms) = jax.lax.scan(body, state, xs)
      grad_norm = grad_norms.mean()
    updates_done = (state.step + 1) * (n // k)
    metrics = {name: value.mean() for name, value in stats.items()}
    metrics.update(grad_norm=grad_norm, learning_rate=schedule(updates_done - 1))
    metrics['finite'] = jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)
    return new_state.replace(step=state.step + 1), metrics

  def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    logits = model.apply(state.variables(), batch['image'], train=False)
    mask = batch['mask']
    per_example = losses.per_example_loss(loss_cfg.name, logits, batch['label'], **loss_kwargs)
    return dict(loss=jnp.sum(per_example * mask),
                top1=jnp.sum(top_k_correct(logits, batch['label'], 1) * mask),
                top5=jnp.sum(top_k_correct(logits, batch['label'], 5) * mask),
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

    curvature = jax.jit(curvature_step, in_shardings=(repl, sharded, sharded),
                        out_shardings=repl, donate_argnums=0)

  return Steps(
      init=jax.jit(init, out_shardings=repl),
      train=jax.jit(train_step, in_shardings=(repl, sharded), out_shardings=(repl, repl),
                    donate_argnums=0),
      evaluate=jax.jit(eval_step, in_shardings=(repl, sharded), out_shardings=repl),
      curvature=curvature,
      abstract_state=abstract_state)
