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
"""

from __future__ import annotations

import os
from pathlib import Path

from bertlib.data.records import DataError, parse_pretraining_batch, validate_dataset

#: files read concurrently per rank (google-research/bert uses min(4, files))
CYCLE_LENGTH = 4


def shard_files(data_dir: str | os.PathLike, split: str, max_seq_length: int, max_predictions_per_seq: int,
                vocab: dict | None = None, checksums: bool = True) -> list[str]:
    """Validate the dataset (manifest vs the requested shapes/vocab) and list the ``split``'s files."""
    manifest = validate_dataset(data_dir, max_seq_length=max_seq_length,
                                max_predictions_per_seq=max_predictions_per_seq, vocab=vocab, checksums=checksums)
    shards = manifest.get("shards", {}).get(split) or []
    if not shards:
        raise DataError(f"{Path(data_dir) / 'manifest.json'}: no {split!r} shards")
    return [str(Path(data_dir) / s["file"]) for s in shards]


def pretraining_dataset(data_dir: str | os.PathLike, split: str, batch_size: int, max_seq_length: int,
                        max_predictions_per_seq: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                        seed: int = 12345, repeat: bool = True, shuffle_buffer: int = 10000,
                        skip_batches: int = 0, vocab: dict | None = None, checksums: bool = True,
                        drop_remainder: bool = True):
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

    Returns:
      Batches ``{input_ids, input_mask, segment_ids: [B, S] int32, masked_lm_positions,
      masked_lm_ids: [B, P] int32, masked_lm_weights: [B, P] float32, next_sentence_labels: [B, 1] int32}``.
    """
    import tensorflow as tf

    files = shard_files(data_dir, split, max_seq_length, max_predictions_per_seq, vocab, checksums)
    by_file = len(files) >= world
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
        ds = ds.shard(world, rank)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    per_rank = -(-len(files) // world) if by_file else len(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(CYCLE_LENGTH, per_rank), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not by_file:
        ds = ds.shard(world, rank)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1 + rank, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.skip(skip_batches)   # even 0: a saved iterator state must fit the pipeline of any restart
    ds = ds.map(lambda s: parse_pretraining_batch(s, max_seq_length, max_predictions_per_seq),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
