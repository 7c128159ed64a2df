"""Optimizers and learning-rate schedules from config, and LeNet-5's SDLM.

Every optimizer is a chain: [clip] -> [coupled L2] -> direction -> [decoupled decay] -> lr
-> [plateau scale]. 'Coupled' weight decay adds wd * w to the gradient before the direction
(L2 regularisation, as the classic papers wrote their SGD); 'decoupled' adds it after
(Loshchilov & Hutter). Two optimizers put the learning rate *inside* the momentum, as their
papers' frameworks did, which differs from PyTorch's form when the rate changes:

  sgd_caffe   v <- mu v - lr (g + wd w); w <- w + v   (AlexNet's update as the paper writes it;
              Caffe)
  rmsprop_tf  ms <- rho ms + (1 - rho) g^2 (ms starts at 1); mom <- mu mom + lr g / sqrt(ms + eps);
              w <- w - mom   (TensorFlow's RMSProp: Inception-v3 eps=1.0, EfficientNet eps=1e-3)

Schedules count optimizer updates; their boundaries are given in epochs or train steps, as the
papers state them, and converted here. The plateau rule ("divide by 10 when the validation error
stops improving") is a scale in the optimizer state that the trainer updates after each
evaluation, so it is checkpointed and resumes exactly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnn_history.config import check_choice

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'sgd_caffe', 'rmsprop', 'rmsprop_tf', 'adam', 'adamw',
              'sdlm')
SCHEDULES = ('constant', 'piecewise', 'exponential', 'polynomial', 'cosine')


def base_learning_rate(cfg, batch_size: int) -> float:
  """config.schedule.learning_rate, scaled by the linear scaling rule when asked
  (Goyal et al. 2017; Bag of Tricks: 0.1 x batch / 256)."""
  if cfg.reference_batch_size > 0:
    return cfg.learning_rate * batch_size / cfg.reference_batch_size
  return cfg.learning_rate


# ---- Schedules ----------------------------------------------------------------------------

def build_schedule(cfg, updates_per_epoch: int, updates_per_step: int,
                   total_updates: int, batch_size: int = 0) -> optax.Schedule:
  """The learning rate as a function of the optimizer's update count (config.schedule)."""
  check_choice('schedule.name', cfg.name, SCHEDULES)
  check_choice('schedule.unit', cfg.unit, ('epochs', 'steps'))
  unit = updates_per_epoch if cfg.unit == 'epochs' else updates_per_step
  base = float(base_learning_rate(cfg, batch_size))
  warmup = int(round(cfg.warmup * unit))

  if cfg.name == 'constant':
    main = optax.constant_schedule(base)
  elif cfg.name == 'piecewise':
    if len(cfg.rates) != len(cfg.boundaries):
      raise ValueError(f'config.schedule.rates has {len(cfg.rates)} rates but '
                       f'config.schedule.boundaries has {len(cfg.boundaries)}; give one rate per '
                       'boundary (the rate from that boundary on).')
    bounds = jnp.asarray([int(round(b * unit)) for b in cfg.boundaries], jnp.int32)
    scaling = base / cfg.learning_rate if cfg.learning_rate else 1.0  # linear scaling rule
    rates = jnp.asarray((base,) + tuple(r * scaling for r in cfg.rates), jnp.float32)

    def main(count):
      return rates[jnp.searchsorted(bounds, count, side='right')]
  elif cfg.name == 'exponential':
    every = cfg.decay_every * unit
    rounding = jnp.floor if cfg.staircase else (lambda t: t)

    def main(count):
      return base * cfg.decay_factor ** rounding(count / every)
  elif cfg.name == 'polynomial':  # over the updates after warm-up
    span = max(total_updates - warmup, 1)

    def main(count):
      t = jnp.clip((count - warmup) / span, 0.0, 1.0)
      return cfg.end_learning_rate + (base - cfg.end_learning_rate) * (1 - t) ** cfg.power
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


# ---- The plateau rule ---------------------------------------------------------------------

class PlateauState(NamedTuple):
  scale: jax.Array        # multiplies the scheduled learning rate
  best: jax.Array         # the lowest evaluation error so far
  bad_evals: jax.Array    # evaluations since the last improvement (or reduction)
  reductions: jax.Array   # reductions made


def scale_by_plateau() -> optax.GradientTransformation:
  """Multiplies updates by a scale that `plateau_update` lowers between evaluations."""

  def init(params):
    del params
    return PlateauState(jnp.ones((), jnp.float32), jnp.full((), jnp.inf, jnp.float32),
                        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(lambda u: u * state.scale, updates), state

  return optax.GradientTransformation(init, update)


def plateau_update(state: PlateauState, error: jax.Array, cfg) -> PlateauState:
  """After an evaluation: reduce the scale by plateau_factor when `error` has not improved by
  a relative plateau_threshold for more than plateau_patience evaluations."""
  improved = error < state.best * (1.0 - cfg.plateau_threshold)
  best = jnp.where(improved, error, state.best)
  bad = jnp.where(improved, 0, state.bad_evals + 1)
  allowed = (cfg.plateau_max_reductions < 0) | (state.reductions < cfg.plateau_max_reductions)
  reduce = (bad > cfg.plateau_patience) & allowed
  return PlateauState(jnp.where(reduce, state.scale * cfg.plateau_factor, state.scale), best,
                      jnp.where(reduce, 0, bad), state.reductions + reduce.astype(jnp.int32))


def find_plateau(opt_state: Any) -> PlateauState | None:
  found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(
      x, PlateauState)) if isinstance(s, PlateauState)]
  return found[0] if found else None


def with_plateau(opt_state: Any, plateau: PlateauState) -> Any:
  return jax.tree_util.tree_map(lambda s: plateau if isinstance(s, PlateauState) else s,
                                opt_state, is_leaf=lambda x: isinstance(x, PlateauState))


# ---- Constraints applied after each update -----------------------------------------------

def renormalize_filters(params: Any, max_rms: float) -> Any:
  """Zeiler & Fergus §3: "each filter in the convolutional layers where the RMS value exceeds a
  fixed radius of 1e-1 is renormalized to this fixed radius". A filter is one output channel of
  a conv kernel (h, w, in, out): its root-mean-square over (h, w, in)."""

  def project(path, p):
    if getattr(path[-1], 'key', None) != 'kernel' or p.ndim != 4:
      return p
    rms = jnp.sqrt(jnp.mean(jnp.square(p), axis=(0, 1, 2), keepdims=True))
    return p * jnp.minimum(1.0, max_rms / jnp.maximum(rms, 1e-12))

  return jax.tree_util.tree_map_with_path(project, params)


# ---- Optimizers ---------------------------------------------------------------------------

def _decay_mask(on: str) -> Callable[[Any], Any] | None:
  """'all'; 'kernels': not biases, BN or other 1-D parameters (Bag of Tricks' "no bias
  decay"); 'kernels_except_depthwise': neither depthwise kernels (k, k, 1, C) (MobileNet v1:
  "very little or no weight decay on the depthwise filters")."""
  check_choice('optimizer.weight_decay_on', on, ('all', 'kernels', 'kernels_except_depthwise'))
  if on == 'all':
    return None
  if on == 'kernels':
    return lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
  return lambda params: jax.tree_util.tree_map(
      lambda p: p.ndim > 1 and not (p.ndim == 4 and p.shape[2] == 1 and p.shape[3] > 1), params)


def build_optimizer(cfg, schedule: optax.Schedule,
                    plateau: bool = False) -> optax.GradientTransformation:
  """The optimizer of config.optimizer, stepping with `schedule` (x the plateau scale)."""
  check_choice('optimizer.name', cfg.name, OPTIMIZERS)
  check_choice('optimizer.weight_decay_mode', cfg.weight_decay_mode, ('coupled', 'decoupled'))
  lr = [optax.scale_by_learning_rate(schedule)] + ([scale_by_plateau()] if plateau else [])
  direction = {
      'sgd': [],
      'momentum': [optax.trace(decay=cfg.momentum, nesterov=False)],
      'nesterov': [optax.trace(decay=cfg.momentum, nesterov=True)],
      'rmsprop': [optax.scale_by_rms(cfg.decay, cfg.eps, eps_in_sqrt=False),  # PyTorch's form
                  optax.trace(decay=cfg.momentum, nesterov=False)],
      'adam': [optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps)],
      'adamw': [optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps)],
      'sdlm': [scale_by_sdlm(cfg.sdlm_mu)],
      # The learning rate inside the momentum (see the module docstring).
      'sgd_caffe': lr + [optax.trace(decay=cfg.momentum, nesterov=False)],
      'rmsprop_tf': [optax.scale_by_rms(cfg.decay, cfg.eps, initial_scale=1.0,
                                        eps_in_sqrt=True)] + lr +
                    [optax.trace(decay=cfg.momentum, nesterov=False)],
  }[cfg.name]
  lr_inside = cfg.name in ('sgd_caffe', 'rmsprop_tf')
  decay = []
  if cfg.weight_decay:
    decay = [optax.add_decayed_weights(cfg.weight_decay, _decay_mask(cfg.weight_decay_on))]
  coupled = cfg.weight_decay_mode == 'coupled' and cfg.name != 'adamw'
  if lr_inside and not coupled:
    raise ValueError(f"optimizer {cfg.name!r} applies weight decay the way its paper wrote it: "
                     "use weight_decay_mode='coupled'.")
  chain = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
  chain += (decay + direction) if coupled else (direction + decay)
  if not lr_inside:
    chain += lr
  return optax.chain(*chain)
