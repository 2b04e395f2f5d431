"""Task heads on the BERT encoder: pretraining (masked LM + next sentence) and SQuAD span prediction.

Weight names are Google's (``cls/predictions/...``, ``cls/seq_relationship/...``, ``cls/squad/...``),
so ``variable.path`` is the original checkpoint name. All logits and losses are float32 whatever the
mixed-precision policy.

Packed rows (several pairs per row, see :mod:`bertlib.model.bert`): with ``next_sentence_positions``
in the features the NSP head classifies each pair's ``[CLS]``, and both losses weigh pairs by
``next_sentence_weights``, so a packed batch has the losses of the same pairs unpacked.

Shapes: ``B`` batch, ``S`` sequence length, ``P`` max_predictions_per_seq, ``H`` hidden, ``V`` vocab,
``K`` max_pairs_per_row (pairs per packed row).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bertlib.model.bert import BertEncoder, activation, dense, layer_norm, weights
from bertlib.model.config import BertConfig


def _encoder(config_or_encoder: BertConfig | BertEncoder) -> BertEncoder:
    if isinstance(config_or_encoder, BertEncoder):
        return config_or_encoder
    return BertEncoder(config_or_encoder)


def gather_positions(sequence: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """``sequence`` [B, S, H], ``positions`` [B, P] int → the vectors at those positions [B, P, H]."""
    return tf.gather(sequence, tf.cast(positions, tf.int32), batch_dims=1)


class BertPretrainer(keras.Model):
    """BERT with the masked-LM and next-sentence-prediction heads of the original pretraining.

    MLM: ``cls/predictions/transform/dense`` (H→H, GELU) → ``cls/predictions/transform/LayerNorm`` →
    logits = x · word_embeddingsᵀ + ``cls/predictions/output_bias`` [V], evaluated only at
    ``masked_lm_positions``. NSP: ``cls/seq_relationship/output_weights`` [2, H] (Google's layout,
    the transpose of a Dense kernel) and ``output_bias`` [2] on the pooled output.

    ``call(features, training=False)`` with ``input_ids``, ``input_mask``, ``segment_ids`` [B, S] and
    ``masked_lm_positions`` [B, P] → ``{"mlm_logits": [B, P, V] float32, "nsp_logits": [B, 2] float32}``.
    Packed features (``position_ids`` [B, S], ``next_sentence_positions`` [B, K]: the row position of
    each pair's ``[CLS]``) give ``nsp_logits`` [B, K, 2]: the pooler (``bert/pooler/dense``, tanh) on
    every pair's ``[CLS]`` vector, then the same NSP weights.
    """

    def __init__(self, config_or_encoder: BertConfig | BertEncoder, **kwargs):
        super().__init__(name=kwargs.pop("name", "bert_pretrainer"), **kwargs)
        self.encoder = _encoder(config_or_encoder)
        config = self.config = self.encoder.config
        h = config.hidden_size
        self.transform = dense(
            h, config, "cls/predictions/transform/dense", h, activation=activation(config.hidden_act)
        )
        self.transform_layer_norm = layer_norm("cls/predictions/transform/LayerNorm", h)
        self.predictions = weights("cls/predictions", {"output_bias": ((config.vocab_size,), "zeros")})
        self.seq_relationship = weights(
            "cls/seq_relationship",
            {
                "output_weights": ((2, h), keras.initializers.TruncatedNormal(stddev=config.initializer_range)),
                "output_bias": ((2,), "zeros"),
            },
        )
        self.built = True

    def call(self, features, training=False):
        out = self.encoder(features, training=training)
        x = gather_positions(out["sequence_output"], features["masked_lm_positions"])  # [B, P, H]
        x = self.transform_layer_norm(self.transform(x))  # float32
        mlm_logits = tf.matmul(x, tf.cast(self.encoder.word_embeddings, tf.float32), transpose_b=True)
        mlm_logits = mlm_logits + tf.cast(self.predictions.output_bias, tf.float32)  # [B, P, V]
        if "next_sentence_positions" in features:
            cls = gather_positions(out["sequence_output"], features["next_sentence_positions"])  # [B, K, H]
            pooled = tf.cast(self.encoder.pooler(cls), tf.float32)  # [B, K, H]
        else:
            pooled = tf.cast(out["pooled_output"], tf.float32)  # [B, H]
        nsp_logits = tf.matmul(pooled, tf.cast(self.seq_relationship.output_weights, tf.float32), transpose_b=True)
        nsp_logits = nsp_logits + tf.cast(self.seq_relationship.output_bias, tf.float32)  # [B, (K,) 2]
        return {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}


def _pretraining_terms(outputs: dict, features: dict) -> dict[str, tf.Tensor]:
    """Per-prediction and per-example terms of both pretraining losses, float32.

    ``mlm_weights``, ``mlm_ce`` (cross entropy), ``mlm_correct`` ([argmax = id]): [B, P];
    ``nsp_ce``, ``nsp_correct``: [B] (one pair per row) or [B, K] (packed: ``nsp_logits`` [B, K, 2]);
    ``nsp_weights``: ``next_sentence_weights`` (1 = a pair, 0 = an empty pair slot) of that shape, or
    None for unpacked features (every example counts once).
    """
    mlm_logits = tf.cast(outputs["mlm_logits"], tf.float32)
    ids = tf.cast(features["masked_lm_ids"], tf.int32)
    weights = tf.cast(features["masked_lm_weights"], tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=mlm_logits)  # [B, P]
    mlm_correct = tf.cast(tf.equal(tf.argmax(mlm_logits, axis=-1, output_type=tf.int32), ids), tf.float32)
    nsp_logits = tf.cast(outputs["nsp_logits"], tf.float32)
    labels = tf.reshape(tf.cast(features["next_sentence_labels"], tf.int32), tf.shape(nsp_logits)[:-1])
    nsp_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=nsp_logits)
    nsp_correct = tf.cast(tf.equal(tf.argmax(nsp_logits, -1, output_type=tf.int32), labels), tf.float32)
    nsp_weights = features.get("next_sentence_weights")
    if nsp_weights is not None:
        nsp_weights = tf.cast(nsp_weights, tf.float32)
    return {
        "mlm_weights": weights,
        "mlm_ce": ce,
        "mlm_correct": mlm_correct,
        "nsp_ce": nsp_ce,
        "nsp_correct": nsp_correct,
        "nsp_weights": nsp_weights,
    }


def pretraining_losses(outputs: dict, features: dict) -> dict[str, tf.Tensor]:
    """The pretraining loss of google-research/bert ``run_pretraining.py``, in float32.

    ``mlm_loss`` = Σ w·CE(mlm_logits, masked_lm_ids) / (Σ w + 1e-5) over all [B, P] predictions,
    with w = ``masked_lm_weights`` (0 on padding predictions); ``nsp_loss`` = mean CE of
    ``nsp_logits`` against ``next_sentence_labels`` ([B] or [B, 1]); ``loss`` = their sum.
    ``mlm_acc`` = Σ w·[argmax = id] / Σ w, ``nsp_acc`` = mean [argmax = label]. All scalars.
    Packed features (``nsp_logits`` [B, K, 2], ``next_sentence_labels`` and ``next_sentence_weights``
    [B, K]): the NSP mean is over the pairs, Σ v·CE / Σ v with v = ``next_sentence_weights``.
    """
    t = _pretraining_terms(outputs, features)
    weights = t["mlm_weights"]
    weight_sum = tf.reduce_sum(weights)
    mlm_loss = tf.reduce_sum(weights * t["mlm_ce"]) / (weight_sum + 1e-5)
    mlm_acc = tf.math.divide_no_nan(tf.reduce_sum(weights * t["mlm_correct"]), weight_sum)
    pairs = t["nsp_weights"]
    if pairs is None:
        nsp_loss = tf.reduce_mean(t["nsp_ce"])
        nsp_acc = tf.reduce_mean(t["nsp_correct"])
    else:
        pair_count = tf.reduce_sum(pairs)
        nsp_loss = tf.math.divide_no_nan(tf.reduce_sum(pairs * t["nsp_ce"]), pair_count)
        nsp_acc = tf.math.divide_no_nan(tf.reduce_sum(pairs * t["nsp_correct"]), pair_count)
    return {
        "loss": mlm_loss + nsp_loss,
        "mlm_loss": mlm_loss,
        "mlm_acc": mlm_acc,
        "nsp_loss": nsp_loss,
        "nsp_acc": nsp_acc,
    }


#: the entries of :func:`pretraining_sums`, in order
PRETRAINING_SUMS = ("mlm_ce_sum", "mlm_correct_sum", "mlm_weight_sum", "nsp_ce_sum", "nsp_correct_sum", "examples")


def pretraining_sums(outputs: dict, features: dict) -> tf.Tensor:
    """Additive statistics of one batch, from which pooled losses and accuracies over any number of
    batches and processes follow exactly (ratios of sums, not means of ratios).

    Returns a float32 vector [6] in :data:`PRETRAINING_SUMS` order: Σ w·CE, Σ w·[argmax = id], Σ w over
    the [B, P] predictions; Σ NSP CE, Σ [argmax = label] and the count over the examples (pairs: B
    unpacked, Σ ``next_sentence_weights`` packed, the CE and hits of absent pair slots left out).
    """
    t = _pretraining_terms(outputs, features)
    w = t["mlm_weights"]
    pairs = tf.ones_like(t["nsp_ce"]) if t["nsp_weights"] is None else t["nsp_weights"]
    return tf.stack(
        [
            tf.reduce_sum(w * t["mlm_ce"]),
            tf.reduce_sum(w * t["mlm_correct"]),
            tf.reduce_sum(w),
            tf.reduce_sum(pairs * t["nsp_ce"]),
            tf.reduce_sum(pairs * t["nsp_correct"]),
            tf.reduce_sum(pairs),
        ]
    )


class BertQA(keras.Model):
    """SQuAD span head of google-research/bert ``run_squad.py``: ``cls/squad/output_weights`` [2, H]
    and ``cls/squad/output_bias`` [2] applied to every position.

    ``call({"input_ids", "input_mask", "segment_ids"} [B, S], training=False)`` →
    ``{"start_logits": [B, S] float32, "end_logits": [B, S] float32}``.
    """

    def __init__(self, config_or_encoder: BertConfig | BertEncoder, **kwargs):
        super().__init__(name=kwargs.pop("name", "bert_qa"), **kwargs)
        self.encoder = _encoder(config_or_encoder)
        config = self.config = self.encoder.config
        self.squad = weights(
            "cls/squad",
            {
                "output_weights": (
                    (2, config.hidden_size),
                    keras.initializers.TruncatedNormal(stddev=config.initializer_range),
                ),
                "output_bias": ((2,), "zeros"),
            },
        )
        self.built = True

    def call(self, features, training=False):
        seq = tf.cast(self.encoder(features, training=training)["sequence_output"], tf.float32)
        logits = tf.einsum("bsh,kh->bsk", seq, tf.cast(self.squad.output_weights, tf.float32))
        logits = logits + tf.cast(self.squad.output_bias, tf.float32)  # [B, S, 2]
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
