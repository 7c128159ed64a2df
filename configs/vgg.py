r"""VGG configurations A-E trained as Simonyan & Zisserman ("Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015, arXiv 1409.1556) trained them.

Recipe (papers.md §5; the paper §3.1 training, §3.2 testing, §4 Tables 3-5):
  * networks: Table 1, configurations A, A-LRN, B, C, D, E (models vgg11, vgg11_lrn, vgg13,
    vgg16_c, vgg16, vgg19): 3x3 convs (C: three 1x1), 2x2/2 max-pools, FC-4096, FC-4096
    (dropout 0.5 after each), FC-1000; no BatchNorm.
  * mini-batch gradient descent with momentum 0.9, batch 256, weight decay (L2) 5e-4, dropout
    0.5 on the first two FC layers; learning rate 1e-2, divided by 10 when the validation
    accuracy stopped improving, decreased 3 times; training stopped after 370K iterations
    (74 epochs). The authors' framework was Caffe: optimizer 'sgd_caffe' (rate inside the
    momentum), coupled decay on every weight.
  * training scale S (the shorter side after isotropic rescaling): fixed S = 256 or 384 (the
    384 net initialised from the 256 net, learning rate 1e-3), or scale jittering
    S ~ U[256, 512] per image (fine-tuned from the S=384 net). Then one random 224x224 crop,
    a random horizontal flip and AlexNet's random RGB colour shift. Input: the mean RGB value
    subtracted (per channel).
  * testing (§3.2): dense evaluation -- the FC layers as convolutions (FC6 7x7, FC7/FC8 1x1) on
    the whole image rescaled to Q, the class-score map averaged over space, and averaged with
    the flipped image; Q = S (fixed S) or 384 (jittered); multi-scale Q in {S-32, S, S+32} or
    {256, 384, 512}; multi-crop: a 5x5 grid of 224 crops x 2 flips at each scale (150); the
    best results combine dense and multi-crop (Table 5).

Readings where the paper is ambiguous or the codebase differs:
  * Init and input scale: the paper trains A from N(0, "10^-2 variance") and initialises the
    first four conv and the three FC layers of deeper nets from A; it adds that Glorot &
    Bengio's init trains them without pre-training. A's weights cannot seed a different net
    here (config.init_from copies the params and BN statistics of the same model; only a
    classifier head resized for another class count is re-initialised), so the default is
    Glorot for every net (init=glorot; models/vgg.py explains why N(0, 0.01^2) cannot train
    16-19 layers from scratch). At the paper's input scale (0-255 pixels minus the mean RGB),
    Glorot diverges at learning rate 1e-2: measured on synthetic images, A (batch 8 and 32) and
    B (batch 8) reached NaN within 5 steps (D survived a spike). So with init=glorot the input
    is also divided by the per-channel ImageNet std (~58) -- for SGD, up to the weight decay
    on conv1, the same as shrinking conv1's initial weights and its learning rate; nothing
    else changes -- and A and B then stayed at ln(10) over the same steps. init=paper is the
    paper's literal setting for net A: N(0, 0.01^2) (the reading of "10^-2 variance" Caffe
    reproductions used), zero biases, mean-RGB subtraction only; A trains with it (stable in
    the same measurement), while the deeper nets need A's weights to start from.
  * Fine-tuning: `init_from=WORKDIR` starts from that run's weights with learning rate 1e-3 --
    the paper's S=384 net from the S=256 one; for scale jittering "fine-tuning all layers ...
    pre-trained with fixed S=384" gives no rate, and 1e-3 is used too. Without init_from every
    scale trains from scratch at 1e-2.
  * The plateau rule: evaluate each epoch (single 224 centre crop at the test scale Q), x0.1
    after more than 3 evaluations without a 0.1% relative improvement of top-1 error (our
    patience), at most 3 times; the run lasts 370K iterations of 256 (num_steps).
  * Dense evaluation runs on the centre Q x Q square (recipes.dense_multiscale: a batch needs
    one shape), not on the whole non-square image; the class-score map of a Q-pixel input is
    averaged over its (Q/32 - 6)^2 positions, as §3.2.
  * The single-crop protocol (eval_preprocess) is a 224 centre crop at Q; the paper's Table 3
    (single-scale, dense) is the `dense` protocol. The model runs fully convolutionally
    throughout (fully_convolutional=True: at 224 the same logits as the FC head, same weights).
  * bn=True adds BatchNorm after every conv (torchvision's vgg*_bn): not in the paper. Its
    statistics span 64 examples, the per-GPU share of the paper's batch of 256 on 4 GPUs.
  * Memory: the multi-crop protocols push 150 (dense+multi-crop: 150 + 6 large) views per
    image through the net at once, so eval_batch_size is 16 (all protocols share it).

Variants (`configs/vgg.py:KEY=VALUE,...`):
  config=a|a_lrn|b|c|d|e   Table 1 column (default d)
  bn=True                  BatchNorm after each conv (not the paper)
  scale=256|384|jitter     training scale S (default jitter: [256, 512])
  init=glorot|paper        Glorot + standardised input (default) | N(0, 0.01^2) + mean RGB
                           subtraction only (the paper's net A; above)
  init_from=WORKDIR        fine-tune from a finished run at learning rate 1e-3 (above)

Run:
  python -m cnn_history.main --config=configs/vgg.py:config=d,scale=256 --workdir=/tmp/vgg_d256
  python -m cnn_history.main --config=configs/vgg.py:config=d,scale=384,init_from=/tmp/vgg_d256 \
      --workdir=/tmp/vgg_d384
Hardware: 4 NVIDIA Titan Black GPUs (Caffe with data parallelism), 2-3 weeks per net
(recalled, not in papers.md).
Target (ILSVRC-2012 validation, top-1 / top-5 error, papers.md §5 [P?]):
  Table 3 (single-scale dense, Q = S or 384; `dense`): A 29.6/10.4, A-LRN 29.7/10.5,
    B 28.7/9.9 (S=256); C 28.1/9.4 (256), 28.1/9.3 (384), 27.3/8.8 (jitter); D 27.0/8.8,
    26.8/8.7, 25.6/8.1; E 27.3/9.0, 26.9/8.7, 25.5/8.0.
  Table 4 (multi-scale dense; `dense_multiscale`): D and E (jitter) 24.8/7.5.
  Table 5 (jitter): D 24.8/7.5 dense, 24.6/7.5 multi-crop, 24.4/7.2 both (`dense_multicrop`);
    E 24.8/7.5, 24.6/7.4, 24.4/7.1.
"""

from cnn_history import config as config_lib
from cnn_history import recipes

# Table 1 column -> registered model.
MODELS = {'a': 'vgg11', 'a_lrn': 'vgg11_lrn', 'b': 'vgg13', 'c': 'vgg16_c', 'd': 'vgg16',
          'e': 'vgg19'}
SCALES = (256, 384, 'jitter')
INITS = ('glorot', 'paper')
JITTER = (256, 512)
CROP = 224


def test_scales(scale) -> tuple[int, tuple[int, ...]]:
  """(single-scale Q, multi-scale Qs) for training scale `scale` (§4.1, §4.2)."""
  if scale == 'jitter':
    return 384, (256, 384, 512)
  return scale, (scale - 32, scale, scale + 32)


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'config': 'd', 'bn': False, 'scale': 'jitter',
                                    'init': 'glorot', 'init_from': ''})
  name = str(args['config']).lower()
  if name not in MODELS:
    raise ValueError(f"vgg: config={args['config']!r} is not valid; choose one of "
                     f'{", ".join(MODELS)} (Table 1).')
  if not isinstance(args['bn'], bool):
    raise ValueError(f"vgg: bn must be True or False, got {args['bn']!r}.")
  scale = args['scale']
  if scale not in SCALES:
    raise ValueError(f'vgg: scale={scale!r} is not valid; use 256, 384 (fixed S) or jitter '
                     '(S ~ U[256, 512]).')
  if args['init'] not in INITS:
    raise ValueError(f"vgg: init={args['init']!r} is not valid; use glorot (with standardised "
                     'input) or paper (N(0, 0.01^2), the paper\'s net A).')

  c = config_lib.default_config()
  recipes.imagenet(c)
  bn = dict(batch_norm=True, bn_batch_span=64) if args['bn'] else {}
  config_lib.set_model(c, MODELS[name], fully_convolutional=True, dropout_rate=0.5,
                       initializer=args['init'], **bn)

  # ---- Data (§3.1): rescale to S, random 224 crop, flip, RGB shift, mean RGB subtracted ----
  mean = recipes.subtract_mean() if args['init'] == 'paper' else recipes.normalize()
  rescale = (f'resize_small_random({JITTER[0]}, {JITTER[1]})' if scale == 'jitter'
             else f'resize_small({scale})')
  c.data.train_preprocess = f'{rescale}|random_crop({CROP})|flip_lr|lighting(0.1)|{mean}'
  q, qs = test_scales(scale)
  c.data.eval_preprocess = f'resize_small({q})|center_crop({CROP})|{mean}'
  dense = recipes.dense_multiscale((q,), mean)
  dense_multi = recipes.dense_multiscale(qs, mean)
  multi_crop = recipes.multi_crop(CROP, qs, mean)
  c.data.eval_protocols.dense = dense                          # Table 3
  c.data.eval_protocols.dense_multiscale = dense_multi         # Table 4
  c.data.eval_protocols.multi_crop = multi_crop                # Table 5
  c.data.eval_protocols.dense_multicrop = f'{dense_multi} + {multi_crop}'  # Table 5, both
  c.eval_batch_size = 16

  # ---- Optimisation (§3.1) --------------------------------------------------------------------
  c.batch_size = 256
  c.num_steps = 370_000            # "stopped after 370K iterations (74 epochs)"
  c.num_epochs = 74                # for readers only: num_steps governs
  c.optimizer.name = 'sgd_caffe'
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.weight_decay_mode = 'coupled'
  c.optimizer.weight_decay_on = 'all'
  c.schedule.name = 'constant'
  c.schedule.learning_rate = 1e-2
  if args['init_from']:
    c.init_from = args['init_from']
    c.schedule.learning_rate = 1e-3
  c.schedule.plateau_factor = 0.1
  c.schedule.plateau_patience = 3
  c.schedule.plateau_max_reductions = 3
  c.eval_every_epochs = 1.0
  c.log_every_steps = 200
  return c
