"""Every registered model: its parameter count, its multiply-adds, and a forward pass at the
paper's resolution. The expected numbers live in the registry (verified counts, papers.md)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_history import models
from cnn_history.models import summary
from tests.helpers import random_variables

ALL = models.list_models()


@functools.lru_cache(maxsize=None)
def _abstract_variables(name):
  spec = models.get_spec(name)
  model = models.create_model(name)
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1,) + spec.input_shape), train=False))


@pytest.mark.parametrize('name', [n for n in ALL if models.get_spec(n).expected_params])
def test_parameter_count(name):
  _, variables = _abstract_variables(name)
  assert summary.count_params(variables) == models.get_spec(name).expected_params


@pytest.mark.parametrize('name', [n for n in ALL if models.get_spec(n).expected_macs])
def test_multiply_adds_within_two_percent(name):
  spec = models.get_spec(name)
  macs = summary.count_macs(models.create_model(name), spec.input_shape)
  assert macs == pytest.approx(spec.expected_macs, rel=0.02)


@pytest.mark.parametrize('name', ALL)
def test_forward_at_native_resolution(name):
  spec = models.get_spec(name)
  model = models.create_model(name, num_classes=7) if spec.default_num_classes != 10 else \
      models.create_model(name)
  x = jax.random.normal(jax.random.key(1), (2,) + spec.input_shape)
  # Random weights made on the host: compiling every initialiser costs more than the forward.
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(random_variables(abstract), x)
  assert logits.shape == (2, model.num_classes)
  assert np.all(np.isfinite(np.asarray(logits)))
  assert not np.allclose(logits[0], logits[1])  # the output depends on the input


def test_every_model_states_its_paper():
  for name in ALL:
    spec = models.get_spec(name)
    assert spec.paper and 1989 <= spec.year <= 2020, name
    assert len(spec.input_shape) == 3, name


def test_list_and_unknown_names():
  assert models.list_models('lenet*') == ['lenet5']
  with pytest.raises(ValueError, match='Unknown model'):
    models.input_shape('alexnett')
