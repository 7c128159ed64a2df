"""LeNet-5 — LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998, §II.B and Appendix A.

What this file encodes (papers.md §2):
  input   32x32 (the 28x28 digit centred), background -0.1, foreground 1.175
  C1      6 maps 28x28, 5x5 conv                               156 params
  S2      6 maps 14x14, 2x2 sum x coefficient + bias per map    12 params
  C3      16 maps 10x10, 5x5 conv on the subsets of Table I   1,516 params
  S4      16 maps 5x5, like S2                                  32 params
  C5      120 maps 1x1, 5x5 conv on all S4 maps              48,120 params
  F6      84 units                                           10,164 params
  output  10 Euclidean RBF units, fixed +-1 7x12 prototypes      (not trained)
  total                                                      60,000 trainable
Every layer up to F6 applies f(a) = 1.7159 tanh(2a/3) (Appendix A).

Initialisation. Appendix A prints "uniformly distributed between -2.4/F_i and 2.4/F_i" (F_i the
fan-in) and gives the reason: the standard deviation of the weighted sums should be in the
same range for every unit and within the sigmoid's operating region. Only 2.4/sqrt(F_i) does
that (std of a weighted sum of unit-variance inputs: 2.4/sqrt(3) = 1.39 for every F_i). With
the printed bound the signal shrinks sqrt(F)-fold per layer (the F6 outputs start at ~0.01),
the curvature estimates h_kk are ~1e-5, and SDLM with the paper's eta and mu diverges in the
first pass (results/lenet5/README.md). We default to the stated intent, 'lecun98'
(+-2.4/sqrt(F)); 'lecun98_printed' is the literal bound. Biases are drawn like weights.

The logits are the negated RBF outputs, -y_i = -||x - w_i||^2, so argmax is the paper's
argmin and the paper's loss (losses.py: 'rbf', 'rbf_discriminative') reads them directly.

Switches, each the ablation of one 1998 choice (the 'modern' config turns them all):
  activation 'scaled_tanh' | 'tanh' | 'relu';  pooling 'subsample' | 'max' | 'avg';
  c3_table (Table I partial connections vs full);  head 'rbf' | 'dense' (softmax);
  batch_norm after each convolution;
  initializer 'lecun98' (+-2.4/sqrt(F)) | 'lecun98_printed' (+-2.4/F) | 'default' (LeCun normal,
  zero biases, unit subsampling coefficients).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_history.models import layers
from cnn_history.models.registry import register

# Table I: the S2 maps each C3 map reads.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# The output prototypes: a stylised 7x12 bitmap per class, '#' = +1, '.' = -1 (§II.B, Fig. 3
# shows the paper's ASCII set; these are our drawing of the ten digits in the same format).
RBF_BITMAPS: tuple[str, ...] = (
    '..###.. .#...#. #.....# #.....# #.....# #.....# #.....# #.....# #.....# .#...#. ..###.. .......',
    '...#... ..##... .#.#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... .#####. .......',
    '.#####. #.....# ......# ......# .....#. ....#.. ...#... ..#.... .#..... #...... ####### .......',
    '.#####. #.....# ......# ......# ..####. ......# ......# ......# ......# #.....# .#####. .......',
    '....##. ...#.#. ..#..#. .#...#. #....#. #....#. ####### .....#. .....#. .....#. .....#. .......',
    '####### #...... #...... #...... ######. ......# ......# ......# ......# #.....# .#####. .......',
    '..####. .#..... #...... #...... ######. #.....# #.....# #.....# #.....# #.....# .#####. .......',
    '####### ......# .....#. .....#. ....#.. ....#.. ...#... ...#... ..#.... ..#.... ..#.... .......',
    '.#####. #.....# #.....# #.....# .#####. #.....# #.....# #.....# #.....# #.....# .#####. .......',
    '.#####. #.....# #.....# #.....# #.....# .###### ......# ......# ......# .....#. .####.. .......',
)



def rbf_prototypes() -> np.ndarray:
  """The fixed [10, 84] matrix of +-1 prototype vectors (12 rows of 7 pixels, row-major)."""
  rows = []
  for bitmap in RBF_BITMAPS:
    pixels = bitmap.replace(' ', '')
    if len(pixels) != 84 or set(pixels) - set('#.'):
      raise AssertionError('each prototype is 84 pixels of # and .')
    rows.append([1.0 if p == '#' else -1.0 for p in pixels])
  return np.asarray(rows, np.float32)


def scaled_tanh(x: jax.Array) -> jax.Array:
  """f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Appendix A): f(+-1) = +-1."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


ACTIVATIONS = {'scaled_tanh': scaled_tanh, 'tanh': jnp.tanh, 'relu': nn.relu}


class LayerOutput(nn.Module):
  """The identity, as a named submodule: the layers here are functions, not modules, so each
  layer's output passes through one of these to be reachable by module path (Flax
  capture_intermediates, method interceptors; cnn_history/visualize.py). No parameters."""
  conv: bool = False  # whether the layer is a convolution (C1, C3, C5)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x


# ---- The layers as pure functions of (params, x) ------------------------------------------
# The forward pass and Appendix C's second-order backward pass (diagonal_hessian) both read
# them, so the two cannot drift apart.

def conv_valid(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  y = layers.conv_general_dilated(x, p['kernel'].astype(x.dtype), (1, 1), 'VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + p['bias'].astype(x.dtype)


def _table_indices(table: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray]:
  src = np.array([i for row in table for i in row])
  dst = np.array([m for m, row in enumerate(table) for _ in row])
  return src, dst


def sparse_conv(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """C3: output map m reads only the input maps C3_TABLE[m].

  The kernel is stored compactly, one 5x5 filter per connection (60), so the params hold
  exactly the paper's 1,516 numbers; it is scattered into a dense kernel for one convolution.
  """
  src, dst = _table_indices(C3_TABLE)
  k = p['kernel'].shape[0]
  kernel = jnp.zeros((k, k, x.shape[-1], len(C3_TABLE)), p['kernel'].dtype)
  return conv_valid({'kernel': kernel.at[:, :, src, dst].set(p['kernel']), 'bias': p['bias']}, x)


def subsample(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """S2/S4: each 2x2 block summed, times a trainable coefficient, plus a bias, per map."""
  return (layers.pool_2x2(x, 'sum') * p['coefficient'].astype(x.dtype)
          + p['bias'].astype(x.dtype))


def dense(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1) @ p['kernel'].astype(x.dtype) + p['bias'].astype(x.dtype)


def _uniform(bound):
  return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * bound


def _normal(std):
  return lambda key, shape: jax.random.truncated_normal(key, -2.0, 2.0, shape) * std


@register('lenet5', paper='LeCun et al., Proc. IEEE 1998', year=1998, input_shape=(32, 32, 1),
          fixed_input=True, num_classes=10, expected_params=60_000,
          expected_macs=415_680,  # C1 117,600 + C3 240,000 (dense 6->16 kernel) + C5 + F6
          source='paper (Table I arithmetic)', paper_params='60,000',
          paper_macs='340,908 connections')
class LeNet5(nn.Module):
  """LeNet-5 as the 1998 paper built it; every switch is one 1998 choice (module docstring)."""
  num_classes: int = 10
  dtype: Any = jnp.float32
  activation: str = 'scaled_tanh'   # 'scaled_tanh' (paper) | 'tanh' | 'relu'
  pooling: str = 'subsample'        # 'subsample' (paper, trainable) | 'max' | 'avg'
  c3_table: bool = True             # Table I partial connections (paper) vs all 6 -> 16
  head: str = 'rbf'                 # 'rbf' (paper, fixed prototypes) | 'dense' (softmax logits)
  batch_norm: bool = False          # BN after every convolution and F6 (not in the paper)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  initializer: str = 'lecun98'      # 'lecun98' | 'lecun98_printed' | 'default' (see docstring)

  def _stack(self) -> list[tuple[str, Any, dict[str, tuple[tuple[int, ...], Any]]]]:
    """The network as data: (name, linear function, {param: (shape, fan-in)}), or pooling."""
    c3_fn, c3_kernel = ((sparse_conv, ((5, 5, sum(map(len, C3_TABLE))),
                                       25 * np.array([len(C3_TABLE[m]) for m in
                                                      _table_indices(C3_TABLE)[1]])))
                        if self.c3_table else (conv_valid, ((5, 5, 6, 16), 150)))
    c3_bias_fan_in = 25 * np.array([len(r) for r in C3_TABLE]) if self.c3_table else 150

    def pool(name, maps):
      if self.pooling == 'subsample':
        return (name, subsample, {'coefficient': ((maps,), 4), 'bias': ((maps,), 4)})
      return (name, None, {})

    return [
        ('C1', conv_valid, {'kernel': ((5, 5, 1, 6), 25), 'bias': ((6,), 25)}),
        pool('S2', 6),
        ('C3', c3_fn, {'kernel': c3_kernel, 'bias': ((16,), c3_bias_fan_in)}),
        pool('S4', 16),
        ('C5', conv_valid, {'kernel': ((5, 5, 16, 120), 400), 'bias': ((120,), 400)}),
        ('F6', dense, {'kernel': ((120, 84), 120), 'bias': ((84,), 120)}),
    ]

  def _init(self, name: str, shape: tuple[int, ...], fan_in) -> Any:
    fan_in = np.asarray(fan_in, np.float32)
    if self.initializer == 'lecun98':
      return _uniform(2.4 / np.sqrt(fan_in))
    if self.initializer == 'lecun98_printed':
      return _uniform(2.4 / fan_in)
    if self.initializer != 'default':
      raise ValueError(f"lenet5: unknown initializer {self.initializer!r}; use 'lecun98', "
                       "'lecun98_printed' or 'default'.")
    if name == 'coefficient':
      return lambda key, shape: jnp.ones(shape)
    if name == 'bias':
      return lambda key, shape: jnp.zeros(shape)
    return _normal(1.0 / np.sqrt(np.asarray(fan_in, np.float32)))

  def setup(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'lenet5: unknown activation {self.activation!r}; '
                       f'use one of {sorted(ACTIVATIONS)}.')
    if self.pooling not in ('subsample', 'max', 'avg'):
      raise ValueError(f"lenet5: unknown pooling {self.pooling!r}; use 'subsample', 'max' or "
                       "'avg'.")
    if self.head not in ('rbf', 'dense'):
      raise ValueError(f"lenet5: unknown head {self.head!r}; use 'rbf' or 'dense'.")
    if self.head == 'rbf' and self.num_classes != 10:
      raise ValueError(f'lenet5 with the RBF head has 10 fixed prototypes; got num_classes='
                       f"{self.num_classes}. Use head='dense' for other class counts.")
    weights = {}
    for name, fn, shapes in self._stack():
      if fn is not None:
        inits = {k: (shape, self._init(k, shape, fan_in)) for k, (shape, fan_in) in shapes.items()}
        weights[name] = self.param(
            name, lambda key, inits=inits: {
                k: init(jax.random.fold_in(key, i), shape)
                for i, (k, (shape, init)) in enumerate(sorted(inits.items()))})
    self.weights = weights
    self.outputs = {name: LayerOutput(conv=name[0] == 'C') for name, _, _ in self._stack()}
    if self.batch_norm:
      self.norms = {name: layers.BatchNorm(self.bn_momentum, self.bn_epsilon, self.bn_batch_span,
                                           dtype=self.dtype)
                    for name, fn, _ in self._stack() if fn is not None and name[0] in 'CF'}
    if self.head == 'dense':
      self.output = nn.Dense(self.num_classes, dtype=self.dtype)

  def _forward(self, x: jax.Array, train: bool, record: list | None = None) -> jax.Array:
    """Input to F6 output; `record` collects (name, fn, layer input, pre-activation)."""
    act = ACTIVATIONS[self.activation]
    y = x.astype(self.dtype)
    for name, fn, _ in self._stack():
      if fn is None:  # a parameter-free pooling layer (the modern ablation)
        y = self.outputs[name](layers.pool_2x2(y, self.pooling))
        continue
      with jax.named_scope(name):  # names the layer in profiles and the summary's MAC count
        a = fn(self.weights[name], y)
      if self.batch_norm and name in self.norms:
        a = self.norms[name](a, train)
      if record is not None:
        record.append((name, fn, y, a))
      y = self.outputs[name](act(a))
    return y

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.shape[1:3] != (32, 32):
      raise ValueError(f'lenet5 expects 32x32 inputs (the 28x28 digit centred), got '
                       f'{x.shape[1]}x{x.shape[2]}; pad 28x28 images with pad(2) in the data '
                       'preprocessing.')
    features = self._forward(x, train)
    self.sow('intermediates', 'features', features)  # F6: the RBF layer's input
    if self.head == 'dense':
      return self.output(features).astype(jnp.float32)
    prototypes = jnp.asarray(rbf_prototypes())
    features = features.astype(jnp.float32)
    return -jnp.sum(jnp.square(features[:, None, :] - prototypes), axis=-1)  # -y_i

  def diagonal_hessian(self, x: jax.Array, mask: jax.Array) -> Any:
    """h_kk of SDLM: Appendix C's back-propagation of diagonal second derivatives.

    With the Gauss-Newton approximation (the f'' terms dropped) and off-diagonal terms
    ignored, second derivatives flow backwards like gradients through a network whose weights
    and inputs are squared: for a = sum_j w_j x_j, d2E/dw_k^2 = sum over the connections of w_k
    of d2E/da^2 x_j^2, and d2E/dx_j^2 = sum_i w_ij^2 d2E/da_i^2; through the squashing
    function d2E/da^2 = f'(a)^2 d2E/dx^2. It starts at the RBF input, where
    d2E/dx_j^2 = 2 for E = y_D. Returns the mean over the examples where mask = 1.
    """
    if self.pooling != 'subsample' or self.head != 'rbf' or self.batch_norm:
      raise ValueError("SDLM's second-derivative back-propagation is defined for the paper's "
                       "LeNet-5: pooling='subsample', head='rbf', batch_norm=False.")
    record = []
    features = self._forward(x, train=False, record=record)
    mask = mask.astype(jnp.float32)
    d2 = 2.0 * jnp.broadcast_to(mask[:, None], features.shape)
    act = ACTIVATIONS[self.activation]
    curvature = {}
    for name, fn, inputs, pre in reversed(record):
      slope = jax.jvp(act, (pre,), (jnp.ones_like(pre),))[1]
      squared = jax.tree_util.tree_map(jnp.square, self.weights[name])
      _, vjp = jax.vjp(fn, squared, jnp.square(inputs))
      curvature[name], d2 = vjp(jnp.square(slope) * d2)
    count = jnp.maximum(mask.sum(), 1.0)
    return jax.tree_util.tree_map(lambda h: h / count, flax.core.unfreeze(curvature))
