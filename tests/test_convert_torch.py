"""torchvision / timm state dicts -> our Flax models.

Without torch (CI): the safetensors reader/writer, and the bookkeeping of `torch_to_flax` on a
state dict built in numpy with torchvision's names (missing, unused and mis-shaped tensors are
errors naming them). With a Python that has torch, torchvision and timm (the environment
variable CNN_HISTORY_TORCH_PYTHON, else /work/tvvenv/bin/python when it exists; set it up with
scripts/test_torch_parity.sh): logit parity of every converter against the torch network with
random weights and random BatchNorm statistics (benchmarks/torch_reference.py), batch 2.
"""

import json
import os
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnn_history import models
from cnn_history.convert import torch as torch_convert
from cnn_history.convert.torch import ConversionError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_TORCH_PYTHON = '/work/tvvenv/bin/python'


# ---- safetensors ------------------------------------------------------------------------------

def test_safetensors_round_trip_keeps_values_dtypes_and_shapes(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {'conv.weight': rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
             'half': rng.normal(size=(5,)).astype(np.float16),
             'bn.num_batches_tracked': np.array(7, np.int64),
             'empty': np.zeros((0, 3), np.float32)}
  path = str(tmp_path / 'w.safetensors')
  torch_convert.write_safetensors(path, tensors)
  back = torch_convert.read_safetensors(path)
  assert list(back) == list(tensors)
  for name, value in tensors.items():
    assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
    np.testing.assert_array_equal(back[name], value)
  assert back['bn.num_batches_tracked'] == 7


def test_safetensors_reader_on_hand_packed_bytes_with_bf16(tmp_path):
  # bfloat16 is the upper 16 bits of a float32: 1.5 = 0x3FC0, -2.0 = 0xC000, 0.15625 = 0x3E20.
  bf16 = struct.pack('<3H', 0x3FC0, 0xC000, 0x3E20)
  i64 = struct.pack('<2q', -3, 2**40)
  header = json.dumps({'__metadata__': {'format': 'pt'},
                       'a': {'dtype': 'BF16', 'shape': [3], 'data_offsets': [0, 6]},
                       'b': {'dtype': 'I64', 'shape': [2, 1], 'data_offsets': [6, 22]}}).encode()
  path = tmp_path / 'hand.safetensors'
  path.write_bytes(struct.pack('<Q', len(header)) + header + bf16 + i64)
  back = torch_convert.load_state_dict(str(path))
  assert sorted(back) == ['a', 'b']
  assert back['a'].dtype == np.float32
  np.testing.assert_array_equal(back['a'], [1.5, -2.0, 0.15625])
  assert back['b'].dtype == np.int64 and back['b'].shape == (2, 1)
  np.testing.assert_array_equal(back['b'][:, 0], [-3, 2**40])


def test_bad_files_are_errors_saying_what_to_do(tmp_path):
  truncated = tmp_path / 'bad.safetensors'
  header = json.dumps({'a': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}}).encode()
  truncated.write_bytes(struct.pack('<Q', len(header)) + header + b'\0' * 8)
  with pytest.raises(ConversionError, match="'a' lies outside the file"):
    torch_convert.read_safetensors(str(truncated))
  with pytest.raises(ConversionError, match='unknown checkpoint format'):
    torch_convert.load_state_dict(str(tmp_path / 'weights.h5'))


def test_pickled_checkpoints_without_torch_say_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  path = tmp_path / 'resnet18.pth'
  path.write_bytes(b'not read')
  with pytest.raises(ConversionError, match=r'needs torch \(pip install torch\), or convert it '
                     'to .safetensors'):
    torch_convert.load_state_dict(str(path))


def test_training_checkpoint_wrappers_are_unwrapped():
  w = np.ones((2, 2), np.float32)
  assert list(torch_convert.unwrap_state_dict({'state_dict': {'module.fc.weight': w},
                                               'epoch': 3})) == ['fc.weight']
  assert list(torch_convert.unwrap_state_dict({'model': {'fc.weight': w}})) == ['fc.weight']


# ---- Bookkeeping, on a numpy state dict with torchvision's ResNet-18 names --------------------

def _torchvision_name(path: tuple[str, ...]) -> str:
  """Inverse of the ResNet converter's naming: our module path -> torchvision's prefix."""
  if path[0] == 'head':
    return 'fc'
  if path[0].startswith('stem_'):
    return path[0][len('stem_'):]
  stage, block = path[0][len('stage'):].split('_block')
  part = {'shortcut_conv': 'downsample.0', 'shortcut_bn': 'downsample.1'}.get(path[1], path[1])
  return f'layer{stage}.{int(block) - 1}.{part}'


def _numpy_resnet18_state_dict(num_classes=10):
  """torchvision resnet18's state dict (names, shapes) with random values, from our shapes."""
  module = models.create_model('resnet18', num_classes=num_classes)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                np.zeros((1, 64, 64, 3), np.float32)))
  rng = np.random.default_rng(0)
  state = {}
  for collection in ('params', 'batch_stats'):
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(abstract[collection]):
      keys = tuple(k.key for k in key_path)
      prefix, leaf_name = _torchvision_name(keys[:-1]), keys[-1]
      value = rng.normal(size=leaf.shape).astype(np.float32)
      if leaf_name == 'var':
        value = np.abs(value) + 0.5
      if leaf_name == 'kernel':
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
      torch_leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                    'mean': 'running_mean', 'var': 'running_var'}[leaf_name]
      state[f'{prefix}.{torch_leaf}'] = value
      if leaf_name == 'var':
        state[f'{prefix}.num_batches_tracked'] = np.array(0, np.int64)
  return state


def test_numpy_state_dict_converts_with_the_torch_layouts(tmp_path):
  state = _numpy_resnet18_state_dict()
  module, variables = torch_convert.torch_to_flax('resnet18', state)
  assert module.num_classes == 10  # read from fc.weight
  params, stats = variables['params'], variables['batch_stats']
  # Conv [O, I, kh, kw] -> [kh, kw, I, O]; Linear [out, in] -> [in, out]; BN names.
  w = state['layer2.0.conv1.weight']
  assert params['stage2_block1']['conv1']['kernel'][2, 0, 5, 7] == w[7, 5, 2, 0]
  np.testing.assert_array_equal(params['head']['kernel'], state['fc.weight'].T)
  np.testing.assert_array_equal(params['stage3_block1']['shortcut_bn']['scale'],
                                state['layer3.0.downsample.1.weight'])
  np.testing.assert_array_equal(stats['stem_bn1']['var'], state['bn1.running_var'])
  logits = module.apply(variables, np.ones((1, 64, 64, 3), np.float32))
  assert logits.shape == (1, 10) and np.isfinite(logits).all()
  # The same dict through a .safetensors file gives the same variables.
  torch_convert.write_safetensors(str(tmp_path / 'r18.safetensors'), state)
  _, again = torch_convert.torch_to_flax(
      'resnet18', torch_convert.load_state_dict(str(tmp_path / 'r18.safetensors')))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, variables)


def test_missing_unused_and_misshaped_tensors_are_named():
  state = _numpy_resnet18_state_dict()
  missing = dict(state)
  del missing['layer4.1.bn2.running_var']
  with pytest.raises(ConversionError, match=r"no tensor 'layer4\.1\.bn2\.running_var'"):
    torch_convert.torch_to_flax('resnet18', missing)
  extra = dict(state, **{'layer1.0.conv1.extra': np.zeros(3, np.float32)})
  with pytest.raises(ConversionError,
                     match=r"not mapped to the Flax model: \['layer1\.0\.conv1\.extra'\]"):
    torch_convert.torch_to_flax('resnet18', extra)
  wrong = dict(state)
  wrong['layer3.1.conv2.weight'] = np.zeros((256, 128, 3, 3), np.float32)  # in-channels 128
  with pytest.raises(ConversionError, match=r"\['stage3_block2'\]\['conv2'\]\['kernel'\]: "
                     r'PyTorch gives \(3, 3, 128, 256\), the Flax model has \(3, 3, 256, 256\)'):
    torch_convert.torch_to_flax('resnet18', wrong)
  with pytest.raises(ConversionError, match='No torchvision converter for'):
    torch_convert.torch_to_flax('lenet5', state)


def test_preprocessing_records_each_sources_evaluation():
  tv = torch_convert.torch_preprocessing('resnet50')
  assert (tv['resolution'], tv['resize'], tv['interpolation']) == (224, 256, 'bilinear')
  assert tv['mean'] == (0.485, 0.456, 0.406) and tv['channel_order'] == 'RGB'
  inception = torch_convert.torch_preprocessing('inception_v3')
  assert (inception['resolution'], inception['resize']) == (299, 342)
  # torchvision's transform_input, folded into the normalisation: [-1, 1] input.
  assert inception['mean'] == inception['std'] == (0.5, 0.5, 0.5)
  b3 = torch_convert.torch_preprocessing('efficientnet_b3')
  assert (b3['resolution'], b3['resize'], b3['interpolation']) == (300, 320, 'bicubic')
  nasnet = torch_convert.torch_preprocessing('nasnet_a_large', 'timm')
  assert (nasnet['resolution'], nasnet['resize'], nasnet['crop_pct']) == (331, 363, 0.911)
  assert nasnet['mean'] == (0.5, 0.5, 0.5)
  with pytest.raises(ValueError, match='Unknown PyTorch source'):
    torch_convert.torch_preprocessing('resnet50', 'keras')
  with pytest.raises(ConversionError, match="No torchvision converter for 'lenet5'"):
    torch_convert.torch_preprocessing('lenet5')


# ---- Logit parity against the torch networks ---------------------------------------------------

def _torch_python():
  python = os.environ.get('CNN_HISTORY_TORCH_PYTHON')
  if python:
    return python
  return _DEFAULT_TORCH_PYTHON if os.path.exists(_DEFAULT_TORCH_PYTHON) else None


# (source, our name, torch builder name, input H x W, builder kwargs). The networks run at
# small inputs, some non-square or with odd maps at stride-2 layers (where TF 'SAME' and
# PyTorch padding part ways); VGG's FC6 needs 224. inception_v3's own init (std 0.1 weights)
# sends random logits to ~1e5, PyTorch's default init keeps them O(1).
PARITY = [
    ('torchvision', 'resnet18', 'resnet18', (64, 80), {}),
    ('torchvision', 'resnet34', 'resnet34', (64, 64), {}),
    ('torchvision', 'resnet50', 'resnet50', (72, 56), {}),
    ('torchvision', 'resnet50b', 'resnet50', (64, 64), {}),
    ('torchvision', 'resnet101', 'resnet101', (64, 64), {}),
    ('torchvision', 'resnet152', 'resnet152', (64, 64), {}),
    ('torchvision', 'resnext50_32x4d', 'resnext50_32x4d', (64, 64), {}),
    ('torchvision', 'resnext101_64x4d', 'resnext101_64x4d', (64, 64), {}),
    ('torchvision', 'wide_resnet50_2', 'wide_resnet50_2', (64, 64), {}),
    ('timm', 'resnet50d', 'resnet50d', (72, 56), {}),
    ('timm', 'seresnet50', 'legacy_seresnet50', (64, 64), {}),
    ('timm', 'seresnext50_32x4d', 'legacy_seresnext50_32x4d', (64, 64), {}),
    ('timm', 'senet154', 'legacy_senet154', (64, 64), {}),
    ('torchvision', 'alexnet_owt', 'alexnet', (100, 90), {}),
    ('torchvision', 'vgg11', 'vgg11', (224, 224), {}),
    ('torchvision', 'vgg11_bn', 'vgg11_bn', (224, 224), {}),
    ('torchvision', 'vgg16_bn', 'vgg16_bn', (224, 224), {}),
    ('torchvision', 'densenet121', 'densenet121', (64, 64), {}),
    ('torchvision', 'densenet169', 'densenet169', (64, 64), {}),
    ('torchvision', 'densenet201', 'densenet201', (64, 64), {}),
    ('torchvision', 'mobilenet_v2', 'mobilenet_v2', (72, 56), {}),
    ('torchvision', 'mobilenet_v3_large', 'mobilenet_v3_large', (72, 56), {}),
    ('torchvision', 'mobilenet_v3_small', 'mobilenet_v3_small', (72, 56), {}),
    ('torchvision', 'shufflenet_v2_x0_5', 'shufflenet_v2_x0_5', (72, 56), {}),
    ('torchvision', 'shufflenet_v2_x1_0', 'shufflenet_v2_x1_0', (64, 64), {}),
    ('torchvision', 'shufflenet_v2_x1_5', 'shufflenet_v2_x1_5', (64, 64), {}),
    ('torchvision', 'shufflenet_v2_x2_0', 'shufflenet_v2_x2_0', (64, 64), {}),
    ('torchvision', 'mnasnet_b1', 'mnasnet1_0', (72, 56), {}),
    ('torchvision', 'googlenet_tv', 'googlenet', (72, 56), {}),
    ('torchvision', 'inception_v3', 'inception_v3', (80, 96), {'init_weights': False}),
    ('timm', 'inception_v4', 'inception_v4', (80, 96), {}),
    ('timm', 'inception_resnet_v2', 'inception_resnet_v2', (80, 96), {}),
    ('timm', 'xception', 'legacy_xception', (96, 80), {}),
    ('timm', 'nasnet_a_large', 'nasnetalarge', (96, 80), {}),
] + [('torchvision', f'efficientnet_b{i}', f'efficientnet_b{i}', (64, 64), {}) for i in range(8)]


@pytest.mark.parametrize('source, name, torch_name, size, kwargs', PARITY,
                         ids=[f'{p[0]}-{p[1]}' for p in PARITY])
def test_converted_model_gives_the_torch_logits(tmp_path, source, name, torch_name, size, kwargs):
  python = _torch_python()
  if python is None:
    pytest.skip('no Python with torch/torchvision/timm: set CNN_HISTORY_TORCH_PYTHON (or run '
                'scripts/test_torch_parity.sh)')
  script = os.path.join(REPO, 'benchmarks', 'torch_reference.py')
  run = subprocess.run([python, script, '--source', source, '--model', torch_name,
                        '--size', *map(str, size), '--kwargs', json.dumps(kwargs),
                        '--out', str(tmp_path)], capture_output=True, text=True, check=False)
  if run.returncode:
    pytest.fail(f'{script} failed under {python}:\n{run.stderr[-4000:]}')
  state = torch_convert.load_state_dict(str(tmp_path / 'state.safetensors'))
  module, variables = torch_convert.torch_to_flax(name, state, source)
  x = np.load(tmp_path / 'input.npy')
  theirs = np.load(tmp_path / 'logits.npy')
  ours = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
  assert ours.shape == theirs.shape
  scale = np.abs(theirs).max()
  diff = np.abs(ours - theirs).max()
  print(f'{source} {name}: max |logit| {scale:.3g}, max abs diff {diff:.3g}')
  assert scale > 0.1  # the logits carry signal
  # float32 through up to ~150 layers: 1e-4 absolute, or 1e-5 relative to the logits' scale
  # where random BN statistics make them large (ResNet-101/152: |logits| ~20-260).
  assert diff <= max(1e-4, 1e-5 * scale)
