"""BERT in Keras 3: the encoder, its task heads, and checkpoint import/export.

``variable.path`` of every weight is its google-research/bert checkpoint name, see
:mod:`bertlib.model.checkpoints`. Names are imported lazily, so that importing
``bertlib.model.checkpoints`` for its CLI does not load TensorFlow before the arguments are checked.
"""

import importlib

_EXPORTS = {
    "PRESETS": "bertlib.model.config",
    "BertConfig": "bertlib.model.config",
    "BertEncoder": "bertlib.model.bert",
    "dummy_inputs": "bertlib.model.bert",
    "BertPretrainer": "bertlib.model.heads",
    "BertQA": "bertlib.model.heads",
    "pretraining_losses": "bertlib.model.heads",
    "pretraining_sums": "bertlib.model.heads",
    "load_pretrained": "bertlib.model.loading",
    "load_weights": "bertlib.model.checkpoints",
    "export_model": "bertlib.model.checkpoints",
    "resolve_pretrained": "bertlib.model.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bertlib.model' has no attribute {name!r}")
