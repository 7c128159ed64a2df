r"""NASNet-A Mobile (4 @ 1056) and Large (6 @ 4032) trained as Zoph, Vasudevan, Shlens & Le
("Learning Transferable Architectures for Scalable Image Recognition", CVPR 2018, arXiv
1707.07012) trained them on ImageNet.

UNVERIFIED RECIPE. papers.md §23 marks the whole training recipe [R?] ("check the paper's
appendix before relying on these values"); the numbers below are the training notes that
TF-slim's nets/nasnet/nasnet.py (the authors' release, read) prints above its ImageNet configs,
which we take as the documented reading. None of them has been checked against the paper.

  Large (`variant=large`, model `nasnet_a_large`, 331x331):
    batch 16 per replica, synchronous SGD over 100 replicas; learning rate 0.015 x 100;
    decay factor 0.97 every 2.4 epochs; auxiliary head loss weight 0.4; label smoothing 0.1;
    gradients clipped to global norm 10; weight decay 5e-5 (nasnet_large_arg_scope);
    ScheduledDropPath with keep probability 0.7 (drop_path_keep_prob) over
    total_training_steps = 250,000; dropout keep 0.5 before the classifier.
  Mobile (`variant=mobile`, model `nasnet_a_mobile`, 224x224):
    batch 32 per replica over 50 replicas; learning rate 0.04 x 50; 0.97 every 2.4 epochs;
    auxiliary weight 0.4; label smoothing 0.1; clip 10; weight decay 4e-5; no drop path
    (keep 1.0); dropout keep 0.5; total_training_steps = 250,000.
  Both: BN decay 0.9997, epsilon 1e-3 (the arg scopes); He fan-out initialisation; weight decay
  as slim L2 regularisers on conv, separable and FC weights.

Further readings:
  * Optimiser: the notes name none; RMSProp in TensorFlow's form with decay 0.9, momentum 0.9,
    epsilon 1.0 -- TF-slim train_image_classifier's defaults and papers.md §23's "RMSProp
    (eps 1, decay 0.9)" [R?].
  * Replicas -> one synchronous batch: batch_size 1600 (16 x 100; 32 x 50), BN statistics
    per replica (bn_batch_span 16 / 32), the learning rate the notes' product (1.5; 2.0),
    BN decay and gradient clipping per synchronous update.
  * Length: total_training_steps = 250,000 updates of 1600 = 312 epochs; the decay counts
    epochs (TF-slim divides decay steps by the replicas aggregated).
  * ScheduledDropPath: the drop probability rises linearly from 0 at the first step to its
    final value at the last (TF-slim: keep = 1 - (step / total_training_steps) (1 - keep)),
    config.model.ramp = ('drop_path_rate',); the model scales it per cell as TF-slim does,
    cell i of T at rate (i + 1) / T. Large ends at 0.3; Mobile has none.
  * Label smoothing in TensorFlow's form (eps / K added to every class: 'uniform').
  * Preprocessing: TF-slim's Inception preprocessing in training mode (fast_mode): a crop
    covering >= 10% of the image (aspect 3/4-4/3) resized bilinearly, a flip, brightness
    +-32/255 (a factor 1 +- 0.25 here) and saturation x[0.5, 1.5], pixels in [-1, 1].
    Evaluation: shorter side round(r / 0.875), centre r crop (Inception's central 87.5%).
  * No moving average of the weights (none in the notes).

Variants (`configs/nasnet.py:variant=large`):
  variant=mobile|large

Run:
  python -m cnn_history.main --config=configs/nasnet.py:variant=mobile --workdir=/tmp/nasnet_m
Hardware: 50 (Mobile) / 100 (Large) synchronous replicas (TF-slim's notes; the paper's GPU
model and time are not in papers.md).
Target (ImageNet validation, single crop, top-1 / top-5, papers.md §23 [P✓:README]): Mobile
74.0 / 91.6 at 224; Large 82.7 / 96.2 at 331.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

# TF-slim nasnet.py training notes (per variant): replicas, batch per replica, rate per replica,
# weight decay, drop-path keep probability (final, ScheduledDropPath), resolution.
VARIANTS = {
    'mobile': dict(model='nasnet_a_mobile', replicas=50, per_replica_batch=32,
                   rate_per_replica=0.04, weight_decay=4e-5, drop_path_keep=1.0, size=224),
    'large': dict(model='nasnet_a_large', replicas=100, per_replica_batch=16,
                  rate_per_replica=0.015, weight_decay=5e-5, drop_path_keep=0.7, size=331),
}
TOTAL_TRAINING_STEPS = 250_000
AUX_WEIGHT = 0.4


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'variant': 'mobile'})
  if args['variant'] not in VARIANTS:
    raise ValueError(f"nasnet: variant={args['variant']!r} is not one of "
                     f"{', '.join(VARIANTS)}.")
  v = VARIANTS[args['variant']]
  size = v['size']

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, v['model'], aux_logits=True, dropout_rate=0.5,
                       drop_path_rate=round(1.0 - v['drop_path_keep'], 6),
                       reduction_pool_padding='same', bn_momentum=0.9997, bn_epsilon=1e-3,
                       bn_batch_span=v['per_replica_batch'])
  if v['drop_path_keep'] < 1.0:
    c.model.ramp = ('drop_path_rate',)  # ScheduledDropPath
  c.loss.aux_weights = (AUX_WEIGHT,)
  c.loss.label_smoothing = 0.1
  c.loss.label_smoothing_form = 'uniform'

  unit = recipes.to_unit_range()
  c.data.train_preprocess = recipes.slim_inception_train(size, post=unit)
  c.data.eval_preprocess = f'resize_small({round(size / 0.875)})|center_crop({size})|{unit}'

  c.batch_size = v['replicas'] * v['per_replica_batch']
  c.num_steps = TOTAL_TRAINING_STEPS
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.decay = 0.9
  c.optimizer.momentum = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.grad_clip_norm = 10.0
  c.optimizer.weight_decay = v['weight_decay']
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'exponential'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = v['rate_per_replica'] * v['replicas']
  c.schedule.decay_factor = 0.97
  c.schedule.decay_every = 2.4
  c.schedule.staircase = True
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  if args['variant'] == 'large':
    c.eval_batch_size = 250
  return c
