r"""Inception-ResNet-v2 trained as Szegedy, Ioffe, Vanhoucke & Alemi ("Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning", AAAI 2017, arXiv
1602.07261) trained it.

Recipe (papers.md §9, every number [P?]; the paper §3.3 "Scaling of the Residuals", §4
"Training Methodology"): the same as Inception-v4's (configs/inception_v4.py, whose
`inception_2016_recipe` this file applies):
  * network: the released Inception-ResNet-v2 (model `inception_resnet_v2`; the paper's figures
    differ from the released topology, see inception.py): 10 x Block35 (residual scale 0.17),
    20 x Block17 (0.10), 9 x Block8 (0.20) and a last Block8 unscaled without ReLU, BN only on the
    ordinary layers, dropout keep 0.8; 299x299 input.
  * TensorFlow, 20 replicas on NVidia Kepler GPUs; RMSProp decay 0.9, epsilon 1.0
    ('rmsprop_tf'); learning rate 0.045 x 0.94 every two epochs; evaluation with a running
    average of the parameters.
  * residual scaling (§3.3): nets with more than 1000 filters "died" early in training unless
    the residual branches were scaled by 0.1-0.3 before the addition.

Not in the paper and readings: as configs/inception_v4.py -- batch 32 per replica (640
synchronous, BN statistics over 32), RMSProp momentum 0.9, weight decay 0.00004 on the weights
(TF-slim inception_resnet_v2_arg_scope: weight_decay=0.00004, batch_norm_decay=0.9997, epsilon
0.001, batch_norm_scale=False; it also decays the biases of the residual 1x1 convs, which
weight_decay_on='kernels' leaves out), averages 0.9999^20 and 0.9997^20 per 640 examples,
Inception-v3's preprocessing, 100 epochs (the paper gives none), no label smoothing, clipping
or auxiliary head (TF-slim's model has one; the paper does not describe it).

Variants (`configs/inception_resnet_v2.py:KEY=VALUE`):
  residual_scaling=False   add the residual branches unscaled: §3.3's ablation (such wide nets
                           died early; recalled: neither a lower learning rate nor an extra BN
                           prevented it)

Run:
  python -m cnn_history.main --config=configs/inception_resnet_v2.py \
      --workdir=/tmp/inception_resnet_v2
Hardware: 20 replicas, each one NVidia Kepler GPU (no wall time given).
Target (ILSVRC-2012 validation, single crop, Table 2, papers.md §9 [P?]): 19.9% top-1 / 4.9% top-5
error (TF-slim's released checkpoint: 80.4% / 95.3% accuracy). Averaged weights: eval_ema_*.
"""

import os
import runpy

from cnn_history import config as config_lib

_V4 = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  'inception_v4.py'))


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'residual_scaling': True})
  if not isinstance(args['residual_scaling'], bool):
    raise ValueError('inception_resnet_v2: residual_scaling must be True or False, got '
                     f"{args['residual_scaling']!r}.")
  c = config_lib.default_config()
  config_lib.set_model(c, 'inception_resnet_v2', residual_scaling=args['residual_scaling'],
                       dropout_rate=0.2, **_V4['BN'])
  _V4['inception_2016_recipe'](c)
  return c
