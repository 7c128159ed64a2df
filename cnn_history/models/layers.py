"""Blocks shared by several papers. One block, one place."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history import onednn


class BatchNorm(nn.Module):
  """Batch normalisation (Ioffe & Szegedy 2015) whose statistics span `batch_span` examples.

  Under `jax.jit` with a batch sharded over devices, a plain batch mean is a mean over the
  *global* batch (synchronised BN). The papers computed statistics per GPU (ResNet and
  BN-Inception: 32 examples). `batch_span` reproduces that on any device count: the batch is
  cut into consecutive groups of `batch_span` examples ("ghost batches"), each normalised with
  its own mean and variance. With the batch sharded on the leading axis and `batch_span`
  dividing the per-device batch, each group lives on one device and costs no communication.

  Running statistics follow the TF/Flax convention
  `running = momentum * running + (1 - momentum) * batch_statistic` (PyTorch momentum m is
  1 - m here), averaged over the groups; the stored variance is the biased one.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  batch_span: int | None = None   # None: statistics over the whole global batch
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Any = nn.initializers.ones
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, *, residual: jax.Array | None = None,
               relu: bool = False) -> jax.Array:
    """BN(x), then `+ residual` and ReLU where given: `relu(bn(x) + residual)` closes a
    post-activation residual block. Fused, they are one custom call in float32 training on a
    one-device CPU backend (`cnn_history.onednn.batch_norm`), else the same arithmetic in XLA."""
    features = x.shape[-1]
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    scale = (self.param('scale', self.scale_init, (features,), jnp.float32) if self.use_scale
             else None)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32) if self.use_bias \
        else None
    n = x.shape[0]
    span = self.batch_span or n
    if train and n % span:
      raise ValueError(f'BatchNorm batch_span={span} does not divide the batch of {n} examples; '
                       'choose a span that divides the per-device batch.')
    if (train and x.dtype == jnp.float32 and jnp.dtype(self.dtype) == jnp.float32
        and (residual is None or (residual.dtype == jnp.float32 and residual.shape == x.shape))
        and onednn.FUSED_BATCH_NORM
        and jax.default_backend() == 'cpu' and onednn.in_use()):
      y, mean, var = onednn.batch_norm(
          x, jnp.ones((features,), jnp.float32) if scale is None else scale,
          jnp.zeros((features,), jnp.float32) if bias is None else bias, residual,
          n // span, self.epsilon, relu)
      self._update_running(running_mean, running_var, mean, var)
      return y
    x32 = x.astype(jnp.float32)
    if train:
      groups = x32.reshape((n // span, span) + x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = groups.mean(axes, keepdims=True)
      var = jnp.square(groups - mean).mean(axes, keepdims=True)
      y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      self._update_running(running_mean, running_var, mean.reshape(-1, features),
                           var.reshape(-1, features))
    else:
      y = (x32 - running_mean.value) * jax.lax.rsqrt(running_var.value + self.epsilon)
    if scale is not None:
      y = y * scale
    if bias is not None:
      y = y + bias
    y = y.astype(self.dtype)
    if residual is not None:
      y = y + residual
    return nn.relu(y) if relu else y

  def _update_running(self, running_mean, running_var, mean, var) -> None:
    """The running averages from the per-group statistics (groups x features)."""
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean.mean(0)
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var.mean(0)


def pool_2x2(x: jax.Array, reduce: str) -> jax.Array:
  """Non-overlapping 2x2 pooling ('max', 'avg' or 'sum') on NHWC, written as reshape + reduce.

  Same function as `nn.max_pool(x, (2, 2), (2, 2))` for even H, W, but XLA's CPU gradient of
  the reshape form is about twice as fast as that of reduce_window (measured for LeNet-5).
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'pool_2x2 needs even spatial dimensions, got {h}x{w}.')
  blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
  if reduce == 'max':
    return blocks.max(axis=(2, 4))
  if reduce == 'avg':
    return blocks.mean(axis=(2, 4))
  if reduce == 'sum':
    return blocks.sum(axis=(2, 4))
  raise ValueError(f"pool_2x2: unknown reduce {reduce!r}; use 'max', 'avg' or 'sum'.")


# ---- Activations --------------------------------------------------------------------------

def hard_sigmoid(x: jax.Array) -> jax.Array:
  """ReLU6(x + 3) / 6 (MobileNetV3; not Keras 1's 0.2x + 0.5)."""
  return jax.nn.relu6(x + 3.0) / 6.0


def hard_swish(x: jax.Array) -> jax.Array:
  """x * ReLU6(x + 3) / 6 (MobileNetV3)."""
  return x * hard_sigmoid(x)


ACTIVATIONS = {
    'relu': nn.relu, 'relu6': jax.nn.relu6, 'swish': nn.swish, 'silu': nn.swish,
    'sigmoid': nn.sigmoid, 'tanh': jnp.tanh, 'hard_swish': hard_swish,
    'hard_sigmoid': hard_sigmoid, 'linear': lambda x: x, None: lambda x: x,
}


def activation(name: str | None):
  """The activation function called `name` (None or 'linear': identity)."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f'Unknown activation {name!r}; choose one of '
                     f'{sorted(k for k in ACTIVATIONS if k)}.') from None


# ---- Padding and pooling --------------------------------------------------------------------
# Two conventions meet in ported weights: TF 'SAME' (asymmetric for stride 2 on even inputs,
# the extra row/column at the end) and PyTorch's explicit symmetric padding. Flax's 'SAME' is
# TF's; an int p (or ((p, p), (p, p))) is PyTorch's.

Padding = Any  # 'SAME' | 'VALID' | int | ((top, bottom), (left, right))


def explicit_padding(padding: Padding) -> Any:
  """Flax/lax padding from 'SAME', 'VALID', an int p (symmetric) or a pair of (lo, hi)."""
  if isinstance(padding, str):
    return padding.upper()
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  return tuple(tuple(p) for p in padding)


def max_pool(x: jax.Array, window: int, stride: int, padding: Padding = 'VALID',
             ceil_mode: bool = False) -> jax.Array:
  """Max-pooling on NHWC, padding with -inf; ceil_mode as PyTorch (a last partial window)."""
  pads = explicit_padding(padding)
  if ceil_mode:
    pads = _ceil_pads(x.shape[1:3], window, stride, 'VALID' if pads == 'VALID' else pads)
  if (TAP_MAX_POOL and x.ndim == 4 and jax.default_backend() == 'cpu'
      and not _REFERENCE_CONVOLUTIONS[-1]):
    explicit = _explicit_pads(pads, x.shape[1:3], (window, window), (stride, stride), (1, 1))
    if explicit is not None:
      return _max_pool(x, window, stride, explicit)
  return nn.max_pool(x, (window, window), (stride, stride), pads)


# Max-pooling's gradient as a tap loop on CPU (False, or CNN_HISTORY_TAP_MAX_POOL=0: XLA's).
TAP_MAX_POOL = os.environ.get('CNN_HISTORY_TAP_MAX_POOL', '1') != '0'


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, stride, pads):
  """Max-pooling with its gradient as a loop over the window's taps (below). XLA:CPU lowers
  reduce_window's gradient through index tensors the size of the padded input and a scatter
  (results/benchmarks/README.md, section 5, has what this gains ResNet-50's training)."""
  return nn.max_pool(x, (window, window), (stride, stride), pads)


def _max_pool_fwd(x, window, stride, pads):
  y = _max_pool(x, window, stride, pads)
  return y, (x, y)


def _max_pool_bwd(window, stride, pads, residuals, dy):
  """Each output's gradient goes to the first input of its window (row-major) equal to the
  maximum, as XLA's select-and-scatter and PyTorch do: per tap, the outputs whose maximum it is
  and no earlier tap was take dy, spread back onto the padded input by the stride."""
  x, y = residuals
  n, h, w, c = x.shape
  ho, wo = y.shape[1:3]
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)
  hp, wp = xp.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, dy.dtype)
  zero = jnp.zeros((), dy.dtype)
  for i in range(window):
    for j in range(window):
      tap = jax.lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1,
                                             j + (wo - 1) * stride + 1, c), (1, stride, stride, 1))
      mine = (tap == y) & ~taken
      taken = taken | mine
      dxp = dxp + jax.lax.pad(jnp.where(mine, dy, zero), zero,
                              ((0, 0, 0), (i, hp - i - (ho - 1) * stride - 1, stride - 1),
                               (j, wp - j - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))
  return (dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool(x: jax.Array, window: int, stride: int, padding: Padding = 'VALID',
             count_include_pad: bool = True, ceil_mode: bool = False) -> jax.Array:
  """Average pooling on NHWC. count_include_pad=True is PyTorch's default; TF 'SAME' excludes
  the padding (count_include_pad=False)."""
  pads = explicit_padding(padding)
  if ceil_mode:
    pads = _ceil_pads(x.shape[1:3], window, stride, 'VALID' if pads == 'VALID' else pads)
  return nn.avg_pool(x, (window, window), (stride, stride), pads,
                     count_include_pad=count_include_pad)


def _ceil_pads(spatial, window, stride, pads):
  """Extra end padding so that the output size is ceil((n + pads - window) / stride) + 1,
  dropping a last window that would start in the padding (PyTorch's rule)."""
  base = ((0, 0), (0, 0)) if pads == 'VALID' else pads
  out = []
  for n, (lo, hi) in zip(spatial, base):
    size = n + lo + hi
    steps = -(-(size - window) // stride) + 1
    if (steps - 1) * stride >= n + lo:
      steps -= 1
    out.append((lo, hi + max(0, (steps - 1) * stride + window - size)))
  return tuple(out)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[N, H, W, C] -> [N, C]."""
  return jnp.mean(x, axis=(1, 2))


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """PyTorch's AdaptiveAvgPool2d((size, size)) on NHWC: output cell i averages input rows
  floor(i H / size) ... ceil((i + 1) H / size) - 1 (windows may overlap), likewise columns
  (torchvision's AlexNet head, GoogLeNet's auxiliary heads)."""
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x

  def bins(n):
    return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

  rows = [jnp.stack([x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for c0, c1 in bins(w)], axis=1)
          for r0, r1 in bins(h)]
  return jnp.stack(rows, axis=1)


# ---- Convolution blocks ---------------------------------------------------------------------

class ConvBN(nn.Module):
  """Convolution -> [BatchNorm] -> [activation]: the block most papers after 2015 repeat.

  `padding` follows `explicit_padding` (TF 'SAME' or PyTorch symmetric ints); `groups` > 1 is a
  grouped convolution (groups = input channels: depthwise). BatchNorm fields are those of
  `BatchNorm` (momentum is the decay of the running averages; batch_span the ghost batch).
  """
  features: int
  kernel_size: int | tuple[int, int] = 3
  strides: int = 1
  padding: Padding = 'SAME'
  groups: int = 1
  use_bias: bool = False
  use_bn: bool = True
  act: str | None = 'relu'
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  bn_scale: bool = True           # Keras Inception/Xception-style BN without gamma: False
  bn_scale_init: Any = nn.initializers.ones  # zeros for Bag of Tricks' zero-gamma
  kernel_init: Any = None         # None: He normal over the fan-out of one group (for a
                                  # depthwise conv: k*k*multiplier, TF's depthwise init)
  bias_init: Any = nn.initializers.zeros
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    k = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size,) * 2
    kernel_init = self.kernel_init or nn.initializers.variance_scaling(
        2.0 * self.groups, 'fan_out', 'normal')
    x = Conv(self.features, k, (self.strides,) * 2, explicit_padding(self.padding),
                kernel_dilation=(self.dilation,) * 2, feature_group_count=self.groups,
                use_bias=self.use_bias, kernel_init=kernel_init, bias_init=self.bias_init,
                dtype=self.dtype, name='conv')(x)
    if self.use_bn:
      fuse_relu = self.act == 'relu'  # BN and ReLU in one pass where BN is the fused call
      x = BatchNorm(self.bn_momentum, self.bn_epsilon, self.bn_batch_span,
                    use_scale=self.bn_scale, scale_init=self.bn_scale_init, dtype=self.dtype,
                    name='bn')(x, train, relu=fuse_relu)
      if fuse_relu:
        return x
    return activation(self.act)(x)


class LRN(nn.Module):
  """Local response normalisation across channels (Krizhevsky et al. 2012, §3.3):

    b_i = a_i / (k + alpha * sum_{j = i - n/2}^{i + n/2} a_j^2) ^ beta

  with the paper's k=2, n=5, alpha=1e-4, beta=0.75. `alpha_over_n=True` divides alpha by n, the
  convention of Caffe and PyTorch's LocalResponseNorm (their alpha is n times the paper's).
  """
  size: int = 5
  k: float = 2.0
  alpha: float = 1e-4
  beta: float = 0.75
  alpha_over_n: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    half = self.size // 2
    squares = jnp.square(x.astype(jnp.float32))
    padded = jnp.pad(squares, [(0, 0)] * (x.ndim - 1) + [(half, self.size - 1 - half)])
    window = jax.lax.reduce_window(padded, 0.0, jax.lax.add, (1,) * (x.ndim - 1) + (self.size,),
                                   (1,) * x.ndim, 'VALID')
    alpha = self.alpha / self.size if self.alpha_over_n else self.alpha
    return (x / jnp.power(self.k + alpha * window, self.beta)).astype(x.dtype)


def spatial_pyramid_pool(x: jax.Array, levels: tuple[int, ...] = (6, 3, 2, 1)) -> jax.Array:
  """SPP (He et al. 2014, §2.3): max-pool an a x a map into n x n bins for each level n, with
  window ceil(a/n) and stride floor(a/n) (the paper's rule), and concatenate the flattened bins
  ([N, sum n^2 * C]). Any input size gives the same output length."""
  outs = []
  h, w = x.shape[1:3]
  for n in levels:
    win_h, win_w = -(-h // n), -(-w // n)
    stride_h, stride_w = max(h // n, 1), max(w // n, 1)
    pooled = nn.max_pool(x, (win_h, win_w), (stride_h, stride_w), 'VALID')[:, :n, :n, :]
    if pooled.shape[1:3] != (n, n):
      raise ValueError(f'SPP level {n} needs a feature map of at least {n}x{n}, got {h}x{w}.')
    outs.append(pooled.reshape(x.shape[0], -1))
  return jnp.concatenate(outs, axis=-1)


# ---- Channel attention, stochastic depth, shuffles --------------------------------------------

# ---- Small inputs (32x32): the `stem` switch of the ImageNet networks -------------------------
STEMS = ('imagenet', 'cifar')


def stem_stride(model: str, stem: str, stride: int = 2) -> int:
  """The stride of a network's first conv: the paper's (stem='imagenet'), or 1 for 32x32
  inputs (stem='cifar'), as the CIFAR ResNets and DenseNets begin: an ImageNet stem's /2 (or
  /4) would leave a 32x32 image a 1x1 map before the last stage."""
  if stem not in STEMS:
    raise ValueError(f'{model}: stem={stem!r} is not valid; choose one of '
                     f'{", ".join(map(repr, STEMS))}.')
  return stride if stem == 'imagenet' else 1


def scale_width(channels: int, multiplier: float) -> int:
  """`channels` x `multiplier`, rounded, at least 1; 0 stays 0 (an absent branch)."""
  if not multiplier > 0:
    raise ValueError(f'width_multiplier must be positive, got {multiplier!r}.')
  return 0 if channels == 0 else max(1, int(round(channels * multiplier)))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
  """Rounds channels to a multiple of `divisor`, never below `round_limit` of `value`
  (MobileNet v2/v3, MnasNet and EfficientNet's `_make_divisible` / `round_filters`)."""
  min_value = min_value or divisor
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if rounded < round_limit * value:
    rounded += divisor
  return rounded


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): global pool -> FC(squeeze) -> act -> FC(C) ->
  gate -> channel-wise rescale. The FCs are 1x1 convolutions with biases, as the reference
  implementations write them. SENet: squeeze = C // 16, ReLU, sigmoid; MobileNetV3: squeeze =
  make_divisible(C_expanded / 4), ReLU, hard-sigmoid; EfficientNet/MnasNet: squeeze =
  C_block_input / 4, swish/ReLU, sigmoid."""
  squeeze_channels: int
  act: str = 'relu'
  gate: str = 'sigmoid'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = Conv(self.squeeze_channels, (1, 1), dtype=self.dtype, name='reduce')(s)
    s = activation(self.act)(s)
    s = Conv(x.shape[-1], (1, 1), dtype=self.dtype, name='expand')(s)
    return x * activation(self.gate)(s)


_NHWC = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
_REFERENCE_CONVOLUTIONS = [False]
POINTWISE_VJP = True  # 1x1 convolutions' gradients as matrix products (False: lax's)


@contextlib.contextmanager
def reference_convolutions():
  """Within it, `conv_general_dilated` is lax.conv_general_dilated for every convolution (the
  MAC counter reads convolutions from the jaxpr; benchmarks compare the two forms). It acts
  when a function is traced: a jitted function traced before keeps the form it was traced with."""
  _REFERENCE_CONVOLUTIONS.append(True)
  try:
    yield
  finally:
    _REFERENCE_CONVOLUTIONS.pop()


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
  return total // 2, total - total // 2


def _explicit_pads(padding, spatial, kernel, strides, dilation):
  """((top, bottom), (left, right)) for 'SAME', 'VALID' or explicit pairs; None when some
  pad is negative or the padding is another string."""
  if padding == 'SAME':
    return tuple(_same_padding(*args) for args in zip(spatial, kernel, strides, dilation))
  if padding == 'VALID':
    return ((0, 0), (0, 0))
  if isinstance(padding, str):
    return None
  pads = tuple(tuple(int(v) for v in p) for p in padding)
  return pads if all(v >= 0 for p in pads for v in p) else None


def _taps(xp: jax.Array, kernel: jax.Array, out_hw: tuple[int, int], strides, dilation):
  """sum over taps (i, j) of the strided window of xp that tap sees times kernel[i, j, 0]."""
  kh, kw = kernel.shape[:2]
  (ho, wo), (sh, sw), (dh, dw) = out_hw, strides, dilation
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.slice(xp, (0, i * dh, j * dw, 0),
                          (xp.shape[0], i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1,
                           xp.shape[3]), (1, sh, sw, 1))
      term = tap * kernel[i, j, 0].astype(tap.dtype)
      out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise(x, kernel, strides, pads, dilation):
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  kh, kw = kernel.shape[:2]
  ho = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
  wo = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
  return _taps(xp, kernel, (ho, wo), strides, dilation)


def _depthwise_fwd(x, kernel, strides, pads, dilation):
  return _depthwise(x, kernel, strides, pads, dilation), (x, kernel)


def _depthwise_bwd(strides, pads, dilation, residuals, dy):
  """dx: the same tap loop over dy (spread by the stride, padded by the kernel's reach) with
  the kernel flipped; dkernel: each tap's window of the padded input times dy, summed."""
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (sh, sw), (dh, dw) = strides, dilation
  hp, wp = x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1])
  ho, wo = dy.shape[1:3]
  reach_h, reach_w = (kh - 1) * dh, (kw - 1) * dw
  spread = jax.lax.pad(dy, jnp.zeros((), dy.dtype),
                       ((0, 0, 0), (reach_h, hp - (ho - 1) * sh - 1, sh - 1),
                        (reach_w, wp - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
  dxp = _taps(spread, kernel[::-1, ::-1], (hp, wp), (1, 1), dilation)
  dx = dxp[:, pads[0][0]:pads[0][0] + x.shape[1], pads[1][0]:pads[1][0] + x.shape[2]]
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  dk = jnp.stack([jnp.stack([
      jnp.sum(jax.lax.slice(xp, (0, i * dh, j * dw, 0),
                            (xp.shape[0], i * dh + (ho - 1) * sh + 1,
                             j * dw + (wo - 1) * sw + 1, xp.shape[3]), (1, sh, sw, 1)) * dy,
              axis=(0, 1, 2), dtype=jnp.promote_types(x.dtype, jnp.float32))
      for j in range(kw)]) for i in range(kh)])[:, :, None, :]
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding='VALID',
                   dilation=(1, 1)) -> jax.Array:
  """A depthwise convolution (NHWC input, kernel kh x kw x 1 x C) as the sum over the kh*kw
  taps of a shifted (strided) window of the padded input times that tap's C weights: one fused
  elementwise loop, and the same for its input gradient (a custom VJP). On XLA:CPU this is
  7-45x faster forward, and 3.5-18x with its gradients, than the grouped
  convolution (results/benchmarks/README.md): the same arithmetic in another order."""
  kh, kw = kernel.shape[:2]
  strides, dilation = tuple(strides), tuple(dilation)
  pads = _explicit_pads(padding, x.shape[1:3], (kh, kw), strides, dilation)
  if pads is None:
    raise ValueError(f"depthwise_conv: padding {padding!r} is not 'SAME', 'VALID' or "
                     'non-negative (lo, hi) pairs.')
  return _depthwise(x, kernel, strides, pads, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x, kernel, strides):
  return jax.lax.conv_general_dilated(x, kernel, strides, 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _pointwise_fwd(x, kernel, strides):
  return _pointwise(x, kernel, strides), (x, kernel)


def _pointwise_bwd(strides, residuals, dy):
  """Both gradients of a 1x1 convolution as 2-D matrix products over the N*H*W positions (XLA
  lowers the kernel gradient as a convolution over the batch, 3x slower on CPU)."""
  x, kernel = residuals
  (sh, sw), cin, cout = strides, kernel.shape[2], kernel.shape[3]
  seen = x[:, ::sh, ::sw, :] if (sh, sw) != (1, 1) else x  # the positions the output read
  dk = (seen.reshape(-1, cin).T @ dy.reshape(-1, cout)).reshape(kernel.shape)
  dseen = (dy.reshape(-1, cout) @ kernel[0, 0].T).reshape(seen.shape)
  if (sh, sw) != (1, 1):  # back onto the strided positions of x, zeros elsewhere
    dseen = jax.lax.pad(dseen, jnp.zeros((), dseen.dtype),
                        ((0, 0, 0), (0, x.shape[1] - (seen.shape[1] - 1) * sh - 1, sh - 1),
                         (0, x.shape[2] - (seen.shape[2] - 1) * sw - 1, sw - 1), (0, 0, 0)))
  return dseen.astype(x.dtype), dk.astype(kernel.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """lax.conv_general_dilated, except on XLA:CPU's weak spots (results/benchmarks/README.md):
  a depthwise convolution (NHWC, one filter per channel, no input dilation) is
  `depthwise_conv`; a 1x1 convolution keeps lax's forward but takes its gradients as
  matrix products (`_pointwise`; ResNet-50 training +30%); a convolution whose window covers
  its whole unpadded input (one output position: LeNet-5's C5) is one matrix product; and, on
  a one-device CPU backend where the custom call is built, any other float32 NHWC
  convolution (kernel larger than 1x1, no groups) is oneDNN's with its gradients
  (`cnn_history.onednn.conv`). All equal lax's
  results up to float rounding. They are CPU forms: on GPU and TPU backends, and within
  `reference_convolutions()`, every convolution is lax's. `Conv` (below) is nn.Conv with this
  function."""
  channels = lhs.shape[-1] if lhs.ndim == 4 else -1
  # The CPU forms; GPU/TPU get lax's (cuDNN's, XLA's).
  cpu = not _REFERENCE_CONVOLUTIONS[-1] and jax.default_backend() == 'cpu'
  if (cpu and lhs.ndim == 4 and feature_group_count == channels > 1
      and tuple(rhs.shape[2:]) == (1, channels) and batch_group_count == 1
      and (lhs_dilation is None or all(v == 1 for v in lhs_dilation))
      and preferred_element_type is None
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC):
    return depthwise_conv(lhs, rhs, tuple(window_strides), padding,
                          tuple(rhs_dilation) if rhs_dilation else (1, 1))
  if (cpu and POINTWISE_VJP and lhs.ndim == 4
      and tuple(rhs.shape[:2]) == (1, 1) and feature_group_count == 1
      and batch_group_count == 1 and preferred_element_type is None
      and all(d is None or all(v == 1 for v in d) for d in (lhs_dilation, rhs_dilation))
      and (padding in ('SAME', 'VALID') or all(tuple(p) == (0, 0) for p in padding))
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC):
    return _pointwise(lhs, rhs, tuple(window_strides))
  if (cpu and lhs.ndim == 4 and tuple(rhs.shape[:2]) == tuple(lhs.shape[1:3])
      and feature_group_count == 1 and batch_group_count == 1
      and preferred_element_type is None
      and all(d is None or all(v == 1 for v in d) for d in (lhs_dilation, rhs_dilation))
      and (padding == 'VALID' or (not isinstance(padding, str)
                                  and all(tuple(p) == (0, 0) for p in padding)))
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC):
    # The window covers the whole input (LeNet-5's C5): one output position, a dense layer.
    out = jax.lax.dot(lhs.reshape(lhs.shape[0], -1), rhs.reshape(-1, rhs.shape[-1]),
                      precision=precision)
    return out.reshape(lhs.shape[0], 1, 1, rhs.shape[-1])
  if (cpu and lhs.ndim == 4 and feature_group_count == 1
      and batch_group_count == 1 and preferred_element_type is None
      and lhs.dtype == rhs.dtype == jnp.float32 and tuple(rhs.shape[:2]) != (1, 1)
      and (lhs_dilation is None or all(v == 1 for v in lhs_dilation))
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC
      and onednn.in_use()):
    dilation = tuple(rhs_dilation) if rhs_dilation else (1, 1)
    pads = _explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2], window_strides, dilation)
    if pads is not None:
      return onednn.conv(lhs, rhs, tuple(window_strides), pads, dilation)
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      batch_group_count, precision, preferred_element_type)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def is_static(value: Any) -> bool:
  """False for a traced value (a switch ramped during training), which checks must skip."""
  return not isinstance(value, jax.core.Tracer)


class DropPath(nn.Module):
  """Stochastic depth (Huang et al. 2016) / drop-connect (EfficientNet) / drop-path (NASNet):
  zeroes a residual branch for a whole example with probability `rate`, scaling survivors by
  1/(1 - rate). Active only with train=True and a 'dropout' rng. The rate may be a traced
  scalar (the trainer's config.model.ramp: NASNet's ScheduledDropPath)."""
  rate: float | jax.Array

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if not train or (is_static(self.rate) and self.rate == 0.0):
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet's channel shuffle on NHWC: (.., g, C/g) -> transpose -> (.., C)."""
  *lead, c = x.shape
  if c % groups:
    raise ValueError(f'channel_shuffle: {c} channels do not split into {groups} groups.')
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


class SeparableConv(nn.Module):
  """Depthwise k x k convolution then pointwise 1x1 (Xception, MobileNet v1, NASNet).

  `depthwise_bn_act` puts BN + activation between the two (MobileNet v1: True; Xception's
  SeparableConv2D and NASNet: False, a single BN after the pointwise conv when `use_bn`).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Padding = 'SAME'
  depth_multiplier: int = 1
  depthwise_bn_act: bool = False
  use_bn: bool = True
  use_bias: bool = False
  act: str | None = 'relu'
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    cin = x.shape[-1]
    x = ConvBN(cin * self.depth_multiplier, self.kernel_size, self.strides, self.padding,
               groups=cin, use_bn=self.depthwise_bn_act, act=self.act if self.depthwise_bn_act
               else None, name='depthwise', **bn)(x, train)
    return ConvBN(self.features, 1, 1, 'VALID', use_bias=self.use_bias, use_bn=self.use_bn,
                  act=self.act, name='pointwise', **bn)(x, train)


class InvertedResidual(nn.Module):
  """MobileNetV2's inverted residual / MBConv (MnasNet, MobileNetV3, EfficientNet):

    [1x1 expand x t -> BN -> act] -> k x k depthwise (stride) -> BN -> act -> [SE] ->
    1x1 linear projection -> BN -> [drop path] (+ input when stride 1 and channels match)

  `se_channels` > 0 inserts SqueezeExcite with that squeeze width (each paper computes it from
  a different width: see SqueezeExcite).
  """
  features: int
  expand_ratio: float = 6
  kernel_size: int = 3
  strides: int = 1
  act: str = 'relu6'
  se_channels: int = 0
  se_act: str = 'relu'
  se_gate: str = 'sigmoid'
  drop_path_rate: float = 0.0
  padding: Padding = 'SAME'        # of the depthwise conv ('SAME' = TF; int = PyTorch)
  expanded_channels: int | None = None  # overrides round(cin * expand_ratio) (MobileNetV3 tables)
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_batch_span: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
              bn_batch_span=self.bn_batch_span, dtype=self.dtype)
    cin = x.shape[-1]
    hidden = self.expanded_channels or int(round(cin * self.expand_ratio))
    y = x
    if hidden != cin:
      y = ConvBN(hidden, 1, 1, 'VALID', act=self.act, name='expand', **bn)(y, train)
    y = ConvBN(hidden, self.kernel_size, self.strides, self.padding, groups=hidden, act=self.act,
               name='depthwise', **bn)(y, train)
    if self.se_channels:
      y = SqueezeExcite(self.se_channels, self.se_act, self.se_gate, self.dtype, name='se')(y)
    y = ConvBN(self.features, 1, 1, 'VALID', act=None, name='project', **bn)(y, train)
    if self.strides == 1 and cin == self.features:
      y = DropPath(self.drop_path_rate, name='drop_path')(y, train) + x
    return y
