"""SPPNet — He, Zhang, Ren & Sun, "Spatial Pyramid Pooling in Deep Convolutional Networks for
Visual Recognition", ECCV 2014 / TPAMI 2015; papers.md §10.

What this file encodes:
  The SPP layer (§2.3) replaces the last pooling layer: the conv5 map (a x a) is max-pooled into
    n x n bins for every level n of the pyramid, window ceil(a/n), stride floor(a/n), and the
    bins are concatenated (layers.spatial_pyramid_pool). The ImageNet pyramid is {6x6, 3x3,
    2x2, 1x1}: 50 bins x 256 maps = 12,800 inputs to FC6 whatever the image size, so one set
    of weights serves every input size.
  The trunk is ZF-5, the five conv layers of Zeiler & Fergus's net (ZFNET in alexnet.py, with
    LRN after conv1 and conv2): 224 -> conv5 13x13; the paper's second training size, 180,
    gives 10x10. Then FC6 4096, FC7 4096 (ReLU, dropout 0.5 after each) and FC8.
  77,037,672 parameters (the arithmetic is written out in tests/models/test_sppnet.py) and
    1,182.7M MACs at 224 (1,109.4M in the convs, 73.3M in the FC layers).
  Multi-size training (§2.3) alternates whole epochs between 224x224 crops and the same crops
    resized to 180x180, with the same network: a data-pipeline choice, which this model
    allows (fixed_input=False).
  The paper's full-image and multi-view tests run the same network on larger images.
  There is no reference implementation (torchvision/timm/Keras); init follows ZFNet
    (N(0, 0.01^2), zero biases).

Switches:
  levels        the pyramid (bins per side). (4, 3, 2, 1) is the 30-bin pyramid with which the
                paper shows the gain is not from FC6's size (fewer inputs than ZFNet's 6x6
                pool5; recalled, papers.md has it unverified); (6,) is a single 6x6 level,
                at 224 the same windows as ZFNet's pool5 (the "no SPP" baseline).
  lrn           LRN after conv1 and conv2 (ZF-5)
  dropout_rate  after the ReLUs of FC6 and FC7
  initializer   'paper' (N(0, 0.01^2), zero biases) | 'he'
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_history.models import layers
from cnn_history.models.alexnet import (KERNEL_INITS, ZFNET, check_choice, classifier_head,
                                        conv_stack)
from cnn_history.models.registry import register

# ZF-5: ZFNet's conv layers, with the pyramid in place of conv5's pooling.
ZF_5 = ZFNET[:-1] + (ZFNET[-1]._replace(pool=False),)

PYRAMID = (6, 3, 2, 1)  # ImageNet: 50 bins


@register('sppnet', paper='He, Zhang, Ren & Sun, ECCV 2014', year=2014,
          input_shape=(224, 224, 3), expected_params=77_037_672, expected_macs=1_182_712_960,
          source='arithmetic of ZF-5 + SPP {6,3,2,1} (tests/models/test_sppnet.py)',
          paper_params='not given', paper_macs='not given')
class SPPNet(nn.Module):
  """ZF-5 with a spatial pyramid pooling layer: one set of weights, any input size."""
  num_classes: int = 1000
  dtype: Any = jnp.float32
  levels: tuple[int, ...] = PYRAMID   # bins per side of each pyramid level
  lrn: bool = True                    # after conv1 and conv2, as ZF-5
  dropout_rate: float = 0.5           # after the ReLUs of FC6 and FC7
  initializer: str = 'paper'          # 'paper': N(0, 0.01^2), zero biases | 'he'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    check_choice('sppnet', 'initializer', self.initializer, ('paper', 'he'))
    if not self.levels or any(not isinstance(n, int) or n < 1 for n in self.levels):
      raise ValueError(f'sppnet: levels must be positive bin counts, e.g. {PYRAMID}; got '
                       f'{self.levels!r}.')
    kernel_init = KERNEL_INITS[self.initializer]
    x = conv_stack(x.astype(self.dtype), ZF_5, lrn=self.lrn, pool_window=3, pool_stride=2,
                   pool_ceil_mode=True, kernel_init=kernel_init, paper_biases=False,
                   dtype=self.dtype)
    x = layers.spatial_pyramid_pool(x, tuple(self.levels))
    logits, features = classifier_head(x, self.num_classes, train=train,
                                       dropout_rate=self.dropout_rate, kernel_init=kernel_init,
                                       dtype=self.dtype)
    self.sow('intermediates', 'features', features)
    return logits
