"""Per-example losses on logits, chosen by config.loss.name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ('softmax_xent', 'rbf', 'rbf_discriminative')


def per_example_loss(name: str, logits: jax.Array, labels: jax.Array, *,
                     label_smoothing: float = 0.0, rbf_j: float = 0.1) -> jax.Array:
  """The loss of each example, [N].

  softmax_xent        cross-entropy with (optionally smoothed) one-hot targets.
  rbf                 LeNet-5 eq. 8: the RBF output of the correct class, y_D. The LeNet head
                      returns logits = -y, so this is -logits[D].
  rbf_discriminative  LeNet-5 eq. 9: y_D + log(e^-j + sum_i e^-y_i), which also pushes up the
                      penalties of the wrong classes (j > 0 keeps already-large ones from
                      being pushed further).
  """
  logits = logits.astype(jnp.float32)
  correct = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  if name == 'softmax_xent':
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)
  if name == 'rbf':
    return -correct
  if name == 'rbf_discriminative':
    competitors = jnp.concatenate(
        [jnp.full(logits.shape[:1] + (1,), -rbf_j, logits.dtype), logits], axis=-1)
    return -correct + jax.nn.logsumexp(competitors, axis=-1)
  raise ValueError(f'Unknown config.loss.name {name!r}; choose one of {", ".join(LOSSES)}.')
