"""The pretraining input pipeline: prepared TFRecord shards → batches of parsed feature dicts.

Like google-research/bert's ``input_fn``: the shard list is split between Horovod ranks (each rank
reads its own files), the files are interleaved, records shuffled through a buffer, batched with
``drop_remainder`` (every step has the same shape, which XLA wants) and parsed per batch.
When a dataset has fewer files than ranks, every rank reads all files and keeps every
``world``-th record instead, so ranks still see disjoint examples.

Order is deterministic for a given ``seed`` (seeded shuffles, ``deterministic`` interleave), which is
what makes a resumed run (``skip_batches`` = micro-batches already consumed) see the same batches
as an uninterrupted one. The trainer normally restores the iterator state each rank saved with the
checkpoint instead (into a pipeline built with ``skip_batches=0``, so the pipeline always has its
``skip`` step) and reads no consumed record; skipping is its fallback.

A packed dataset (``manifest.json["packing"]``: up to K pairs per row, ``input_mask`` = pair number)
is parsed with its K, and :func:`packed_features` adds what the model needs to keep the pairs apart
(position within each pair, each pair's ``[CLS]`` position and presence). An unpacked dataset gives
exactly Google's features.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertlib.core.errors import DataError
from bertlib.core.vocab import read_vocab
from bertlib.data.masking import dynamic_mask, mask_seed
from bertlib.data.pretraining import SpecialIds
from bertlib.data.records import dataset_layout, parse_pretraining_batch, validate_dataset

#: files read concurrently per rank (google-research/bert uses min(4, files))
CYCLE_LENGTH = 4


def shard_files(
    data_dir: str | os.PathLike,
    split: str,
    max_seq_length: int,
    max_predictions_per_seq: int,
    vocab: dict | None = None,
    checksums: bool = True,
) -> tuple[list[str], dict]:
    """Validate the dataset (manifest vs the requested shapes/vocab); return the ``split``'s files and
    the manifest."""
    manifest = validate_dataset(
        data_dir,
        max_seq_length=max_seq_length,
        max_predictions_per_seq=max_predictions_per_seq,
        vocab=vocab,
        checksums=checksums,
    )
    shards = manifest.get("shards", {}).get(split) or []
    if not shards:
        raise DataError(f"{Path(data_dir) / 'manifest.json'}: no {split!r} shards")
    return [str(Path(data_dir) / s["file"]) for s in shards], manifest


def packed_features(batch: dict, max_pairs_per_row: int) -> dict:
    """Parsed packed batch → the same dict plus the features that keep its pairs apart.

    ``batch["input_mask"]`` [B, S] holds the 1-based pair number of every real token (1..K, pairs
    back to back from position 0) and 0 on padding. Adds, with K = ``max_pairs_per_row``:

    - ``position_ids`` [B, S] int32: position within the token's own pair (0 at its ``[CLS]``), 0 on
      padding;
    - ``next_sentence_positions`` [B, K] int32: row position of pair j's ``[CLS]`` (its first token)
      at index j-1, 0 for an absent pair;
    - ``next_sentence_weights`` [B, K] float32: 1.0 for a present pair, 0.0 for an absent one.
    """
    import tensorflow as tf

    pair = tf.cast(batch["input_mask"], tf.int32)  # [B, S]
    seq_len = tf.shape(pair)[1]
    in_pair = tf.equal(pair[:, :, tf.newaxis], tf.range(1, max_pairs_per_row + 1))  # [B, S, K]
    index = tf.range(seq_len)[tf.newaxis, :, tf.newaxis]  # [1, S, 1]
    start = tf.reduce_min(tf.where(in_pair, index, seq_len), axis=1)  # [B, K]; S if absent
    present = tf.reduce_any(in_pair, axis=1)  # [B, K]
    start = tf.where(present, start, 0)
    own_start = tf.reduce_sum(tf.cast(in_pair, tf.int32) * start[:, tf.newaxis, :], axis=2)  # [B, S]
    return {
        **batch,
        "position_ids": tf.where(pair > 0, tf.range(seq_len)[tf.newaxis, :] - own_start, 0),
        "next_sentence_positions": start,
        "next_sentence_weights": tf.cast(present, tf.float32),
    }


def _mask_drawer(data_dir, masked_lm_prob: float, max_predictions_per_seq: int, seed: int, rank: int):
    """For unmasked records (``masking: dynamic``): ``(batch, batch_index) -> batch`` with masks drawn by
    :func:`bertlib.data.masking.dynamic_mask` (at ``masked_lm_prob``, with the dataset's ``vocab.txt``
    special ids), seeded by (``seed``, ``rank``, batch index)."""

    vocab_file = Path(data_dir) / "vocab.txt"
    if not vocab_file.is_file():
        raise DataError(f"{vocab_file}: not found (dynamic masking draws [MASK]/random ids from the dataset's vocab)")
    ids = SpecialIds.from_vocab(read_vocab(vocab_file))

    def draw(batch, index):
        return dynamic_mask(
            batch,
            mask_seed(seed, rank, index),
            max_predictions_per_seq,
            masked_lm_prob,
            ids.cls,
            ids.sep,
            ids.mask,
            ids.vocab_size,
        )

    return draw


def pretraining_dataset(
    data_dir: str | os.PathLike,
    split: str,
    batch_size: int,
    max_seq_length: int,
    max_predictions_per_seq: int,
    rank: int = 0,
    world: int = 1,
    shuffle: bool = True,
    seed: int = 12345,
    repeat: bool = True,
    shuffle_buffer: int = 10000,
    skip_batches: int = 0,
    vocab: dict | None = None,
    checksums: bool = True,
    drop_remainder: bool = True,
):
    """A ``tf.data.Dataset`` of pretraining batches for one rank.

    Args:
      data_dir: a prepared dataset folder (``manifest.json`` + shards), checked by ``validate_dataset``.
      split: ``"train"`` or ``"validation"``.
      batch_size: per-rank micro-batch size B.
      max_seq_length, max_predictions_per_seq: S and P; must match the manifest.
      rank, world: this process's Horovod rank and the number of processes.
      shuffle: shuffle the file order and the records (buffer ``shuffle_buffer``); off = file order.
      seed: shuffle seed (the same on every run, so that resume is exact).
      repeat: cycle forever (training) or stop after one pass (evaluation).
      skip_batches: batches to drop at the start (a resumed run's data position).
      vocab: expected ``vocab`` manifest entry (sha256/size/lowercase), or None to skip that check.
      checksums: verify every shard's sha256 (off when the caller has just validated the dataset).
      drop_remainder: drop the short last batch (training: every step has the same shape); off for
        an evaluation that must see every record.

    Unmasked records (``masking: dynamic`` in the manifest) get their masks here, per batch, seeded by
    (``seed``, ``rank``, batch index): other masks every epoch and on every rank, the same ones again
    after a resume (the index is part of the saved iterator state, and skipping counts it too).

    Returns:
      Batches ``{input_ids, input_mask, segment_ids: [B, S] int32, masked_lm_positions,
      masked_lm_ids: [B, P] int32, masked_lm_weights: [B, P] float32, next_sentence_labels: [B, 1] int32}``;
      for a packed dataset (K = ``max_pairs_per_row`` > 1) ``next_sentence_labels`` is [B, K] and the
      batches add ``position_ids`` [B, S], ``next_sentence_positions`` [B, K] int32 and
      ``next_sentence_weights`` [B, K] float32 (:func:`packed_features`).
    """
    import tensorflow as tf

    files, manifest = shard_files(data_dir, split, max_seq_length, max_predictions_per_seq, vocab, checksums)
    layout = dataset_layout(manifest)
    pairs = layout["max_pairs_per_row"]
    draw_masks = (
        None
        if layout["masked"]
        else _mask_drawer(data_dir, layout["masked_lm_prob"], max_predictions_per_seq, seed, rank)
    )

    def parse(index, serialized):
        batch = parse_pretraining_batch(serialized, max_seq_length, max_predictions_per_seq, pairs, layout["masked"])
        if draw_masks is not None:
            batch = draw_masks(batch, index)
        return packed_features(batch, pairs) if pairs > 1 else batch

    by_file = len(files) >= world
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
        ds = ds.shard(world, rank)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    per_rank = -(-len(files) // world) if by_file else len(files)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(CYCLE_LENGTH, per_rank),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if not by_file:
        ds = ds.shard(world, rank)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1 + rank, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.enumerate()  # the batch index seeds dynamic masks: fresh every epoch, repeated on resume
    ds = ds.skip(skip_batches)  # even 0: a saved iterator state must fit the pipeline of any restart
    # plain TF ops, no tensor-dependent Python control flow: traced as written, without autograph's
    # conversion of this module's source (about a second at every start)
    parse = tf.autograph.experimental.do_not_convert(parse)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
