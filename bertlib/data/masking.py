"""Dynamic masked-LM masking in the tf.data pipeline (RoBERTa-style: records unmasked, fresh masks per batch).

:func:`dynamic_mask` reproduces the masking rule of google-research/bert ``create_pretraining_data``
(:func:`bertlib.data.pretraining.build_examples` without whole-word masking), applied to every pair
of a row on its own. A pair is the tokens sharing one nonzero ``input_mask`` value (``[CLS] A [SEP]
B [SEP]``; packed rows number their pairs 1..K, unpacked rows are Google's 0/1, 0 is padding). For
pair j with L_j tokens (``[CLS]``/``[SEP]`` included):

- ``num_to_predict_j = min(P, max(1, round(L_j * masked_lm_prob)))`` (round half to even, as
  Python's ``round``; computed in float64, so exactly Google's value);
- that many of the pair's candidates (its tokens other than ``[CLS]``/``[SEP]``; all of them if
  fewer) are drawn uniformly without replacement: random 32-bit keys, sorted by (pair, key);
- each drawn token becomes ``[MASK]`` with probability 0.8, stays with 0.1, becomes a uniform
  random id in ``[0, vocab_size)`` with 0.1.

A row's predictions are listed in ascending position. If the pairs' counts add up to more than P,
the first P in position order are kept (the rest stay unmasked); the data config keeps the sum
within P, so this does not happen in training.

Shapes (B batch, S ``max_seq_length``, K pairs per row, P ``max_predictions_per_seq``): in
``input_ids, input_mask, segment_ids`` [B, S] int32, ``next_sentence_labels`` [B, K]; out the same
plus ``masked_lm_positions, masked_lm_ids`` [B, P] int32 and ``masked_lm_weights`` [B, P] float32.
All ops are vectorized and stateless (deterministic given the seed), usable in ``Dataset.map`` and
under ``tf.function(jit_compile=True)``. XLA's stateless random kernels lay out the random stream
differently from TensorFlow's, so a compiled call draws other (equally valid) masks for the same
seed than an uncompiled one: reproducibility holds within one execution mode (``Dataset.map``
functions run uncompiled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # TensorFlow is imported where used: importing this module (pipeline does) is free
    import tensorflow as tf

_RANK_LIMIT = 2**23  # ranks fit above the batch index in the seed's second word
_INDEX_BITS = 40  # batch indices below 2**40


def mask_seed(seed: int, rank: int, batch_index) -> tf.Tensor:
    """The [2] int64 seed of one batch's masks: ``[seed, rank * 2**40 + batch_index]``.

    ``seed`` in ``[0, 2**63)``, ``0 <= rank < 2**23``, ``batch_index`` a scalar int tensor (e.g. from
    ``Dataset.enumerate()``) in ``[0, 2**40)``. Distinct (rank, batch_index) give distinct seeds, and
    the stateless ops scramble the seed, so neighbouring seeds draw independent masks.
    """
    import tensorflow as tf

    if not 0 <= rank < _RANK_LIMIT:
        raise ValueError(f"rank {rank} not in [0, {_RANK_LIMIT})")
    index = tf.cast(batch_index, tf.int64)
    return tf.stack([tf.constant(seed, tf.int64), tf.constant(rank << _INDEX_BITS, tf.int64) + index])


def _row_sums(values: tf.Tensor, index: tf.Tensor, width) -> tf.Tensor:
    """``out[b, w] = sum of values[b, s] over s with index[b, s] == w``: values, index [B, S] → [B, width]."""
    import tensorflow as tf

    batch = tf.shape(values)[0]
    rows = tf.range(batch)[:, None]
    sums = tf.math.unsorted_segment_sum(values, rows * width + index, batch * width)
    return tf.reshape(sums, [batch, width])


def dynamic_mask(
    features: dict,
    seed,
    max_predictions_per_seq: int,
    masked_lm_prob: float,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    vocab_size: int,
) -> dict:
    """Mask a batch of unmasked examples with Google's rule, per pair (see the module docstring).

    features: ``input_ids`` [B, S] (unmasked), ``input_mask`` [B, S] (pair number of each token, values
      in [0, S], 0 = padding), and any others (passed through).
    seed: [2] int32/int64 tensor for the stateless random ops (see :func:`mask_seed`).
    Returns a new dict: ``features`` with ``input_ids`` [B, S] masked, plus ``masked_lm_positions``
    [B, P] int32 (ascending, 0-padded), ``masked_lm_ids`` [B, P] int32 (original ids, 0-padded),
    ``masked_lm_weights`` [B, P] float32 (1 real, 0 padding).
    """
    import tensorflow as tf

    p = max_predictions_per_seq
    ids = features["input_ids"]
    pair = tf.cast(features["input_mask"], tf.int32)
    batch, s = tf.shape(ids)[0], tf.shape(ids)[1]
    key_seed, action_seed, random_id_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))

    real = pair > 0
    cand = real & (ids != cls_id) & (ids != sep_id)
    length = _row_sums(tf.cast(real, tf.int32), pair, s + 1)  # [B, S + 1] per pair number
    n_cand = _row_sums(tf.cast(cand, tf.int32), pair, s + 1)
    num_to_predict = tf.minimum(
        p, tf.maximum(1, tf.cast(tf.math.round(tf.cast(length, tf.float64) * masked_lm_prob), tf.int32))
    )
    first_rank = tf.cumsum(n_cand, axis=1, exclusive=True)  # pair's first index in order

    # candidates sorted by (pair, random key), the rest last; the first num_to_predict of each pair are drawn
    r = (
        tf.cast(tf.random.stateless_uniform([batch, s], key_seed, minval=None, maxval=None, dtype=tf.int32), tf.int64)
        + 2**31
    )
    key = tf.where(cand, tf.cast(pair, tf.int64) * 2**32 + r, tf.cast(s + 1, tf.int64) * 2**32)
    order = tf.argsort(key, axis=1, stable=True)  # [B, S] positions
    sorted_pair = tf.gather(pair, order, batch_dims=1)
    rank_in_pair = tf.range(s)[None, :] - tf.gather(first_rank, sorted_pair, batch_dims=1)
    drawn = tf.gather(cand, order, batch_dims=1) & (rank_in_pair < tf.gather(num_to_predict, sorted_pair, batch_dims=1))
    chosen = _row_sums(tf.cast(drawn, tf.int32), order, s) > 0  # back to positions
    count = tf.cumsum(tf.cast(chosen, tf.int32), axis=1)
    chosen &= count <= p  # first P in position order

    # 80% [MASK] (action 0..7), 10% unchanged (8), 10% random id (9)
    action = tf.random.stateless_uniform([batch, s], action_seed, minval=0, maxval=10, dtype=tf.int32)
    random_ids = tf.random.stateless_uniform([batch, s], random_id_seed, minval=0, maxval=vocab_size, dtype=ids.dtype)
    replacement = tf.where(action < 8, tf.constant(mask_id, ids.dtype), tf.where(action == 8, ids, random_ids))

    # the chosen positions into slots 0..n-1 (slot P collects the rest and is dropped)
    slot = tf.where(chosen, count - 1, p)
    positions = tf.broadcast_to(tf.range(s)[None, :], [batch, s])
    n_chosen = tf.reduce_sum(tf.cast(chosen, tf.int32), axis=1, keepdims=True)
    out = dict(features)
    out["input_ids"] = tf.where(chosen, replacement, ids)
    out["masked_lm_positions"] = _row_sums(tf.where(chosen, positions, 0), slot, p + 1)[:, :p]
    out["masked_lm_ids"] = _row_sums(tf.where(chosen, tf.cast(ids, tf.int32), 0), slot, p + 1)[:, :p]
    out["masked_lm_weights"] = tf.cast(tf.range(p)[None, :] < n_chosen, tf.float32)
    return out
