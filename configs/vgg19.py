r"""VGG-19 (configuration E) with the best single-net recipe of Simonyan & Zisserman (ICLR 2015,
arXiv 1409.1556): a thin wrapper over configs/vgg.py, whose docstring has every detail.

Recipe (papers.md §5; the paper §3, Tables 1, 4, 5): configuration E (16 3x3 convs + 3 FC,
143,667,240 parameters); batch 256, momentum 0.9 (Caffe's update, 'sgd_caffe'), weight decay
5e-4, dropout 0.5 on FC6/FC7; learning rate 1e-2, divided by 10 when the validation accuracy
stops improving, 3 times, 370K iterations (74 epochs); training scale jittered S ~ U[256, 512],
random 224 crop, flip, AlexNet RGB shift, mean RGB subtracted; evaluation by dense + multi-crop
at Q in {256, 384, 512} (the `dense_multicrop` protocol; `dense`, `dense_multiscale` and
`multi_crop` alongside).

Readings (configs/vgg.py): Glorot init instead of initialising from net A, with the input also
divided by the per-channel std (Glorot diverges at the paper's 0-255 scale); the paper fine-tuned
the jittered net from the S=384 net (pass init_from=WORKDIR for that: learning rate 1e-3);
plateau patience 3 evaluations; dense evaluation on the centre Q x Q square.

Variants: `configs/vgg19.py:KEY=VALUE` with the keys of configs/vgg.py except config
(scale=256|384|jitter, bn=True, init=glorot|paper, init_from=WORKDIR).

Run:
  python -m cnn_history.main --config=configs/vgg19.py --workdir=/tmp/vgg19
Hardware: 4 NVIDIA Titan Black GPUs, 2-3 weeks (recalled).
Target (ILSVRC-2012 validation, papers.md §5 [P?]): 24.4% top-1 / 7.1% top-5 error with dense +
multi-crop (Table 5); 24.8 / 7.5 dense multi-scale; 25.5 / 8.0 single-scale dense at Q=384.
"""

import os
import runpy

from cnn_history import config as config_lib

_VGG = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vgg.py'))
CONFIG = 'e'


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'scale': 'jitter', 'bn': False, 'init': 'glorot',
                                    'init_from': ''})
  parts = [f'config={CONFIG}'] + [f'{key}={value}' for key, value in args.items()]
  return _VGG['get_config'](','.join(parts))
