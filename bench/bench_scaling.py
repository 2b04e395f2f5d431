"""Horovod scaling on this machine: 2 ranks vs 1 rank at the same per-rank batch, 1 TF thread each.

Both runs go through the real entry point (``python -m bertlib.train.pretrain``; the 2-rank one under
``horovodrun -np 2`` with Gloo) on real data: the Wikipedia slice prepared by ``bertlib.data.prepare``
at sequence length 128 / 20 predictions with the bert-base-uncased vocab (cached in ``--work``).
Step time is taken from ``metrics.jsonl`` (global batch / seq_per_sec per log interval), leaving
out the first interval (XLA compilation). With 2 cores, ideal data-parallel scaling is 2 × the
sequences/s of one rank at the same step time; the efficiency printed is that ratio. The time of the
gradient allreduce alone (``distributed.allreduce_mean`` over the model's gradient shapes, 2 ranks)
is measured separately, since it is the part of a step that one process does not pay.

usage: python bench/bench_scaling.py [--model_size mini] [--per_gpu_batch_size 8] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def prepared_data(work: Path) -> Path:
    """Real phase-1 style records (S=128, P=20) from the Wikipedia slice, made once."""
    out = work / "data"
    if (out / "phase1" / "manifest.json").exists():
        return out / "phase1"
    from bertlib.core.assets import asset
    from bertlib.core.config import build_config
    from bertlib.data.prepare import prepare

    cfg = build_config(
        "prepare-data",
        {
            "sources": [str(asset("wiki_slice"))],
            "output_dir": str(out),
            "vocab_file": str(asset("bert_uncased_vocab")),
            "do_lower_case": True,
            "max_documents": 40,
            "num_shards": 2,
            "validation_shards": 0,
            "validation_fraction": 0.0,
            "dupe_factor": 1,
            "num_workers": 1,
            "seed": 12345,
            "phases": [{"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 20}],
        },
    )
    prepare(cfg, progress=False)
    return out / "phase1"


def run(processes: int, cfg_file: Path, run_dir: Path, env: dict) -> dict:
    """One pretraining run; returns steady-state step time and throughput from its metrics.jsonl."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "bertlib.train.pretrain",
        "--config",
        str(cfg_file),
        "--run_dir",
        str(run_dir),
    ]
    if processes > 1:
        horovodrun = shutil.which("horovodrun", path=env["PATH"])
        cmd = [horovodrun, "-np", str(processes), "-H", f"localhost:{processes}"] + cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    steady = lines[1:]
    batch = summary["global_batch_size"]
    step_times = [batch / d["seq_per_sec"] for d in steady]
    return {
        "processes": processes,
        "global_batch": batch,
        "step_s": statistics.median(step_times),
        "seq_per_sec": batch / statistics.median(step_times),
        "wall_s": time.perf_counter() - t0,
        "final_loss": lines[-1]["loss"],
    }


def allreduce_worker(model_size: str, repeats: int = 10) -> None:
    """Under horovodrun: time ``allreduce_mean`` of tensors shaped like the model's gradients."""
    import tensorflow as tf

    from bertlib.model import BertConfig, BertPretrainer
    from bertlib.train import distributed

    rank, _, _ = distributed.init(threads_per_process=1)
    model = BertPretrainer(BertConfig.from_preset(model_size, 30522))
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    for _ in range(2):
        distributed.allreduce_mean(grads)
    t0 = time.perf_counter()
    for _ in range(repeats):
        distributed.allreduce_mean(grads)[-1].numpy()
    if rank == 0:
        floats = sum(int(tf.size(g)) for g in grads)
        print(f"ALLREDUCE {(time.perf_counter() - t0) / repeats:.4f} {floats}", flush=True)


def time_allreduce(model_size: str, env: dict) -> tuple[float, int]:
    cmd = [
        shutil.which("horovodrun", path=env["PATH"]),
        "-np",
        "2",
        "-H",
        "localhost:2",
        sys.executable,
        __file__,
        "--allreduce_worker",
        "--model_size",
        model_size,
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600).stdout
    seconds, floats = out.split("ALLREDUCE ")[1].split()[:2]
    return float(seconds), int(floats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_size", default="mini", choices=["tiny", "mini", "small", "base"])
    ap.add_argument("--per_gpu_batch_size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--log_frequency", type=int, default=5)
    ap.add_argument("--skip_xla", action="store_true")
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_scaling"))
    ap.add_argument("--allreduce_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.allreduce_worker:
        allreduce_worker(args.model_size)
        return 0

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = prepared_data(work)
    cfg = {
        "model_size": args.model_size,
        "data_dir": str(data),
        "max_seq_length": 128,
        "max_predictions_per_seq": 20,
        "per_gpu_batch_size": args.per_gpu_batch_size,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "total_steps": args.steps,
        "log_frequency": args.log_frequency,
        "checkpoint_frequency": 100000,
        "skip_xla": args.skip_xla,
        "optimizer": "lamb",
    }
    cfg_file = work / f"{args.model_size}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        BERTLIB_PROGRESS="0",
        TF_NUM_INTRAOP_THREADS="1",  # one TF thread per process (what threads_per_process: 1 sets)
        TF_NUM_INTEROP_THREADS="1",
        PYTHONPATH=str(REPO),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )

    one = run(1, cfg_file, work / f"{args.model_size}-np1", env)
    two = run(2, cfg_file, work / f"{args.model_size}-np2", env)
    allreduce_s, floats = time_allreduce(args.model_size, env)
    print(
        f"bench_scaling: model={args.model_size} seq=128 per-rank batch={args.per_gpu_batch_size} "
        f"steps={args.steps} xla={not args.skip_xla} threads/rank=1 loadavg={os.getloadavg()[0]:.2f}"
    )
    print(f"{'processes':>9} {'global_batch':>12} {'step_s':>8} {'seq/s':>8} {'wall_s':>7}")
    for r in (one, two):
        print(
            f"{r['processes']:>9} {r['global_batch']:>12} {r['step_s']:>8.4f} {r['seq_per_sec']:>8.2f} "
            f"{r['wall_s']:>7.1f}"
        )
    print(
        f"step time 2 ranks / 1 rank = {two['step_s'] / one['step_s']:.3f}; "
        f"throughput 2 ranks / 1 rank = {two['seq_per_sec'] / one['seq_per_sec']:.3f} "
        f"(scaling efficiency {two['seq_per_sec'] / (2 * one['seq_per_sec']):.1%})"
    )
    print(
        f"gradient allreduce alone (2 ranks, Gloo, {floats / 1e6:.1f}M float32): {allreduce_s:.4f} s/step "
        f"= {allreduce_s / one['step_s']:.1%} of the 1-rank step"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
