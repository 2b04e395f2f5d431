"""Pretraining step throughput: bertlib's BertPretrainer + LAMB vs keras-hub's BertMaskedLM.

For each size (default ``mini`` and ``base``) at seq 128, batch 8, 20 masked positions, both models
run one full training step per call (forward, MLM loss, backward, LAMB update) on the same random
batch; the steps are timed in alternation (median per model), so that load from other processes on
a shared machine hits each alike. One TF thread by default (``--threads``), the same for all:

* ``bertlib`` — ``BertPretrainer`` + ``pretraining_losses`` (MLM + NSP) + ``bertlib.optim.Lamb`` in
  one ``tf.function``, with XLA (``jit_compile=True``, the pretraining default) and without;
* ``keras-hub`` — ``keras_hub.models.BertMaskedLM`` (same layers/hidden/heads/intermediate/vocab, no
  preprocessor) compiled with ``keras.optimizers.Lamb`` and a masked sparse cross-entropy, trained with
  ``train_on_batch`` (its ``jit_compile="auto"`` resolves to off on CPU).

keras-hub is not a bertlib dependency: it is installed with ``pip install --no-deps`` (plus ``regex``)
into a throwaway directory added to ``sys.path`` (its full dependency set would replace our pins).

Prints steps/s and sequences/s per model and the ratio bertlib / keras-hub. No timing is asserted.

    .venv/bin/python bench/bench_model.py [--sizes mini base] [--batch 8] [--threads 1] [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KERAS_HUB = "keras-hub==0.32.0"
VOCAB = 30522


def install_keras_hub(target: str) -> None:
    """``pip install --no-deps keras-hub regex`` into ``target`` and put it on ``sys.path``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, KERAS_HUB, "regex"], check=True
    )
    sys.path.insert(0, target)


def make_batch(batch: int, seq: int, preds: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    positions = np.sort(np.stack([rng.choice(np.arange(1, seq), preds, replace=False) for _ in range(batch)]), 1)
    return {
        "input_ids": rng.integers(1000, VOCAB, size=(batch, seq)).astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "segment_ids": (np.arange(seq)[None] >= seq // 2).repeat(batch, 0).astype(np.int32),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": rng.integers(1000, VOCAB, size=(batch, preds)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, preds), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=(batch, 1)).astype(np.int32),
    }


def bertlib_step(size: str, data: dict):
    """One bertlib training step per call, with and without XLA, on one model and optimizer:
    returns ``{"bertlib (XLA)": step, "bertlib (no XLA)": step}``."""
    import tensorflow as tf

    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb

    model = BertPretrainer(BertConfig.from_preset(size, VOCAB))
    opt = Lamb(weight_decay=0.01)
    opt.build(model.trainable_variables)
    batch = {k: tf.constant(v) for k, v in data.items()}

    def train_step(features):
        with tf.GradientTape() as tape:
            loss = pretraining_losses(model(features, training=True), features)["loss"]
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables), 1e-4)
        return loss

    xla, plain = tf.function(train_step, jit_compile=True), tf.function(train_step)
    return {"bertlib (XLA)": lambda: xla(batch), "bertlib (no XLA)": lambda: plain(batch)}


def keras_hub_step(size: str, data: dict):
    """One ``BertMaskedLM.train_on_batch`` per call (keras-hub's own compiled train step)."""
    import keras
    import keras_hub

    from bertlib.model.config import PRESETS

    layers, hidden, heads = PRESETS[size]
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        intermediate_dim=4 * hidden,
        dropout=0.1,
        max_sequence_length=512,
    )
    model = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.Lamb(learning_rate=1e-4, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    x = {
        "token_ids": data["input_ids"],
        "padding_mask": data["input_mask"].astype(bool),
        "segment_ids": data["segment_ids"],
        "mask_positions": data["masked_lm_positions"],
    }
    y, w = data["masked_lm_ids"], data["masked_lm_weights"]
    return {"keras-hub BertMaskedLM": lambda: model.train_on_batch(x, y, sample_weight=w)}


def interleaved(steps: dict, warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each callable, timed in alternation (A B C A B C ...) so that load
    from other processes on a shared machine hits all of them alike. Each call is synced with float()."""
    for fn in steps.values():
        for _ in range(warmup):
            float(fn())
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            float(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["mini", "base"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--preds", type=int, default=20)
    p.add_argument("--rounds", type=int, default=0, help="timed steps per model (0: 8, or 3 for base/large)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="TF intra/inter-op threads (0 = TF default)")
    args = p.parse_args(argv)

    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-keras-hub-") as target:
        install_keras_hub(target)
        import keras_hub

        data = make_batch(args.batch, args.seq, args.preds)
        print(
            f"TF {tf.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}; "
            f"batch {args.batch}, seq {args.seq}, {args.preds} predictions/seq, "
            f"threads {args.threads or 'default'}, {os.cpu_count()} CPUs"
        )
        rows = []
        for size in args.sizes:
            rounds = args.rounds or (3 if size in ("base", "large") else 8)
            steps = {**bertlib_step(size, data), **keras_hub_step(size, data)}
            result = interleaved(steps, args.warmup, rounds)
            for name, sec in result.items():
                print(
                    f"{size:5s} {name:24s} {1 / sec:8.3f} steps/s {args.batch / sec:9.2f} seq/s (median of {rounds})",
                    flush=True,
                )
            rows.append((size, result))
            del steps
            keras.backend.clear_session()
            gc.collect()
        print("\nratio bertlib / keras-hub (sequences/s):")
        for size, result in rows:
            ref = result["keras-hub BertMaskedLM"]
            print(
                f"  {size:5s} XLA {ref / result['bertlib (XLA)']:.2f}x   no XLA {ref / result['bertlib (no XLA)']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
