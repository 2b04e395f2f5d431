"""Packing and dynamic masking in training, against independent references.

* Packed rows train exactly as the same pairs unpacked: real Wikipedia records (``prepared_dataset``,
  S=128, P=20) are packed by the test itself (numpy: pairs back to back, positions offset, pair numbers
  in ``input_mask``), and the real Trainer (LAMB, clipping, XLA on and off) runs both for several
  steps, each packed batch holding exactly the pairs of the unpacked batch: the loss curves per pair
  seen and the final weights agree to float tolerance.
* Dynamic masks, drawn by the input pipeline from unmasked records made by ``prepare-data``, follow
  Google's count rule per pair, differ between epochs and between ranks, are seeded by (seed, rank,
  batch index) and come back identical after a resume (by skipping, and from a saved iterator state).
"""

import numpy as np
import pytest

from bertlib.core.config import build_config
from bertlib.data.prepare import prepare
from bertlib.data.records import read_manifest, read_records

# trains models (in-process or in subprocesses): `make test-fast` leaves this module out
pytestmark = pytest.mark.slow

S, P, K = 128, 20, 3


def real_pairs(prepared_dataset, n: int) -> dict:
    """The first ``n`` unpacked, statically masked train records of phase 2 (S=128, P=20)."""
    phase = prepared_dataset / "phase2"
    shard = read_manifest(phase)["shards"]["train"][0]["file"]
    recs = read_records(phase / shard, S, P, limit=n)
    assert len(recs["input_ids"]) == n
    return recs


def pack_rows(recs: dict, rows: list[list[int]]) -> dict:
    """Records ``recs`` (one pair each, Google's layout) → packed rows (numpy), built here independently
    of bertlib's writer: each row's pairs back to back, ``input_mask`` = pair number, masked positions
    shifted by the pair's offset, one NSP label per pair."""
    out = {
        "input_ids": np.zeros((len(rows), S), np.int32),
        "input_mask": np.zeros((len(rows), S), np.int32),
        "segment_ids": np.zeros((len(rows), S), np.int32),
        "masked_lm_positions": np.zeros((len(rows), P), np.int32),
        "masked_lm_ids": np.zeros((len(rows), P), np.int32),
        "masked_lm_weights": np.zeros((len(rows), P), np.float32),
        "next_sentence_labels": np.zeros((len(rows), K), np.int32),
    }
    for r, pairs in enumerate(rows):
        offset, slot = 0, 0
        for j, i in enumerate(pairs):
            length = int(recs["input_mask"][i].sum())
            out["input_ids"][r, offset : offset + length] = recs["input_ids"][i, :length]
            out["segment_ids"][r, offset : offset + length] = recs["segment_ids"][i, :length]
            out["input_mask"][r, offset : offset + length] = j + 1
            n_pred = int(recs["masked_lm_weights"][i].sum())
            out["masked_lm_positions"][r, slot : slot + n_pred] = recs["masked_lm_positions"][i, :n_pred] + offset
            out["masked_lm_ids"][r, slot : slot + n_pred] = recs["masked_lm_ids"][i, :n_pred]
            out["masked_lm_weights"][r, slot : slot + n_pred] = 1.0
            out["next_sentence_labels"][r, j] = recs["next_sentence_labels"][i, 0]
            offset += length
            slot += n_pred
        assert offset <= S and slot <= P
    return out


def run_trainer(batches: list[dict], jit_compile: bool) -> tuple[list[float], dict]:
    """One optimizer step per batch (LAMB, lr 1e-3, clip 1.0, dropout 0) on a 2-layer BERT of the bert
    vocab; returns the per-step losses and the final weights."""
    import keras

    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer
    from bertlib.train.setup import seed_everything

    seed_everything(3)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=S,
    )
    model = BertPretrainer(config)
    trainer = Trainer(
        model,
        pretraining_losses,
        Lamb(weight_decay=0.01),
        lambda step: 1e-3,
        total_steps=len(batches),
        jit_compile=jit_compile,
        allreduce=list,
    )
    trainer.restore_or_initialize()
    losses = [float(trainer.train_step(iter([b]))["loss"]) for b in batches]
    weights = {v.path: v.numpy() for v in model.weights}
    keras.backend.clear_session(free_memory=False)  # names restart; no forced gc.collect (~0.5 s)
    return losses, weights


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_packed_rows_train_as_the_same_pairs_unpacked(prepared_dataset, jit_compile):
    import tensorflow as tf

    from bertlib.data.packing import pack
    from bertlib.data.pipeline import packed_features

    recs = real_pairs(prepared_dataset, 60)
    lengths = recs["input_mask"].sum(axis=1)
    rows = [[int(i) for i in row if i >= 0] for row in pack(lengths, S, K, np.random.default_rng(0))]
    assert max(len(r) for r in rows) > 1 and min(len(r) for r in rows) == 1  # real packing: 1..K pairs
    rows_per_step = 4
    packed, unpacked = [], []
    for start in range(0, len(rows) - rows_per_step + 1, rows_per_step):
        group = rows[start : start + rows_per_step]
        packed.append(packed_features({k: tf.constant(v) for k, v in pack_rows(recs, group).items()}, K))
        pairs = [i for row in group for i in row]  # the same pairs, one per Google row
        unpacked.append(
            {
                k: tf.constant(v[pairs].astype(np.float32 if k == "masked_lm_weights" else np.int32))
                for k, v in recs.items()
            }
        )
    steps = len(packed)
    assert steps >= 4
    assert sum(b["next_sentence_weights"].numpy().sum() for b in packed) == sum(len(b["input_ids"]) for b in unpacked)
    # fewer row positions for the same pairs: that is the point
    assert sum(int(b["input_ids"].shape[0]) for b in packed) < sum(int(b["input_ids"].shape[0]) for b in unpacked)

    losses_packed, w_packed = run_trainer(packed, jit_compile)
    losses_unpacked, w_unpacked = run_trainer(unpacked, jit_compile)
    pairs_seen = np.cumsum([len(b["input_ids"]) for b in unpacked])
    assert len(pairs_seen) == steps and losses_unpacked[0] > 5.0  # an untrained model: ~ln(30522) + ln 2
    np.testing.assert_allclose(losses_packed, losses_unpacked, rtol=2e-5)
    assert losses_unpacked[-1] < losses_unpacked[0]
    for name, value in w_unpacked.items():
        np.testing.assert_allclose(w_packed[name], value, rtol=1e-4, atol=2e-5, err_msg=name)


# ---- dynamic masking through the pipeline, on records made by prepare-data ----


@pytest.fixture(scope="module")
def dynamic_dataset(tmp_path_factory, slice_data_settings):
    """prepare-data on the slice's first 30 articles with packing (K=2) and dynamic masking: one
    phase (S=64, P=10), 2 train shards + 1 validation shard of unmasked, packed records."""
    out = tmp_path_factory.mktemp("dynamic") / "data"
    settings = slice_data_settings(
        output_dir=str(out),
        pack_sequences=True,
        max_pairs_per_row=2,
        dynamic_masking=True,
        phases=[{"name": "p", "max_seq_length": 64, "max_predictions_per_seq": 10}],
    )
    prepare(build_config("prepare-data", settings), progress=False)
    return out / "p"


def batches(data_dir, n: int, rank: int = 0, world: int = 1, skip: int = 0) -> list[dict]:
    from bertlib.data.pipeline import pretraining_dataset

    ds = pretraining_dataset(
        data_dir, "train", 8, 64, 10, rank=rank, world=world, shuffle=False, seed=5, skip_batches=skip
    )
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def unmasked(batch: dict) -> np.ndarray:
    """The original tokens: the masked positions put back."""
    ids = batch["input_ids"].copy()
    for r in range(len(ids)):
        w = batch["masked_lm_weights"][r] > 0
        ids[r, batch["masked_lm_positions"][r][w]] = batch["masked_lm_ids"][r][w]
    return ids


def test_dynamic_masks_follow_googles_rule_per_pair_and_change_every_epoch(dynamic_dataset, bert_vocab):
    from bertlib.core.vocab import read_vocab

    vocab = {t: i for i, t in enumerate(read_vocab(bert_vocab))}
    manifest = read_manifest(dynamic_dataset)
    assert manifest["masking"] == "dynamic" and manifest["packing"]["max_pairs_per_row"] == 2
    rows_per_epoch = sum(s["examples"] for s in manifest["shards"]["train"])
    got = batches(dynamic_dataset, 2 * (rows_per_epoch // 8) + 1)
    for b in got:
        for r in range(8):
            w = b["masked_lm_weights"][r] > 0
            pos = b["masked_lm_positions"][r][w]
            assert np.all(np.diff(pos) > 0)
            original = unmasked(b)[r]
            assert not np.isin(original[pos], [vocab["[CLS]"], vocab["[SEP]"], 0]).any()
            for pair in range(1, 3):
                length = int((b["input_mask"][r] == pair).sum())
                if length:  # Google's count: min(P, max(1, round(L · 0.15))), Python's round
                    expected = min(10, max(1, round(length * 0.15)))
                    assert int((b["input_mask"][r][pos] == pair).sum()) == expected
    # every record comes back in the next epoch, with other masks
    tokens = np.concatenate([unmasked(b) for b in got])
    positions = np.concatenate([b["masked_lm_positions"] for b in got])
    seen, same, repeated = {}, 0, 0
    for row, pos in zip(tokens, positions):
        key = row.tobytes()
        if key in seen:
            repeated += 1
            same += np.array_equal(seen[key], pos)
        seen.setdefault(key, pos)
    assert repeated >= rows_per_epoch - 8 and same <= 0.02 * repeated, (repeated, same)


def test_dynamic_masks_are_seeded_by_rank_and_batch_and_repeat_on_resume(dynamic_dataset, bert_vocab):
    import tensorflow as tf

    from bertlib.core.vocab import read_vocab
    from bertlib.data.masking import dynamic_mask, mask_seed
    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.data.pretraining import SpecialIds

    ids = SpecialIds.from_vocab(read_vocab(bert_vocab))
    for rank in (0, 1):
        stream = batches(dynamic_dataset, 3, rank=rank, world=2)
        for index, b in enumerate(stream):  # each batch = the records masked with seed (5, rank, index)
            plain = {k: tf.constant(v) for k, v in b.items() if not k.startswith("masked_lm")}
            plain["input_ids"] = tf.constant(unmasked(b))
            want = dynamic_mask(plain, mask_seed(5, rank, index), 10, 0.15, ids.cls, ids.sep, ids.mask, ids.vocab_size)
            for k in ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
                assert np.array_equal(want[k].numpy(), b[k]), (rank, index, k)

    full = batches(dynamic_dataset, 5)
    resumed = batches(dynamic_dataset, 2, skip=3)  # resume by skipping 3 batches
    for a, b in zip(full[3:], resumed):
        assert all(np.array_equal(a[k], b[k]) for k in a)

    ds = pretraining_dataset(dynamic_dataset, "train", 8, 64, 10, shuffle=False, seed=5)
    it = iter(ds)
    for _ in range(3):
        next(it)
    ckpt = tf.train.Checkpoint(iterator=it)  # resume from a saved iterator state
    path = ckpt.write(str(dynamic_dataset.parent.parent / "iterator" / "state"))
    restored = iter(pretraining_dataset(dynamic_dataset, "train", 8, 64, 10, shuffle=False, seed=5))
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    for a in full[3:]:
        b = {k: v.numpy() for k, v in next(restored).items()}
        assert all(np.array_equal(a[k], b[k]) for k in a)
