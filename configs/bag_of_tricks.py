r"""ResNet-50(-D) with the training procedure of He, Zhang, Zhang, Zhang, Xie & Li ("Bag of Tricks
for Image Classification with Convolutional Neural Networks", CVPR 2019, arXiv 1812.01187), every
trick a switch, so each row of the paper's Tables 4-6 is one override away.

Recipe (papers.md §26; the paper §2.1 baseline [P✓:web], §3 efficient training, §4 model
tweaks, §5 training refinements [P? unless marked]; the authors' GluonCV script
scripts/classification/imagenet/train_imagenet.py, read [V]):
  * baseline (§2.1): NAG (Nesterov momentum 0.9: optimizer 'nesterov', MXNet's form with the
    rate outside the momentum), batch 256 on 8 V100 GPUs, 120 epochs, learning rate 0.1 divided
    by 10 at epochs 30, 60 and 90; training images decoded to 0-255, a random crop of 8-100% of
    the area with aspect ratio 3/4-4/3 resized to 224, a horizontal flip, colour scaling by
    factors from [0.6, 1.4], PCA noise N(0, 0.1); normalised by mean (123.68, 116.779,
    103.939) and std (58.393, 57.12, 57.375); validation: shorter side 256, centre 224 crop,
    the same normalisation. Weight decay 1e-4 (GluonCV's default; L2 in the gradient).
  * efficient training (§3, Table 4): batch 1024 with the learning rate scaled linearly,
    0.1 x b/256 (linear_scaling); a 5-epoch linear warm-up from 0 (warmup); gamma = 0 in the
    last BN of every residual block (zero_gamma: the model's zero_init_residual); no weight
    decay on biases or BN parameters (no_bias_decay: weight_decay_on='kernels'); FP16 with
    loss scaling and FP32 master weights (fp16: dtype='float16').
  * model tweaks (§4, Table 5): ResNet-50 (stride on the first 1x1), -B (stride in the 3x3),
    -C (B + a deep stem of three 3x3 convs 32-32-64), -D (C + 2x2 average pooling before the
    downsampling 1x1 projection): model=resnet50|resnet50b|resnet50c|resnet50d.
  * refinements (§5, Table 6, on ResNet-50-D): cosine decay per batch after the warm-up
    (cosine); label smoothing eps = 0.1 with the paper's form, 1 - eps for the true class and
    eps/(K - 1) for the others (label_smoothing: label_smoothing_form='others'); knowledge
    distillation from a ResNet-152-D teacher trained with cosine decay and label smoothing,
    loss + T^2 CE(softmax(teacher/T), softmax(student/T)) with T = 20 (distill, teacher=WORKDIR);
    mixup with alpha = 0.2 and 200 epochs instead of 120 (mixup).
  * evaluation: single 224 centre crop of the 256-scaled image.

Readings where the paper is ambiguous or the codebase differs:
  * Colour: the paper scales "hue, saturation, and brightness"; GluonCV's script jitters
    brightness, contrast and saturation by 0.4 (factors in [0.6, 1.4]) and adds PCA lighting
    0.1, which this config follows (recipes.fb_resnet_torch_train; hue cannot be scaled by a
    factor). The lighting uses fb.resnet.torch's PCA constants (the same as GluonCV's).
  * Initialisation: the paper's baseline uses Xavier uniform for the conv layers
    (initializer='xavier_uniform', the default here); GluonCV's script uses He (MSRA):
    `init=he`. The classifier keeps Flax's default initialiser.
  * BN statistics per GPU: batch / 8 images (bn_batch_span), MXNet's BN momentum 0.9 and
    epsilon 1e-5.
  * cosine=False steps the rate by 0.1 every 30 epochs (an exponential staircase, so that
    linear_scaling scales every step): epochs 30, 60, 90 of the baseline's 120 (and also 120,
    150, 180 when mixup lengthens training to 200 epochs, a combination the paper does not
    run).
  * The warm-up starts from 0 (linear over 5 epochs), as §3.1 writes it.
  * Distillation needs a finished teacher run: `teacher=WORKDIR` of
    `configs/bag_of_tricks.py:model=resnet152d,mixup=False` (ResNet-152-D with cosine and label
    smoothing); its logits come from its own weights on the student's (mixed) images.
  * FP16 on TPUs: dtype='float16' is the paper's setting; --config.dtype=bfloat16 is TPU-native.
  * Defaults: every trick on except distillation (which needs a teacher): Table 6's "+ mixup
    w/o distill" row; distill=True,teacher=WORKDIR gives the paper's best model.

Variants (`configs/bag_of_tricks.py:KEY=VALUE,...`; each boolean is one trick):
  model=resnet50|resnet50b|resnet50c|resnet50d|resnet152d   (default resnet50d; 152-D: teacher)
  batch=1024            global batch (the baseline: 256)
  linear_scaling=True   learning rate 0.1 x batch/256 (False: 0.1 whatever the batch)
  warmup=True           5-epoch linear warm-up
  zero_gamma=True       zero gamma in each block's last BN
  no_bias_decay=True    weight decay on conv/FC kernels only
  fp16=True             float16 compute with loss scaling
  cosine=True           cosine decay (False: /10 every 30 epochs)
  label_smoothing=True  eps = 0.1, eps/(K - 1) form
  mixup=True            alpha = 0.2, 200 epochs (False: 120)
  distill=False         knowledge distillation, T = 20, from teacher=WORKDIR
  teacher=WORKDIR       the teacher run's workdir (distill=True)
The baseline of Tables 4/5 (Table 2's ResNet-50):
  configs/bag_of_tricks.py:model=resnet50,batch=256,warmup=False,zero_gamma=False,
  no_bias_decay=False,fp16=False,cosine=False,label_smoothing=False,mixup=False

Run (ImageNet through TFDS, manual download):
  python -m cnn_history.main --config=configs/bag_of_tricks.py:model=resnet152d,mixup=False \
      --workdir=/tmp/teacher_r152d
  python -m cnn_history.main \
      --config=configs/bag_of_tricks.py:distill=True,teacher=/tmp/teacher_r152d \
      --workdir=/tmp/r50d_all_tricks
Hardware: 8 NVIDIA V100 GPUs (AWS); ResNet-50 13.3 min per epoch for the baseline, 4.4 min with
batch 1024 + FP16 (§3, [P?]).
Target (ILSVRC-2012 validation, single 224 crop, top-1 / top-5 accuracy, papers.md §26):
  Table 2 baseline ResNet-50 75.87 / 92.70 [P?]; efficient (batch 1024 + FP16 + §3's
  heuristics) 76.21 / 92.97 [P?]. Table 5 tweaks (efficient setting): ResNet-50 76.21 / 92.97,
  -B 76.66 / 93.28, -C 76.87 / 93.48, -D 77.16 / 93.52 [P?]. Table 6 (ResNet-50-D): + cosine
  77.91 / 93.81, + label smoothing 78.31 / 94.09, + distillation 78.67 / 94.36, + mixup (no
  distillation; this config's default) 79.15 / 94.58, + distillation + mixup 79.29 / 94.63
  [P✓:web].
"""

from cnn_history import config as config_lib
from cnn_history import recipes

# The paper's normalisation (§2.1) on 0-255 pixels.
MEAN = (123.68, 116.779, 103.939)
STD = (58.393, 57.12, 57.375)
GPUS = 8
D_TWEAKS = dict(stride_in='3x3', stem='deep', shortcut='avgpool')  # ResNet-B + C + D
# Model tweak -> (registered model, extra switches).
MODELS = {'resnet50': ('resnet50', {}), 'resnet50b': ('resnet50b', {}),
          'resnet50c': ('resnet50c', {}), 'resnet50d': ('resnet50d', {}),
          'resnet152d': ('resnet152', D_TWEAKS)}
TRICKS = ('linear_scaling', 'warmup', 'zero_gamma', 'no_bias_decay', 'fp16', 'cosine',
          'label_smoothing', 'mixup', 'distill')
BASE_EPOCHS = 120
MIXUP_EPOCHS = 200
WARMUP_EPOCHS = 5
REFERENCE_BATCH = 256          # lr = 0.1 x batch / 256


def get_config(arg: str | None = None):
  defaults = {'model': 'resnet50d', 'batch': 1024}
  defaults.update({trick: trick != 'distill' for trick in TRICKS})
  defaults['teacher'] = ''
  defaults['init'] = 'xavier'
  args = config_lib.parse_arg(arg, defaults)
  if args['init'] not in ('xavier', 'he'):
    raise ValueError(f"bag_of_tricks: init={args['init']!r} is not valid; use 'xavier' (the "
                     "paper) or 'he' (GluonCV).")
  if args['model'] not in MODELS:
    raise ValueError(f"bag_of_tricks: model={args['model']!r} is not valid; use one of "
                     f'{", ".join(MODELS)} (Table 5; resnet152d is the distillation teacher).')
  for trick in TRICKS:
    if not isinstance(args[trick], bool):
      raise ValueError(f'bag_of_tricks: {trick} must be True or False, got {args[trick]!r}.')
  batch = args['batch']
  if not (isinstance(batch, int) and batch > 0 and batch % GPUS == 0):
    raise ValueError(f'bag_of_tricks: batch must be a positive multiple of {GPUS} (the GPUs '
                     f'whose BN statistics it spans), got {batch!r}.')
  if args['distill'] and not args['teacher']:
    raise ValueError('bag_of_tricks: distill=True needs teacher=WORKDIR, a finished run of '
                     'configs/bag_of_tricks.py:model=resnet152d,mixup=False (§5.3).')
  if args['teacher'] and not args['distill']:
    raise ValueError('bag_of_tricks: teacher= is used by distillation; add distill=True.')

  c = config_lib.default_config()
  recipes.imagenet(c)
  c.batch_size = batch
  name, tweaks = MODELS[args['model']]
  config_lib.set_model(c, name, zero_init_residual=args['zero_gamma'], bn_momentum=0.9,
                       bn_epsilon=1e-5, bn_batch_span=batch // GPUS,
                       initializer={'xavier': 'xavier_uniform', 'he': 'he'}[args['init']],
                       **tweaks)
  c.dtype = 'float16' if args['fp16'] else 'float32'

  # ---- Data (§2.1) -------------------------------------------------------------------------------
  norm = recipes.normalize(MEAN, STD)
  c.data.train_preprocess = recipes.fb_resnet_torch_train(224, 0.08, norm)
  c.data.eval_preprocess = f'resize_small(256)|center_crop(224)|{norm}'
  c.eval_batch_size = 1024

  # ---- Optimisation (§2.1, §3) -------------------------------------------------------------------
  c.optimizer.name = 'nesterov'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'kernels' if args['no_bias_decay'] else 'all'
  c.schedule.unit = 'epochs'
  c.schedule.learning_rate = 0.1
  c.schedule.reference_batch_size = REFERENCE_BATCH if args['linear_scaling'] else 0
  c.schedule.warmup = WARMUP_EPOCHS if args['warmup'] else 0.0
  if args['cosine']:
    c.schedule.name = 'cosine'
    c.schedule.end_learning_rate = 0.0
  else:
    c.schedule.name = 'exponential'
    c.schedule.decay_factor = 0.1
    c.schedule.decay_every = 30
    c.schedule.staircase = True

  # ---- Refinements (§5) --------------------------------------------------------------------------
  c.num_epochs = MIXUP_EPOCHS if args['mixup'] else BASE_EPOCHS
  c.loss.mixup_alpha = 0.2 if args['mixup'] else 0.0
  if args['label_smoothing']:
    c.loss.label_smoothing = 0.1
    c.loss.label_smoothing_form = 'others'
  if args['distill']:
    c.distill.teacher_workdir = args['teacher']
    c.distill.temperature = 20.0
    c.distill.weight = 1.0
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
