"""Per-example losses on logits, chosen by config.loss.name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ('softmax_xent', 'rbf', 'rbf_discriminative')


def smoothed_targets(labels: jax.Array, num_classes: int, smoothing: float,
                     form: str = 'uniform') -> jax.Array:
  """One-hot targets with label smoothing eps.

  'uniform' (Szegedy et al. 2016, Inception-v3; PyTorch): (1 - eps) one_hot + eps / K.
  'others' (Bag of Tricks, eq. in §5.2): 1 - eps for the true class, eps / (K - 1) for each other.
  """
  one_hot = jax.nn.one_hot(labels, num_classes)
  if form == 'uniform':
    return optax.smooth_labels(one_hot, smoothing)
  if form == 'others':
    return one_hot * (1.0 - smoothing) + (1.0 - one_hot) * smoothing / (num_classes - 1)
  raise ValueError(f"Unknown config.loss.label_smoothing_form {form!r}; use 'uniform' or 'others'.")


def per_example_loss(name: str, logits: jax.Array, labels: jax.Array, *,
                     label_smoothing: float = 0.0, label_smoothing_form: str = 'uniform',
                     rbf_j: float = 0.1, targets: jax.Array | None = None) -> jax.Array:
  """The loss of each example, [N].

  softmax_xent        cross-entropy with (optionally smoothed) one-hot targets, or with the soft
                      `targets` [N, K] given (mixup).
  rbf                 LeNet-5 eq. 8: the RBF output of the correct class, y_D. The LeNet head
                      returns logits = -y, so this is -logits[D].
  rbf_discriminative  LeNet-5 eq. 9: y_D + log(e^-j + sum_i e^-y_i), which also pushes up the
                      penalties of the wrong classes (j > 0 keeps already-large ones from
                      being pushed further).
  """
  logits = logits.astype(jnp.float32)
  correct = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  if name == 'softmax_xent':
    if targets is None:
      targets = smoothed_targets(labels, logits.shape[-1], label_smoothing, label_smoothing_form)
    return optax.softmax_cross_entropy(logits, targets)
  if targets is not None:
    raise ValueError(f'Soft targets (mixup) need loss.name=softmax_xent, not {name!r}.')
  if name == 'rbf':
    return -correct
  if name == 'rbf_discriminative':
    competitors = jnp.concatenate(
        [jnp.full(logits.shape[:1] + (1,), -rbf_j, logits.dtype), logits], axis=-1)
    return -correct + jax.nn.logsumexp(competitors, axis=-1)
  raise ValueError(f'Unknown config.loss.name {name!r}; choose one of {", ".join(LOSSES)}.')


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                      temperature: float) -> jax.Array:
  """T^2 * CE(softmax(teacher / T), softmax(student / T)) per example (Hinton et al. 2015;
  Bag of Tricks §5.3 with T = 20). The T^2 keeps the gradient scale independent of T."""
  teacher = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  return temperature ** 2 * optax.softmax_cross_entropy(
      student_logits.astype(jnp.float32) / temperature, jax.lax.stop_gradient(teacher))


def mixup(rng: jax.Array, images: jax.Array, targets: jax.Array,
          alpha: float) -> tuple[jax.Array, jax.Array]:
  """Mixup (Zhang et al. 2018): each example mixed with the batch reversed, with one
  lambda ~ Beta(alpha, alpha) per batch, images and soft targets alike."""
  lam = jax.random.beta(rng, alpha, alpha)
  mixed = lam * images + (1.0 - lam) * images[::-1]
  return mixed.astype(images.dtype), lam * targets + (1.0 - lam) * targets[::-1]
