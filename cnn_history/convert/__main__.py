r"""Imports pretrained weights into a workdir that train.py evaluates and fine-tunes from.

  python -m cnn_history.convert --source=keras --model=vgg16 \
      --checkpoint=vgg16_weights_tf_dim_ordering_tf_kernels.h5 --workdir=/tmp/vgg16_keras
  python -m cnn_history.convert --source=torchvision --model=resnet50 \
      --checkpoint=resnet50-0676ba61.pth --workdir=/tmp/resnet50_tv

Keras: a .keras file (or a full-model .h5) is read with keras.models.load_model, so the
architecture (width, input size, classes) comes with it; an .h5 of weights only, as
keras.applications downloads them, is loaded into keras.applications.<Builder>(weights=PATH,
**--keras_args). torchvision / timm: a state dict (.pth / .safetensors) read by
cnn_history.convert.torch.

The workdir gets checkpoints/0 (params and batch_stats, no optimizer state) and
conversion.json (source, model, the module switches the weights need, num_classes and the
evaluation preprocessing); see cnn_history/pretrained.py and docs/pretrained.md.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

_SOURCE = flags.DEFINE_enum('source', None, ['keras', 'torchvision', 'timm'],
                            'The framework the weights come from.')
_MODEL = flags.DEFINE_string('model', None, 'The registry model name, e.g. vgg16, resnet50.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'The weights file (.keras, .h5, .pth, '
                                  '.safetensors).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the imported checkpoint is written.')
_KERAS_ARGS = flags.DEFINE_string('keras_args', '', 'For a weights-only .h5: keyword arguments '
                                  'of the keras.applications builder as a dict literal, e.g. '
                                  "\"{'alpha': 0.25, 'input_shape': (128, 128, 3)}\".")
flags.mark_flags_as_required(['source', 'model', 'checkpoint', 'workdir'])


def main(argv):
  del argv
  from cnn_history import pretrained  # pylint: disable=g-import-not-at-top
  conversion = pretrained.import_weights(_SOURCE.value, _MODEL.value, _CHECKPOINT.value,
                                         _WORKDIR.value,
                                         pretrained.parse_keras_args(_KERAS_ARGS.value))
  logging.info('Wrote %s/checkpoints/0 and %s: %s', _WORKDIR.value, pretrained.CONVERSION_FILE,
               conversion)
  print(f'Imported {conversion["source"]} {conversion["model"]} '
        f'({conversion["num_params"]:,} parameters, {conversion["num_classes"]} classes) into '
        f'{_WORKDIR.value}; model switches {conversion["overrides"]}; evaluation preprocessing '
        f'{conversion["eval_preprocess"]!r}.', flush=True)


if __name__ == '__main__':
  app.run(main)
