"""The pretraining TFRecord format (Google's feature names) and its serialization.

One record = one example of ``max_seq_length`` S and ``max_predictions_per_seq`` P:

=====================  =======  =====  ==============================================
feature                dtype    shape  meaning
=====================  =======  =====  ==============================================
input_ids              int64    [S]    ``[CLS] A [SEP] B [SEP]`` token ids, 0-padded
input_mask             int64    [S]    1 for real tokens, 0 for padding
segment_ids            int64    [S]    0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``
masked_lm_positions    int64    [P]    positions of masked tokens, 0-padded
masked_lm_ids          int64    [P]    original token ids at those positions, 0-padded
masked_lm_weights      float32  [P]    1.0 for real predictions, 0.0 for padding
next_sentence_labels   int64    [1]    0 = B follows A, 1 = B is random (Google's convention)
=====================  =======  =====  ==============================================
"""

from __future__ import annotations

from typing import Sequence

INT_FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                "next_sentence_labels")
FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                 "masked_lm_weights", "next_sentence_labels")


def feature_spec(max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """``tf.io.parse_example`` spec for records of length S=max_seq_length, P=max_predictions."""
    import tensorflow as tf

    s, p = max_seq_length, max_predictions_per_seq
    return {
        "input_ids": tf.io.FixedLenFeature([s], tf.int64),
        "input_mask": tf.io.FixedLenFeature([s], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([s], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([p], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([p], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([p], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


def serialize_pretraining_example(input_ids: Sequence[int], input_mask: Sequence[int],
                                  segment_ids: Sequence[int], masked_lm_positions: Sequence[int],
                                  masked_lm_ids: Sequence[int], masked_lm_weights: Sequence[float],
                                  next_sentence_label: int) -> bytes:
    """One already padded example → serialized ``tf.train.Example`` bytes."""
    import tensorflow as tf

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    feats = {
        "input_ids": ints(input_ids),
        "input_mask": ints(input_mask),
        "segment_ids": ints(segment_ids),
        "masked_lm_positions": ints(masked_lm_positions),
        "masked_lm_ids": ints(masked_lm_ids),
        "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=list(masked_lm_weights))),
        "next_sentence_labels": ints([next_sentence_label]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def parse_pretraining_batch(serialized, max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """Batch of serialized examples [B] → dict of int32/float32 tensors ([B, S], [B, P], [B, 1]).

    int64 features are cast to int32 (what the model's embedding lookups and XLA prefer).
    """
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(max_seq_length, max_predictions_per_seq))
    return {k: (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v) for k, v in parsed.items()}
