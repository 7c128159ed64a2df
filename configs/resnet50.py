r"""ResNet-50 with the ImageNet recipe of He, Zhang, Ren & Sun ("Deep Residual Learning for Image
Recognition", CVPR 2016, arXiv 1512.03385): a thin wrapper over configs/resnet.py, whose
docstring has every detail.

Recipe (papers.md §11; the paper §3.4, Tables 1, 3, 4): ResNet-50 of Table 1 (bottlenecks with
the stride on the first 1x1, option-B projection shortcuts; 25,557,032 parameters, 3.86 GMACs);
SGD with Caffe's momentum 0.9 ('sgd_caffe'), batch 256 on 8 GPUs (BN statistics per 32
images), weight decay 1e-4, no dropout; learning rate 0.1 divided by 10 when the validation
error plateaus (patience 3 evaluations, at most 3 times: our reading), 60 x 10^4 iterations
(120 epochs); shorter side ~ U[256, 480], random 224 crop, flip, AlexNet PCA lighting, mean RGB
subtracted; evaluation by 10-crop (`ten_crop`) and fully convolutional multi-scale
({224, 256, 384, 480, 640}, `dense_multiscale`), besides the single centre crop.

Readings (configs/resnet.py): the plateau patience and limit; per-channel mean subtraction for
the per-pixel mean; BN moving averages instead of the README's post-training averages.

Variants: `configs/resnet50.py:KEY=VALUE` with configs/resnet.py's keys except depth and plain:
  schedule=plateau|step   the paper's plateau rule (default) | /10 at epochs 30, 60 of 90
  shortcut=A|B|C          B by default (the paper's choice for 50/101/152)

Run:
  python -m cnn_history.main --config=configs/resnet50.py --workdir=/tmp/resnet50
Hardware: 8 GPUs, 32 images each (the README; time not in papers.md).
Target (ILSVRC-2012 validation, top-1 / top-5 error): 22.85 / 6.71 10-crop (Table 3, [P✓:README
22.9 / 6.7]); 20.74 / 5.25 multi-scale fully convolutional (Table 4, [P?]); 24.7 / 7.8 single
224 crop of the released model [V:README].
"""

import os
import runpy

from cnn_history import config as config_lib

_RESNET = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'resnet.py'))
DEPTH = 50


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, {'schedule': 'plateau', 'shortcut': ''})
  parts = [f'depth={DEPTH}'] + [f'{key}={value}' for key, value in args.items() if value != '']
  return _RESNET['get_config'](','.join(parts))
