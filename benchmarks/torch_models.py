"""PyTorch eager twins of three cnn_history networks, for the speed comparison only.

Run by benchmarks/compare_pytorch.py in a Python that has torch (`pip install torch==2.13.0`,
kept out of the project's dependencies). Each network computes what its cnn_history namesake
computes: LeNet-5 as the 1998 paper built it (Table I connections as a masked convolution,
trainable subsampling, scaled tanh, fixed RBF prototypes); the CIFAR ResNet-20 with option-A
shortcuts; ResNet-50 v1 (stride on the first 1x1 of the bottleneck, projection shortcuts).

  python benchmarks/torch_models.py --model resnet50 --batch 32 --mode train --layout channels_last
prints one JSON line: images/s and the median step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

C3_TABLE = ((0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
            (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
            (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5))


def scaled_tanh(x):
  return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsample(nn.Module):
  def __init__(self, maps):
    super().__init__()
    self.coefficient = nn.Parameter(torch.ones(maps))
    self.bias = nn.Parameter(torch.zeros(maps))

  def forward(self, x):
    return F.avg_pool2d(x, 2) * 4 * self.coefficient[:, None, None] + self.bias[:, None, None]


class LeNet5(nn.Module):
  def __init__(self):
    super().__init__()
    self.c1 = nn.Conv2d(1, 6, 5)
    self.s2 = Subsample(6)
    self.c3 = nn.Conv2d(6, 16, 5)
    mask = torch.zeros(16, 6, 1, 1)
    for m, row in enumerate(C3_TABLE):
      mask[m, list(row)] = 1.0
    self.register_buffer('mask', mask)
    self.s4 = Subsample(16)
    self.c5 = nn.Conv2d(16, 120, 5)
    self.f6 = nn.Linear(120, 84)
    self.register_buffer('prototypes', torch.randint(0, 2, (10, 84)).float() * 2 - 1)

  def forward(self, x):
    x = scaled_tanh(self.s2(scaled_tanh(self.c1(x))))
    x = F.conv2d(x, self.c3.weight * self.mask, self.c3.bias)
    x = scaled_tanh(self.s4(scaled_tanh(x)))
    x = scaled_tanh(self.c5(x)).flatten(1)
    x = scaled_tanh(self.f6(x))
    return -((x[:, None, :] - self.prototypes[None]) ** 2).sum(-1)


class BasicBlockA(nn.Module):
  """CIFAR ResNet block with the option-A (zero-padded identity) shortcut."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.pad = stride, cout - cin

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
    if self.pad:
      shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
    return F.relu(y + shortcut)


class ResNetCifar(nn.Module):
  def __init__(self, n=3, num_classes=10):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    blocks, cin = [], 16
    for stage, width in enumerate((16, 32, 64)):
      for i in range(n):
        blocks.append(BasicBlockA(cin, width, 2 if stage and i == 0 else 1))
        cin = width
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(64, num_classes)

  def forward(self, x):
    return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class Bottleneck(nn.Module):
  """ResNet v1 bottleneck: the stride on the first 1x1 (the 2015 paper, Caffe)."""

  def __init__(self, cin, width, stride):
    super().__init__()
    cout = 4 * width
    self.conv1 = nn.Conv2d(cin, width, 1, stride, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout)
    self.shortcut = None
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet50(nn.Module):
  def __init__(self, num_classes=1000):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                              nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    blocks, cin = [], 64
    for stage, (width, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
      for i in range(n):
        blocks.append(Bottleneck(cin, width, 2 if stage and i == 0 else 1))
        cin = 4 * width
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(2048, num_classes)

  def forward(self, x):
    return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


MODELS = {'lenet5': (LeNet5, (1, 32, 32), 10), 'resnet20': (ResNetCifar, (3, 32, 32), 10),
          'resnet50': (ResNet50, (3, 224, 224), 1000)}


def benchmark(name, batch, mode, layout, steps, warmup, threads):
  torch.set_num_threads(threads)
  cls, shape, classes = MODELS[name]
  model = cls()
  x = torch.randn(batch, *shape)
  y = torch.randint(0, classes, (batch,))
  if layout == 'channels_last':
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  model.train(mode == 'train')
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    if mode == 'train':
      opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(model(x), y)
      loss.backward()
      opt.step()
    else:
      with torch.inference_mode():
        model(x)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  step = statistics.median(times)
  return {'framework': f'pytorch {torch.__version__} eager ({layout})', 'model': name,
          'mode': mode, 'batch': batch, 'step_s': step, 'images_per_s': batch / step,
          'threads': threads, 'params': sum(p.numel() for p in model.parameters())}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', choices=sorted(MODELS), required=True)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--mode', choices=('train', 'eval'), default='train')
  parser.add_argument('--layout', choices=('nchw', 'channels_last'), default='nchw')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--threads', type=int, default=torch.get_num_threads())
  args = parser.parse_args()
  print(json.dumps(benchmark(args.model, args.batch, args.mode, args.layout, args.steps,
                             args.warmup, args.threads)))


if __name__ == '__main__':
  main()
