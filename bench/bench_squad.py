"""SQuAD finetuning throughput (seq 384) vs keras-hub, and smoke-set F1 from the imported MiniLM.

1. Throughput. For each size (default ``mini`` and ``base``), batch B at seq 384:

   * ``bertlib`` — the real SQuAD training path: ``BertQA`` + ``bertlib.squad.finetune_run.squad_loss`` +
     ``AdamW`` driven by ``bertlib.train.loop.Trainer.train_step`` (no XLA, the SQuAD default) on
     real features (the synthetic smoke set, tokenized with the bert-base-uncased vocab, 384 tokens);
   * ``keras-hub`` — ``keras_hub.models.BertBackbone`` of the same shape + a Dense(2) span head,
     compiled with ``keras.optimizers.AdamW`` and sparse cross-entropy on start/end positions,
     ``train_on_batch`` on the same batch (keras-hub installed ``--no-deps`` into a temp dir, as in
     ``bench/bench_model.py``).

   Both take turns step by step (the machine is shared: interleaving exposes them to the same load);
   prints sequences/s from the median step time, the ratio bertlib / keras-hub, and the achieved
   GFLOP/s (6 × non-embedding parameters × tokens + attention) next to the ~130 GFLOP/s that one
   large fp32 TF matmul reaches on this CPU (a reference point, not a hard ceiling: oneDNN's fused
   kernels on these shapes can exceed it).

2. MiniLM. ``bertlib squad`` on the v1.1 smoke set starting from the real all-MiniLM-L6-v2 weights
   (HF safetensors import of :mod:`bertlib.model.checkpoints`): once with the untrained head (1 step at
   lr 1e-12) and once after a short finetune; prints EM/F1 of both. The smoke set is SYNTHETIC: this
   shows that the path learns, it is not a SQuAD result.

    .venv/bin/python bench/bench_squad.py [--sizes mini base] [--batch 4] [--steps 3] [--minilm-steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

SEQ = 384
MATMUL_GFLOPS = 130.0


def smoke_features(work: Path, batch: int) -> dict:
    """One batch [B, 384] of real training features from the v1.1 smoke set."""
    from bertlib.core.assets import asset
    from bertlib.data.tokenization import load_wordpiece
    from bertlib.squad.features import convert_examples_to_features
    from bertlib.squad.reading import read_squad_examples
    from bertlib.squad.smoke import build_smoke_sets

    paths = build_smoke_sets(work / "smoke", max_train=400, max_dev=100, context_sentences=9)
    examples, _ = read_squad_examples(str(paths["v1.1-train"]), True, False)
    tok = load_wordpiece(asset("bert_uncased_vocab"), lowercase=True)
    feats = convert_examples_to_features(examples[:batch], tok, SEQ, 128, 64, is_training=True)[:batch]
    import numpy as np

    out = {k: np.array([getattr(f, k) for f in feats], np.int32) for k in ("input_ids", "input_mask", "segment_ids")}
    out["start_positions"] = np.array([f.start_position for f in feats], np.int32)
    out["end_positions"] = np.array([f.end_position for f in feats], np.int32)
    return out


def timed_interleaved(steps: dict, n: int) -> dict:
    """Median seconds per call of each closure: one untimed call each, then ``n`` rounds calling
    them in turn (so that load from other processes hits all of them alike)."""
    import statistics

    for fn in steps.values():
        fn()
    times = {k: [] for k in steps}
    for _ in range(n):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def train_flops_per_seq(size: str) -> float:
    """≈ 6 × (non-embedding params) × S + attention (2 matmuls of S×S×H, ×3 for backward) per sequence."""
    from bertlib.model.config import PRESETS

    layers, h, _ = PRESETS[size]
    per_layer = 4 * h * h + 2 * h * 4 * h
    return 6 * layers * per_layer * SEQ + 3 * layers * 2 * 2 * SEQ * SEQ * h


def bertlib_step(size: str, data: dict):
    """A closure running one ``Trainer.train_step`` of BertQA on ``data`` (returns the loss)."""
    import tensorflow as tf

    from bertlib.core.config import build_config
    from bertlib.model import BertConfig, BertQA
    from bertlib.optim import make_optimizer, make_schedule
    from bertlib.squad.finetune_run import squad_loss
    from bertlib.train.loop import Trainer

    cfg = build_config(
        "squad",
        dict(
            per_gpu_batch_size=len(data["input_ids"]),
            learning_rate=5e-5,
            total_steps=1000,
            warmup_steps=100,
            train_file="-",
            predict_file="-",
        ),
    )
    model = BertQA(BertConfig.from_preset(size, 30522))
    trainer = Trainer(
        model,
        squad_loss,
        make_optimizer(cfg),
        make_schedule(cfg),
        total_steps=cfg.total_steps,
        jit_compile=False,
        global_batch_size=cfg.per_gpu_batch_size,
    )
    batch = {k: tf.constant(v) for k, v in data.items()}

    def forever():
        while True:
            yield batch

    it = forever()
    return lambda: float(trainer.train_step(it)["loss"])


def keras_hub_step(size: str, data: dict):
    """A closure running one ``train_on_batch`` of a keras-hub BertBackbone + Dense(2) span head."""
    import keras
    import keras_hub
    import tensorflow as tf

    from bertlib.model.config import PRESETS

    layers, h, heads = PRESETS[size]
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=h,
        intermediate_dim=4 * h,
        max_sequence_length=512,
    )
    inputs = {k: keras.Input((SEQ,), dtype="int32", name=k) for k in ("token_ids", "segment_ids", "padding_mask")}
    logits = keras.layers.Dense(2)(backbone(inputs)["sequence_output"])
    start = keras.layers.Lambda(lambda x: x[..., 0], name="start")(logits)
    end = keras.layers.Lambda(lambda x: x[..., 1], name="end")(logits)
    model = keras.Model(inputs, {"start": start, "end": end})
    model.compile(
        optimizer=keras.optimizers.AdamW(5e-5, weight_decay=0.01),
        loss={
            "start": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "end": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
    )
    x = {
        "token_ids": tf.constant(data["input_ids"]),
        "segment_ids": tf.constant(data["segment_ids"]),
        "padding_mask": tf.constant(data["input_mask"]),
    }
    y = {"start": tf.constant(data["start_positions"]), "end": tf.constant(data["end_positions"])}
    return lambda: model.train_on_batch(x, y)


def minilm_f1(work: Path, steps: int, env: dict) -> dict:
    """EM/F1 on the smoke dev set from MiniLM: untrained head vs after ``steps`` finetune steps."""
    from bertlib.core.assets import asset
    from bertlib.squad.smoke import build_smoke_sets

    ckpt = work / "minilm"
    ckpt.mkdir(exist_ok=True)
    for name, src in (
        ("model.safetensors", "minilm_safetensors"),
        ("config.json", "minilm_config"),
        ("vocab.txt", "bert_uncased_vocab"),
    ):
        if not (ckpt / name).exists():
            (ckpt / name).symlink_to(asset(src))
    paths = build_smoke_sets(work / "smoke-small", max_train=2000, max_dev=300, context_sentences=5)
    base = dict(
        load_from="checkpoint",
        checkpoint_path=str(ckpt),
        do_lower_case=True,
        per_gpu_batch_size=16,
        max_seq_length=128,
        doc_stride=64,
        max_query_length=32,
        train_file=str(paths["v1.1-train"]),
        predict_file=str(paths["v1.1-dev"]),
        learning_rate=1e-4,
        log_frequency=20,
        cache_dir=str(work / "cache"),
        seed=1,
    )
    out = {}
    for label, over in (
        ("untrained head", dict(total_steps=1, learning_rate=1e-12)),
        (f"{steps} steps", dict(total_steps=steps, warmup_steps=steps // 10)),
    ):
        cfg = work / f"minilm-{over['total_steps']}.yaml"
        run_dir = work / f"minilm-run-{over['total_steps']}"
        import yaml

        cfg.write_text(yaml.safe_dump({**base, **over, "run_dir": str(run_dir)}))
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "bertlib", "squad", "--config", str(cfg)], env=env, capture_output=True, text=True
        )
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        s = json.loads((run_dir / "summary.json").read_text())
        out[label] = {
            "exact_match": s["exact_match"],
            "f1": s["f1"],
            "train_seq_per_sec": s["seq_per_sec"],
            "wall_s": time.perf_counter() - t0,
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["mini", "base"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--minilm-steps", type=int, default=100)
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_squad_"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    data = smoke_features(work, args.batch)
    if not args.skip_peer:
        from bench_model import install_keras_hub

        install_keras_hub(str(work / "keras_hub"))
    print(
        f"SQuAD finetune throughput, seq {SEQ}, batch {args.batch}, fp32, no XLA, {os.cpu_count()} cores, "
        f"median of {args.steps} interleaved timed steps after one untimed"
    )
    for size in args.sizes:
        steps = {"bertlib": bertlib_step(size, data)}
        if not args.skip_peer:
            steps["keras-hub"] = keras_hub_step(size, data)
        seq_s = {k: len(data["input_ids"]) / t for k, t in timed_interleaved(steps, args.steps).items()}
        gflops = seq_s["bertlib"] * train_flops_per_seq(size) / 1e9
        line = (
            f"  {size:5s} bertlib {seq_s['bertlib']:8.3f} seq/s  ({gflops:6.1f} GFLOP/s = "
            f"{gflops / MATMUL_GFLOPS:4.2f}x a large matmul's {MATMUL_GFLOPS:.0f})"
        )
        if not args.skip_peer:
            line += (
                f"  keras-hub {seq_s['keras-hub']:8.3f} seq/s  ratio bertlib/keras-hub "
                f"{seq_s['bertlib'] / seq_s['keras-hub']:5.2f}"
            )
        print(line, flush=True)
    if args.minilm_steps:
        print("MiniLM (all-MiniLM-L6-v2, HF safetensors import) on the SYNTHETIC v1.1 smoke set, seq 128, batch 16:")
        for label, r in minilm_f1(work, args.minilm_steps, env).items():
            print(
                f"  {label:15s} EM {r['exact_match']:6.2f}  F1 {r['f1']:6.2f}  "
                f"(train {r['train_seq_per_sec'] or 0:.1f} seq/s, wall {r['wall_s']:.0f} s)"
            )
    print(f"(work dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
