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

  def variables(self) -> dict[str, Any]:
    """The model variables for `model.apply`."""
    if self.batch_stats:
      return {'params': self.params, 'batch_stats': self.batch_stats}
    return {'params': self.params}
