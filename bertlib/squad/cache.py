"""The feature cache: :class:`~bertlib.squad.features.SquadFeature` s as one uncompressed
TFRecord plus a ``.json`` sidecar, and the ``tf.data`` input pipeline that reads it.

The file name carries a hash of the input file, the settings and the vocabulary's sha256
(:func:`load_or_build_features`), so changing any of them builds a new file.

Feature record (S = max_seq_length):

=====================  ======  ===  ======================================================
feature                dtype   shp  meaning
=====================  ======  ===  ======================================================
unique_ids             int64   [1]  1000000000 + running index (as in run_squad)
example_index          int64   [1]  index of the example in the read order
doc_span_index         int64   [1]  which window of the example
input_ids              int64   [S]  ``[CLS] query [SEP] window [SEP]`` ids, 0-padded
input_mask             int64   [S]  1 for real tokens
segment_ids            int64   [S]  0 for ``[CLS] query [SEP]``, 1 for ``window [SEP]``
start_positions        int64   [1]  training target (0 = CLS: impossible / not in window)
end_positions          int64   [1]  training target
is_impossible          int64   [1]  1 if the question has no answer (or not in this window)
token_to_orig          int64   [S]  word index in ``doc_tokens`` for window tokens, else -1
token_is_max_context   int64   [S]  1 if this window is the token's max-context window
=====================  ======  ===  ======================================================

Parsed (:func:`parse_features`, :func:`squad_dataset`, :func:`read_features`) every feature is int32,
``[B, S]`` / ``[B]`` per batch or ``[N, S]`` / ``[N]`` for a whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bertlib.squad.features import SquadFeature, convert_examples_to_features
from bertlib.squad.reading import SquadExample

FEATURE_FORMAT = "bertlib-squad-features/1"
SEQ_FEATURES = ("input_ids", "input_mask", "segment_ids", "token_to_orig", "token_is_max_context")
SCALAR_FEATURES = ("unique_ids", "example_index", "doc_span_index", "start_positions", "end_positions", "is_impossible")


def features_key(source_sha256: str, vocab: dict, settings: dict) -> str:
    """16-hex key of everything the features depend on: input file, vocabulary, settings."""
    blob = json.dumps(
        {"format": FEATURE_FORMAT, "source": source_sha256, "vocab": vocab, "settings": settings}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_features(path: str | os.PathLike, features: Iterable[SquadFeature]) -> int:
    """Write features as one TFRecord via a temp name + rename; returns the count."""
    import tensorflow as tf

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    with tf.io.TFRecordWriter(str(tmp)) as w:
        for f in features:
            feats = {
                "unique_ids": ints([f.unique_id]),
                "example_index": ints([f.example_index]),
                "doc_span_index": ints([f.doc_span_index]),
                "input_ids": ints(f.input_ids),
                "input_mask": ints(f.input_mask),
                "segment_ids": ints(f.segment_ids),
                "start_positions": ints([f.start_position]),
                "end_positions": ints([f.end_position]),
                "is_impossible": ints([int(f.is_impossible)]),
                "token_to_orig": ints(f.token_to_orig),
                "token_is_max_context": ints(f.token_is_max_context),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
            n += 1
    os.replace(tmp, path)
    return n


def feature_spec(max_seq_length: int) -> dict:
    """``tf.io.parse_example`` spec of a feature record."""
    import tensorflow as tf

    spec = {k: tf.io.FixedLenFeature([max_seq_length], tf.int64) for k in SEQ_FEATURES}
    spec.update({k: tf.io.FixedLenFeature([1], tf.int64) for k in SCALAR_FEATURES})
    return spec


def parse_features(serialized, max_seq_length: int) -> dict:
    """Serialized records [B] → dict of int32 tensors: sequence features [B, S], scalars [B]."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(max_seq_length))
    return {k: tf.cast(v if k in SEQ_FEATURES else tf.squeeze(v, -1), tf.int32) for k, v in parsed.items()}


def _parser(max_seq_length: int):
    """:func:`parse_features` for ``Dataset.map``, traced without autograph (plain TF ops; converting
    the source would cost about a second at every start)."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(lambda serialized: parse_features(serialized, max_seq_length))


def read_features(path: str | os.PathLike, max_seq_length: int) -> dict[str, np.ndarray]:
    """All records of a feature file → dict of numpy int32 arrays ([N, S] or [N])."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path)).batch(4096).map(_parser(max_seq_length))
    parts = list(ds.as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_or_build_features(
    examples: Sequence[SquadExample],
    tokenizer,
    source_sha256: str,
    vocab: dict,
    cache_dir: str | os.PathLike,
    name: str,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    is_training: bool,
) -> tuple[Path, dict]:
    """Cached feature file for these examples and settings → (tfrecord path, sidecar info).

    The cache name is ``{name}-{train|predict}-{key}.tfrecord`` with ``key`` =
    :func:`features_key`; the sidecar ``.json`` (written last) records settings and counts, so a
    present sidecar means a complete record file.
    """
    settings = {
        "max_seq_length": max_seq_length,
        "doc_stride": doc_stride,
        "max_query_length": max_query_length,
        "is_training": is_training,
    }
    key = features_key(source_sha256, vocab, settings)
    cache = Path(cache_dir)
    stem = f"{name}-{'train' if is_training else 'predict'}-{key}"
    rec, side = cache / f"{stem}.tfrecord", cache / f"{stem}.json"
    if side.is_file() and rec.is_file():
        return rec, json.loads(side.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    feats = convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training)
    n = write_features(rec, feats)
    info = {
        "format": FEATURE_FORMAT,
        "source_sha256": source_sha256,
        "vocab": vocab,
        "settings": settings,
        "examples": len(examples),
        "features": n,
        "impossible_features": sum(int(f.is_impossible) for f in feats),
    }
    tmp = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, side)
    return rec, info


def squad_dataset(
    path: str | os.PathLike,
    batch_size: int,
    max_seq_length: int,
    training: bool,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    shuffle_buffer: int = 10000,
):
    """tf.data batches of parsed features (dict of int32 [B, S] / [B]).

    Training: the records are sharded by ``rank`` of ``world``, shuffled, repeated, and the last
    partial batch dropped. Prediction: every record once, in file order, last batch kept.
    """
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path))
    if training:
        ds = ds.shard(world, rank).shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.map(_parser(max_seq_length), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
