"""The summary tool's multiply-add counter against hand-computed values."""

import flax.linen as nn
import jax.numpy as jnp

from cnn_history import models
from cnn_history.models import summary


class Tiny(nn.Module):
  num_classes: int = 10
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(8, (3, 3), strides=(2, 2), padding='SAME', name='conv')(x)          # 16x16x8
    x = nn.Conv(8, (3, 3), feature_group_count=8, padding='SAME', name='dw')(x)     # depthwise
    x = nn.Conv(12, (1, 1), feature_group_count=4, name='grouped')(x)              # 4 groups
    return nn.Dense(self.num_classes, name='fc')(x.mean(axis=(1, 2)))


def test_macs_by_hand():
  macs = summary.macs_by_scope(Tiny(), (32, 32, 3))
  assert macs == {'Tiny/conv': 16 * 16 * 8 * (3 * 3 * 3), 'Tiny/dw': 16 * 16 * 8 * 9,
                  'Tiny/grouped': 16 * 16 * 12 * 2, 'Tiny/fc': 12 * 10}


def test_lenet5_table():
  rows, params, macs = summary.summarize('lenet5')
  by_name = {r.path: r for r in rows}
  assert params == 60_000
  assert by_name['C1'].macs == 28 * 28 * 6 * 25 and by_name['C1'].params == 156
  assert by_name['C5'].macs == 120 * 400 and by_name['F6'].macs == 120 * 84
  assert macs == 415_680
  text = summary.format_table(rows, params, macs, None)
  assert 'C3' in text and '415,680' in text


def test_summary_cli(capsys):
  summary.main(['lenet5', '--set', 'head=dense', '--set', 'c3_table=False'])
  out = capsys.readouterr().out
  # 60,000 - 1,516 (Table I C3) + 2,416 (full C3) + 850 (a dense 84 -> 10 output)
  assert '61,750' in out and 'output' in out
