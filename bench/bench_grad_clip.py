"""Where gradients are clipped: the loss curves of ``grad_clip: global_mean`` (bertlib's: clip the mean
gradient after the allreduce) and ``per_rank_sum`` (the reference's: each rank clips its unscaled sum of
micro-batch gradients before it), side by side on the same data, seed and schedule.

Both runs go through the real entry point under ``horovodrun -np 2`` (Gloo, 1 TF thread per rank) with
gradient accumulation 4, on the demo's phase-1 records (``runs/demo/data/phase1`` after ``make demo``, or
``--data_dir``), else on a small slice prepared like ``bench_scaling.py``'s. Writes
``<work>/grad_clip_loss.png`` and prints both curves (training loss per step) and the mean gradient norm.

usage: python bench/bench_grad_clip.py [--data_dir DIR] [--steps 40] [--max_grad_norm 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml
from bench_scaling import prepared_data, run

REPO = Path(__file__).resolve().parents[1]
WAYS = ("global_mean", "per_rank_sum")


def curves(run_dir: Path) -> tuple[list[int], list[float], list[float]]:
    """Steps, training losses and grad norms of a run's metrics.jsonl (lines with a training loss)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lines = [d for d in lines if "loss" in d]
    return [d["step"] for d in lines], [d["loss"] for d in lines], [d["grad_norm"] for d in lines]


def plot(results: dict, path: Path, title: str) -> None:
    """Both loss curves (top) and their difference per step (bottom: they overlap at this scale)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    for way, (steps, losses, _) in results.items():
        top.plot(steps, losses, label=way)
    (steps, a, _), (_, b, _) = results["global_mean"], results["per_rank_sum"]
    bottom.plot(steps, [y - x for x, y in zip(a, b)], color="black")
    bottom.axhline(0, color="grey", lw=0.5)
    top.set_ylabel("training loss (MLM + NSP)")
    bottom.set_ylabel("per_rank_sum − global_mean")
    bottom.set_xlabel("optimizer step")
    top.set_title(title, fontsize=8)
    top.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=str(REPO / "runs" / "demo" / "data" / "phase1"))
    ap.add_argument("--model_size", default="tiny", choices=["tiny", "mini", "small", "base"])
    ap.add_argument("--per_gpu_batch_size", type=int, default=8)
    ap.add_argument("--accumulation", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--learning_rate", type=float, default=0.005)
    ap.add_argument("--max_grad_norm", type=float, default=1.0)
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_grad_clip"))
    args = ap.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data_dir)
    if not (data / "manifest.json").is_file():
        data = prepared_data(work)
    manifest = json.loads((data / "manifest.json").read_text())
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        BERTLIB_PROGRESS="0",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        PYTHONPATH=str(REPO),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    results = {}
    for way in WAYS:
        cfg = {
            "model_size": args.model_size,
            "data_dir": str(data),
            "max_seq_length": manifest["max_seq_length"],
            "max_predictions_per_seq": manifest["max_predictions_per_seq"],
            "per_gpu_batch_size": args.per_gpu_batch_size,
            "gradient_accumulation_steps": args.accumulation,
            "learning_rate": args.learning_rate,
            "end_learning_rate": 0.0003,
            "warmup_steps": max(1, args.steps // 10),
            "total_steps": args.steps,
            "max_grad_norm": args.max_grad_norm,
            "grad_clip": way,
            "log_frequency": 1,
            "validation_frequency": 0,
            "checkpoint_frequency": 100000,
            "skip_xla": True,
            "optimizer": "lamb",
            "seed": 42,
        }
        cfg_file = work / f"{way}.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        run(2, cfg_file, work / way, env)
        results[way] = curves(work / way)
    title = (
        f"BERT-{args.model_size}, 2 ranks × {args.per_gpu_batch_size} × {args.accumulation} accumulation, "
        f"LAMB {args.learning_rate}, clip {args.max_grad_norm}, {data}"
    )
    png = work / "grad_clip_loss.png"
    plot(results, png, title)
    print(f"bench_grad_clip: {title}")
    (steps, a, ga), (_, b, gb) = results["global_mean"], results["per_rank_sum"]
    print(f"{'step':>5} {'loss global_mean':>17} {'loss per_rank_sum':>18} {'diff':>8}")
    for s, x, y in zip(steps, a, b):
        print(f"{s:>5} {x:>17.4f} {y:>18.4f} {y - x:>+8.4f}")
    tail = max(1, len(a) // 4)
    print(
        f"mean loss over the last {tail} steps: global_mean {sum(a[-tail:]) / tail:.4f}, "
        f"per_rank_sum {sum(b[-tail:]) / tail:.4f}; mean grad_norm (global_mean: of the mean gradient; "
        f"per_rank_sum: ranks' sums before clipping) {sum(ga) / len(ga):.3f} / {sum(gb) / len(gb):.3f}"
    )
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
