r"""Writes a class-per-folder tree of synthetic JPEGs shaped like ImageNet's, for timing the
JPEG-decoding input pipeline offline (config.data.source='folder').

  python benchmarks/jpeg_folder.py --out /tmp/jpegs [--classes 10] [--per-class 100] \
      [--size 500x375] [--quality 90]

Each image is smooth random colour fields plus fine noise (natural images' mix of low and high
frequencies): at 500x375 and quality 90 the files are ~60-100 KB, near ImageNet's average
(~110 KB at 400x350 on average). Then, e.g.:

  python -m cnn_history.benchmark --config configs/resnet50.py --batch 32 \
      --set data.source=folder --set data.path=/tmp/jpegs --set data.in_memory=no
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import tensorflow as tf


def image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.float32)
  smooth = tf.image.resize(coarse[None], (height, width), method='bicubic')[0].numpy()
  noisy = smooth + rng.normal(0, 12, (height, width, 3))
  return np.clip(noisy, 0, 255).astype(np.uint8)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--classes', type=int, default=10)
  parser.add_argument('--per-class', type=int, default=100)
  parser.add_argument('--size', default='500x375', help='WIDTHxHEIGHT')
  parser.add_argument('--quality', type=int, default=90)
  parser.add_argument('--splits', default='train,test')
  args = parser.parse_args()
  width, height = (int(v) for v in args.size.split('x'))
  rng = np.random.default_rng(0)
  total = 0
  for split in args.splits.split(','):
    for c in range(args.classes):
      folder = os.path.join(args.out, split, f'class_{c:03d}')
      os.makedirs(folder, exist_ok=True)
      for i in range(args.per_class):
        data = tf.io.encode_jpeg(image(rng, height, width), quality=args.quality).numpy()
        with open(os.path.join(folder, f'{i:05d}.jpg'), 'wb') as f:
          f.write(data)
        total += len(data)
  count = len(args.splits.split(',')) * args.classes * args.per_class
  print(f'wrote {count} JPEGs ({width}x{height}, {total / count / 1024:.0f} KB on average) '
        f'under {args.out}')


if __name__ == '__main__':
  main()
