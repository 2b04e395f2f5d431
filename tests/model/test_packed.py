"""Sequence packing on the model side: several "[CLS] A [SEP] B [SEP]" pairs per row must give every
pair exactly what it gets alone.

The independent reference is each pair run by itself as a batch of one with S = its own length (no
padding, no mask), and the same pairs in Google's unpacked format (one pair per padded row). The
packed rows, their position ids, [CLS] positions and pair weights are built here in numpy from the
packing rules (pairs back to back from position 0, ``input_mask`` = 1-based pair number), not by
bertlib; the pipeline test checks that ``packed_features`` derives the same from the records.
"""

import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertlib.data import records
from bertlib.data.pipeline import pretraining_dataset
from bertlib.model import BertConfig, BertPretrainer, pretraining_losses, pretraining_sums
from bertlib.model.bert import pair_attention_bias

VOCAB, S, P, K = 97, 64, 10, 3
CLS, SEP, MASK = 2, 3, 4
#: pair lengths and how they are packed: row 0 = pairs 0 and 1 (31 + 33 = S: the last one ends at the
#: row's end), row 1 = pair 2 alone; K = 3 leaves absent pair slots in both rows
LENGTHS, ROWS = (31, 33, 20), [[0, 1], [2]]
GOOGLE_KEYS = {
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
}
PACKED_KEYS = GOOGLE_KEYS | {"position_ids", "next_sentence_positions", "next_sentence_weights"}


def make_pair(rng, length: int, n_masked: int) -> dict:
    """One pair of ``length`` tokens (len(A) + len(B) + 3), ``n_masked`` tokens replaced by [MASK]."""
    a = int(rng.integers(1, length - 3))  # len(A); len(B) = length - 3 - a >= 1
    ids = rng.integers(5, VOCAB, size=length)
    ids[0], ids[a + 1], ids[-1] = CLS, SEP, SEP
    segment = (np.arange(length) >= a + 2).astype(np.int64)
    candidates = [i for i in range(length) if ids[i] not in (CLS, SEP)]
    positions = np.sort(rng.choice(candidates, size=n_masked, replace=False))
    labels = ids[positions].copy()
    ids[positions] = MASK
    return {"ids": ids, "segment": segment, "positions": positions, "labels": labels, "nsp": int(rng.integers(0, 2))}


def make_pairs(seed: int = 0, lengths=LENGTHS) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [make_pair(rng, n, (3, 4, 2)[i % 3]) for i, n in enumerate(lengths)]


def pack(pairs: list[dict], rows: list[list[int]]) -> tuple[dict, list[tuple[int, int, slice]]]:
    """numpy packed rows [len(rows), S] (records' features + the derived ones) and, per pair, where it
    went: (row, pair slot j - 1, its slice of the row's predictions)."""
    n = len(rows)
    f = {
        "input_ids": np.zeros((n, S), np.int64),
        "input_mask": np.zeros((n, S), np.int64),
        "segment_ids": np.zeros((n, S), np.int64),
        "position_ids": np.zeros((n, S), np.int64),
        "masked_lm_positions": np.zeros((n, P), np.int64),
        "masked_lm_ids": np.zeros((n, P), np.int64),
        "masked_lm_weights": np.zeros((n, P), np.float32),
        "next_sentence_labels": np.zeros((n, K), np.int64),
        "next_sentence_positions": np.zeros((n, K), np.int64),
        "next_sentence_weights": np.zeros((n, K), np.float32),
    }
    where = [None] * len(pairs)
    for r, members in enumerate(rows):
        offset = slot = 0
        for j, i in enumerate(members):
            p = pairs[i]
            length, m = len(p["ids"]), len(p["positions"])
            span, preds = slice(offset, offset + length), slice(slot, slot + m)
            f["input_ids"][r, span], f["segment_ids"][r, span] = p["ids"], p["segment"]
            f["input_mask"][r, span], f["position_ids"][r, span] = j + 1, np.arange(length)
            f["masked_lm_positions"][r, preds] = p["positions"] + offset
            f["masked_lm_ids"][r, preds], f["masked_lm_weights"][r, preds] = p["labels"], 1.0
            f["next_sentence_labels"][r, j], f["next_sentence_positions"][r, j] = p["nsp"], offset
            f["next_sentence_weights"][r, j] = 1.0
            where[i] = (r, j, preds)
            offset, slot = offset + length, slot + m
        assert offset <= S and slot <= P
    return f, where


def unpacked(pairs: list[dict], seq: int | None = S, preds: int | None = P) -> dict:
    """Google's format, one pair per row padded to ``seq`` / ``preds`` (None: the pair's own sizes)."""
    rows, _ = pack(pairs, [[i] for i in range(len(pairs))])
    seq = seq or max(len(p["ids"]) for p in pairs)
    preds = preds or max(len(p["positions"]) for p in pairs)
    f = {k: rows[k][:, :seq] for k in ("input_ids", "input_mask", "segment_ids")}
    f.update({k: rows[k][:, :preds] for k in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")})
    f["next_sentence_labels"] = rows["next_sentence_labels"][:, :1]
    return f


def tensors(f: dict) -> dict:
    return {k: tf.constant(v) for k, v in f.items()}


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ce(logits, labels):
    return -np.take_along_axis(log_softmax(logits), np.asarray(labels)[..., None], -1)[..., 0]


def tiny_model(seed: int = 0) -> BertPretrainer:
    keras.utils.set_random_seed(seed)
    return BertPretrainer(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=S,
            initializer_range=0.1,
        )
    )


def alone(model, pair: dict) -> dict:
    """The pair by itself: a batch of one, S = its length, all its predictions real, no mask."""
    out = model(tensors(unpacked([pair], seq=None, preds=None)))
    return {k: v.numpy()[0] for k, v in out.items()}


def test_pair_attention_bias_follows_the_rule():
    mask = np.array([[1, 1, 2, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0] * 8])
    want = np.full((3, 1, 8, 8), -10000.0, np.float32)
    for b, q, k in np.ndindex(3, 8, 8):
        if mask[b, q] == mask[b, k] and mask[b, k] > 0:
            want[b, 0, q, k] = 0.0
    np.testing.assert_array_equal(pair_attention_bias(tf.constant(mask)).numpy(), want)


def test_each_packed_pair_gets_what_it_gets_alone():
    pairs = make_pairs()
    model = tiny_model()
    f, where = pack(pairs, ROWS)
    out = {k: v.numpy() for k, v in model(tensors(f)).items()}
    assert out["mlm_logits"].shape == (2, P, VOCAB) and out["nsp_logits"].shape == (2, K, 2)
    for pair, (r, j, preds) in zip(pairs, where):
        ref = alone(model, pair)
        np.testing.assert_allclose(out["mlm_logits"][r, preds], ref["mlm_logits"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(out["nsp_logits"][r, j], ref["nsp_logits"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(
            ce(out["mlm_logits"][r, preds], pair["labels"]), ce(ref["mlm_logits"], pair["labels"]), atol=1e-5
        )
        np.testing.assert_allclose(
            ce(out["nsp_logits"][r, j], pair["nsp"]), ce(ref["nsp_logits"], pair["nsp"]), atol=1e-5
        )
    # the losses: Σ CE over all predictions / (count + 1e-5), and the NSP mean over the 3 pairs
    refs = [alone(model, p) for p in pairs]
    mlm = [ce(r["mlm_logits"], p["labels"]) for r, p in zip(refs, pairs)]
    nsp = [ce(r["nsp_logits"], p["nsp"]) for r, p in zip(refs, pairs)]
    n_pred = sum(len(m) for m in mlm)
    want = {"mlm_loss": sum(m.sum() for m in mlm) / (n_pred + 1e-5), "nsp_loss": np.mean(nsp)}
    want["loss"] = want["mlm_loss"] + want["nsp_loss"]
    losses = pretraining_losses(model(tensors(f)), tensors(f))
    for key, value in want.items():
        np.testing.assert_allclose(float(losses[key]), value, rtol=1e-5)
    sums = dict(
        zip(
            ("mlm_ce_sum", "mlm_correct_sum", "mlm_weight_sum", "nsp_ce_sum", "nsp_correct_sum", "examples"),
            pretraining_sums(model(tensors(f)), tensors(f)).numpy(),
        )
    )
    np.testing.assert_allclose(sums["nsp_ce_sum"], np.sum(nsp), rtol=1e-5)
    assert sums["examples"] == 3 and sums["mlm_weight_sum"] == n_pred


def test_packed_batch_has_the_losses_and_gradients_of_the_unpacked_batch():
    pairs = make_pairs(seed=1)
    model = tiny_model(seed=1)
    packed, _ = pack(pairs, ROWS)
    results = []
    for f in (tensors(packed), tensors(unpacked(pairs))):
        with tf.GradientTape() as tape:
            losses = pretraining_losses(model(f, training=True), f)
        results.append(
            ({k: float(v) for k, v in losses.items()}, tape.gradient(losses["loss"], model.trainable_variables))
        )
    (packed_losses, packed_grads), (google_losses, google_grads) = results
    assert packed_losses == pytest.approx(google_losses, rel=1e-5)
    for var, g_packed, g_google in zip(model.trainable_variables, packed_grads, google_grads):
        assert g_packed is not None and g_google is not None, var.path
        np.testing.assert_allclose(
            tf.convert_to_tensor(g_packed).numpy(),
            tf.convert_to_tensor(g_google).numpy(),
            rtol=1e-4,
            atol=1e-6,
            err_msg=var.path,
        )


def test_unpacked_features_keep_the_google_heads():
    """Without the packing keys: NSP on position 0's pooled output, [B, 2], plain NSP mean."""
    pairs = make_pairs(seed=2)
    model = tiny_model(seed=2)
    f = tensors(unpacked(pairs))
    out = model(f)
    assert out["nsp_logits"].shape == (3, 2)
    for i, pair in enumerate(pairs):
        np.testing.assert_allclose(out["nsp_logits"].numpy()[i], alone(model, pair)["nsp_logits"], atol=1e-5)
    want = ce(out["nsp_logits"].numpy(), [p["nsp"] for p in pairs]).mean()
    np.testing.assert_allclose(float(pretraining_losses(out, f)["nsp_loss"]), want, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_xla_train_step_on_packed_features(policy):
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer

    pairs = make_pairs(seed=3)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = tiny_model(seed=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    packed, where = pack(pairs, ROWS)
    f = tensors(packed)

    @tf.function(jit_compile=True)
    def compiled_losses(f):
        return pretraining_losses(model(f), f)

    compiled, eager = compiled_losses(f), pretraining_losses(model(f), f)
    tol = 1e-5 if policy == "float32" else 1e-3
    for key in ("loss", "mlm_loss", "nsp_loss"):
        np.testing.assert_allclose(float(compiled[key]), float(eager[key]), rtol=tol)
    # per pair, in low precision too, what the pair gets alone
    out = {k: v.numpy() for k, v in model(f).items()}
    assert out["mlm_logits"].dtype == out["nsp_logits"].dtype == np.float32
    for pair, (r, j, preds) in zip(pairs, where):
        ref = alone(model, pair)
        np.testing.assert_allclose(out["mlm_logits"][r, preds], ref["mlm_logits"], atol=tol)
        np.testing.assert_allclose(out["nsp_logits"][r, j], ref["nsp_logits"], atol=tol)
    trainer = Trainer(
        model, pretraining_losses, Lamb(), lambda step: 1e-3, total_steps=1, jit_compile=True, allreduce=list
    )
    trainer.restore_or_initialize()
    before = [v.numpy().copy() for v in model.trainable_variables]
    result = trainer.train_step(iter([f]))
    assert np.isfinite(float(result["loss"]))
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    keras.backend.clear_session(free_memory=False)  # names restart; no forced gc.collect (~0.5 s)


def write_phase(folder, feats: dict, packing: dict | None) -> None:
    """A prepared phase folder holding ``feats`` (records' features) in one train shard."""
    folder.mkdir(parents=True)
    name = "train-00000-of-00001.tfrecord"
    recs = records.encode_examples({k: feats[k] for k in records.FEATURE_NAMES})
    sha = records.write_tfrecord_file(folder / name, recs)
    n = len(recs)
    manifest = {
        "format": records.MANIFEST_FORMAT,
        "max_seq_length": S,
        "max_predictions_per_seq": P,
        "vocab": {
            "sha256": hashlib.sha256(b"test").hexdigest(),
            "size": VOCAB,
            "lowercase": True,
            "strip_accents": None,
        },
        "counts": {"examples": n},
        "packing": packing,
        "masking": "static",
        "shards": {"train": [{"file": name, "sha256": sha, "examples": n, "bytes": (folder / name).stat().st_size}]},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_pipeline_derives_the_packed_features(tmp_path):
    pairs = make_pairs(seed=4, lengths=(31, 33, 20, 7, 20, 33))  # row 2: 7 + 20 + 33 = 60, K pairs
    rows = [[0, 1], [2], [3, 4, 5]]
    f, _ = pack(pairs, rows)
    write_phase(
        tmp_path / "packed",
        f,
        {
            "max_pairs_per_row": K,
            "algorithm": "spfhp",
            "pairs": 6,
            "rows": 3,
            "efficiency": float(f["input_mask"].astype(bool).mean()),
        },
    )
    batch = next(
        iter(
            pretraining_dataset(
                tmp_path / "packed", "train", 3, S, P, shuffle=False, repeat=False, drop_remainder=False
            )
        )
    )
    assert set(batch) == PACKED_KEYS
    # position in own pair / each pair's first token / presence, recomputed token by token
    position_ids, starts, present = np.zeros((3, S), int), np.zeros((3, K), int), np.zeros((3, K), np.float32)
    for r in range(3):
        for t in range(S):
            pair = f["input_mask"][r, t]
            if pair:
                first = min(u for u in range(S) if f["input_mask"][r, u] == pair)
                position_ids[r, t] = t - first
                starts[r, pair - 1], present[r, pair - 1] = first, 1.0
    want = dict(f, position_ids=position_ids, next_sentence_positions=starts, next_sentence_weights=present)
    for key in PACKED_KEYS:
        got = batch[key].numpy()
        assert got.dtype == (np.float32 if key in ("masked_lm_weights", "next_sentence_weights") else np.int32), key
        np.testing.assert_array_equal(got, want[key], err_msg=key)
    np.testing.assert_array_equal(starts, f["next_sentence_positions"])  # the packer's own bookkeeping agrees


def test_pipeline_of_an_unpacked_dataset_is_google_s(tmp_path):
    pairs = make_pairs(seed=5)
    f = unpacked(pairs)
    write_phase(tmp_path / "google", f, None)
    batch = next(iter(pretraining_dataset(tmp_path / "google", "train", 3, S, P, shuffle=False, repeat=False)))
    assert set(batch) == GOOGLE_KEYS
    for key in GOOGLE_KEYS:
        np.testing.assert_array_equal(batch[key].numpy(), f[key], err_msg=key)
