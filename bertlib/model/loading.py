"""Bertlib models built from checkpoints: an encoder with pretrained weights
(:func:`load_pretrained`) and the model half of ``bertlib convert-checkpoint`` (:func:`convert`).

Reading, resolving and writing the checkpoint formats is :mod:`bertlib.model.checkpoints` (no
TensorFlow at import); this module imports the Keras models, hence TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertlib.model.bert import BertEncoder
from bertlib.model.checkpoints import (
    Pretrained,
    assign_weights,
    export_model,
    model_kind,
    read_pretrained_tensors,
    resolve_pretrained,
)
from bertlib.model.config import BertConfig
from bertlib.model.heads import BertPretrainer, BertQA


def load_pretrained(
    path: str | os.PathLike, config_file: str | os.PathLike | None = None
) -> tuple[BertEncoder, BertConfig]:
    """``(BertEncoder, BertConfig)`` with the weights of the model at ``path`` (see
    :func:`bertlib.model.checkpoints.resolve_pretrained`); every encoder weight must be present."""
    info = resolve_pretrained(path, config_file)
    encoder = BertEncoder(info.config)
    assign_weights(encoder, read_pretrained_tensors(info), str(info.weights), allow_missing=())
    return encoder, info.config


def convert(info: Pretrained, vocab: Path, output: str | os.PathLike, lower: bool | None) -> Path:
    """Export the checkpoint ``info`` (checked by ``convert-checkpoint``'s ``main``) with ``vocab``
    into the export dir ``output``: the encoder, and the pretraining heads or the SQuAD span head
    (``cls/squad``, an HF ``qa_outputs``) if the input has them."""
    tensors = read_pretrained_tensors(info)
    qa = model_kind(tensors) == "qa"
    model = BertQA(info.config) if qa else BertPretrainer(info.config)
    loaded = assign_weights(model, tensors, str(info.weights), allow_missing=("cls/",))
    heads = any(n.startswith("cls/") for n in loaded)
    if not heads:  # encoder-only input: do not export random heads
        model = model.encoder
    out = export_model(model, info.config, vocab, output, do_lower_case=lower)
    what = ", with the SQuAD head" if qa else ", with pretraining heads" if heads else ", encoder only"
    print(f"converted {info.kind} checkpoint {info.weights} ({len(loaded)} tensors{what}) -> {out}")
    return out
