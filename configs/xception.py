r"""Xception trained as Chollet ("Xception: Deep Learning with Depthwise Separable
Convolutions", CVPR 2017, arXiv 1610.02357) trained it on ImageNet.

Recipe (papers.md §16, all [P?]; the paper §4.3 "Optimization configuration", §4.4
"Regularization configuration", §4.5 "Training infrastructure", Table 1):
  * network: Xception (model `xception`), 299x299 input in [-1, 1].
  * ImageNet optimisation, the configuration tuned for Inception V3 and not re-tuned: SGD,
    momentum 0.9, initial learning rate 0.045, decayed at a rate of 0.94 every 2 epochs.
  * weight decay (L2) 1e-5 (Inception V3 used 4e-5, too much for Xception); dropout 0.5 before
    the logistic regression layer; no auxiliary loss tower.
  * Polyak averaging of the weights at inference.
  * TensorFlow on 60 NVIDIA K80 GPUs, synchronous data-parallel SGD for ImageNet; each
    ImageNet run took about 3 days.
  * evaluation: single crop (Table 1).

Not in the paper -- readings (each flagged where it rests on a guess):
  * Batch and epochs are not given. The configuration is Inception V3's, so its per-replica
    batch 32 (papers.md §8 [P?]) on each of the 60 GPUs: batch_size = 60 x 32 = 1920, BN
    statistics per GPU (bn_batch_span=32), and Inception V3's 100 epochs. The rate 0.045 is
    kept as stated (the paper does not relate it to the replica count).
  * Momentum form 'momentum' (TensorFlow's MomentumOptimizer: the rate outside the momentum).
  * Weight decay on conv and FC weights only (TensorFlow's L2 regularisers on kernels),
    coupled (L2 in the loss).
  * Polyak averaging: ema_decay 0.9999 per synchronous update (the decay of Google's Inception
    trainer, tensorflow/models inception MOVING_AVERAGE_DECAY); both the raw and the averaged
    weights are evaluated (eval_* and eval_ema_*).
  * BatchNorm: the model's Keras defaults (decay 0.99, epsilon 1e-3); the paper gives none.
  * Preprocessing is not described; the Inception V3 pipeline of configs/inception_v3.py
    (tensorflow/models inception: crop covering >= 10% of the image, aspect 0.75-1.33, flip,
    brightness/contrast/saturation/hue distortion, [-1, 1]); evaluation: shorter side 342,
    centre 299 crop (299/342 = 0.874, Inception's central 87.5%).

Run:
  python -m cnn_history.main --config=configs/xception.py --workdir=/tmp/xception
Hardware: 60 NVIDIA K80 GPUs, TensorFlow, synchronous SGD, ~3 days.
Target (Table 1, ILSVRC-2012 validation, single crop, papers.md §16 [P?]): 0.790 top-1 / 0.945
top-5 accuracy (Inception V3 in the same setting: 0.782 / 0.941).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

GPUS = 60
PER_GPU_BATCH = 32   # Inception V3's per-replica batch (the configuration Xception reuses)
SIZE = 299


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f'xception: the config has no variants (got {arg!r}); change fields with '
                     '--config.<field>=... instead.')
  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'xception', dropout_rate=0.5, bn_batch_span=PER_GPU_BATCH)

  unit = recipes.to_unit_range()
  c.data.train_preprocess = recipes.slim_inception_train(SIZE, fast_mode=False, post=unit)
  c.data.eval_preprocess = f'resize_small(342)|center_crop({SIZE})|{unit}'

  c.batch_size = GPUS * PER_GPU_BATCH
  c.num_epochs = 100
  c.optimizer.name = 'momentum'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-5
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.045
  c.schedule.decay_factor = 0.94
  c.schedule.decay_every = 2.0
  c.schedule.staircase = True
  c.ema_decay = 0.9999
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
