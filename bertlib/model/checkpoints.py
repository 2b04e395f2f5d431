"""Checkpoint import and export: Google's TF1 BERT checkpoints, HF safetensors, bertlib export dirs.

Every bertlib weight's ``variable.path`` is its google-research/bert name, so a Google checkpoint is
read and written by name with no table; an HF (PyTorch) state dict is translated name by name:

======================================================  ==============================================
HF / PyTorch (optional ``bert.`` prefix)                 Google / bertlib
======================================================  ==============================================
``embeddings.word_embeddings.weight``                    ``bert/embeddings/word_embeddings``
``embeddings.LayerNorm.weight`` / ``.bias``              ``bert/embeddings/LayerNorm/gamma`` / ``beta``
(also ``.gamma`` / ``.beta`` in old exports)
``encoder.layer.3.attention.self.query.weight`` [o, i]   ``bert/encoder/layer_3/attention/self/query/kernel`` [i, o] (transposed)
``encoder.layer.3.output.dense.bias``                    ``bert/encoder/layer_3/output/dense/bias``
``pooler.dense.weight``                                  ``bert/pooler/dense/kernel`` (transposed)
``cls.predictions.transform.dense.weight``               ``cls/predictions/transform/dense/kernel`` (transposed)
``cls.predictions.bias``                                 ``cls/predictions/output_bias``
``cls.seq_relationship.weight`` [2, H]                   ``cls/seq_relationship/output_weights`` [2, H] (same layout)
``qa_outputs.weight`` [2, H] / ``.bias`` [2]             ``cls/squad/output_weights`` [2, H] / ``output_bias`` (same layout)
``embeddings.position_ids``, ``cls.predictions.decoder.*``  not weights (a buffer; tied to word_embeddings)
======================================================  ==============================================

The same table writes a Hugging Face dir (:func:`write_hf_model`, used by ``bertlib export --to hf``):
the names of the transformers model (:func:`hf_state_dict_names`) are translated by
:func:`hf_to_google_name` to the Google names whose arrays they take.

A **bertlib export dir** (``export_model``; phase-1/phase-2 output, SQuAD init) is Google's layout
plus a vocab description: ``bert_config.json``, ``vocab.txt``, ``bert_model.ckpt.index`` /
``.data-00000-of-00001`` (TF1 name-based, readable by ``tf.train.load_checkpoint``), and
``vocab_info.json`` (``{sha256, size, lowercase, strip_accents}``) when the casing is known.

``bertlib convert-checkpoint --input PATH --output DIR [--vocab_file F] [--do_lower_case B]`` turns
any supported input into an export dir.

Nothing here imports TensorFlow at import time (``tensorflow`` is imported inside the functions that
read or write TF checkpoints), so that ``main`` rejects bad arguments first; building a model from a
checkpoint (:func:`bertlib.model.loading.load_pretrained`, the conversion itself) is in
:mod:`bertlib.model.loading`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from bertlib.core.cli_schema import command, parse
from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.core.files import write_json
from bertlib.core.vocab import read_vocab
from bertlib.core.vocab import vocab_info as identify_vocab  # export_model has a vocab_info argument
from bertlib.model.config import LAYER_NORM_EPSILON, BertConfig

CKPT_NAME = "bert_model.ckpt"
CONFIG_NAME = "bert_config.json"
VOCAB_NAME = "vocab.txt"
VOCAB_INFO_NAME = "vocab_info.json"
#: the TensorFlow half of ``convert-checkpoint`` (and :func:`bertlib.model.loading.load_pretrained`)
CONVERT_MODULE = "bertlib.model.loading"


# --------------------------------------------------------------------------- names


def google_name_map(model) -> dict:
    """``{google name: keras.Variable}`` for every weight of a bertlib model (encoder, pretrainer, QA).

    The names are the variables' paths (``bert/encoder/layer_0/attention/self/query/kernel``,
    ``cls/predictions/output_bias``); dropout seed state is not a weight and is left out.
    """
    out = {}
    for v in model.weights:
        if not v.trainable:
            continue
        name = v.path
        match = re.search(r"(?:^|/)((?:bert|cls)/.*)$", name)
        if not match:
            raise ValueError(f"weight {name!r} has no Google name (created outside bertlib.model?)")
        if match.group(1) in out:
            raise ValueError(f"two weights are named {match.group(1)!r}")
        out[match.group(1)] = v
    return out


_HF_LINEAR = re.compile(r"(query|key|value|dense)$")
_LN_LEAF = {"weight": "gamma", "gamma": "gamma", "bias": "beta", "beta": "beta"}


def hf_to_google_name(name: str) -> tuple[str, bool] | None:
    """Translate one HF/PyTorch BERT tensor name → ``(google name, transpose?)``; ``None`` for
    tensors that are not weights of the Google model (``position_ids``, the tied decoder, and the
    ``classifier.*`` head of a BertForSequenceClassification file, so that its encoder loads too).
    ``qa_outputs.*`` (BertForQuestionAnswering) is the ``cls/squad`` head of :class:`BertQA`; a model
    without that head ignores it."""
    n = name[len("bert.") :] if name.startswith("bert.") else name
    if n.endswith("position_ids") or n.startswith(("cls.predictions.decoder", "classifier.")):
        return None
    if n in ("qa_outputs.weight", "qa_outputs.bias"):
        return f"cls/squad/output_{n.rpartition('.')[2].replace('weight', 'weights')}", False  # [2, H] both
    if n == "cls.predictions.bias":
        return "cls/predictions/output_bias", False
    if n == "cls.seq_relationship.weight":
        return "cls/seq_relationship/output_weights", False  # [2, H] in both layouts
    if n == "cls.seq_relationship.bias":
        return "cls/seq_relationship/output_bias", False
    parts = n.split(".")
    leaf, module = parts[-1], parts[:-1]
    module = [f"layer_{p}" if prev == "layer" and p.isdigit() else p for prev, p in zip([""] + module[:-1], module)]
    module = [p for p in module if p != "layer"]  # encoder.layer.3 → encoder/layer_3
    scope = "/".join(module)
    if not n.startswith("cls."):
        scope = "bert/" + scope
    if module[-1] == "LayerNorm":
        return f"{scope}/{_LN_LEAF[leaf]}", False
    if module[-1].endswith("embeddings") and leaf == "weight":
        return scope, False
    if _HF_LINEAR.search(module[-1]):
        return f"{scope}/{'kernel' if leaf == 'weight' else 'bias'}", leaf == "weight"
    raise ConfigError(f"unexpected tensor name {name!r} in an HF BERT state dict")


# --------------------------------------------------------------------------- reading


def read_google_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """All float tensors of a TF1 name-based checkpoint ``prefix`` (``.../bert_model.ckpt``),
    without optimizer slots (``adam_m``/``adam_v``) and ``global_step``."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as e:
        raise ConfigError(f"{prefix}: not a readable TF checkpoint ({str(e).splitlines()[0]})") from None
    out = {}
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if not dtype.is_floating or re.search(r"(adam_[mv]|global_step)$", name):
            continue
        out[name] = reader.get_tensor(name)
    return out


def read_hf_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An HF ``model.safetensors`` BERT state dict → ``{google name: array}`` (linear weights
    transposed to Keras/TF ``[in, out]`` kernels)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable safetensors file ({e})") from None
    out = {}
    for name, value in tensors.items():
        mapped = hf_to_google_name(name)
        if mapped is None:
            continue
        gname, transpose = mapped
        out[gname] = np.ascontiguousarray(value.T if transpose else value).astype(np.float32)
    return out


def assign_weights(
    model, tensors: dict[str, np.ndarray], source: str, allow_missing: Iterable[str] = ("cls/",)
) -> list[str]:
    """Assign ``tensors`` (Google names) to ``model``'s weights; returns the names loaded.

    A model weight absent from ``tensors`` is an error unless its name starts with one of
    ``allow_missing`` (default: the pretraining heads, absent from encoder-only checkpoints). Shape
    mismatches are errors. Tensors the model does not have are ignored. Errors name ``source``.
    """
    allow_missing = tuple(allow_missing)
    loaded = []
    for name, var in google_name_map(model).items():
        if name not in tensors:
            if name.startswith(allow_missing):
                continue
            raise ConfigError(f"{source}: no tensor {name!r} in the checkpoint")
        value = tensors[name]
        if tuple(value.shape) != tuple(var.shape):
            raise ConfigError(
                f"{source}: {name} has shape {list(value.shape)} in the checkpoint, the model expects {list(var.shape)}"
            )
        var.assign(value.astype(np.float32))
        loaded.append(name)
    return loaded


# --------------------------------------------------------------------------- writing


def save_google_checkpoint(model, prefix: str | os.PathLike) -> Path:
    """Write ``model``'s weights under their Google names as a TF1 name-based checkpoint at
    ``prefix`` (``prefix.index`` + ``prefix.data-00000-of-00001``), through a temp name."""
    import tensorflow as tf

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names, values = zip(*sorted(google_name_map(model).items()))
    tmp_dir = Path(tempfile.mkdtemp(dir=prefix.parent, prefix=f".{prefix.name}."))
    try:
        tmp_prefix = tmp_dir / prefix.name
        tf.raw_ops.SaveV2(
            prefix=str(tmp_prefix),
            tensor_names=list(names),
            shape_and_slices=[""] * len(names),
            tensors=[tf.convert_to_tensor(v) for v in values],
        )
        files = sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".index")  # index last
        for f in files:
            os.replace(f, prefix.parent / f.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix


def publish(tmp: str | os.PathLike, dst: Path) -> None:
    """Give a finished temp file the usual permissions (0644 under the umask; ``mkstemp`` makes
    0600) and rename it onto ``dst``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o644 & ~umask)
    os.replace(tmp, dst)


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    shutil.copyfile(src, tmp)
    publish(tmp, dst)


def export_model(
    model,
    config,
    vocab_file: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    do_lower_case: bool | None = None,
    strip_accents: bool | None = None,
    vocab_info: dict | None = None,
) -> Path:
    """Write a bertlib export dir: ``bert_model.ckpt.*`` (all of ``model``'s weights, Google names),
    ``bert_config.json``, ``vocab.txt`` (copied from ``vocab_file``) and, if the casing is known,
    ``vocab_info.json``. Each file is written through a temp name. Returns ``out_dir``.

    ``vocab_info``: the identity of ``vocab_file`` (:func:`bertlib.core.vocab.vocab_info`), computed by
    the caller, so that this model module does not depend on the tokenizer. ``do_lower_case`` /
    ``strip_accents`` instead of it: computed here (the ``convert-checkpoint`` command's way).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if vocab_file is not None:
        vocab = Path(vocab_file)
        if not vocab.is_file():
            raise FileNotFoundError(f"{vocab}: vocab file not found")
        if vocab.resolve() != (out / VOCAB_NAME).resolve():
            _atomic_copy(vocab, out / VOCAB_NAME)
        if vocab_info is None and do_lower_case is not None:
            vocab_info = identify_vocab(vocab, do_lower_case, strip_accents)
        if vocab_info is not None:
            write_json(out / VOCAB_INFO_NAME, vocab_info, sort_keys=True)
    save_google_checkpoint(model, out / CKPT_NAME)
    config.to_json_file(out / CONFIG_NAME)
    return out


# --------------------------------------------------------------------------- Hugging Face out

#: the transformers class of each kind of bertlib model (what ``architectures`` in config.json says)
HF_ARCHITECTURES = {"pretraining": "BertForPreTraining", "qa": "BertForQuestionAnswering", "encoder": "BertModel"}


def model_kind(names: Iterable[str]) -> str:
    """``qa`` (a ``cls/squad`` head), ``pretraining`` (MLM + NSP heads) or ``encoder`` (no head) for a
    set of Google names."""
    names = set(names)
    if any(n.startswith("cls/squad/") for n in names):
        return "qa"
    if any(n.startswith("cls/predictions/") for n in names):
        return "pretraining"
    return "encoder"


def hf_state_dict_names(config: BertConfig, kind: str) -> list[str]:
    """The tensor names transformers' ``save_pretrained`` writes for the model of ``kind``
    (:data:`HF_ARCHITECTURES`): ``bert.``-prefixed for the head models, without the tied MLM decoder
    (``cls.predictions.decoder.weight`` / ``.bias`` are tied to the word embeddings and
    ``cls.predictions.bias``: transformers 5 ``_tied_weights_keys``) and without the non-persistent
    ``position_ids`` buffer."""
    if kind not in HF_ARCHITECTURES:
        raise ValueError(f"unknown model kind {kind!r} (choose from {', '.join(HF_ARCHITECTURES)})")
    prefix = "" if kind == "encoder" else "bert."
    names = [
        f"{prefix}embeddings.{t}.weight" for t in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    names += [f"{prefix}embeddings.LayerNorm.{leaf}" for leaf in ("weight", "bias")]
    for i in range(config.num_hidden_layers):
        p = f"{prefix}encoder.layer.{i}."
        for module in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            names += [f"{p}{module}.weight", f"{p}{module}.bias"]
    names += [f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias"]
    if kind == "pretraining":
        names += [
            "cls.predictions.bias",
            "cls.predictions.transform.dense.weight",
            "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.LayerNorm.bias",
            "cls.seq_relationship.weight",
            "cls.seq_relationship.bias",
        ]
    elif kind == "qa":
        names += ["qa_outputs.weight", "qa_outputs.bias"]
    return names


def google_to_hf(tensors: dict[str, np.ndarray], config: BertConfig, kind: str, source: str) -> dict[str, np.ndarray]:
    """``{google name: array}`` → transformers' state dict of ``kind`` (names and layouts by
    :func:`hf_to_google_name`: Dense kernels transposed to ``[out, in]``), float32, contiguous.
    A missing tensor or a shape that ``config`` contradicts is a ConfigError naming ``source``."""
    expected = _google_shapes(config)
    out = {}
    for name in hf_state_dict_names(config, kind):
        gname, transpose = hf_to_google_name(name)
        if gname not in tensors:
            raise ConfigError(f"{source}: no tensor {gname!r} (needed for {HF_ARCHITECTURES[kind]}.{name})")
        value = np.asarray(tensors[gname], np.float32)
        if gname in expected and tuple(value.shape) != expected[gname]:
            raise ConfigError(
                f"{source}: {gname} has shape {list(value.shape)}, its config says {list(expected[gname])}"
            )
        out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def _google_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors whose size the config fixes (the rest are [H] or [2, H])."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {
        "bert/embeddings/word_embeddings": (config.vocab_size, h),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, h),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
        "cls/predictions/output_bias": (config.vocab_size,),
    }
    for n in range(config.num_hidden_layers):
        shapes[f"bert/encoder/layer_{n}/intermediate/dense/kernel"] = (h, i)
        shapes[f"bert/encoder/layer_{n}/output/dense/kernel"] = (i, h)
        shapes[f"bert/encoder/layer_{n}/attention/self/query/kernel"] = (h, h)
    return shapes


def hf_config(config: BertConfig, kind: str) -> dict:
    """transformers' ``config.json`` of a bertlib model: every ``BertConfig`` field that changes the
    numbers. ``hidden_act`` keeps bertlib's name, which means the same function in transformers
    (``gelu`` = the exact erf GELU of :func:`bertlib.model.bert.activation`, ``gelu_new`` the tanh
    one); LayerNorm eps is bertlib's 1e-12; positions are absolute."""
    return {
        "architectures": [HF_ARCHITECTURES[kind]],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": LAYER_NORM_EPSILON,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


HF_WEIGHTS_NAME = "model.safetensors"
HF_CONFIG_NAME = "config.json"


def write_hf_model(tensors: dict[str, np.ndarray], config: BertConfig, out_dir: str | os.PathLike, source: str) -> str:
    """Write ``config.json`` and ``model.safetensors`` (transformers' names and layouts, metadata
    ``format: pt`` as ``save_pretrained`` writes it) of the bertlib model whose Google-named
    ``tensors`` are given, each through a temp name. Returns the model kind (:func:`model_kind`)."""
    from safetensors.numpy import save_file

    kind = model_kind(tensors)
    state = google_to_hf(tensors, config, kind, source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{HF_WEIGHTS_NAME}.")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        publish(tmp, out / HF_WEIGHTS_NAME)
    finally:
        Path(tmp).unlink(missing_ok=True)
    write_json(out / HF_CONFIG_NAME, hf_config(config, kind), sort_keys=True)
    return kind


# --------------------------------------------------------------------------- autodetection


@dataclasses.dataclass
class Pretrained:
    """What :func:`resolve_pretrained` found at a path."""

    kind: str  # "google" (Google ckpt or bertlib export) | "hf"
    weights: Path  # checkpoint prefix or model.safetensors
    config: object  # BertConfig
    vocab_file: Path | None  # vocab.txt next to the weights, if any
    do_lower_case: bool | None  # from vocab_info.json / tokenizer_config.json / the name
    vocab_info: dict | None  # vocab_info.json of a bertlib export


def _casing_from_name(path: Path) -> bool | None:
    """Google's rule (``tokenization.validate_case_matches_checkpoint``): the model name says it."""
    text = str(path).lower()
    if "uncased" in text:
        return True
    if re.search(r"(^|[^a-z])cased", text):
        return False
    return None


def _find_prefix(directory: Path) -> Path | None:
    if (directory / f"{CKPT_NAME}.index").is_file():
        return directory / CKPT_NAME
    if (directory / "checkpoint").is_file():
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(str(directory))
        if latest:
            return Path(latest)
    indexes = sorted(directory.glob("*.index"))
    return indexes[0].with_suffix("") if len(indexes) == 1 else None


def resolve_pretrained(path: str | os.PathLike, config_file: str | os.PathLike | None = None) -> Pretrained:
    """Identify a pretrained model at ``path``: a bertlib export dir or Google dir (``bert_config.json``
    + a ``*.ckpt``), a Google checkpoint prefix (``.../bert_model.ckpt``, config in the same dir), an
    HF dir (``config.json`` + ``model.safetensors``) or a ``.safetensors`` file. ``config_file``
    overrides where the config is read from. Raises ``FileNotFoundError`` / ``ConfigError``."""
    p = Path(path)
    vocab_info = None
    if p.is_dir() and (p / "model.safetensors").is_file():
        kind, weights, directory = "hf", p / "model.safetensors", p
    elif p.is_file() and p.suffix == ".safetensors":
        kind, weights, directory = "hf", p, p.parent
    elif p.is_dir():
        prefix = _find_prefix(p)
        if prefix is None:
            raise ConfigError(
                f"{p}: no BERT checkpoint here (expected {CKPT_NAME}.index, a 'checkpoint' file, or model.safetensors)"
            )
        kind, weights, directory = "google", prefix, p
    elif Path(f"{p}.index").is_file():
        kind, weights, directory = "google", p, p.parent
    else:
        raise FileNotFoundError(f"{p}: no checkpoint, export dir or safetensors file at this path")

    cfg_path = Path(config_file) if config_file else directory / (CONFIG_NAME if kind == "google" else "config.json")
    if not cfg_path.is_file() and kind == "hf" and (directory / CONFIG_NAME).is_file():
        cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: model config not found (needed for {weights})")
    try:
        config = BertConfig.from_json_file(cfg_path)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if kind == "hf":
        values = json.loads(cfg_path.read_text())
        eps = values.get("layer_norm_eps", 1e-12)
        if values.get("position_embedding_type", "absolute") != "absolute" or abs(eps - 1e-12) > 1e-15:
            raise ConfigError(
                f"{cfg_path}: only BERT with absolute positions and LayerNorm eps 1e-12 is "
                f"supported (got {values.get('position_embedding_type')}, {eps})"
            )

    do_lower_case = None
    if (directory / VOCAB_INFO_NAME).is_file():
        vocab_info = json.loads((directory / VOCAB_INFO_NAME).read_text())
        do_lower_case = vocab_info.get("lowercase")
    elif (directory / "tokenizer_config.json").is_file():
        do_lower_case = json.loads((directory / "tokenizer_config.json").read_text()).get("do_lower_case")
    if do_lower_case is None:
        do_lower_case = _casing_from_name(weights.resolve())
    vocab = directory / VOCAB_NAME
    return Pretrained(kind, weights, config, vocab if vocab.is_file() else None, do_lower_case, vocab_info)


def read_pretrained_tensors(info: Pretrained) -> dict[str, np.ndarray]:
    """``{google name: array}`` of a resolved pretrained model."""
    if info.kind == "hf":
        return read_hf_safetensors(info.weights)
    return read_google_checkpoint(info.weights)


def load_weights(model, path: str | os.PathLike, allow_missing=("cls/",)) -> list[str]:
    """Load any supported checkpoint at ``path`` into an existing bertlib model (encoder,
    pretrainer, QA); heads absent from the checkpoint stay as initialized. Returns names loaded."""
    info = resolve_pretrained(path)
    return assign_weights(model, read_pretrained_tensors(info), str(info.weights), allow_missing)


# --------------------------------------------------------------------------- CLI


def _convert_schema():
    """The keys of ``bertlib convert-checkpoint`` (its ``--help`` is generated from them)."""
    from pydantic import BaseModel, ConfigDict, Field

    class ConvertConfig(BaseModel):
        """Google TF1 / HF safetensors / export dir -> a bertlib export dir."""

        model_config = ConfigDict(extra="forbid")
        input: str = Field(..., description="checkpoint prefix, export dir, or safetensors file / dir")
        output: str = Field(..., description="export dir to write")
        vocab_file: str | None = Field(None, description="default: the vocab.txt next to the checkpoint")
        do_lower_case: bool | None = Field(None, description="default: the checkpoint's casing")
        config_file: str | None = Field(None, description="bert_config.json / config.json; default: next to it")

    return ConvertConfig


def main(argv: list[str]) -> int:
    """``bertlib convert-checkpoint``: Google TF1 / HF safetensors / export dir → a bertlib export dir
    holding the encoder and any pretraining heads the input has."""
    schema = _convert_schema()
    parsed = parse(command("bertlib convert-checkpoint", schema, help=main.__doc__.replace("``", "")), argv)
    if parsed is None:
        return 0
    args = build_config(schema, parsed.values, "command line").model_dump(exclude_unset=True)
    info = resolve_pretrained(str(args["input"]), args.get("config_file"))
    vocab = Path(args["vocab_file"]) if args.get("vocab_file") else info.vocab_file
    if vocab is None:
        raise ConfigError(f"{args['input']}: no vocab.txt next to the checkpoint; pass --vocab_file")
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: vocab file not found")
    n_vocab = len(read_vocab(vocab))
    if n_vocab != info.config.vocab_size:
        raise ConfigError(f"{vocab}: {n_vocab} entries, but the model's vocab_size is {info.config.vocab_size}")
    lower = args.get("do_lower_case", info.do_lower_case)
    # the model half imports TensorFlow (bertlib.model.heads): only now that the input is checked
    importlib.import_module(CONVERT_MODULE).convert(info, vocab, args["output"], lower)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
