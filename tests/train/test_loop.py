"""Trainer mechanics: accumulation, fp16 loss scaling, checkpoint selection; pipeline sharding."""

import numpy as np
import pytest
import tensorflow as tf

from bertlib.optim.loss_scale import DynamicLossScale, LossScaleCollapsed, check_scale
from train_helpers import PRED, SEQ, train_tiny, write_dataset


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager-graph", "xla"])
def test_accumulating_k_micro_batches_equals_one_batch_of_k_times_b(tiny_dataset, jit_compile):
    # one process, file order: micro-batches [0,1],[2,3] (k=2, b=2) hold the same examples as [0..3]
    accumulated = train_tiny(tiny_dataset, batch_size=2, steps=3, accumulation=2, jit_compile=jit_compile)
    big_batch = train_tiny(tiny_dataset, batch_size=4, steps=3, accumulation=1, jit_compile=jit_compile)
    assert max_diff(accumulated, big_batch) < 1e-5
    half_batches = train_tiny(tiny_dataset, batch_size=2, steps=3, accumulation=1, jit_compile=jit_compile)
    assert max_diff(half_batches, big_batch) > 1e-3        # the comparison can tell batches apart


def reference_scale_sequence(initial, interval, finite_flags):
    """The dynamic loss scaling rule written out in plain Python."""
    scale, good, out = initial, 0, []
    for ok in finite_flags:
        if not ok:
            scale, good = scale / 2, 0
        else:
            good += 1
            if good >= interval:
                scale, good = scale * 2, 0
        out.append(scale)
    return out


def test_dynamic_loss_scale_follows_the_halve_and_grow_rule():
    flags = [True, True, True, False, True, False, False, True, True, True, True]
    ls = DynamicLossScale(initial_scale=64.0, growth_interval=3)
    got = []
    for ok in flags:
        ls.update(tf.constant(ok))
        got.append(float(ls.scale.numpy()))
    assert got == reference_scale_sequence(64.0, 3, flags)


def test_scale_below_one_stops_training_with_a_clear_message():
    ls = DynamicLossScale(initial_scale=1.0)
    check_scale(ls, step=3)                                  # 1 is still fine
    ls.update(tf.constant(False))
    with pytest.raises(LossScaleCollapsed, match="fell below 1 at step 4.*diverged"):
        check_scale(ls, step=4)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager-graph", "xla"])
def test_fp16_overflow_skips_the_step_and_halves_the_scale(tiny_dataset, jit_compile):
    import keras

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=SEQ)
        model = BertPretrainer(config)
        optimizer = Lamb()
        # 2**40 × loss overflows float16 (max 65504) in the backward pass
        loss_scale = DynamicLossScale(initial_scale=2.0**40, growth_interval=1000)
        trainer = Trainer(model, pretraining_losses, optimizer, lambda step: 1e-3, total_steps=2,
                          loss_scale=loss_scale, jit_compile=jit_compile, accumulation_steps=2)
        batches = iter(pretraining_dataset(tiny_dataset, "train", 4, SEQ, PRED, shuffle=False))
        before = [v.numpy().copy() for v in model.trainable_variables]

        out = trainer.train_step(batches)
        assert not bool(out["finite"])
        assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
        assert int(optimizer.iterations.numpy()) == 0
        assert float(loss_scale.scale.numpy()) == 2.0**39
        assert int(trainer.step.numpy()) == 1                 # counted: the data position moved on
        assert int(trainer.data_position.numpy()) == 2         # k = 2 micro-batches consumed

        loss_scale.scale.assign(2.0**8)                       # a representable scale: the step applies
        out = trainer.train_step(batches)
        assert bool(out["finite"])
        assert int(optimizer.iterations.numpy()) == 1
        assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_restore_skips_unlisted_and_unreadable_checkpoints(tmp_path):
    from bertlib.train.checkpointing import TrainingCheckpoints

    v = tf.Variable(0.0)
    ckpts = TrainingCheckpoints(tmp_path / "ck", keep=3, v=v)
    for step in (1, 2):
        v.assign(float(step))
        ckpts.save(step)
    # a save killed half-way: files of ckpt-3 exist but the state file still names ckpt-2
    (tmp_path / "ck" / "ckpt-3.index").write_bytes(b"\x00garbage")
    (tmp_path / "ck" / "ckpt-3.data-00000-of-00001").write_bytes(b"\x00garbage")
    v.assign(-1.0)
    assert TrainingCheckpoints(tmp_path / "ck", v=v).restore_latest().endswith("ckpt-2")
    assert float(v.numpy()) == 2.0
    # the newest listed one damaged on disk: fall back to the previous one
    (tmp_path / "ck" / "ckpt-2.index").write_bytes(b"\x00garbage")
    assert TrainingCheckpoints(tmp_path / "ck", v=v).restore_latest().endswith("ckpt-1")
    assert float(v.numpy()) == 1.0


def _tags(ds) -> list[int]:
    """Example indices (``input_ids[:, 1] - 5``, see train_helpers.make_examples) of a finite dataset."""
    return [int(t) - 5 for batch in ds for t in batch["input_ids"][:, 1].numpy()]


@pytest.mark.parametrize("num_files,world", [(4, 2), (2, 3)])
def test_ranks_read_disjoint_examples_that_cover_the_data(tmp_path, num_files, world):
    from bertlib.data.pipeline import pretraining_dataset

    data = write_dataset(tmp_path / "d", n=24, num_files=num_files, seed=3)
    seen = []
    for rank in range(world):
        ds = pretraining_dataset(data, "train", 2, SEQ, PRED, rank=rank, world=world, shuffle=True, seed=5,
                                 repeat=False)
        batch = next(iter(ds))
        assert {k: (v.shape.as_list(), v.dtype.name) for k, v in batch.items()} == {
            "input_ids": ([2, SEQ], "int32"), "input_mask": ([2, SEQ], "int32"), "segment_ids": ([2, SEQ], "int32"),
            "masked_lm_positions": ([2, PRED], "int32"), "masked_lm_ids": ([2, PRED], "int32"),
            "masked_lm_weights": ([2, PRED], "float32"), "next_sentence_labels": ([2, 1], "int32")}
        seen.append(_tags(ds))
    assert [len(s) for s in seen] == [24 // world] * world
    assert sorted(t for s in seen for t in s) == list(range(24))   # disjoint and complete


def test_drop_remainder_keeps_only_full_batches(tiny_dataset):
    from bertlib.data.pipeline import pretraining_dataset

    shapes = [b["input_ids"].shape[0] for b in pretraining_dataset(tiny_dataset, "train", 5, SEQ, PRED,
                                                                     shuffle=False, repeat=False)]
    assert shapes == [5] * (64 // 5)          # 2 files × 32 examples, no short last batch


def test_pipeline_order_is_seeded_and_skip_resumes_it(tiny_dataset):
    from bertlib.data.pipeline import pretraining_dataset

    def make(**kw):
        return pretraining_dataset(tiny_dataset, "train", 4, SEQ, PRED, shuffle=True, seed=9, shuffle_buffer=16,
                                   **kw)

    full = [b["masked_lm_positions"].numpy() for b in make().take(7)]
    again = [b["masked_lm_positions"].numpy() for b in make().take(7)]
    resumed = [b["masked_lm_positions"].numpy() for b in make(skip_batches=3).take(4)]
    assert all(np.array_equal(a, b) for a, b in zip(full, again))
    assert all(np.array_equal(a, b) for a, b in zip(full[3:], resumed))
