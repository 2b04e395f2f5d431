"""The encoder and heads: preset sizes, shapes, Google weight names, the attention mask, mixed
precision dtypes, and the pretraining losses against a numpy cross-entropy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from google_reference import google_names

from bertlib.model import BertConfig, BertEncoder, BertPretrainer, BertQA, pretraining_losses

VOCAB = 97


def features(batch=2, seq=12, preds=4, seed=0, vocab=VOCAB):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 2, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    positions = np.stack([rng.choice(np.arange(1, n), size=preds, replace=False) for n in lengths])
    weights = np.ones((batch, preds), np.float32)
    weights[0, -1] = 0.0  # a padding prediction
    return {
        "input_ids": tf.constant(rng.integers(0, vocab, size=(batch, seq)) * mask, tf.int64),
        "input_mask": tf.constant(mask, tf.int64),
        "segment_ids": tf.constant((np.arange(seq)[None, :] >= lengths[:, None] // 2) * mask, tf.int64),
        "masked_lm_positions": tf.constant(positions, tf.int64),
        "masked_lm_ids": tf.constant(rng.integers(0, vocab, size=(batch, preds)), tf.int64),
        "masked_lm_weights": tf.constant(weights),
        "next_sentence_labels": tf.constant(rng.integers(0, 2, size=(batch, 1)), tf.int64),
    }


def test_presets_match_the_paper():
    # (layers, hidden, heads): BERT paper / google-research/bert README table
    want = {
        "tiny": (2, 128, 2),
        "mini": (4, 256, 4),
        "small": (4, 512, 8),
        "base": (12, 768, 12),
        "large": (24, 1024, 16),
    }
    for size, (l, h, a) in want.items():
        c = BertConfig.from_preset(size, vocab_size=30522)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (l, h, a, 4 * h)
    with pytest.raises(ValueError, match="unknown model size"):
        BertConfig.from_preset("huge", 10)


def test_base_parameter_count_is_bert_base():
    """BERT-base with the 30522 uncased vocab has 109,482,240 parameters (embeddings, 12 layers, pooler)."""
    h, i, layers, v, p, t = 768, 3072, 12, 30522, 512, 2
    per_layer = 4 * (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)
    assert (v + p + t) * h + 2 * h + layers * per_layer + h * h + h == 109_482_240
    # counted from the real model at a smaller vocab (building a 30522-vocab base is slow here)
    enc = BertEncoder(BertConfig.from_preset("base", vocab_size=1000))
    assert sum(int(np.prod(w.shape)) for w in enc.trainable_weights) == 109_482_240 - (v - 1000) * h


@pytest.mark.parametrize("size", ["tiny", "mini", "small"])
def test_shapes(size):
    c = BertConfig.from_preset(size, VOCAB, max_position_embeddings=64)
    model = BertPretrainer(c)
    f = features(batch=3, seq=16, preds=5)
    out = model(f)
    assert out["mlm_logits"].shape == (3, 5, VOCAB) and out["nsp_logits"].shape == (3, 2)
    enc = model.encoder(f)
    assert enc["sequence_output"].shape == (3, 16, c.hidden_size)
    assert enc["pooled_output"].shape == (3, c.hidden_size)
    qa = BertQA(model.encoder)(f)
    assert qa["start_logits"].shape == (3, 16) and qa["end_logits"].shape == (3, 16)


def test_weight_names_are_googles():
    c = BertConfig.from_preset("tiny", VOCAB)
    model = BertPretrainer(c)
    got = [w.path for w in model.trainable_weights]
    assert sorted(got) == sorted(google_names(2))
    shapes = {w.path: tuple(w.shape) for w in model.trainable_weights}
    assert shapes["cls/seq_relationship/output_weights"] == (2, 128)  # Google's [2, H] layout
    assert shapes["bert/encoder/layer_1/intermediate/dense/kernel"] == (128, 512)


def test_attention_mask_masks_padding():
    """Changing the tokens (and segments) under input_mask = 0 leaves the unpadded outputs unchanged."""
    enc = BertEncoder(BertConfig.from_preset("tiny", VOCAB))
    f = features(seed=3)
    mask = f["input_mask"].numpy()
    ids2 = np.where(mask == 1, f["input_ids"].numpy(), (f["input_ids"].numpy() + 7) % VOCAB)
    f2 = dict(f, input_ids=tf.constant(ids2), segment_ids=tf.constant(np.where(mask == 1, f["segment_ids"], 1)))
    assert (ids2 != f["input_ids"].numpy()).any()
    a, b = enc(f)["sequence_output"].numpy(), enc(f2)["sequence_output"].numpy()
    np.testing.assert_allclose(a[mask == 1], b[mask == 1], atol=1e-5)
    np.testing.assert_allclose(enc(f)["pooled_output"], enc(f2)["pooled_output"], atol=1e-5)
    # and the mask is used at all: without it, padding changes the real tokens' outputs
    c = enc(dict(f2, input_mask=tf.ones_like(f["input_mask"])))["sequence_output"].numpy()
    assert np.abs(c[mask == 1] - a[mask == 1]).max() > 1e-3


def test_dropout_only_in_training():
    enc = BertEncoder(BertConfig.from_preset("tiny", VOCAB))
    f = features()
    a, b = enc(f)["sequence_output"], enc(f)["sequence_output"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(enc(f, training=True)["sequence_output"].numpy() - a.numpy()).max() > 1e-3


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_pretraining_losses_match_numpy():
    f = features(batch=3, preds=5, seed=4)
    rng = np.random.default_rng(5)
    outputs = {
        "mlm_logits": tf.constant(rng.normal(size=(3, 5, VOCAB)) * 3, tf.float32),
        "nsp_logits": tf.constant(rng.normal(size=(3, 2)), tf.float32),
    }
    ids, w = f["masked_lm_ids"].numpy(), f["masked_lm_weights"].numpy()
    lp = np_log_softmax(outputs["mlm_logits"].numpy().astype(np.float64))
    ce = -np.take_along_axis(lp, ids[..., None], -1)[..., 0]
    mlm = (w * ce).sum() / (w.sum() + 1e-5)
    labels = f["next_sentence_labels"].numpy()[:, 0]
    nlp = np_log_softmax(outputs["nsp_logits"].numpy().astype(np.float64))
    nsp = -nlp[np.arange(3), labels].mean()
    mlm_acc = (w * (lp.argmax(-1) == ids)).sum() / w.sum()
    nsp_acc = (nlp.argmax(-1) == labels).mean()
    got = {k: float(v) for k, v in pretraining_losses(outputs, f).items()}
    assert got["mlm_loss"] == pytest.approx(mlm, rel=1e-5)
    assert got["nsp_loss"] == pytest.approx(nsp, rel=1e-5)
    assert got["loss"] == pytest.approx(mlm + nsp, rel=1e-5)
    assert got["mlm_acc"] == pytest.approx(mlm_acc) and got["nsp_acc"] == pytest.approx(nsp_acc)


def test_mlm_logits_are_gathered_at_positions_with_tied_decoder():
    """mlm_logits[b, p] is computed from sequence_output[b, masked_lm_positions[b, p]] through the
    transform, LayerNorm and the transposed word-embedding matrix plus output_bias (numpy here)."""
    model = BertPretrainer(BertConfig.from_preset("tiny", VOCAB))
    model.predictions.output_bias.assign(np.random.default_rng(0).normal(size=VOCAB).astype(np.float32))
    f = features(seed=6)
    seq = model.encoder(f)["sequence_output"].numpy()
    w = {v.path: v.numpy() for v in model.weights}
    pos = f["masked_lm_positions"].numpy()
    x = np.take_along_axis(seq, pos[..., None], 1) @ w["cls/predictions/transform/dense/kernel"]
    x = x + w["cls/predictions/transform/dense/bias"]
    x = 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    x = x * w["cls/predictions/transform/LayerNorm/gamma"] + w["cls/predictions/transform/LayerNorm/beta"]
    want = x @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]
    np.testing.assert_allclose(model(f)["mlm_logits"].numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_softmax_layernorm_and_losses_in_float32(policy):
    low = {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}[policy]
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = BertPretrainer(BertConfig.from_preset("tiny", VOCAB))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(w.dtype == "float32" for w in model.weights if w.trainable)
    f = features()
    fn = tf.function(lambda f: pretraining_losses(model(f, training=True), f))
    graph = fn.get_concrete_function(f).graph
    ops = graph.get_operations()
    softmaxes = [op for op in ops if op.type == "Softmax"]
    assert softmaxes and all(op.outputs[0].dtype == tf.float32 for op in softmaxes)
    moments = [op for op in ops if op.type in ("Mean", "SquaredDifference") and "LayerNorm" in op.name]
    assert moments and all(op.outputs[0].dtype == tf.float32 for op in moments)
    matmuls = [op for op in ops if op.type in ("MatMul", "BatchMatMulV2") and "layer_" in op.name]
    assert matmuls and all(op.outputs[0].dtype == low for op in matmuls)
    losses = fn(f)
    assert all(v.dtype == tf.float32 and np.isfinite(v.numpy()) for v in losses.values())
    enc = model.encoder(f)
    assert enc["sequence_output"].dtype == low
    assert model(f)["mlm_logits"].dtype == tf.float32
    assert BertQA(model.encoder)(f)["start_logits"].dtype == tf.float32


def test_gradients_reach_every_weight():
    model = BertPretrainer(BertConfig.from_preset("tiny", VOCAB))
    f = features()
    with tf.GradientTape() as tape:
        loss = pretraining_losses(model(f, training=True), f)["loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing


def test_config_json_roundtrip_and_hf_keys(tmp_path):
    c = BertConfig.from_preset("mini", 30522, hidden_dropout_prob=0.0)
    path = c.to_json_file(tmp_path / "bert_config.json")
    assert BertConfig.from_json_file(path) == c
    # Google's bert_config.json fields, as in uncased_L-12_H-768_A-12
    google = {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "type_vocab_size": 2,
        "vocab_size": 30522,
    }
    assert BertConfig.from_dict(dict(google, model_type="bert", layer_norm_eps=1e-12)) == BertConfig.from_preset(
        "base", 30522
    )
    with pytest.raises(ValueError, match="not a multiple"):
        BertConfig.from_preset("base", 100, num_attention_heads=7)
