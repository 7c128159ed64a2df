r"""Training-set statistics for AlexNet-style preprocessing: the per-pixel mean image and the
eigen-decomposition of the RGB pixel covariance (for PCA "lighting" augmentation).

  python -m cnn_history.data.stats --config=configs/alexnet.py --out=DIR \
      [--preprocess='resize_small(256)|center_crop(256)'] [--max_examples=N]

Writes DIR/mean.npy (the mean image after `preprocess`, for subtract_mean_image(...)) and
DIR/pca.json (eigval, eigvec rows, of RGB pixels scaled to [0, 1], for lighting(...)).
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cnn_history.data import pipeline, sources

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A config whose data to read.')
_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_PREPROCESS = flags.DEFINE_string('preprocess', 'resize_small(256)|center_crop(256)',
                                  'Ops giving fixed-size images (AlexNet: 256x256).')
_MAX = flags.DEFINE_integer('max_examples', -1, 'Use at most this many training images.')


def compute(split: sources.Split, preprocess: str, batch_size: int = 256,
            max_examples: int = -1) -> dict[str, np.ndarray]:
  """Mean image, and eigenvalues/vectors (descending, rows) of the pixel covariance in [0, 1]."""
  total, count = None, 0
  second = np.zeros((split.image_shape[-1],) * 2)
  first = np.zeros(split.image_shape[-1])
  pixels = 0
  start = time.time()
  for batch in pipeline.eval_batches(split, preprocess, batch_size, 0, pipeline.HostSlice(0, 1)):
    images = batch['image'][batch['mask'] > 0].astype(np.float64)
    if max_examples > 0:
      images = images[:max(0, max_examples - count)]
    if not len(images):
      break
    total = images.sum(0) if total is None else total + images.sum(0)
    flat = images.reshape(-1, images.shape[-1]) / 255.0
    first += flat.sum(0)
    second += flat.T @ flat
    pixels += len(flat)
    count += len(images)
    if count % (50 * batch_size) < batch_size:
      logging.info('%d images, %.0f images/s', count, count / (time.time() - start))
  mean_pixel = first / pixels
  covariance = second / pixels - np.outer(mean_pixel, mean_pixel)
  eigval, eigvec = np.linalg.eigh(covariance)
  order = np.argsort(eigval)[::-1]
  return {'mean_image': (total / count).astype(np.float32), 'eigval': eigval[order],
          'eigvec': eigvec[:, order].T, 'count': count}


def main(argv):
  del argv
  config = _CONFIG.value
  split = sources.load_split(config.data, config.data.train_split, config.seed)
  stats = compute(split, _PREPROCESS.value, max_examples=_MAX.value)
  os.makedirs(_OUT.value, exist_ok=True)
  np.save(os.path.join(_OUT.value, 'mean.npy'), stats['mean_image'])
  with open(os.path.join(_OUT.value, 'pca.json'), 'w') as f:
    json.dump({'eigval': stats['eigval'].tolist(), 'eigvec': stats['eigvec'].tolist(),
               'images': stats['count'], 'preprocess': _PREPROCESS.value}, f, indent=2)
  print(f'{stats["count"]} images: mean.npy {stats["mean_image"].shape}, eigval '
        f'{np.round(stats["eigval"], 4).tolist()}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
