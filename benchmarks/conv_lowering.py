r"""How XLA:CPU runs each convolution of the zoo's networks, and the alternatives tried.

  python benchmarks/conv_lowering.py [--repeats 10] [--quick]

Times (median ms, float32, this machine's threads) for single jitted convolutions at shapes of
ResNet-20 (batch 128, CIFAR), ResNet-50 (batch 32) and MobileNet v2 (batch 32):
  * dense convolutions: lax forward, input gradient (dX), kernel gradient (dW); dW as kh*kw
    matrix products of shifted input windows ("9 dots"); the same layer in NCHW layout; the
    oneDNN custom call's forward, dX and dW (cnn_history/onednn.py; needs it built);
  * depthwise convolutions: lax's grouped convolution (forward; forward + both gradients)
    against layers.depthwise_conv (a loop over the taps with its own VJP), which the models use.
results/benchmarks/README.md records a run and what the package adopted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cnn_history import onednn  # noqa: E402
from cnn_history.models import layers  # noqa: E402  (sets the package's CPU XLA defaults)

# (batch, size, in, out, kernel, stride): ResNet-20 at 128, ResNet-50 at 32
DENSE = [(128, 32, 16, 16, 3, 1), (128, 16, 32, 32, 3, 1), (128, 8, 64, 64, 3, 1),
         (128, 32, 16, 32, 3, 2), (32, 56, 64, 64, 3, 1), (32, 28, 128, 128, 3, 1),
         (32, 14, 256, 256, 3, 1), (32, 56, 64, 256, 1, 1)]
# (batch, size, channels, stride): MobileNet v2 at 32
DEPTHWISE = [(32, 112, 32, 1), (32, 112, 96, 2), (32, 56, 144, 1), (32, 28, 192, 1),
             (32, 14, 576, 1), (32, 7, 960, 1)]


def timed(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def conv(layout: str, stride: int, groups: int = 1):
  spec = ('NHWC', 'HWIO', 'NHWC') if layout == 'NHWC' else ('NCHW', 'OIHW', 'NCHW')
  return lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), 'SAME',
                                                   dimension_numbers=spec,
                                                   feature_group_count=groups)


def dw_as_dots(x, dy, k: int, stride: int):
  """dW[i, j] = (window (i, j) of the padded input)^T @ dy, one matrix product per tap."""
  n, ho, wo, cout = dy.shape
  total = [max((o - 1) * stride + k - s, 0) for o, s in ((ho, x.shape[1]), (wo, x.shape[2]))]
  xp = jnp.pad(x, ((0, 0), (total[0] // 2, total[0] - total[0] // 2),
                   (total[1] // 2, total[1] - total[1] // 2), (0, 0)))
  flat_dy = dy.reshape(-1, cout)
  return jnp.stack([jnp.stack([
      xp[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride, :]
      .reshape(-1, x.shape[-1]).T @ flat_dy for j in range(k)]) for i in range(k)])


def grads_of(fn):
  return jax.jit(lambda x, w, dy: jax.vjp(fn, x, w)[1](dy))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--quick', action='store_true', help='the first two shapes of each table')
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  r = args.repeats
  print(f'{jax.devices()[0].device_kind}, XLA_FLAGS="{os.environ.get("XLA_FLAGS", "")}"\n')
  if not onednn.available():
    raise SystemExit('The oneDNN custom call is not built: python -m cnn_history.onednn')
  print('| layer (N, HxW, Cin->Cout, k, stride) | fwd | dX | dW | dW as k*k dots | NCHW fwd + '
        'dX + dW | NHWC fwd + dX + dW | oneDNN fwd | oneDNN dX | oneDNN dW |\n'
        '|---|---|---|---|---|---|---|---|---|---|')
  for n, size, cin, cout, k, s in DENSE[:2] if args.quick else DENSE:
    x = jnp.asarray(rng.normal(size=(n, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    f = conv('NHWC', s)
    dy = jnp.ones(f(x, w).shape)
    fwd = timed(jax.jit(f), x, w, repeats=r)
    dx = timed(jax.jit(lambda x, w, dy: jax.vjp(lambda x: f(x, w), x)[1](dy)), x, w, dy, repeats=r)
    dw = timed(jax.jit(lambda x, w, dy: jax.vjp(lambda w: f(x, w), w)[1](dy)), x, w, dy, repeats=r)
    dots = timed(jax.jit(lambda x, dy: dw_as_dots(x, dy, k, s)), x, dy, repeats=r)
    xc, wc, dyc = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), dy.transpose(0, 3, 1, 2)
    nchw = timed(jax.jit(lambda x, w, dy: (conv('NCHW', s)(x, w), grads_of(conv('NCHW', s))(
        x, w, dy))), xc, wc, dyc, repeats=r)
    nhwc = timed(jax.jit(lambda x, w, dy: (f(x, w), grads_of(f)(x, w, dy))), x, w, dy, repeats=r)
    geometry = ((s, s), tuple(layers._same_padding(size, k, s, 1) for _ in range(2)), (1, 1))  # pylint: disable=protected-access
    ours = [timed(jax.jit(lambda a, b, g=g, shape=shape: onednn._call(g, shape, a, b, geometry=geometry)),  # pylint: disable=protected-access
                  *args, repeats=r)
            for g, shape, args in (('forward', dy.shape, (x, w)), ('data', x.shape, (dy, w)),
                                   ('weights', w.shape, (x, dy)))]
    print(f'| {n}, {size}x{size}, {cin}->{cout}, {k}, {s} | {fwd:.1f} | {dx:.1f} | {dw:.1f} | '
          f'{dots:.1f} | {nchw:.1f} | {nhwc:.1f} | ' + ' | '.join(f'{v:.1f}' for v in ours) + ' |',
          flush=True)
  print('\n| depthwise 3x3 (N, HxW, C, stride) | lax fwd | taps fwd | lax fwd + grads | '
        'taps fwd + grads |\n|---|---|---|---|---|')
  for n, size, c, s in DEPTHWISE[:2] if args.quick else DEPTHWISE:
    x = jnp.asarray(rng.normal(size=(n, size, size, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 1, c)), jnp.float32)
    lax_dw = conv('NHWC', s, groups=c)
    taps = lambda x, w: layers.depthwise_conv(x, w, (s, s), 'SAME')  # pylint: disable=cell-var-from-loop
    dy = jnp.ones(lax_dw(x, w).shape)
    row = [timed(jax.jit(lax_dw), x, w, repeats=r), timed(jax.jit(taps), x, w, repeats=r),
           timed(grads_of(lax_dw), x, w, dy, repeats=r), timed(grads_of(taps), x, w, dy, repeats=r)]
    print(f'| {n}, {size}x{size}, {c}, {s} | ' + ' | '.join(f'{v:.1f}' for v in row) + ' |',
          flush=True)


if __name__ == '__main__':
  main()
