r"""SPP-net (ZF-5 backbone) trained as He, Zhang, Ren & Sun ("Spatial Pyramid Pooling in Deep
Convolutional Networks for Visual Recognition", ECCV 2014 / TPAMI 2015) trained it.

Recipe (papers.md §10, every number [P?]; the paper §3.1 "Experiments on ImageNet 2012
Classification"):
  * network: ZF-5 (the five conv layers of Zeiler & Fergus's net, LRN after conv1/conv2) with
    a 4-level pyramid {6x6, 3x3, 2x2, 1x1} (50 bins x 256 maps) in place of pool5, then FC6
    4096, FC7 4096 (dropout 0.5 after each), FC8 (model `sppnet`).
  * training "follows the previous work" (AlexNet, ZFNet, Overfeat): images resized so that
    the smaller side is 256, a 224x224 crop picked from the centre or the four corners of the
    whole image, horizontal flips and colour altering (AlexNet's PCA lighting), dropout on the
    two FC layers; learning rate 0.01, divided by 10 twice when the error plateaus.
  * multi-size training (§2.3): whole epochs alternate between 224x224 crops and the same crops
    resized to 180x180, with the same weights.
  * testing: single view (centre 224 crop), 10 views (corners + centre, flips), the full image
    (shorter side 256, aspect kept), and multi-view on the feature maps: 6 scales
    {224, 256, 300, 360, 448, 560}, 18 views each (centre, 4 corners, 4 edge centres, x flip;
    6 distinct views at 224), 96 in all.

Readings where the paper is silent or the codebase cannot follow it:
  * Multi-size training (`size=multi`, the default) is config.data.train_preprocess_cycle:
    epoch e uses the 224 preprocessing when e is even and the same crops resized to 180 when
    it is odd; the trainer compiles one step for each of the two shapes, and the weights,
    optimizer state and plateau rule carry across. The paper says "switch to the other network
    after each full epoch" (its two networks share weights). `size=224` and `size=180` train
    on one size alone (single-size training is the paper's 224 baseline).
  * Batch 128, momentum 0.9, weight decay 0.0005 (coupled, every weight), the 'sgd_caffe' form
    and 70 epochs are not stated in the SPP paper; they are its ZF-5/AlexNet baselines'
    (configs/zfnet.py, configs/alexnet.py). Plateau rule: x0.1 after more than 3 evaluations
    without a 0.1% relative improvement, at most 2 times ("twice").
  * Training crops: random 224x224 windows of the resized image (random_crop), not one of the
    five fixed windows; input normalised by per-channel mean subtraction (the paper names no
    mean image).
  * Evaluation protocols (batches need one shape per branch): `ten_crop` on the image with
    shorter side 256; `multi_view` = at each scale s the 3x3 grid of 224x224 windows of the
    image with shorter side s, and their flips (grid_crops(224, grid=3)), averaged over the 6
    scales -- the paper's 18 views per scale taken as image crops rather than windows on the
    conv5 map (at s=224 the grid repeats views, weighting them like the paper's 18). The
    full-image view needs variable-size inputs and is not a protocol here.

Variants (`configs/sppnet.py:KEY=VALUE,...`):
  size=multi|224|180             multi-size training (224 and 180 by epoch), or one size
                                 (see above); evaluation is at 224 either way
  pyramid=spp|30bin|none         {6,3,2,1} (default); {4,3,2,1} (30 bins, the paper's check
                                 that the gain is not FC6's size); a single 6x6 level (at 224
                                 the same windows as ZF-5's pool5: the no-SPP baseline)

Run:
  python -m cnn_history.main --config=configs/sppnet.py --workdir=/tmp/sppnet
Hardware: one GeForce GTX Titan (6 GB), about two weeks (recalled, not in papers.md).
Target (ILSVRC-2012 validation, ZF-5, top-1 / top-5 error, 10 views; recalled from the TPAMI
Table 2, unverified): no SPP 35.99 / 14.76; SPP single-size 34.98 / 14.14; SPP multi-size
34.60 / 13.64. Competition: ILSVRC-2014 classification rank #3 (papers.md §10 [P✓]).
"""

from cnn_history import config as config_lib
from cnn_history import recipes

PYRAMIDS = {'spp': (6, 3, 2, 1), '30bin': (4, 3, 2, 1), 'none': (6,)}
SIZES = ('multi', 224, 180)
TEST_SCALES = (224, 256, 300, 360, 448, 560)


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'size': 'multi', 'pyramid': 'spp'})
  if args['size'] not in SIZES:
    raise ValueError(f"sppnet: size={args['size']!r} is not valid; use multi (224 and 180 by "
                     'epoch), 224 or 180.')
  if args['pyramid'] not in PYRAMIDS:
    raise ValueError(f"sppnet: pyramid={args['pyramid']!r} is not valid; choose one of "
                     f'{", ".join(PYRAMIDS)}.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  config_lib.set_model(c, 'sppnet', levels=PYRAMIDS[args['pyramid']], lrn=True,
                       dropout_rate=0.5, initializer='paper')

  mean = recipes.subtract_mean()
  crops = 'resize_small(256)|random_crop(224)|flip_lr|lighting(0.1)'
  at_224, at_180 = f'{crops}|{mean}', f'{crops}|resize(180)|{mean}'
  c.data.train_preprocess = at_180 if args['size'] == 180 else at_224
  if args['size'] == 'multi':  # even epochs 224x224, odd epochs 180x180
    c.data.train_preprocess_cycle = (at_180,)
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{mean}'
  c.data.eval_protocols.ten_crop = recipes.ten_crop(224, 256, mean)
  c.data.eval_protocols.multi_view = ' + '.join(
      f'resize_small({s})|grid_crops(224, grid=3)|{mean}' for s in TEST_SCALES)
  c.eval_batch_size = 32           # x96 views in the multi-view protocol

  c.batch_size = 128
  c.num_epochs = 70
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'constant'
  c.schedule.learning_rate = 0.01
  c.schedule.plateau_factor = 0.1
  c.schedule.plateau_patience = 3
  c.schedule.plateau_max_reductions = 2
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
