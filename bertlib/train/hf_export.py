"""``bertlib export --to hf``: a bertlib model as a Hugging Face directory that ``transformers`` and
keras-hub load as it is, with no bertlib installed.

``export_hf(input_path, output_dir) -> Path`` reads any bertlib model — an export dir
(``bert_model.ckpt.*`` with Google names + ``bert_config.json`` + ``vocab.txt`` + ``vocab_info.json``),
a Google TF1 or HF checkpoint, a training checkpoint folder (``run_dir/checkpoints``: the newest
``ckpt-N``) or a run dir (its ``export/``, else its ``checkpoints/``; pretraining or SQuAD) — and writes::

    config.json              transformers' BertConfig (architectures: BertForPreTraining for a
                             pretrained model, BertForQuestionAnswering for a SQuAD model, BertModel
                             for an encoder alone; hidden_act "gelu" = the exact erf GELU bertlib computes)
    model.safetensors        transformers' names and [out, in] layouts (the tied MLM decoder left
                             out, as ``save_pretrained`` leaves it out)
    vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json
                             BERT's WordPiece with the casing the vocab was used with

``write_hf_export(model, config, vocab_file, vocab_info, out_dir)`` does the same for a model in
memory (the pretraining and SQuAD jobs call it for ``<export>/hf``). The name table is
:mod:`bertlib.model.checkpoints`'; the tokenizer is :func:`bertlib.data.tokenization.load_wordpiece`
with the post-processor that adds ``[CLS]`` / ``[SEP]``. Every file is written through a temp name.

TensorFlow is imported only to read TF checkpoints (inside the reading functions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import yaml

from bertlib.core.cli_schema import command, parse
from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.core.files import write_bytes, write_json, write_text
from bertlib.core.vocab import effective_strip_accents, read_vocab
from bertlib.data.tokenization import SPECIAL_TOKENS, load_wordpiece
from bertlib.model.checkpoints import (
    VOCAB_NAME,
    google_name_map,
    read_pretrained_tensors,
    resolve_pretrained,
    write_hf_model,
)
from bertlib.model.config import BertConfig
from bertlib.train.paths import is_training_checkpoint_dir, read_checkpoint_vocab

#: the folder of the HF export inside a job's export (``model.tar.gz``: ``hf/config.json`` ...)
HF_SUBDIR = "hf"
HF_FILES = (
    "config.json",
    "model.safetensors",
    VOCAB_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_SPECIAL_KEYS = {
    "[UNK]": "unk_token",
    "[SEP]": "sep_token",
    "[PAD]": "pad_token",
    "[CLS]": "cls_token",
    "[MASK]": "mask_token",
}


@dataclasses.dataclass
class Source:
    """A bertlib model found at a path: its Google-named tensors, config and tokenizer."""

    description: str
    tensors: dict[str, np.ndarray]
    config: BertConfig
    vocab_file: Path | None
    lowercase: bool | None
    strip_accents: bool | None


# --------------------------------------------------------------------------- writing


def write_hf_tokenizer(
    vocab_file: str | os.PathLike,
    lowercase: bool,
    strip_accents: bool | None,
    out_dir: str | os.PathLike,
    model_max_length: int,
) -> None:
    """``vocab.txt``, ``tokenizer.json`` (bertlib's WordPiece pipeline + ``[CLS] A [SEP] (B [SEP])``),
    ``tokenizer_config.json`` and ``special_tokens_map.json`` as transformers' ``BertTokenizer`` reads them."""
    from tokenizers import processors

    out = Path(out_dir)
    vocab = read_vocab(vocab_file)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ConfigError(f"{vocab_file}: no {', '.join(missing)} entry; not a BERT WordPiece vocab")
    strip = effective_strip_accents(lowercase, strip_accents)
    tok = load_wordpiece(vocab_file, lowercase, strip)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    write_bytes(out / VOCAB_NAME, Path(vocab_file).read_bytes())
    write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    specials = {key: token for token, key in _SPECIAL_KEYS.items()}
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": bool(lowercase),
            "strip_accents": strip,
            "tokenize_chinese_chars": True,
            "do_basic_tokenize": True,
            "model_max_length": int(model_max_length),
            "clean_up_tokenization_spaces": True,
            **specials,
        },
        sort_keys=True,
    )
    write_json(out / "special_tokens_map.json", specials, sort_keys=True)


def write_hf_dir(source: Source, out_dir: str | os.PathLike) -> Path:
    """Write the HF export of ``source`` into ``out_dir``; returns it."""
    if source.vocab_file is None:
        raise ConfigError(f"{source.description}: no vocab.txt found for it; pass --vocab_file")
    if source.lowercase is None:
        raise ConfigError(f"{source.description}: its casing is unknown; pass --do_lower_case true or false")
    n_vocab = len(read_vocab(source.vocab_file))
    if n_vocab != source.config.vocab_size:
        raise ConfigError(
            f"{source.vocab_file}: {n_vocab} entries, but the model's vocab_size is {source.config.vocab_size}"
        )
    out = Path(out_dir)
    write_hf_model(source.tensors, source.config, out, source.description)
    write_hf_tokenizer(
        source.vocab_file, source.lowercase, source.strip_accents, out, source.config.max_position_embeddings
    )
    return out


def write_hf_export(model, config: BertConfig, vocab_file, vocab_info: dict, out_dir) -> Path:
    """The HF export of a bertlib model in memory (``BertPretrainer``, ``BertQA`` or ``BertEncoder``),
    with its vocab and ``vocab_info`` (``{lowercase, strip_accents, ...}``)."""
    tensors = {name: np.asarray(v.numpy()) for name, v in google_name_map(model).items()}
    source = Source(
        f"model {getattr(model, 'name', '')}",
        tensors,
        config,
        Path(vocab_file),
        vocab_info.get("lowercase"),
        vocab_info.get("strip_accents"),
    )
    return write_hf_dir(source, out_dir)


def wants_hf_export(cfg) -> bool:
    """A job's ``hf_export`` setting; unset: on for phase 2 and SQuAD, off for phase 1."""
    if cfg.hf_export is not None:
        return bool(cfg.hf_export)
    return getattr(cfg, "phase", None) != "phase1"


# --------------------------------------------------------------------------- reading


def _unescape(name: str) -> str:
    """An object-graph key segment → the variable path (TF escapes ``/`` as ``.S`` and ``.`` as ``..``)."""
    return re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), name)


def read_training_checkpoint(directory: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """``(prefix, {google name: array})`` of the newest ``ckpt-N`` of a bertlib training checkpoint
    folder: the model weights only (no optimizer slots, dropout state or step)."""
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(directory))
    if prefix is None:
        raise ConfigError(f"{directory}: the checkpoint state file names no existing checkpoint")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ConfigError(f"{prefix}: not a readable TF checkpoint ({str(e).splitlines()[0]})") from None
    tensors = {}
    for key in reader.get_variable_to_shape_map():
        m = re.fullmatch(r"model_weights/(.+)/\.ATTRIBUTES/VARIABLE_VALUE", key)
        if m:
            name = _unescape(m.group(1))
            if name.startswith(("bert/", "cls/")):
                tensors[name] = reader.get_tensor(key)
    if "bert/embeddings/word_embeddings" not in tensors:
        raise ConfigError(f"{prefix}: not a bertlib training checkpoint (no model_weights of a BERT model)")
    return prefix, tensors


def _run_root(run_dir: Path, cfg: dict) -> Path:
    """The directory the run's relative paths were relative to: ``run_dir`` minus the config's
    ``run_dir`` (``/x/runs/demo/phase1`` with ``run_dir: runs/demo/phase1`` → ``/x``), else the cwd."""
    configured = Path(str(cfg.get("run_dir") or ""))
    resolved = run_dir.resolve()
    if (
        configured.parts
        and not configured.is_absolute()
        and resolved.parts[-len(configured.parts) :] == configured.parts
    ):
        return Path(*resolved.parts[: -len(configured.parts)])
    return Path.cwd()


def _local(path, root: Path) -> Path | None:
    if not path or "://" in str(path):
        return None
    p = Path(str(path))
    if p.is_absolute():
        return p
    return root / p if (root / p).exists() else p


def _run_config(run_dir: Path, cfg: dict, tensors: dict, root: Path, depth: int = 0) -> tuple[BertConfig, Path | None]:
    """The BertConfig of a training run from its ``config.yaml``: its init checkpoint's config
    (``load_from: checkpoint``) or the ``model_size`` preset; and that init model's dir, if local."""
    vocab_size = int(tensors["bert/embeddings/word_embeddings"].shape[0])
    init = _local(cfg.get("checkpoint_path"), root) if cfg.get("load_from") == "checkpoint" else None
    if init is not None and init.exists():
        if is_training_checkpoint_dir(init) and depth < 8:  # phase 2 from phase 1's checkpoints/
            parent_cfg = _read_yaml(init.parent / "config.yaml")
            if parent_cfg is not None:
                return _run_config(init.parent, parent_cfg, tensors, _run_root(init.parent, parent_cfg), depth + 1)[
                    0
                ], None
        else:
            return resolve_pretrained(init).config, init
    size = cfg.get("model_size") or "base"
    return BertConfig.from_preset(
        size, vocab_size, max_position_embeddings=max(512, int(cfg.get("max_seq_length") or 0))
    ), None


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: not a run config (a YAML mapping)")
    return values


def _from_training_checkpoint(ckpt_dir: Path) -> Source:
    prefix, tensors = read_training_checkpoint(ckpt_dir)
    run_dir = ckpt_dir.parent
    cfg = _read_yaml(run_dir / "config.yaml")
    if cfg is None:
        raise ConfigError(
            f"{ckpt_dir}: no config.yaml in {run_dir} to tell the model's config (is it a run's checkpoints/?)"
        )
    root = _run_root(run_dir, cfg)
    config, init = _run_config(run_dir, cfg, tensors, root)
    vocab, lowercase, strip = None, None, None
    if cfg.get("vocab_file"):  # a SQuAD run that names its vocab
        vocab = _local(cfg["vocab_file"], root)
        lowercase = cfg.get("do_lower_case")
    recorded = read_checkpoint_vocab(ckpt_dir)  # pretraining: the data's vocab identity
    if recorded:
        lowercase, strip = recorded.get("lowercase"), recorded.get("strip_accents")
        data = _local(cfg.get("data_dir"), root)
        if vocab is None and data is not None and (data / VOCAB_NAME).is_file():
            vocab = data / VOCAB_NAME
    if init is not None and (vocab is None or lowercase is None):  # SQuAD: the init model's tokenizer
        info = resolve_pretrained(init)
        vocab = vocab or info.vocab_file
        if lowercase is None:
            lowercase = info.do_lower_case
        if strip is None and info.vocab_info:
            strip = info.vocab_info.get("strip_accents")
    if lowercase is None and cfg.get("do_lower_case") is not None:
        lowercase = cfg["do_lower_case"]
    return Source(str(prefix), tensors, config, vocab, lowercase, strip)


def find_source(input_path: str | os.PathLike) -> Source:
    """The model at ``input_path``: an export dir / Google / HF checkpoint, a training checkpoint
    folder, or a run dir (its ``export/`` if it holds one, else its ``checkpoints/``)."""
    p = Path(input_path)
    if not p.exists() and not Path(f"{p}.index").is_file():
        raise FileNotFoundError(f"{p}: no export dir, checkpoint or run dir at this path")
    if p.is_dir() and (p / "config.yaml").is_file() and not (p / "bert_config.json").is_file():  # a run dir
        if (p / "export" / "bert_config.json").is_file():
            p = p / "export"
        elif is_training_checkpoint_dir(p / "checkpoints"):
            p = p / "checkpoints"
        else:
            raise ConfigError(f"{p}: a run dir with neither export/ nor checkpoints/")
    if is_training_checkpoint_dir(p):
        return _from_training_checkpoint(p)
    info = resolve_pretrained(p)
    strip = info.vocab_info.get("strip_accents") if info.vocab_info else None
    return Source(
        str(info.weights), read_pretrained_tensors(info), info.config, info.vocab_file, info.do_lower_case, strip
    )


def export_hf(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
    do_lower_case: bool | None = None,
) -> Path:
    """Write the Hugging Face export of the bertlib model at ``input_path`` (see :func:`find_source`)
    into ``output_dir``; ``vocab_file`` / ``do_lower_case`` override what the input says. Returns
    ``output_dir``. Bad input raises ``ConfigError`` / ``FileNotFoundError`` with one line."""
    source = find_source(input_path)
    if vocab_file is not None:
        if not Path(vocab_file).is_file():
            raise FileNotFoundError(f"{vocab_file}: vocab file not found")
        source.vocab_file = Path(vocab_file)
    if do_lower_case is not None:
        if source.lowercase is not None and bool(do_lower_case) != bool(source.lowercase):
            source.strip_accents = None  # the recorded accent rule was for the other casing
        source.lowercase = bool(do_lower_case)
    return write_hf_dir(source, output_dir)


# --------------------------------------------------------------------------- CLI


def _export_schema():
    """The keys of ``bertlib export`` (its ``--help`` is generated from them)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class ExportConfig(BaseModel):
        """A bertlib model -> a Hugging Face dir (transformers, keras-hub)."""

        model_config = ConfigDict(extra="forbid")
        to: Literal["hf"] = Field(
            "hf", description="format: hf = transformers' config.json + model.safetensors + tokenizer"
        )
        input: str = Field(..., description="export dir, run dir, training checkpoints/ or Google / HF checkpoint")
        output: str = Field(..., description="directory to write")
        vocab_file: str | None = Field(
            None, description="default: the model's vocab.txt (export dir, data dir, init model)"
        )
        do_lower_case: bool | None = Field(None, description="default: the casing the model's vocab was used with")

    return ExportConfig


def main(argv: list[str]) -> int:
    """``bertlib export --to hf --input PATH --output DIR``: a bertlib export dir, run dir, training
    checkpoint or SQuAD run as a directory that transformers (BertForPreTraining /
    BertForQuestionAnswering, AutoTokenizer) and keras-hub (BertBackbone.from_preset) load."""
    schema = _export_schema()
    parsed = parse(command("bertlib export", schema, help=main.__doc__.replace("``", "")), argv)
    if parsed is None:
        return 0
    args = build_config(schema, parsed.values, "command line").model_dump(exclude_unset=True)
    out = export_hf(args["input"], args["output"], args.get("vocab_file"), args.get("do_lower_case"))
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    print(f"exported {args['input']} as {arch} -> {out} ({', '.join(HF_FILES)})")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
