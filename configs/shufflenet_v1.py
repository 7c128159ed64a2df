r"""ShuffleNet (v1) trained as Zhang, Zhou, Lin & Sun ("ShuffleNet: An Extremely Efficient
Convolutional Neural Network for Mobile Devices", CVPR 2018, arXiv 1707.01083) trained it.

Recipe (papers.md §21, all [P?]; the paper §4 "Experiments", Tables 1, 2 and 5):
  * network: Table 1 with g groups (models `shufflenet_v1_g1` ... `_g8`) at scale factor s
    ("ShuffleNet s x": channels times s); 224x224 input.
  * "We generally follow the settings of ResNeXt for ImageNet training" with two exceptions:
    weight decay 4e-5 instead of 1e-4 and a linear-decay learning-rate policy (0.5 -> 0);
    "slightly less aggressive scale augmentation" (such small networks underfit).
  * 3 x 10^5 iterations on 4 GPUs, batch size 1024 (1 or 2 days).
  * evaluation: single 224x224 centre crop of the image scaled to 256.

ResNeXt's settings (Xie et al. 2017, built on fb.resnet.torch): SGD with Nesterov momentum 0.9
(fb.resnet.torch: nesterov, no dampening), He initialisation, fb.resnet.torch's augmentation
-- random-sized crop (8-100% of the area, aspect 3/4-4/3), colour jitter (brightness,
contrast, saturation 0.4), AlexNet lighting noise 0.1, flip -- and ImageNet mean/std
normalisation; BN statistics per GPU; weight decay on every parameter (Torch decays the flat
parameter vector).

Readings:
  * Batch 1024 on 4 GPUs -> 256 per GPU: bn_batch_span=256. BN decay 0.9 (Torch's momentum
    0.1), epsilon 1e-5 (the model's PyTorch defaults).
  * The schedule is the paper's, in iterations: rate 0.5 (1 - t / 300,000) per step
    (polynomial, power 1), 300,000 steps of 1024 = 239.8 epochs.
  * "Slightly less aggressive scale augmentation": no bound is given; the smallest crop
    covers SMALLEST_CROP = 25% of the image instead of 8% (colour jitter and lighting kept).
  * Megvii's later release (megvii-model/ShuffleNet-Series, ShuffleNetV1/train.py, read) adds
    label smoothing 0.1, no lighting, BGR 0-255 inputs and a final BN-statistics pass; not
    the paper's, not used.
  * The colour jitter applies its factors in a fixed order (Torch: random order).

Variants (`configs/shufflenet_v1.py:groups=8,scale=1.0`):
  groups=1|2|3|4|8          g (Table 2)
  scale=0.25|0.5|1.0|1.5|2.0 s (Tables 2 and 5); combinations whose channels do not split into
                            g groups are refused with the valid scales for that g

Run:
  python -m cnn_history.main --config=configs/shufflenet_v1.py:groups=3 --workdir=/tmp/shufflenet
Hardware: 4 GPUs, 1 or 2 days for 3 x 10^5 iterations.
Target (ImageNet validation top-1 error, 224 centre crop, papers.md §21 [P?]): 1x: g=1 33.6%,
g=2 32.7%, g=3 32.6%, g=4 32.8%, g=8 32.4%; 2x (g=3) 26.3%; 1.5x (g=3) 28.5%; 0.25x (g=8)
52.7% (TARGET_TOP1_ERROR); also 0.5x (g=4) 41.6%, a network the model refuses (0.5 x Table 1's
g=4 channels do not split into 4 groups; the paper does not say how it rounded them).
Megvii's re-training [V:README]: 1x g=3 32.2, 1x g=8 32.0, 2x g=3 25.9.
"""

from cnn_history import config as config_lib
from cnn_history import recipes
from cnn_history.models import shufflenet

GPUS = 4
SMALLEST_CROP = 0.25   # our bound for "slightly less aggressive scale augmentation" (0.08)
TARGET_TOP1_ERROR = {(1, 1.0): 33.6, (2, 1.0): 32.7, (3, 1.0): 32.6, (4, 1.0): 32.8,
                     (8, 1.0): 32.4, (3, 2.0): 26.3, (3, 1.5): 28.5, (8, 0.25): 52.7}


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'groups': 3, 'scale': 1.0})
  groups, scale = args['groups'], args['scale']
  if type(groups) is not int or groups not in shufflenet.V1_STAGE_CHANNELS:
    raise ValueError(f'shufflenet_v1: groups={groups!r} is not one of Table 1\'s '
                     f'{", ".join(map(str, shufflenet.V1_STAGE_CHANNELS))}.')
  if scale not in shufflenet.V1_SCALE_FACTORS:
    raise ValueError(f'shufflenet_v1: scale={scale!r} is not one of '
                     f'{", ".join(map(str, shufflenet.V1_SCALE_FACTORS))}.')
  shufflenet.v1_stage_channels(groups, float(scale))  # refuses combinations the paper lacks

  c = config_lib.default_config()
  recipes.imagenet(c)
  c.batch_size = 1024
  config_lib.set_model(c, f'shufflenet_v1_g{groups}', scale_factor=float(scale),
                       bn_momentum=0.9, bn_epsilon=1e-5, bn_batch_span=c.batch_size // GPUS)

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
