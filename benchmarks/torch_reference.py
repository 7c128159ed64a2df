"""A torchvision/timm network with random weights, its state dict and its logits: the reference
that tests/test_convert_torch.py holds the converted Flax model to.

Runs in a Python that has torch + torchvision + timm (not the project's venv: see
scripts/test_torch_parity.sh), without downloading anything:

  python benchmarks/torch_reference.py --source torchvision --model resnet50 --size 64 --out DIR

writes DIR/state.safetensors (the state dict), DIR/input.npy (an NHWC float32 batch) and
DIR/logits.npy (the network's eval-mode logits on it). Every BatchNorm gets random running
statistics and affine terms, and every bias random values, so that a swapped mean/variance or a
dropped bias changes the logits.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import safetensors.torch
import torch


def build(source: str, model: str, kwargs: dict):
  if source == 'torchvision':
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision.models.get_model(model, weights=None, **kwargs)
  import timm  # pylint: disable=g-import-not-at-top
  return timm.create_model(model, pretrained=False, **kwargs)


def randomise(net: torch.nn.Module, generator: torch.Generator) -> None:
  """Random BN statistics/affine terms and biases (their inits are 0/1 and zeros)."""
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        c = module.num_features
        module.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
        module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
        if module.affine:
          module.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.5)
          module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
      elif getattr(module, 'bias', None) is not None and isinstance(module.bias, torch.Tensor):
        module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--source', choices=('torchvision', 'timm'), required=True)
  parser.add_argument('--model', required=True, help='the torchvision/timm builder name')
  parser.add_argument('--size', type=int, nargs=2, required=True, metavar=('H', 'W'))
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--kwargs', default='{}', help='JSON keyword arguments of the builder')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  torch.set_num_threads(1)
  torch.manual_seed(args.seed)
  generator = torch.Generator().manual_seed(args.seed)
  net = build(args.source, args.model, json.loads(args.kwargs))
  randomise(net, generator)
  net.eval()
  x = torch.randn((args.batch, 3) + tuple(args.size), generator=generator)
  with torch.no_grad():
    logits = net(x)
  os.makedirs(args.out, exist_ok=True)
  state = {k: v.contiguous() for k, v in net.state_dict().items()}
  safetensors.torch.save_file(state, os.path.join(args.out, 'state.safetensors'))
  np.save(os.path.join(args.out, 'input.npy'), x.permute(0, 2, 3, 1).numpy())
  np.save(os.path.join(args.out, 'logits.npy'), logits.numpy())


if __name__ == '__main__':
  main()
