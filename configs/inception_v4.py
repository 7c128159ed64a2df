r"""Inception-v4 trained as Szegedy, Ioffe, Vanhoucke & Alemi ("Inception-v4, Inception-ResNet
and the Impact of Residual Connections on Learning", AAAI 2017, arXiv 1602.07261) trained it.

Recipe (papers.md §9, every number [P?]; the paper §4 "Training Methodology"):
  * network: Figs. 3-9 (model `inception_v4`): the stem of Fig. 3, 4 x Inception-A,
    Reduction-A, 7 x Inception-B, Reduction-B, 3 x Inception-C, average pooling, dropout
    (keep 0.8), softmax; 299x299 input.
  * "stochastic gradient utilizing the TensorFlow distributed machine learning system using
    20 replicas running each on a NVidia Kepler GPU"; earlier experiments momentum 0.9; the
    best models RMSProp with decay 0.9 and epsilon 1.0 (optimizer 'rmsprop_tf'); learning rate
    0.045, decayed every two epochs by an exponential rate of 0.94; evaluation with a running
    average of the parameters.
  * evaluation: single crop (Table 2), 12 crops (Table 3), 144 crops (Table 4).

Not in the paper; from the same group's released code (see configs/inception_v3.py, which
quotes tensorflow/models inception/inception):
  * batch 32 per replica (Inception-v3's), so a synchronous batch of 32 x 20 = 640 with BN
    statistics over each replica's 32 (bn_batch_span=32);
  * RMSProp momentum 0.9; weight decay 0.00004 on the weights (TF-slim inception_v4 uses
    inception_utils.inception_arg_scope: weight_decay=0.00004, BN decay 0.9997, epsilon 0.001,
    no learned BN scale -> bn_scale=False);
  * weight average 0.9999 and BN decay 0.9997 per replica update, converted to one update per
    640 examples at the same horizon in examples: 0.9999^20 = 0.9980, 0.9997^20 = 0.9940;
  * preprocessing as Inception-v3's release (configs/inception_v3.py: crop covering >= 10% of
    the image, flip, colour distortion, [-1, 1]; evaluation resize 342, centre 299).

Readings:
  * Training length: the paper gives no epoch count; 100 epochs (Inception-v3's). Its
    training-curve figures are the only hint; `--config.num_epochs` extends the run.
  * Label smoothing, gradient clipping and auxiliary heads (all in Inception-v3's recipe) are
    not mentioned for these networks and are off; the model has no auxiliary head (TF-slim's
    inception_v4 adds one).
  * The learning rate 0.045 is kept for the 640 batch (as in configs/inception_v3.py).

Variants: none (`configs/inception_v4.py`).

Run:
  python -m cnn_history.main --config=configs/inception_v4.py --workdir=/tmp/inception_v4
Hardware: 20 replicas, each one NVidia Kepler GPU (no wall time given).
Target (ILSVRC-2012 validation, single crop, Table 2, papers.md §9 [P?]): 20.0% top-1 / 5.0% top-5
error (TF-slim's released checkpoint: 80.2% / 95.2% accuracy). Averaged weights: eval_ema_*.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

REPLICAS = 20
PER_REPLICA_BATCH = 32

TRAIN_PREPROCESS = recipes.slim_inception_train(299, fast_mode=False)
EVAL_PREPROCESS = f'resize_small(342)|center_crop(299)|{recipes.to_unit_range()}'


def inception_2016_recipe(c) -> None:
  """The training recipe the paper states for Inception-v4 and Inception-ResNet (§4), with the
  readings above; the model is set by the caller."""
  recipes.imagenet(c)
  c.data.train_preprocess = TRAIN_PREPROCESS
  c.data.eval_preprocess = EVAL_PREPROCESS
  c.batch_size = REPLICAS * PER_REPLICA_BATCH
  c.num_epochs = 100
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.decay = 0.9
  c.optimizer.momentum = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.weight_decay = 4e-5
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.045
  c.schedule.decay_factor = 0.94
  c.schedule.decay_every = 2.0
  c.schedule.staircase = True
  c.ema_decay = 0.9999 ** REPLICAS
  c.eval_every_epochs = 1.0


BN = dict(bn_scale=False, bn_momentum=0.9997 ** REPLICAS, bn_epsilon=1e-3,
          bn_batch_span=PER_REPLICA_BATCH)


def get_config(arg: str | None = None):
  config_lib.parse_arg(arg, {})    # no variants: any argument is an error that says so
  c = config_lib.default_config()
  config_lib.set_model(c, 'inception_v4', dropout_rate=0.2, **BN)
  inception_2016_recipe(c)
  return c
