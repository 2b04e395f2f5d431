"""Trainer mechanics: accumulation, fp16 loss scaling, checkpoint selection; pipeline sharding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from train_helpers import PRED, SEQ, tiny_config, train_tiny, write_dataset

from bertlib.optim.loss_scale import DynamicLossScale, LossScaleCollapsed, check_scale

# trains models (in-process or in subprocesses): `make test-fast` leaves this module out
pytestmark = pytest.mark.slow


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager-graph", "xla"])
def test_accumulating_k_micro_batches_equals_one_batch_of_k_times_b(tiny_dataset, jit_compile):
    # one process, file order: micro-batches [0,1],[2,3] (k=2, b=2) hold the same examples as [0..3]
    accumulated = train_tiny(tiny_dataset, batch_size=2, steps=3, accumulation=2, jit_compile=jit_compile)
    big_batch = train_tiny(tiny_dataset, batch_size=4, steps=3, accumulation=1, jit_compile=jit_compile)
    assert max_diff(accumulated, big_batch) < 1e-5
    if not jit_compile:  # the comparison can tell batches apart (a property of the data, shown once)
        half_batches = train_tiny(tiny_dataset, batch_size=2, steps=3, accumulation=1, jit_compile=False)
        assert max_diff(half_batches, big_batch) > 1e-3


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
    check_scale(ls, step=3)  # 1 is still fine
    ls.update(tf.constant(False))
    with pytest.raises(LossScaleCollapsed, match="fell below 1 at step 4.*diverged"):
        check_scale(ls, step=4)


@pytest.mark.parametrize("grad_clip", ["global_mean", "per_rank_sum"])
@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager-graph", "xla"])
def test_fp16_overflow_skips_the_step_and_halves_the_scale(tiny_dataset, jit_compile, grad_clip):
    import keras

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        config = BertConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=SEQ,
        )
        model = BertPretrainer(config)
        optimizer = Lamb()
        # 2**40 × loss overflows float16 (max 65504) in the backward pass
        loss_scale = DynamicLossScale(initial_scale=2.0**40, growth_interval=1000)
        trainer = Trainer(
            model,
            pretraining_losses,
            optimizer,
            lambda step: 1e-3,
            total_steps=2,
            loss_scale=loss_scale,
            jit_compile=jit_compile,
            accumulation_steps=2,
            grad_clip=grad_clip,
        )
        batches = iter(pretraining_dataset(tiny_dataset, "train", 4, SEQ, PRED, shuffle=False))
        before = [v.numpy().copy() for v in model.trainable_variables]

        out = trainer.train_step(batches)
        assert not bool(out["finite"])
        assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
        assert int(optimizer.iterations.numpy()) == 1  # counted, as TF's LossScaleOptimizer does
        assert float(loss_scale.scale.numpy()) == 2.0**39
        assert int(trainer.step.numpy()) == 1  # counted: the data position moved on
        assert int(trainer.data_position.numpy()) == 2  # k = 2 micro-batches consumed

        loss_scale.scale.assign(2.0**8)  # a representable scale: the step applies
        out = trainer.train_step(batches)
        assert bool(out["finite"])
        assert int(optimizer.iterations.numpy()) == 2
        assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_per_rank_clip_sees_the_unscaled_summed_gradient_under_fp16_loss_scaling(tiny_dataset):
    """``per_rank_sum`` under mixed_float16: the same step at loss scales 2**4 and 2**12 reports the
    same pre-clip norm (the unscaled sum of the 2 micro-batch gradients: 2× their mean's order, not
    S× it) and, with the clip active, makes the same update; a clip of the scaled gradient would give
    norms 256× apart."""
    import keras

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer
    from bertlib.train.setup import seed_everything

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        runs = []
        for scale in (2.0**4, 2.0**12):
            seed_everything(7)
            model = BertPretrainer(tiny_config())
            trainer = Trainer(
                model,
                pretraining_losses,
                Lamb(),
                lambda step: 1e-3,
                total_steps=1,
                loss_scale=DynamicLossScale(initial_scale=scale),
                accumulation_steps=2,
                max_grad_norm=0.1,
                grad_clip="per_rank_sum",
                jit_compile=False,
            )
            out = trainer.train_step(iter(pretraining_dataset(tiny_dataset, "train", 4, SEQ, PRED, shuffle=False)))
            assert bool(out["finite"])
            runs.append((float(out["grad_norm"]), {v.path: v.numpy() for v in model.trainable_variables}))
            keras.backend.clear_session(free_memory=False)  # names restart; no forced gc.collect (~0.5 s)
        (norm_lo, w_lo), (norm_hi, w_hi) = runs
        assert norm_lo > 0.5  # well above the clip: the clip acts
        assert abs(norm_lo - norm_hi) < 1e-2 * norm_lo, (norm_lo, norm_hi)
        assert max_diff(w_lo, w_hi) < 1e-4
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
        ds = pretraining_dataset(
            data, "train", 2, SEQ, PRED, rank=rank, world=world, shuffle=True, seed=5, repeat=False
        )
        batch = next(iter(ds))
        assert {k: (v.shape.as_list(), v.dtype.name) for k, v in batch.items()} == {
            "input_ids": ([2, SEQ], "int32"),
            "input_mask": ([2, SEQ], "int32"),
            "segment_ids": ([2, SEQ], "int32"),
            "masked_lm_positions": ([2, PRED], "int32"),
            "masked_lm_ids": ([2, PRED], "int32"),
            "masked_lm_weights": ([2, PRED], "float32"),
            "next_sentence_labels": ([2, 1], "int32"),
        }
        seen.append(_tags(ds))
    assert [len(s) for s in seen] == [24 // world] * world
    assert sorted(t for s in seen for t in s) == list(range(24))  # disjoint and complete


def test_drop_remainder_keeps_only_full_batches(tiny_dataset):
    from bertlib.data.pipeline import pretraining_dataset

    shapes = [
        b["input_ids"].shape[0]
        for b in pretraining_dataset(tiny_dataset, "train", 5, SEQ, PRED, shuffle=False, repeat=False)
    ]
    assert shapes == [5] * (64 // 5)  # 2 files × 32 examples, no short last batch


def test_pipeline_order_is_seeded_and_skip_resumes_it(tiny_dataset):
    from bertlib.data.pipeline import pretraining_dataset

    def make(**kw):
        return pretraining_dataset(tiny_dataset, "train", 4, SEQ, PRED, shuffle=True, seed=9, shuffle_buffer=16, **kw)

    full = [b["masked_lm_positions"].numpy() for b in make().take(7)]
    again = [b["masked_lm_positions"].numpy() for b in make().take(7)]
    resumed = [b["masked_lm_positions"].numpy() for b in make(skip_batches=3).take(4)]
    assert all(np.array_equal(a, b) for a, b in zip(full, again))
    assert all(np.array_equal(a, b) for a, b in zip(full[3:], resumed))


# ---- a skipped (non-finite) step and the optimizer's iteration count, against TF's LossScaleOptimizer ----

LR, EPS = 1e-2, 1e-7
W0 = [0.5, -1.0, 2.0]
GRADS = [[np.inf, 1.0, 1.0], [1.0, -2.0, 0.5]]  # step 1 overflows, step 2 is finite
TF_LSO_PROBE = """
import json, sys
import numpy as np, tensorflow as tf, tf_keras
w0, grads, lr, eps = json.loads(sys.argv[1])
var = tf.Variable(np.array(w0, np.float32))
opt = tf_keras.mixed_precision.LossScaleOptimizer(tf_keras.optimizers.Adam(lr, epsilon=eps), initial_scale=2.0**15)
out = []
for g in grads:
    opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    out.append({"iterations": int(opt.iterations.numpy()), "scale": float(opt.loss_scale.numpy()),
                "w": var.numpy().tolist()})
print(json.dumps(out))
"""


def tf_keras_path() -> Path:
    """Where ``make setup`` installs tf_keras (``requirements-peers.txt``, ``--no-deps --target``: in
    the venv proper it would pull the full ``tensorflow`` next to ``tensorflow-cpu``)."""
    target = Path(sys.prefix) / "peers"
    assert (target / "tf_keras" / "__init__.py").is_file(), f"{target}: no tf_keras; run `make setup`"
    return target


def linear_model():
    """``outputs = x · w`` (x: [B, 3], w: [3]): the gradient of ``mean(outputs)`` is the batch mean of x."""
    import keras

    class Dot(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(3,), initializer=keras.initializers.Constant(W0), name="w")

        def call(self, x):
            return tf.reduce_sum(x * self.w, axis=-1)

    x = keras.Input((3,), name="x")
    return keras.Model({"x": x}, Dot()(x))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager-graph", "xla"])
def test_a_skipped_step_advances_the_optimizer_count_as_tf_loss_scale_optimizer(jit_compile, subprocess_env):
    """A forced inf gradient, then a finite one, through TF's own LossScaleOptimizer(Adam) and through
    bertlib's Trainer (dynamic loss scale, bias-corrected AdamW): both count the skipped step (TF's
    ``do_not_apply_fn``: ``iterations.assign_add(1)``), so the update that follows uses the bias
    correction of t = 2 — checked against Adam's formula in numpy. (Keras 3's LossScaleOptimizer,
    and TF 2.1's ``experimental`` one, count no skipped step at all, not even for the schedule.)"""
    from bertlib.optim import AdamW
    from bertlib.train.loop import Trainer

    env = dict(
        subprocess_env,
        PYTHONPATH=f"{tf_keras_path()}{os.pathsep}{subprocess_env['PYTHONPATH']}",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    probe = subprocess.run(
        [sys.executable, "-c", TF_LSO_PROBE, json.dumps([W0, GRADS, LR, EPS])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    tf_steps = json.loads(probe.stdout.strip().splitlines()[-1])
    assert [s["iterations"] for s in tf_steps] == [1, 2] and tf_steps[0]["w"] == W0

    model = linear_model()
    kernel = model.trainable_variables[0]
    optimizer = AdamW(weight_decay=0.0, epsilon=EPS, bias_correction=True)
    loss_scale = DynamicLossScale(initial_scale=2.0**15)
    trainer = Trainer(
        model,
        lambda out, batch: {"loss": tf.reduce_mean(out)},
        optimizer,
        lambda step: LR,
        total_steps=2,
        max_grad_norm=0.0,
        loss_scale=loss_scale,
        jit_compile=jit_compile,
    )
    batches = iter([{"x": tf.constant([g], tf.float32)} for g in GRADS])
    for want in tf_steps:
        trainer.train_step(batches)
        assert int(optimizer.iterations.numpy()) == want["iterations"]
        assert float(loss_scale.scale.numpy()) == want["scale"]
        np.testing.assert_allclose(kernel.numpy(), want["w"], rtol=0, atol=1e-6)

    # Adam (Kingma & Ba, Algorithm 1) in float64: moments from zero, one real update at t = 2
    g, b1, b2 = np.array(GRADS[1]), 0.9, 0.999
    m, v = (1 - b1) * g, (1 - b2) * g * g

    def adam(t):
        return np.array(W0) - LR * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + EPS)

    got = kernel.numpy()
    np.testing.assert_allclose(got, adam(2), rtol=0, atol=1e-6)
    assert np.abs(got - adam(1)).max() > 1e-3  # the count a skipped step leaves matters


# ---- resuming the input position: the saved iterator state, or the exact skip ----


def test_resume_restores_the_input_iterator_without_skipping_and_ends_like_an_uninterrupted_run(tmp_path, capsys):
    """Dropout, shuffling and accumulation on. A run stopped after step 4 (checkpoints at 2 and 4),
    resumed to step 7, ends with exactly the weights of 7 uninterrupted steps. The resumed pipeline is
    built with skip 0 (the iterator state is restored; no consumed record is read), and with the
    state removed the same run falls back to skipping the 8 consumed micro-batches — equally exact."""
    import shutil

    data = write_dataset(tmp_path / "data", n=48, num_files=2)
    kw = dict(batch_size=2, accumulation=2, jit_compile=False, dropout=0.1, shuffle=True, schedule_steps=7)
    uninterrupted = train_tiny(data, steps=7, **kw)

    ckpt = tmp_path / "ckpt"
    first = []
    train_tiny(data, steps=4, checkpoint_dir=ckpt, skips=first, **kw)
    assert first == [0]
    states = ckpt / "input" / "world-1" / "rank-0"
    assert sorted(p.name for p in states.iterdir()) == [
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
        "ckpt-4.data-00000-of-00001",
        "ckpt-4.index",
    ]
    shutil.copytree(ckpt, tmp_path / "no-state")
    shutil.rmtree(tmp_path / "no-state" / "input")
    capsys.readouterr()

    skips = []
    resumed = train_tiny(data, steps=7, checkpoint_dir=ckpt, skips=skips, **kw)
    assert skips == [0]  # the restored path: nothing to skip
    assert max_diff(resumed, uninterrupted) == 0.0
    assert sorted(p.name for p in states.iterdir() if p.suffix == ".index") == [
        "ckpt-4.index",
        "ckpt-6.index",
        "ckpt-7.index",
    ]  # the newest 3 (keep_checkpoints), like the model's

    skips = []
    fallback = train_tiny(data, steps=7, checkpoint_dir=tmp_path / "no-state", skips=skips, **kw)
    assert skips == [0, 8]  # no state: skip the 4 steps × 2 micro-batches
    assert "no input state" in capsys.readouterr().out
    assert max_diff(fallback, uninterrupted) == 0.0


def test_input_states_are_written_whole_and_pruned(tmp_path):
    from bertlib.train.checkpointing import InputCheckpoints

    ds = tf.data.Dataset.range(100).shuffle(10, seed=1)
    it = iter(ds)
    inputs = InputCheckpoints(tmp_path, rank=1, world=4, keep=2)
    (inputs.directory / ".ckpt-9.tmp1_temp").mkdir(parents=True)  # left by a save killed half-way
    (inputs.directory / ".ckpt-9.tmp1.index").write_bytes(b"partial")
    seen = []
    for step in (1, 2, 3):
        seen.append(int(next(it)))
        inputs.save(it, step)
    files = sorted(p.name for p in (tmp_path / "input" / "world-4" / "rank-1").iterdir())
    assert files == ["ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    rest = [int(x) for x in it]
    again = iter(ds)
    assert inputs.restore(again, 3) is None
    assert [int(x) for x in again] == rest and sorted(seen + rest) == list(range(100))
    assert "no input state" in inputs.restore(iter(ds), 1)  # pruned
    assert "unusable" in inputs.restore(iter(tf.data.Dataset.range(5).batch(2)), 3)  # another pipeline
    assert InputCheckpoints(tmp_path, rank=1, world=2).restore(iter(ds), 3).startswith("no input state")
