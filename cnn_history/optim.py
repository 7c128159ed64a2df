"""Optimizers and learning-rate schedules from config, and LeNet-5's SDLM.

Every optimizer is a chain: [clip] -> [coupled L2] -> direction -> [decoupled decay] -> lr.
'Coupled' weight decay adds wd * w to the gradient before the direction (L2 regularisation,
as the classic papers wrote their SGD); 'decoupled' adds it after (Loshchilov & Hutter).
Schedules count optimizer updates; their boundaries are given in epochs or train steps, as the
papers state them, and converted here.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnn_history.config import check_choice

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'sdlm')
SCHEDULES = ('constant', 'piecewise', 'cosine', 'exponential')


# ---- Schedules ----------------------------------------------------------------------------

def build_schedule(cfg, updates_per_epoch: int, updates_per_step: int,
                   total_updates: int) -> optax.Schedule:
  """The learning rate as a function of the optimizer's update count (config.schedule)."""
  check_choice('schedule.name', cfg.name, SCHEDULES)
  check_choice('schedule.unit', cfg.unit, ('epochs', 'steps'))
  unit = updates_per_epoch if cfg.unit == 'epochs' else updates_per_step
  base = float(cfg.learning_rate)
  warmup = int(round(cfg.warmup * unit))

  if cfg.name == 'constant':
    main = optax.constant_schedule(base)
  elif cfg.name == 'piecewise':
    if len(cfg.rates) != len(cfg.boundaries):
      raise ValueError(f'config.schedule.rates has {len(cfg.rates)} rates but '
                       f'config.schedule.boundaries has {len(cfg.boundaries)}; give one rate per '
                       'boundary (the rate from that boundary on).')
    bounds = jnp.asarray([int(round(b * unit)) for b in cfg.boundaries], jnp.int32)
    rates = jnp.asarray((base,) + tuple(cfg.rates), jnp.float32)

    def main(count):
      return rates[jnp.searchsorted(bounds, count, side='right')]
  elif cfg.name == 'exponential':
    every = cfg.decay_every * unit

    def main(count):
      return base * cfg.decay_factor ** jnp.floor(count / every)
  else:  # cosine, over the updates after warm-up
    decay_steps = max(total_updates - warmup, 1)
    alpha = cfg.end_learning_rate / base if base else 0.0
    cosine = optax.cosine_decay_schedule(base, decay_steps, alpha)

    def main(count):
      return cosine(jnp.maximum(count - warmup, 0))

  if warmup <= 0:
    return main
  return lambda count: main(count) * jnp.minimum(1.0, (count + 1) / warmup)


# ---- SDLM (LeCun et al. 1998, Appendix C) -------------------------------------------------

class ScaleBySDLMState(NamedTuple):
  curvature: Any  # h_kk: the diagonal Gauss-Newton estimate, one per parameter


def scale_by_sdlm(mu: float) -> optax.GradientTransformation:
  """Stochastic diagonal Levenberg-Marquardt: divides each gradient by (mu + h_kk).

  With a learning rate after it, the step of parameter k is eta / (mu + h_kk) * g_k. The
  curvature h_kk lives in the optimizer state; `with_curvature` replaces it (the trainer
  re-estimates it on `sdlm_samples` examples before each pass, with the model's
  `diagonal_hessian` method: LeNet-5's Appendix C back-propagation).
  """

  def init(params):
    return ScaleBySDLMState(jax.tree_util.tree_map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(lambda g, h: g / (mu + h), updates, state.curvature), state

  return optax.GradientTransformation(init, update)


def uses_sdlm(cfg) -> bool:
  return cfg.optimizer.name == 'sdlm'


def with_curvature(opt_state: Any, curvature: Any) -> Any:
  """`opt_state` with the SDLM curvature replaced."""
  return optax.tree_utils.tree_set(opt_state, curvature=curvature)


# ---- Optimizers ---------------------------------------------------------------------------

def _decay_mask(on: str) -> Callable[[Any], Any] | None:
  check_choice('optimizer.weight_decay_on', on, ('all', 'kernels'))
  if on == 'all':
    return None
  return lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def build_optimizer(cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer of config.optimizer, stepping with `schedule`."""
  check_choice('optimizer.name', cfg.name, OPTIMIZERS)
  check_choice('optimizer.weight_decay_mode', cfg.weight_decay_mode, ('coupled', 'decoupled'))
  direction = {
      'sgd': [],
      'momentum': [optax.trace(decay=cfg.momentum, nesterov=False)],
      'nesterov': [optax.trace(decay=cfg.momentum, nesterov=True)],
      'adam': [optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps)],
      'adamw': [optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps)],
      'sdlm': [scale_by_sdlm(cfg.sdlm_mu)],
  }[cfg.name]
  decay = []
  if cfg.weight_decay:
    decay = [optax.add_decayed_weights(cfg.weight_decay, _decay_mask(cfg.weight_decay_on))]
  coupled = cfg.weight_decay_mode == 'coupled' and cfg.name != 'adamw'
  chain = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
  chain += (decay + direction) if coupled else (direction + decay)
  chain.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*chain)
