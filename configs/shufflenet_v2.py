r"""ShuffleNet V2 trained as Ma, Zhang, Zheng & Sun ("ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design", ECCV 2018, arXiv 1807.11164) trained it.

Recipe (papers.md §22; the training settings there are [R?], not checked against the paper):
  * network: Table 5 at width 0.5x, 1x, 1.5x, 2x (models `shufflenet_v2_x0_5` ... `_x2_0`);
    224x224 input.
  * training follows ShuffleNet v1 (papers.md §22 [R?]): batch 1024, a learning rate decayed
    linearly from 0.5 to 0, weight decay 4e-5, 3 x 10^5 iterations; the rest as ResNeXt /
    fb.resnet.torch (configs/shufflenet_v1.py): SGD with Nesterov momentum 0.9, random-sized
    crop, colour jitter 0.4, lighting 0.1, flip, ImageNet mean/std normalisation, weight decay
    on every parameter.
  * evaluation: single 224 centre crop of the image scaled to 256 (as v1).

Readings (those of configs/shufflenet_v1.py, whose recipe this is):
  * Batch 1024 on 4 GPUs (v1's hardware) -> BN statistics over 256 (bn_batch_span=256); BN decay
    0.9, epsilon 1e-5 (the model's torchvision-matching defaults).
  * Rate 0.5 (1 - t / 300,000) per step; 300,000 steps of 1024 = 239.8 epochs.
  * v1's "slightly less aggressive scale augmentation": the smallest crop covers
    SMALLEST_CROP = 25% of the image (no bound is given).
  * Megvii's release (megvii-model/ShuffleNet-Series: batch 1024, rate 0.5 linear to 0 over
    300,000 iterations, weight decay 4e-5, read in its ShuffleNetV1 trainer) also uses label
    smoothing 0.1 and no lighting noise; not stated for the paper, not used
    (--config.loss.label_smoothing=0.1 adds it).

Variants (`configs/shufflenet_v2.py:width=1.0`):
  width=0.5|1.0|1.5|2.0     Table 5's columns (also written x0_5, x1_0, x1_5, x2_0)

Run:
  python -m cnn_history.main --config=configs/shufflenet_v2.py:width=1.0 --workdir=/tmp/snv2
Hardware: not given in papers.md (v1: 4 GPUs, 1-2 days).
Target (ImageNet validation top-1 error, 224 centre crop, papers.md §22): 0.5x 39.7%, 1x
30.6%, 1.5x 27.4%, 2x 25.1% [P?]; Megvii's retrained models 38.9 / 30.6 / 27.4 / 25.0
[V:README] (TARGET_TOP1_ERROR: the paper's).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

WIDTHS = {0.5: 'shufflenet_v2_x0_5', 1.0: 'shufflenet_v2_x1_0', 1.5: 'shufflenet_v2_x1_5',
          2.0: 'shufflenet_v2_x2_0'}
GPUS = 4
SMALLEST_CROP = 0.25   # our bound for v1's "slightly less aggressive scale augmentation"
TARGET_TOP1_ERROR = {0.5: 39.7, 1.0: 30.6, 1.5: 27.4, 2.0: 25.1}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'width': 1.0})
  width = args['width']
  if isinstance(width, str):  # the registry's spelling: x0_5, x1_0, x1_5, x2_0
    width = next((w for w, name in WIDTHS.items() if name.endswith('_' + width)), width)
  if isinstance(width, bool) or width not in WIDTHS:
    raise ValueError(f'shufflenet_v2: width={args["width"]!r} is not one of Table 5\'s '
                     f'{", ".join(map(str, WIDTHS))} (or x0_5, x1_0, x1_5, x2_0).')

  c = config_lib.default_config()
  recipes.imagenet(c)
  c.batch_size = 1024
  config_lib.set_model(c, WIDTHS[width], bn_momentum=0.9, bn_epsilon=1e-5,
                       bn_batch_span=c.batch_size // GPUS)

  norm = recipes.normalize()
  c.data.train_preprocess = recipes.fb_resnet_torch_train(224, SMALLEST_CROP, norm)
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{norm}'

  c.num_steps = 300_000
  c.optimizer.name = 'nesterov'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 4e-5
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'polynomial'
  c.schedule.unit = 'steps'
  c.schedule.learning_rate = 0.5
  c.schedule.power = 1.0
  c.schedule.end_learning_rate = 0.0
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
