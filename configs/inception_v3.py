r"""Inception-v3 trained as Szegedy, Vanhoucke, Ioffe, Shlens & Wojna ("Rethinking the Inception
Architecture for Computer Vision", CVPR 2016, arXiv 1512.00567) trained it.

Recipe (papers.md §8, the optimiser details [P?]; the paper §7 "Label smoothing", §8
"Training Methodology", Table 3):
  * network: the released Inception-v3 (model `inception_v3`), 299x299 input, with the
    BN-auxiliary head on the last 17x17 layer; dropout before the classifier (keep 0.8).
  * TensorFlow, 50 replicas on NVidia Kepler GPUs, batch 32 per replica, 100 epochs.
  * RMSProp with decay 0.9 and epsilon 1.0 (TensorFlow's form: optimizer 'rmsprop_tf');
    learning rate 0.045, decayed every two epochs by an exponential rate of 0.94; gradient
    clipping with threshold 2.0; evaluation with a running average of the parameters.
  * label smoothing epsilon 0.1 (the uniform prior u(k) = 1/1000: q' = 0.9 q + 0.1/1000).
  * evaluation: single 299x299 crop (Table 3); 12 and 144 crops (Table 4).

Not in the paper, taken from Google's release of this trainer -- tensorflow/models
inception/inception (inception_model.py, inception_train.py, image_processing.py; read and
verified):
  * auxiliary loss weight 0.4 (the paper gives none; inception_model.loss: weight=0.4, with
    the same label smoothing 0.1 -- TF-slim's train_image_classifier uses 0.4 too);
  * weight decay 0.00004 on conv and FC weights, as L2 in the loss (coupled, kernels only);
  * RMSProp momentum 0.9 (RMSPROP_MOMENTUM);
  * BatchNorm: decay 0.9997, epsilon 0.001; no learned scale (bn_scale=False), as TF-slim's
    and Keras's Inception-v3 build it (papers.md §8, inception.py);
  * moving average of the weights: MOVING_AVERAGE_DECAY = 0.9999;
  * training images: a random crop covering >= 10% of the image (sample_distorted_bounding_box
    with min_object_covered 0.1, area_range [0.05, 1], aspect ratio [0.75, 1.33]; without
    bounding boxes the coverage bound makes the area range [0.1, 1]), resized to 299, a random
    flip, colour distortion (brightness +-32/255, saturation and contrast x[0.5, 1.5], hue
    +-0.2), pixels scaled to [-1, 1]; evaluation: the central 87.5% of the image resized to
    299.

Readings:
  * Replicas -> one synchronous batch: batch_size = 32 x 50 = 1600, BN statistics over each
    replica's 32 (bn_batch_span=32). The learning rate 0.045 is kept as stated (RMSProp
    normalises the step; the paper's replicas applied it per 32-example gradient, 50 times
    as often -- the paper does not say how its rate relates to the replica count).
  * The per-update averages of the asynchronous original are converted to one update per
    1600 examples, keeping their horizon in examples: BN running statistics 0.9997^50 =
    0.9851, weight average 0.9999^50 = 0.9950.
  * Gradient clipping: by global norm (the paper does not say which norm), of the loss gradient
    before the L2 term is added (optim.py's chain; TF clipped the total loss's gradient).
  * Colour distortion: our color_jitter scales brightness by a factor (PIL-style), TF adds a
    delta; +-32/255 on a mid-grey pixel is about +-25%, so brightness 0.25; one fixed order
    (TF alternates two orders); bilinear resizing (TF round-robins four methods).
  * Evaluation crop: resize_small(342)|center_crop(299) (torchvision's; 299/342 = 0.874), not
    TF's aspect-distorting central 87.5% resize. 12/144-crop protocols are not described in
    enough detail to encode.

Variants (`configs/inception_v3.py:KEY=VALUE`):
  aux_weight=0.4   the auxiliary head's loss weight; 0 switches the head off (no Table 3 row:
                   the rows before its last keep an auxiliary head, without BN in the FC)

Run:
  python -m cnn_history.main --config=configs/inception_v3.py --workdir=/tmp/inception_v3
Hardware: 50 replicas, each one NVidia Kepler GPU, TensorFlow (no wall time given).
Target (ILSVRC-2012 validation, single crop, papers.md §8 [P✓]): 21.2% top-1 / 5.6% top-5 error
(21.2 / 5.6 is the paper's full model, Table 3's last row; the averaged weights: eval_ema_*).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

REPLICAS = 50
PER_REPLICA_BATCH = 32


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'aux_weight': 0.4})
  aux_weight = args['aux_weight']
  if not isinstance(aux_weight, (int, float)) or aux_weight < 0:
    raise ValueError(f'inception_v3: aux_weight must be a number >= 0, got {aux_weight!r}.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'inception_v3', aux_logits=aux_weight > 0, dropout_rate=0.2,
                       bn_scale=False, bn_momentum=0.9997 ** REPLICAS, bn_epsilon=1e-3,
                       bn_batch_span=PER_REPLICA_BATCH)
  c.loss.aux_weights = (float(aux_weight),) if aux_weight > 0 else ()
  c.loss.label_smoothing = 0.1
  c.loss.label_smoothing_form = 'uniform'

  c.data.train_preprocess = recipes.slim_inception_train(299, fast_mode=False)
  c.data.eval_preprocess = f'resize_small(342)|center_crop(299)|{recipes.to_unit_range()}'

  c.batch_size = REPLICAS * PER_REPLICA_BATCH
  c.num_epochs = 100
  c.optimizer.name = 'rmsprop_tf'
  c.optimizer.decay = 0.9
  c.optimizer.momentum = 0.9
  c.optimizer.eps = 1.0
  c.optimizer.grad_clip_norm = 2.0
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
  return c
