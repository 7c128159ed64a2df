"""Squeeze-and-Excitation networks — Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018
(arXiv 1709.01507). papers.md §17.

An SE block rescales the channels of a residual branch, after its last BN and before the identity
is added: global average pool -> FC (C/r) -> ReLU -> FC (C) -> sigmoid -> channel-wise product,
r = 16 (the FCs are 1x1 convs with biases; layers.SqueezeExcite). It is the `se_reduction` switch
of resnet.ResNet, so any residual network of resnet.py takes it (`se_reduction=0` switches it
off: the paper's "re-implementation" baselines of Table 2); this file only registers the paper's
configurations of that network:

  SE-ResNet-50/101/152     ResNet v1 + SE. The official Caffe models keep the stride on the
                           FIRST 1x1 of a bottleneck (timm's SEResNetBottleneck: "stride in conv1
                           and not in conv2"), the opposite of torchvision's ResNet.
  SE-ResNeXt-50/101 32x4d  ResNeXt + SE, stride in the grouped 3x3.
  SENet-154 (appendix)     SE-ResNeXt-152 64x4d with the first 1x1 of each bottleneck halved, the
                           7x7 stem replaced by three 3x3 convs (64, 64, 128), 3x3/2 downsampling
                           projections (stage 1's stays 1x1), dropout 0.2 before the classifier;
                           stride in the 3x3.
  All official models max-pool the stem with Caffe's 3x3/2 ceil mode without padding
  (`stem_pool='ceil'`; same output size as PyTorch's padding 1 at 224).

Ablations: se_reduction (the paper's reduction-ratio study, r = 2 ... 32), se_reduction=0 (Table
2's baselines), and every switch of resnet.ResNet (e.g. stride_in='3x3': timm's v1.5-style
seresnet50, same counts as the official one).
"""

from __future__ import annotations

from cnn_history.models.registry import register
from cnn_history.convert.torch import TorchWeights, torch_converter
from cnn_history.models.resnet import ResNet, torch_resnet

_SENET = 'Hu et al., CVPR 2018'
_IMAGENET = (224, 224, 3)
_SE = dict(se_reduction=16, stem_pool='ceil')

# SE-ResNets: ResNet v1 (stride in the first 1x1) + SE.
for _depth, _params, _macs, _paper_macs in ((50, 28_088_024, 3.8605e9, '3.87G'),
                                            (101, 49_326_872, 7.5749e9, '7.60G'),
                                            (152, 66_821_848, 11.2890e9, '11.32G')):
  register(f'seresnet{_depth}', paper=_SENET, year=2017, input_shape=_IMAGENET,
           expected_params=_params, expected_macs=_macs, paper_macs=_paper_macs,
           source=f'timm legacy_seresnet{_depth}', depth=_depth, **_SE)(ResNet)

# SE-ResNeXts: ResNeXt 32x4d (stride in the 3x3) + SE.
for _depth, _params, _macs, _paper_macs in ((50, 27_559_896, 4.2330e9, '4.25G'),
                                            (101, 48_955_416, 7.9747e9, '8.00G')):
  register(f'seresnext{_depth}_32x4d', paper=_SENET, year=2017, input_shape=_IMAGENET,
           expected_params=_params, expected_macs=_macs, paper_macs=_paper_macs,
           source=f'timm legacy_seresnext{_depth}_32x4d', depth=_depth, stride_in='3x3',
           cardinality=32, base_width=4, **_SE)(ResNet)

register('senet154', paper=_SENET, year=2017, input_shape=_IMAGENET, expected_params=115_088_984,
         expected_macs=20.688e9, paper_macs='20.7G', source='timm legacy_senet154', depth=152,
         stride_in='3x3', cardinality=64, base_width=4, first_conv_ratio=0.5, stem='deep',
         stem_widths=(64, 64, 128), shortcut='projection_3x3', dropout_rate=0.2, **_SE)(ResNet)


@torch_converter('seresnet50', 'seresnet101', 'seresnet152', 'seresnext50_32x4d',
                 'seresnext101_32x4d', 'senet154', source='timm')
def _from_timm_legacy(weights: TorchWeights, name: str) -> dict:
  """timm legacy_se* / legacy_senet154 (the official Caffe models' layout): the registry's
  models as they are (stem pool in ceil mode, SE FCs as 1x1 convs with biases)."""
  del name
  torch_resnet(weights)
  return {}
