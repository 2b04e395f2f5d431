"""``bertlib adopt-data``: a folder of Google-format pretraining TFRecords → a prepared dataset.

Records made by Google's ``create_pretraining_data.py`` and the scripts derived from it (NVIDIA
DeepLearningExamples' BERT for TensorFlow, MLPerf's BERT reference, TF Model Garden, the records the
aws-samples reference trains on) carry exactly the features of :mod:`bertlib.data.records` under
Google's names, but no ``manifest.json``, so ``bertlib pretrain`` refuses them. Adoption reads every
record once and writes what ``prepare-data`` would have:

1. files     ``train_files`` / ``validation_files`` globs under ``data_dir`` (or the last
             ``validation_shards`` of the sorted train files held out); hidden paths, ``manifest.json``
             and ``vocab.txt`` are never records.
2. layout    S = ``max_seq_length`` and P = ``max_predictions_per_seq`` are the lengths of ``input_ids``
             and ``masked_lm_ids`` in the first record of the first file.
3. records   every record of every file is parsed by TensorFlow with the [S]/[P]/[1] spec and must hold
             exactly the seven features (other names, dtypes or lengths: one line naming the file, the
             record and the feature); token ids lie in the vocab, the first token is ``[CLS]``, masks,
             segments and labels are 0/1, positions < S, weights finite and >= 0. Per-shard statistics
             are counted on the way.
4. manifest  sha256 of every shard, ``vocab.txt`` copied in (the pretraining export ships it), then
             ``manifest.json`` (``created_by: bertlib adopt-data``), both through a temp name + rename.

Each file's result is kept in ``<data_dir>/.adopt/<file>.json``, keyed by the vocab, S, P and the
file's size and mtime: a rerun (after an interruption, or to change the validation split) re-reads only
files that changed. A manifest written by ``prepare-data`` or another tool is only replaced with
``force``. Compressed (GZIP) records are refused: ``bertlib pretrain`` reads uncompressed ones.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np

from bertlib.core.config import AdoptConfig, job_command, parse_job_args
from bertlib.core.errors import ConfigError, DataError, run_guarded
from bertlib.core.files import sha256_file, write_json
from bertlib.core.progress import quiet_or_bar
from bertlib.core.vocab import check_vocab_casing, read_vocab, vocab_info
from bertlib.data.records import (
    FEATURE_NAMES,
    MANIFEST_FORMAT,
    check_example_layout,
    feature_spec,
    first_example,
    shard_mix,
    tf_error_reason,
)

CREATED_BY = "bertlib adopt-data"
ADOPT_VERSION = 1  # bump when the per-record checks or statistics change (invalidates .adopt markers)
BATCH = 4096  # records parsed per TensorFlow call
_NOT_RECORDS = {"manifest.json", "vocab.txt"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def list_files(cfg: AdoptConfig) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...]}``: record files as paths relative to ``data_dir``, sorted."""
    root = Path(cfg.data_dir)

    def glob(pattern: str) -> list[str]:
        if Path(pattern).is_absolute():
            raise ConfigError(f"{pattern}: file patterns are relative to data_dir ({root})")
        out = []
        for p in root.glob(pattern):
            rel = p.relative_to(root)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts) and str(rel) not in _NOT_RECORDS:
                out.append(rel.as_posix())
        return sorted(out)

    train = glob(cfg.train_files)
    validation = glob(cfg.validation_files) if cfg.validation_files else []
    if cfg.validation_shards:
        if cfg.validation_shards >= len(train):
            raise ConfigError(
                f"{root}: validation_shards={cfg.validation_shards} but only {len(train)} files "
                f"match train_files {cfg.train_files!r} (at least one must stay for training)"
            )
        validation = train[-cfg.validation_shards :]
    train = [f for f in train if f not in set(validation)]
    if not train:
        raise ConfigError(
            f"{root}: no training record files match train_files {cfg.train_files!r}"
            + (f" outside validation_files {cfg.validation_files!r}" if validation else "")
        )
    return {"train": train, "validation": validation}


def infer_lengths(path: Path) -> tuple[int, int]:
    """(S, P) from the first record of ``path``; DataError if that record is not in Google's layout."""
    example = first_example(path)
    feats = example.features.feature
    s = len(feats["input_ids"].int64_list.value) if "input_ids" in feats else 0
    p = len(feats["masked_lm_ids"].int64_list.value) if "masked_lm_ids" in feats else 0
    check_example_layout(example, f"{path}: record 0", s, p)
    if s < 8 or not 1 <= p <= s:
        raise DataError(
            f"{path}: record 0: input_ids length {s} and masked_lm_ids length {p} are not a "
            f"pretraining layout (need max_seq_length >= 8 and 1 <= max_predictions_per_seq <= it)"
        )
    return s, p


def _feature_counts(raw):
    """Serialized Examples [B] that all have a feature map → entries of each map [B] (numpy int).
    ``tf.io.parse_example`` ignores features it was not asked for; this finds them."""
    import tensorflow as tf

    _, features = tf.io.decode_proto(raw, "tensorflow.Example", ["features"], [tf.string])
    sizes, _ = tf.io.decode_proto(tf.reshape(features[0], [-1]), "tensorflow.Features", ["feature"], [tf.string])
    return sizes.numpy()[:, 0]


def _locate_layout_error(path: Path, start: int, records, s: int, p: int, tf_error: str) -> NoReturn:
    """Raise the DataError of the first record of a batch that is not a well-formed Example."""
    import tensorflow as tf

    for i, rec in enumerate(records):
        where = f"{path}: record {start + i}"
        try:
            example = tf.train.Example.FromString(rec)
        except Exception as e:  # protobuf DecodeError
            raise DataError(f"{where}: not a tf.train.Example ({e})") from None
        check_example_layout(example, where, s, p)
    raise DataError(f"{path}: records {start}..{start + len(records) - 1}: TensorFlow cannot parse them ({tf_error})")


class _VocabFacts:
    """What the record checks need of a vocab: its file, entry count and the id of ``[CLS]``."""

    def __init__(self, vocab_file: Path):
        tokens = read_vocab(vocab_file)
        missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in tokens]
        if missing:
            raise ConfigError(f"{vocab_file}: vocab lacks the special tokens {missing}")
        self.file, self.size, self.cls_id = vocab_file, len(tokens), tokens.index("[CLS]")


def _check_values(path: Path, start: int, b: dict, s: int, vocab: _VocabFacts) -> None:
    """DataError naming the file, record and feature of the first out-of-range value in a parsed batch."""

    def outside(values, low: int, high: int):
        return (values < low) | (values >= high)

    ids, weights = b["input_ids"], b["masked_lm_weights"]
    in_vocab = f"token id {{}} outside the vocab (size {vocab.size}, {vocab.file})"
    zero_one = "value {} is not 0 or 1"
    checks = [
        ("input_ids", outside(ids, 0, vocab.size), ids, in_vocab),
        ("masked_lm_ids", outside(b["masked_lm_ids"], 0, vocab.size), b["masked_lm_ids"], in_vocab),
        (
            "input_ids",
            ids[:, :1] != vocab.cls_id,
            ids[:, :1],
            f"first token {{}} is not [CLS] (id {vocab.cls_id} in {vocab.file}): made with another vocab?",
        ),
        ("input_mask", outside(b["input_mask"], 0, 2), b["input_mask"], zero_one),
        ("segment_ids", outside(b["segment_ids"], 0, 2), b["segment_ids"], zero_one),
        ("next_sentence_labels", outside(b["next_sentence_labels"], 0, 2), b["next_sentence_labels"], zero_one),
        (
            "masked_lm_positions",
            outside(b["masked_lm_positions"], 0, s),
            b["masked_lm_positions"],
            f"position {{}} is outside [0, {s})",
        ),
        ("masked_lm_weights", ~np.isfinite(weights) | (weights < 0), weights, "weight {} is not finite and >= 0"),
    ]
    for name, bad, values, problem in checks:
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"{path}: record {start + row}: feature {name!r} " + problem.format(values[row, col]))


def scan_file(path: Path, s: int, p: int, vocab: _VocabFacts) -> dict:
    """Read and check every record of one file; return its shard statistics
    ``{examples, masked_tokens, real_tokens, random_next}`` (counts over the file)."""
    import tensorflow as tf

    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            raise DataError(
                f"{path}: GZIP-compressed TFRecords (e.g. Model Garden's --gzip_compress); "
                f"bertlib reads uncompressed ones: gunzip the files first"
            )
    spec = feature_spec(s, p)
    stats = {"examples": 0, "masked_tokens": 0, "real_tokens": 0, "random_next": 0}
    batches = iter(tf.data.TFRecordDataset(str(path)).batch(BATCH))
    while True:
        try:
            raw = next(batches, None)
        except tf.errors.OpError as e:  # DataLossError: bad framing or CRC, truncated file
            raise DataError(f"{path}: corrupt or not a TFRecord file (TensorFlow: {tf_error_reason(e)})") from None
        if raw is None:
            break
        start = stats["examples"]
        try:
            parsed = {k: v.numpy() for k, v in tf.io.parse_example(raw, spec).items()}
        except tf.errors.InvalidArgumentError as e:  # a missing feature, another dtype or length
            _locate_layout_error(path, start, raw.numpy(), s, p, tf_error_reason(e))
        if (_feature_counts(raw) != len(FEATURE_NAMES)).any():  # a feature beyond Google's seven
            _locate_layout_error(path, start, raw.numpy(), s, p, "feature maps of another size")
        _check_values(path, start, parsed, s, vocab)
        stats["examples"] += len(raw)
        stats["masked_tokens"] += int(parsed["masked_lm_weights"].sum())
        stats["real_tokens"] += int(parsed["input_mask"].sum())
        stats["random_next"] += int(parsed["next_sentence_labels"].sum())
    if stats["examples"] == 0:
        raise DataError(f"{path}: holds no records")
    return stats


def _marker_key(path: Path, s: int, p: int, vocab_sha256: str) -> dict:
    st = path.stat()
    return {
        "v": ADOPT_VERSION,
        "max_seq_length": s,
        "max_predictions_per_seq": p,
        "vocab": vocab_sha256,
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _check_existing(cfg: AdoptConfig, root: Path) -> None:
    """Refuse to replace a manifest that adopt-data did not write (unless ``force``)."""
    path = root / "manifest.json"
    if not path.exists() or cfg.force:
        return
    old = _read_json(path)
    writer = old.get("created_by") if isinstance(old, dict) else None
    if writer != CREATED_BY:
        raise ConfigError(
            f"{path}: already a dataset manifest (written by {writer or 'another tool'}); "
            f"adopt-data only replaces its own: pass --force true to replace it"
        )


def _place_vocab(cfg: AdoptConfig, root: Path, vocab_sha256: str) -> None:
    """``<data_dir>/vocab.txt`` = the given vocab (copied through a temp name); another one there is
    refused unless ``force``."""

    dest = root / "vocab.txt"
    if dest.is_file() and sha256_file(dest) == vocab_sha256:
        return
    if dest.exists() and not cfg.force:
        raise ConfigError(
            f"{dest}: differs from vocab_file {cfg.vocab_file}; give the vocab the records were "
            f"made with, or pass --force true to replace it"
        )
    tmp = root / f".vocab.txt.tmp{os.getpid()}"
    shutil.copyfile(cfg.vocab_file, tmp)
    os.replace(tmp, dest)


def adopt(cfg: AdoptConfig, progress: bool = True) -> dict:
    """Adopt ``cfg.data_dir`` (see the module docstring); return the manifest written, plus
    ``adopt = {files_read, files_reused, seconds, records_per_s}``. Bad input raises ConfigError /
    DataError / FileNotFoundError with one line naming the file (and record and feature)."""

    t0 = time.perf_counter()
    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data_dir not found")
    vocab_path = Path(cfg.vocab_file)
    info = vocab_info(vocab_path, cfg.do_lower_case, cfg.strip_accents)  # FileNotFoundError if absent
    check_vocab_casing(vocab_path, cfg.do_lower_case)
    vocab = _VocabFacts(vocab_path)
    _check_existing(cfg, root)
    _place_vocab(cfg, root, info["sha256"])
    files = list_files(cfg)
    s, p = infer_lengths(root / files["train"][0])

    todo, shards = [], {}
    for split, rels in files.items():
        for rel in rels:
            key = _marker_key(root / rel, s, p, info["sha256"])
            marker = _read_json(root / ".adopt" / f"{rel}.json")
            if marker and marker.get("key") == key:
                shards[rel] = marker["shard"]
            else:
                todo.append((rel, key))
    if todo:  # the folder is no dataset until every changed file is re-read (an old manifest is ours, or forced)
        (root / "manifest.json").unlink(missing_ok=True)
    records_read = 0
    t_read = time.perf_counter()
    with quiet_or_bar(progress, desc="adopt", unit="file", total=len(todo)) as bar:
        for rel, key in todo:
            path = root / rel
            stats = scan_file(path, s, p, vocab)
            shard = {"file": rel, "sha256": sha256_file(path), "bytes": key["bytes"], **stats}
            if _marker_key(path, s, p, info["sha256"]) != key:
                raise DataError(f"{path}: changed while it was being read; rerun adopt-data")
            write_json(root / ".adopt" / f"{rel}.json", {"key": key, "shard": shard})
            shards[rel] = shard
            records_read += stats["examples"]
            bar.update(1)
    read_s = time.perf_counter() - t_read
    stat_keys = ("examples", "masked_tokens", "real_tokens", "random_next")
    splits = {split: {k: sum(shards[rel][k] for rel in rels) for k in stat_keys} for split, rels in files.items()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "max_seq_length": s,
        "max_predictions_per_seq": p,
        "vocab": info,
        "settings": {
            "adopted_from": str(root.resolve()),
            "train_files": cfg.train_files,
            "validation_files": cfg.validation_files,
            "validation_shards": cfg.validation_shards,
            "do_lower_case": cfg.do_lower_case,
            "strip_accents": cfg.strip_accents,
        },
        "counts": {k: sum(c[k] for c in splits.values()) for k in stat_keys},
        "splits": splits,
        "shards": {
            split: [{**shards[rel], **shard_mix(shards[rel], s)} for rel in rels] for split, rels in files.items()
        },
        "created_by": CREATED_BY,
    }
    write_json(root / "manifest.json", manifest)
    return {
        **manifest,
        "adopt": {
            "files_read": len(todo),
            "files_reused": sum(map(len, files.values())) - len(todo),
            "records_read": records_read,
            "seconds": time.perf_counter() - t0,
            "records_per_s": records_read / read_s if read_s > 0 else 0.0,
        },
    }


def main(argv: list[str]) -> int:
    """``bertlib adopt-data --data_dir DIR --vocab_file VOCAB [--key value ...]`` (``--help``: every AdoptConfig key)."""
    cli = job_command(
        "adopt-data",
        help=__doc__.splitlines()[0] + " E.g. --data_dir DIR --vocab_file VOCAB "
        "--train_files 'training/*' --validation_files 'test/*' (values are YAML).",
        progress_flag=True,
    )
    cfg, args = parse_job_args("adopt-data", cli, argv)
    if cfg is None:
        return 0
    m = adopt(cfg, progress=not args.extras["no_progress"])
    a = m["adopt"]
    print(
        f"[bertlib] adopt-data {cfg.data_dir} max_seq_length={m['max_seq_length']} "
        f"max_predictions_per_seq={m['max_predictions_per_seq']} vocab_size={m['vocab']['size']} "
        f"files_read={a['files_read']} files_reused={a['files_reused']} records_per_s={a['records_per_s']:.0f} "
        f"seconds={a['seconds']:.1f}"
    )
    for split, c in m["splits"].items():
        print(
            f"[bertlib] {split}: shards={len(m['shards'][split])} examples={c['examples']} "
            f"masked_tokens={c['masked_tokens']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
