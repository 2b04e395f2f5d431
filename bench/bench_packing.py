"""Sequence packing: real (non-padding) tokens per second through a full pretraining step, packed vs
unpacked bertlib vs keras-hub, on the demo's real data; plus the projected phase-2 saving at full scale.

For each phase of ``runs/demo/data`` (phase1: S=128, P=20; phase2: S=512, P=80) the first records of
the first train shard are read (:func:`bertlib.data.records.read_records`; a pair's real tokens =
``(input_mask > 0).sum()``) and packed with bertlib's own SPFHP (:func:`bertlib.data.packing.pack`,
K = 3 pairs per row; Krell et al. 2021). A window of consecutive packed rows holding B pairs (the
unpacked batch size; among such windows the one whose real-token count is closest to B × the mean pair
length, so the batch is typical) is the packed batch, and exactly those B pairs, one per padded row,
are the unpacked batch. So every contender trains on the same pairs, the same real tokens per step:

1. ``bertlib packed`` — the packed rows (``input_mask`` = pair number, plus ``position_ids``,
   ``next_sentence_positions``/``_weights`` from :func:`bertlib.data.pipeline.packed_features`):
   pair-restricted attention and one NSP per pair;
2. ``bertlib unpacked`` — Google's padded rows;
3. ``keras-hub`` — ``keras_hub.models.BertMaskedLM`` on a ``BertBackbone`` of the same shape, same
   unpacked rows (token_ids, segment_ids, padding_mask, mask_positions; labels = masked ids,
   sample_weight = masked_lm_weights).

Steps and the keras-hub install are ``bench/bench_model.py``'s (imported, not copied): bertlib =
``BertPretrainer`` + ``pretraining_losses`` + LAMB in one ``tf.function``, without XLA by default as
``params/local`` run on this CPU (``skip_xla``: XLA is ~13 % slower here), with ``jit_compile=True``
(the SageMaker/GPU setting) under ``--xla``; keras-hub = ``train_on_batch`` (LAMB, no XLA on CPU: its
``jit_compile="auto"``).
The three are timed in alternation (A B C A B C ...; median per contender) with the same TF threads.
Before timing, a tiny model checks that the packed and the unpacked batch give the same MLM and NSP
losses (dropout off) — i.e. that the packed rows hold exactly the unpacked pairs.

The table gives, per contender: rows/step, pairs/step, real tokens/step, median step seconds, real
tokens/s and the ratio to keras-hub. The issue's goal: phase 2 packed >= 1.3x keras-hub (the demo
slice's padding bounds the gain near 1.38x) and no loss on phase 1.

Numbers on a shared 2-core CPU are noisy (other processes' load): interleaving spreads it over the
contenders alike, but run ``make bench`` on a quiet machine for numbers worth quoting. No timing is
asserted.

    .venv/bin/python bench/bench_packing.py [--quick] [--size base] [--phases phase1 phase2]
        [--batch1 32] [--batch2 8] [--threads 1] [--rounds 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from bench_model import install_keras_hub, interleaved  # noqa: E402  (bench/ is on sys.path)

DATA = HERE.parent / "runs" / "demo" / "data"
PHASES = {"phase1": (128, 20), "phase2": (512, 80)}
K = 3  # pairs per packed row (max_pairs_per_row), as Krell et al. and DataConfig's default
PACKED, UNPACKED, PEER = "bertlib packed", "bertlib unpacked", "keras-hub BertMaskedLM"

# Full-Wikipedia packing numbers. Krell et al. 2021, "Efficient Sequence Packing without
# Cross-contamination" (arXiv 2107.02027), abstract and section 1: at S=512 padding is in excess of 50%
# of BERT's Wikipedia pretraining tokens; packing gives ~2x on phase 2, NNLSHP "combining a maximum of
# 3 sequences in one sample". The figures below are on the paper's Wikipedia length histogram
# (16,279,552 sequences) as published with its reference implementation (graphcore/examples,
# tutorials/blogs_code/packedBERT: histograms.py ``wikipedia_histogram``, README.md's outputs):
# - unpacked: "Speed-up theoretical limit: 2.0013" = 1 / the real-token fraction (49.97%);
# - README: SPFHP with at most 12 sequences per pack 99.604%, NNLSHP with at most 3 99.75%;
# - bertlib.data.packing.spfhp on that histogram (a 0 bin prepended for length 0), computed once for
#   this comment: K=12 -> 8,166,708 rows, 99.604% (the README's figure exactly: the same algorithm);
#   K=3 (bertlib's max_pairs_per_row default, used here) -> 9,094,695 rows, 89.44%, 1.79 pairs/row;
#   K=4 -> 93.94%; K=6 (params/sagemaker-packed's phase 2) -> 8,324,436 rows, 97.72%, 1.96 pairs/row.
#   SPFHP's ~99.6-99.7% needs deeper packs; at depth 3 only NNLSHP gets there.
WIKI_UNPACKED_EFFICIENCY = 1 / 2.0013
WIKI_PACKED_EFFICIENCY = {
    "bertlib SPFHP, K=3": 0.89441,
    "bertlib SPFHP, K=6": 0.97717,
    "SPFHP, at most 12 per pack": 0.99604,
    "NNLSHP, at most 3 per pack": 0.9975,
}


def unpacked_data() -> Path:
    """Google-format (one pair per record) datasets of the demo's data settings: ``runs/demo/data`` if it
    is unpacked, else ``runs/bench/unpacked-data``, made once by prepare-data from
    ``params/local/data.yaml`` with ``pack_sequences: false`` (the same pairs as the demo's)."""
    import yaml

    from bertlib import notebook as nb
    from bertlib.data.prepare import prepare
    from bertlib.data.records import read_manifest

    if (DATA / "phase1" / "manifest.json").is_file() and not read_manifest(DATA / "phase1").get("packing"):
        return DATA
    out = HERE.parent / "runs" / "bench" / "unpacked-data"
    values = yaml.safe_load((HERE.parent / "params" / "local" / "data.yaml").read_text())
    values.update(experiment="bench", output_dir=str(out), pack_sequences=False, squad_smoke=False)
    prepare(nb.parameters("data", values).cfg, progress=False)
    return out


def load_pairs(phase: str, limit: int) -> dict:
    """The first ``limit`` records of the phase's first train shard (of :func:`unpacked_data`) → numpy
    features + ``lengths``."""
    from bertlib.data.records import read_manifest, read_records

    s, p = PHASES[phase]
    folder = unpacked_data() / phase
    manifest = read_manifest(folder)
    shard = manifest["shards"]["train"][0]["file"]
    ex = read_records(folder / shard, s, p, limit=limit)
    ex["lengths"] = (ex["input_mask"] > 0).sum(axis=1)
    return ex


def choose_window(rows: np.ndarray, lengths: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive packed rows (``pack``'s rows are shuffled) holding ``batch`` pairs: returns (the
    rows [R, K], their pair indices [B]). R = batch / the mean pairs per row; among the windows with
    exactly ``batch`` pairs (trying R, R - 1, R + 1 ...) the one whose real tokens are closest to
    batch × the mean pair length."""
    present = rows >= 0
    r0 = max(1, round(batch * len(rows) / present.sum()))
    tokens_per_row = np.where(present, lengths[np.maximum(rows, 0)], 0).sum(axis=1)
    target = batch * lengths.mean()
    for r in sorted({max(1, r0 + d) for d in (0, -1, 1, -2, 2)}, key=lambda r: abs(r - r0)):
        if r > len(rows):
            continue
        pairs = np.convolve(present.sum(axis=1), np.ones(r, int), "valid")  # pairs in rows[w:w+r]
        tokens = np.convolve(tokens_per_row, np.ones(r, int), "valid")
        ok = np.flatnonzero(pairs == batch)
        if len(ok):
            w = ok[np.argmin(np.abs(tokens[ok] - target))]
            window = rows[w : w + r]
            return window, window[window >= 0]
    raise SystemExit(f"no window of packed rows holds exactly {batch} pairs; read more records (--examples)")


def packed_batch(ex: dict, rows: np.ndarray, s: int, p: int) -> dict:
    """The pairs of ``rows`` [R, K] (indices into ``ex``) packed by bertlib
    (:func:`bertlib.data.packing.place_pairs`: records.py's packed layout), plus the features the
    model derives from it (:func:`bertlib.data.pipeline.packed_features`). The pairs are the records
    as written: masks and all."""
    import tensorflow as tf

    from bertlib.data.packing import place_pairs
    from bertlib.data.pipeline import packed_features

    packed = {
        k: tf.constant(v.astype(np.float32 if k == "masked_lm_weights" else np.int32))
        for k, v in place_pairs(ex, rows, s, p).items()
    }
    return {k: v.numpy() for k, v in packed_features(packed, K).items()}


def unpacked_batch(ex: dict, pairs: np.ndarray) -> dict:
    """Google's rows for ``pairs``: the records themselves."""
    keys = (
        "input_ids",
        "input_mask",
        "segment_ids",
        "masked_lm_positions",
        "masked_lm_ids",
        "masked_lm_weights",
        "next_sentence_labels",
    )
    return {k: ex[k][pairs] for k in keys}


def same_losses(packed: dict, unpacked: dict) -> str:
    """MLM and NSP losses of one tiny model (dropout off) on both batches: equal when the packed rows
    hold exactly the unpacked pairs and the model keeps them apart."""
    import keras
    import tensorflow as tf
    from bench_model import VOCAB

    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses

    keras.utils.set_random_seed(0)
    model = BertPretrainer(BertConfig.from_preset("tiny", VOCAB))
    got = {}
    for name, batch in (("packed", packed), ("unpacked", unpacked)):
        feats = {k: tf.constant(v) for k, v in batch.items()}
        got[name] = {k: float(v) for k, v in pretraining_losses(model(feats, training=False), feats).items()}
    diff = max(abs(got["packed"][k] - got["unpacked"][k]) for k in ("mlm_loss", "nsp_loss"))
    verdict = "same pairs" if diff < 1e-3 else "MISMATCH: the packed rows do not train the same pairs"
    return (
        f"tiny-model check (dropout off): mlm loss packed {got['packed']['mlm_loss']:.5f} / unpacked "
        f"{got['unpacked']['mlm_loss']:.5f}, nsp {got['packed']['nsp_loss']:.5f} / "
        f"{got['unpacked']['nsp_loss']:.5f} -> {verdict}"
    )


def loss_curves(phase: str, steps: int = 60, pairs_per_step: int = 16, seed: int = 0) -> Path:
    """Training curves, packed vs unpacked, on the same real pairs: a 2-layer BERT (hidden 128, dropout
    0) trained by bertlib's Trainer (LAMB, lr 5e-3) for ``steps`` steps, each step's packed rows holding
    exactly the pairs of the unpacked step. Prints the largest relative loss difference and writes
    ``runs/bench/packing_loss_curves_<phase>.png`` (loss against pairs seen). The rows are consecutive packed
    rows (whole rows, so a step holds about ``pairs_per_step`` pairs)."""
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench_model import VOCAB

    from bertlib.data.packing import pack
    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer
    from bertlib.train.setup import seed_everything

    s, p = PHASES[phase]
    ex = load_pairs(phase, 4 * steps * pairs_per_step)
    rows = pack(ex["lengths"], s, K, np.random.default_rng(seed))
    per_row = len(ex["lengths"]) / len(rows)
    n_rows = max(1, round(pairs_per_step / per_row))
    steps = min(steps, len(rows) // n_rows)
    chunks = [rows[i * n_rows : (i + 1) * n_rows] for i in range(steps)]
    feeds = {
        "packed": [packed_batch(ex, c, s, p) for c in chunks],
        "unpacked": [unpacked_batch(ex, c[c >= 0]) for c in chunks],
    }
    pairs_seen = np.cumsum([int((c >= 0).sum()) for c in chunks])
    curves = {}
    for name, batches in feeds.items():
        seed_everything(seed)
        model = BertPretrainer(
            BertConfig.from_preset(
                "tiny", VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=s
            )
        )
        trainer = Trainer(
            model,
            pretraining_losses,
            Lamb(weight_decay=0.01),
            lambda step: 5e-3,
            total_steps=steps,
            jit_compile=False,
            allreduce=list,
        )
        trainer.restore_or_initialize()
        curves[name] = np.array([float(trainer.train_step(iter([b]))["loss"]) for b in batches])
        keras.backend.clear_session()
    rel = np.abs(curves["packed"] - curves["unpacked"]) / np.abs(curves["unpacked"])
    out = HERE.parent / "runs" / "bench" / f"packing_loss_curves_{phase}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(pairs_seen, curves["unpacked"], label=f"unpacked ({n_rows * per_row:.0f} rows/step)", lw=3, alpha=0.5)
    ax.plot(pairs_seen, curves["packed"], "--", label=f"packed, K={K} ({n_rows} rows/step)")
    ax.set(
        xlabel="pairs seen",
        ylabel="training loss (MLM + NSP)",
        title=f"{phase} (S={s}), same real pairs: max relative difference {rel.max():.1e}",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(
        f"\n{phase} loss curves, {steps} steps of ~{pairs_per_step} pairs (BERT-tiny, LAMB, dropout 0): loss "
        f"{curves['unpacked'][0]:.3f} -> {curves['unpacked'][-1]:.3f}; packed vs unpacked max relative "
        f"difference {rel.max():.2e} -> {out}"
    )
    return out


def run_phase(phase: str, size: str, batch: int, examples: int, warmup: int, rounds: int, seed: int, xla: bool) -> list:
    """Pack, check, time; print the phase's table and return its rows."""
    import keras
    from bench_model import bertlib_step, keras_hub_step

    from bertlib.data.packing import pack, packing_efficiency

    s, p = PHASES[phase]
    ex = load_pairs(phase, examples)
    lengths = ex["lengths"]
    rows = pack(lengths, s, K, np.random.default_rng(seed))
    window, pairs = choose_window(rows, lengths, batch)
    packed, unpacked = packed_batch(ex, window, s, p), unpacked_batch(ex, pairs)
    real = int(lengths[pairs].sum())
    print(
        f"\n{phase} (S={s}, P={p}): {len(lengths)} real pairs from {unpacked_data() / phase}; packed by bertlib's SPFHP "
        f"(K={K}) into {len(rows)} rows, {len(lengths) / len(rows):.2f} pairs/row; real-token fraction "
        f"unpacked {lengths.mean() / s:.1%}, packed {packing_efficiency(lengths, rows, s):.1%} "
        f"(the step's batch: {real / (len(pairs) * s):.1%} / {real / (len(window) * s):.1%})",
        flush=True,
    )
    print("  " + same_losses(packed, unpacked), flush=True)

    mode = "bertlib (XLA)" if xla else "bertlib (no XLA)"
    steps = {
        PACKED: bertlib_step(size, packed)[mode],
        UNPACKED: bertlib_step(size, unpacked)[mode],
        **{PEER: step for step in keras_hub_step(size, unpacked).values()},
    }
    seconds = interleaved(steps, warmup, rounds)
    shape = {PACKED: len(window), UNPACKED: len(pairs), PEER: len(pairs)}
    table = [
        (name, shape[name], len(pairs), real, sec, real / sec, seconds[PEER] / sec) for name, sec in seconds.items()
    ]
    print(
        f"  {'contender':24s} {'rows/step':>9s} {'pairs/step':>10s} {'real tok/step':>13s} {'median step s':>13s} "
        f"{'real tok/s':>10s} {'vs keras-hub':>12s}"
    )
    for name, n_rows, n_pairs, tokens, sec, rate, ratio in table:
        print(
            f"  {name:24s} {n_rows:9d} {n_pairs:10d} {tokens:13d} {sec:13.3f} {rate:10.1f} {ratio:11.2f}x", flush=True
        )
    print(
        f"  (median of {rounds} interleaved steps after {warmup} untimed; BERT-{size}; bertlib {mode[9:-1]}; "
        f"packed / unpacked bertlib = {seconds[UNPACKED] / seconds[PACKED]:.2f}x)",
        flush=True,
    )
    del steps
    keras.backend.clear_session()
    gc.collect()
    return table


def projection() -> None:
    """Phase 2 of the reference run (BERT-base, 64 V100) packed: speed-up = real-token fraction packed /
    unpacked on full Wikipedia at S=512 (rows/s unchanged, more real tokens per row), and the hours saved."""
    from bertlib.report import REFERENCE

    hours = REFERENCE["phase2_s"] / 3600
    print(
        f"\nProjection for the reference run's phase 2 (BERT-base on 8 x ml.p3dn.24xlarge = 64 V100, {hours:.2f} h) "
        f"on full Wikipedia at S=512 (Krell et al. 2021, arXiv 2107.02027; the paper's length histogram): real "
        f"tokens {WIKI_UNPACKED_EFFICIENCY:.1%} of the row positions unpacked, and packed:"
    )
    for name, efficiency in WIKI_PACKED_EFFICIENCY.items():
        speedup = efficiency / WIKI_UNPACKED_EFFICIENCY
        saved = hours * (1 - 1 / speedup)
        print(
            f"  {name:27s} {efficiency:6.2%} -> {speedup:.2f}x real tokens per row: {hours / speedup:.2f} h, "
            f"{saved:.2f} h ({saved * 60:.0f} min, {saved * 8:.1f} instance-hours) saved"
        )
    print(
        '  (assumes the same rows/s packed as unpacked: the per-pair attention mask and NSP have "relatively '
        "little impact\" on GPUs/IPUs per Krell et al.'s abstract)"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="a ~2 minute check: tiny model, small batches, 512 records, 2 timed rounds"
    )
    ap.add_argument("--size", default=None, help="model preset for all three (default base; --quick: tiny)")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    ap.add_argument("--batch1", type=int, default=None, help="phase 1 pairs/step (default 32; --quick 16)")
    ap.add_argument("--batch2", type=int, default=None, help="phase 2 pairs/step (default 8; --quick 4)")
    ap.add_argument("--examples", type=int, default=None, help="records read and packed per phase (2048; --quick 512)")
    ap.add_argument("--rounds", type=int, default=None, help="timed steps per contender (default 3; --quick 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per contender (the first compiles)")
    ap.add_argument("--threads", type=int, default=1, help="TF intra/inter-op threads (0 = TF default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--xla",
        action="store_true",
        help="bertlib's steps with jit_compile=True (the SageMaker/GPU setting); default without, "
        "as params/local on this CPU (skip_xla: XLA is ~13%% slower here) and as keras-hub runs",
    )
    args = ap.parse_args(argv)
    size = args.size or ("tiny" if args.quick else "base")
    batches = {"phase1": args.batch1 or (16 if args.quick else 32), "phase2": args.batch2 or (4 if args.quick else 8)}
    rounds = args.rounds or (2 if args.quick else 3)
    examples = args.examples or (512 if args.quick else 2048)

    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-keras-hub-") as target:
        install_keras_hub(target)
        import keras_hub

        print(
            f"TF {tf.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}; BERT-{size} for all "
            f"three; bertlib {'with' if args.xla else 'without'} XLA; threads {args.threads or 'default'}, "
            f"{os.cpu_count()} CPUs (shared: other processes' load "
            f"makes these numbers noisy)"
        )
        results = {
            phase: run_phase(phase, size, batches[phase], examples, args.warmup, rounds, args.seed, args.xla)
            for phase in args.phases
        }
    print("\nreal tokens/s, ratio to keras-hub:")
    for phase, table in results.items():
        ratio = {name: r for name, *_, r in table}
        goal = 1.3 if phase == "phase2" else 1.0
        verdict = ("met" if ratio[PACKED] >= goal else "NOT met") if size == "base" else f"judged on base, not {size}"
        print(
            f"  {phase}: packed {ratio[PACKED]:.2f}x, unpacked {ratio[UNPACKED]:.2f}x "
            f"(goal packed >= {goal:.1f}x: {verdict})"
        )
    for phase in args.phases:
        loss_curves(phase, steps=20 if args.quick else 60)
    projection()
    return 0


if __name__ == "__main__":
    sys.exit(main())
