"""The configuration schema: every valid field, its default, and what it means.

Paper configs (configs/*.py) start from `default_config()` and only override fields; the
returned ConfigDict is locked, so a misspelt field is an error that names it, both in a
config file and on the command line (`--config.optimizer.learning_rate=0.1`).
Free-form groups (model.overrides) hold a model's own switches and are checked against the
model's fields when it is built.
"""

from __future__ import annotations

import ast
import difflib
import os
from typing import Any

import ml_collections

ConfigDict = ml_collections.ConfigDict


def default_config() -> ConfigDict:
  """Every field the trainer reads, with its default."""
  c = ConfigDict()

  # ---- Run ------------------------------------------------------------------------------
  c.mode = 'train'               # 'train' (train, then evaluate) | 'eval' (evaluate the workdir's
                                 # checkpoint, a run's or an import's; reads only eval data)
  c.seed = 0                     # seeds init, data order (with the epoch) and dropout
  c.num_epochs = 10.0            # training length in passes over the training set ...
  c.num_steps = -1               # ... or in steps (> 0 takes precedence over num_epochs)
  c.batch_size = 128             # global batch (all devices and hosts)
  c.examples_per_update = 0      # 0: one update per batch; k: batch/k sequential updates per step
                                 # (1 = online SGD as in LeNet-5; scanned inside one compiled step)
  c.eval_batch_size = 1000       # global evaluation batch (the last one is padded and masked)
  c.eval_every_epochs = 1.0      # evaluate on the test split this often (<= 0: only at the end)
  c.log_every_steps = 50         # train metrics (loss, top-1/5, lr, images/s, grad norm)
  c.checkpoint_every_epochs = 1.0  # save a checkpoint this often (<= 0: only at the end)
  c.checkpoint_every_steps = -1  # ... or this many steps (> 0 takes precedence)
  c.keep_checkpoints = 3         # checkpoints kept on disk (the newest ones)
  c.init_from = ''               # a workdir (a run's, or an import by cnn_history.convert) whose
                                 # params/batch_stats start the run; with another num_classes
                                 # the classifier head is re-initialised (pretrained.py)
  c.num_devices = -1             # devices of the mesh (-1: all; e.g. 1 for a single-device run)
  c.dtype = 'float32'            # compute: 'float32' | 'bfloat16' | 'float16' (parameters, BN
                                 # statistics, loss and optimizer state stay float32; float16
                                 # adds dynamic loss scaling)
  c.sharding = 'replicated'      # train state: 'replicated' (data parallel) | 'fsdp' (params and
                                 # optimizer state sharded over the devices: the large nets)
  c.compilation_cache_dir = os.environ.get(  # persistent XLA compilation cache ('': off)
      'CNN_HISTORY_COMPILATION_CACHE', '~/.cache/cnn_history/xla')
  c.profile_steps = ()           # (first, last): a jax.profiler trace of these steps into
                                 # workdir/plugins/profile (TensorBoard's profile tab)
  c.progress_bar = True          # a tqdm bar on process 0 (periodic log lines are always written)
  c.ema_decay = 0.0              # moving average of the weights, evaluated beside them
                                 # (EfficientNet 0.9999; Inception-v3's Polyak averaging); 0: off

  # ---- Model ----------------------------------------------------------------------------
  c.model = ConfigDict()
  c.model.name = 'lenet5'        # a registry name: cnn_history.models.list_models()
  c.model.num_classes = -1       # -1: the dataset's number of classes
  c.model.overrides = ConfigDict()  # the model's own switches (set_model lists them all);
                                    # checked against the model's fields when it is built
  c.model.ramp = ()              # switches that rise linearly from 0 at the first training step
                                 # to their configured value at the last, e.g.
                                 # ('drop_path_rate',): NASNet's ScheduledDropPath

  # ---- Data -----------------------------------------------------------------------------
  c.data = ConfigDict()
  c.data.source = 'tfds'         # 'tfds' | 'idx' (MNIST-format files) | 'folder' | 'synthetic'
  c.data.name = 'fashion_mnist'  # TFDS dataset name (source='tfds')
  c.data.tfds_dir = ''           # TFDS data_dir ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.download = True         # let TFDS download/prepare when the data is missing
  c.data.path = ''               # directory of the files (source='idx' or 'folder')
  c.data.train_split = 'train'  # the split trained on
  c.data.eval_split = 'test'    # the split evaluated (every example exactly once)
  c.data.in_memory = 'auto'      # 'auto' | 'yes' | 'no': load a split as arrays (exact order,
                                 # cheap resume); 'auto' = yes for datasets under 2 GB
  c.data.train_preprocess = ''   # ops applied to each training image, e.g. 'pad(2)|scale(-0.1, 1.175)'
  c.data.train_preprocess_cycle = ()  # more training preprocessings taken in turn by epoch:
                                 # epoch e uses (train_preprocess, *cycle)[e % (1 + len(cycle))];
                                 # each image shape compiles its own step (SPP-net's multi-size
                                 # training: 224x224 crops, then 180x180)
  c.data.eval_preprocess = ''    # ops applied to each evaluation image (an evaluation protocol:
                                 # views and ' + '-joined scales allowed, see augment.Views)
  c.data.eval_preprocess_from = 'auto'  # 'auto': evaluating an imported checkpoint (its
                                 # workdir has conversion.json) uses the preprocessing stored
                                 # there instead of eval_preprocess | 'config': eval_preprocess
                                 # (main.py sets it when --config.data.eval_preprocess is given)
  c.data.eval_protocols = ConfigDict()  # more protocols for the final evaluation, name -> ops,
                                 # e.g. {'ten_crop': 'resize_small(256)|ten_crop(224)|...'}
  c.data.shuffle_buffer = 50_000  # for streamed (not in-memory) training data
  c.data.prefetch = 2            # batches prepared ahead of the device
  c.data.synthetic_shape = (32, 32, 3)  # (H, W, C) of synthetic images
  c.data.synthetic_classes = 10         # number of random labels
  c.data.synthetic_train_size = 1024    # synthetic training examples
  c.data.synthetic_eval_size = 256      # synthetic evaluation examples

  # ---- Loss -----------------------------------------------------------------------------
  c.loss = ConfigDict()
  c.loss.name = 'softmax_xent'   # 'softmax_xent' | 'rbf' (LeNet eq. 8) | 'rbf_discriminative' (eq. 9)
  c.loss.label_smoothing = 0.0   # softmax_xent: target 1 - eps for the true class ...
  c.loss.label_smoothing_form = 'uniform'  # ... 'uniform': + eps/K to every class (Inception-v3);
                                 # 'others': eps/(K-1) to each wrong class (Bag of Tricks)
  c.loss.mixup_alpha = 0.0       # mixup: lambda ~ Beta(alpha, alpha) per batch (Bag of Tricks 0.2)
  c.loss.rbf_j = 0.1             # LeNet eq. 9: the constant j in log(e^-j + sum_i e^-y_i)
  c.loss.aux_weights = ()        # weight of each auxiliary head's loss (GoogLeNet: (0.3, 0.3))

  # ---- Knowledge distillation (Hinton et al. 2015; Bag of Tricks §5.3) ------------------
  c.distill = ConfigDict()
  c.distill.teacher_workdir = ''  # a finished run's (or an import's) workdir: its model and
                                 # last checkpoint teach
  c.distill.temperature = 20.0   # T: loss += weight * T^2 * CE(softmax(teacher/T), softmax(z/T))
  c.distill.weight = 1.0         # weight of the distillation term

  # ---- Optimizer ------------------------------------------------------------------------
  c.optimizer = ConfigDict()
  c.optimizer.name = 'sgd'       # 'sgd' | 'momentum' | 'nesterov' | 'sgd_caffe' | 'rmsprop' |
                                 # 'rmsprop_tf' | 'adam' | 'adamw' | 'sdlm' (optim.py says how
                                 # each is written)
  c.optimizer.momentum = 0.9     # momentum / nesterov / sgd_caffe / rmsprop(_tf)
  c.optimizer.decay = 0.9        # rmsprop(_tf): decay of the running mean of squared gradients
  c.optimizer.b1 = 0.9           # adam / adamw
  c.optimizer.b2 = 0.999         # adam / adamw
  c.optimizer.eps = 1e-8         # adam / adamw / rmsprop(_tf) (Inception-v3: 1.0; EfficientNet: 1e-3)
  c.optimizer.weight_decay = 0.0     # the weight-decay coefficient (0: none)
  c.optimizer.weight_decay_mode = 'coupled'  # 'coupled' (L2 added to the gradient) | 'decoupled'
  c.optimizer.weight_decay_on = 'all'  # 'all' | 'kernels' (no biases, BN or other 1-D params) |
                                 # 'kernels_except_depthwise' (nor depthwise kernels)
  c.optimizer.grad_clip_norm = 0.0     # clip the global gradient norm (0: off)
  c.optimizer.max_filter_rms = 0.0     # > 0: after each update, scale down every conv filter whose
                                 # RMS exceeds this (ZFNet: 0.1)
  c.optimizer.sdlm_mu = 0.02     # SDLM damping: step = lr / (mu + h_kk)
  c.optimizer.sdlm_samples = 500  # examples used to re-estimate h_kk before each pass

  # ---- Learning-rate schedule -----------------------------------------------------------
  c.schedule = ConfigDict()
  c.schedule.name = 'constant'   # 'constant' | 'piecewise' | 'exponential' | 'polynomial' | 'cosine'
  c.schedule.learning_rate = 0.1  # the base learning rate
  c.schedule.reference_batch_size = 0  # > 0: linear scaling rule, base rate x batch_size / this
  c.schedule.unit = 'epochs'     # unit of the boundaries and intervals below: 'epochs' | 'steps'
  c.schedule.boundaries = ()     # piecewise: where the rate changes ...
  c.schedule.rates = ()          # ... to these rates (one per boundary; scaled like the base
                                 # rate by the linear scaling rule)
  c.schedule.decay_factor = 0.1  # exponential: multiply by this ...
  c.schedule.decay_every = 1.0   # ... every this many units
  c.schedule.staircase = True    # exponential: in steps (True) or continuously
  c.schedule.power = 1.0         # polynomial: (1 - t/T)^power
  c.schedule.end_learning_rate = 0.0  # polynomial / cosine: the final rate
  c.schedule.warmup = 0.0        # linear warm-up from 0, in units
  c.schedule.plateau_factor = 0.0  # > 0: multiply the rate by this when the eval error stops
                                 # improving (AlexNet, VGG: 0.1, "divided by 10")
  c.schedule.plateau_patience = 1  # evaluations without improvement before a reduction
  c.schedule.plateau_threshold = 1e-3  # relative improvement of the error that counts
  c.schedule.plateau_max_reductions = -1  # stop reducing after this many (AlexNet: 3; -1: no limit)

  c.lock()
  c.model.overrides.unlock()  # free-form: validated by create_model against the model's fields
  c.data.eval_protocols.unlock()  # free-form: each value is parsed as preprocessing ops
  return c


def set_model(config: ConfigDict, name: str, **overrides: Any) -> ConfigDict:
  """Selects model `name` and writes every one of its switches into config.model.overrides.

  The printed config then shows each ablation switch the model has, at the value this config
  uses, and `--config.model.overrides.<switch>=...` can flip any of them.
  """
  from cnn_history import models  # pylint: disable=g-import-not-at-top  (avoids a cycle)
  spec = models.get_spec(name)
  models.registry.check_fields(spec.module, overrides, f'set_model({name!r})')
  fields = models.registry.module_defaults(spec.module)
  fields.update(spec.kwargs)
  fields.update(overrides)
  config.model.name = name
  config.model.overrides = ConfigDict({k: v for k, v in fields.items()
                                       if k not in ('num_classes', 'dtype')})
  config.model.overrides.lock()  # every switch is listed: a new key would be a typo
  return config


def parse_arg(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
  """Parses a config argument 'key=value,key2=value2' (from `--config=file.py:ARG`).

  Values are Python literals where they parse as one (3, 0.1, True, 'a'), strings otherwise.
  Keys must be among `defaults`, whose values give the default of each.
  """
  result = dict(defaults)
  if not arg:
    return result
  for item in arg.split(','):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep:
      if len(defaults) == 1:  # a bare value names the single argument, e.g. ':modern'
        key, value = next(iter(defaults)), item
      else:
        raise ValueError(f'Config argument {item!r} is not key=value; '
                         f'valid keys: {", ".join(defaults)}.')
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.5)
      hint = f' Did you mean {", ".join(close)}?' if close else ''
      raise ValueError(f'Unknown config argument {key!r}.{hint} Valid: {", ".join(defaults)}.')
    try:
      result[key] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      result[key] = value.strip()
  return result


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
  """Raises a clear error when config field `name` is not one of `choices`."""
  if value not in choices:
    raise ValueError(f'config.{name}={value!r} is not valid; choose one of '
                     f'{", ".join(map(repr, choices))}.')
