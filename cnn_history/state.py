"""The train state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # completed train steps (batches)
  params: Any
  batch_stats: Any       # BatchNorm running statistics ({} for models without BN)
  opt_state: Any
  rng: jax.Array         # base key; a step's dropout key is fold_in(rng, step)
  ema_params: Any = flax.struct.field(default_factory=dict)  # {} unless config.ema_decay > 0
  loss_scale: Any = flax.struct.field(default_factory=dict)  # float16: {'scale', 'good_steps'}

  def variables(self, ema: bool = False) -> dict[str, Any]:
    """The model variables for `model.apply` (with the averaged weights if `ema`)."""
    params = self.ema_params if ema else self.params
    if self.batch_stats:
      return {'params': params, 'batch_stats': self.batch_stats}
    return {'params': params}
