"""Losses against numpy: label smoothing forms, mixup, distillation, LeNet's RBF criteria."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import losses


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_label_smoothing_forms():
  logits = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  labels = np.array([0, 3, 4])
  for form, off, on in (('uniform', 0.1 / 5, 0.9 + 0.1 / 5), ('others', 0.1 / 4, 0.9)):
    targets = np.full((3, 5), off)
    targets[np.arange(3), labels] = on
    expected = -(targets * _log_softmax(logits)).sum(-1)
    got = losses.per_example_loss('softmax_xent', jnp.asarray(logits), jnp.asarray(labels),
                                  label_smoothing=0.1, label_smoothing_form=form)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  with pytest.raises(ValueError, match="label_smoothing_form 'other'"):
    losses.smoothed_targets(jnp.asarray(labels), 5, 0.1, 'other')


def test_rbf_losses():
  y = np.array([[3.0, 1.0, 4.0]], np.float32)  # RBF penalties; logits are -y
  logits, label = jnp.asarray(-y), jnp.array([1])
  assert float(losses.per_example_loss('rbf', logits, label)[0]) == pytest.approx(1.0)
  expected = 1.0 + np.log(np.exp(-0.5) + np.exp(-y).sum())
  got = losses.per_example_loss('rbf_discriminative', logits, label, rbf_j=0.5)
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)


def test_mixup_mixes_images_and_targets_with_one_lambda():
  images = jnp.arange(4 * 2, dtype=jnp.float32).reshape(4, 2)
  targets = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 4)
  mixed, soft = losses.mixup(jax.random.key(0), images, targets, 0.2)
  lam = float(soft[0, 0])
  assert 0.0 <= lam <= 1.0
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-6)
  np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(soft[0, 3], 1 - lam, rtol=1e-6)


def test_distillation_loss():
  rng = np.random.default_rng(1)
  student, teacher = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
  t = 20.0
  p = np.exp(_log_softmax(teacher / t))
  expected = t * t * -(p * _log_softmax(student / t)).sum(-1)
  got = losses.distillation_loss(jnp.asarray(student, jnp.float32),
                                 jnp.asarray(teacher, jnp.float32), t)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
