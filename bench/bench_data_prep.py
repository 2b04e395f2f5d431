"""Data-prep throughput: ``bertlib prepare-data`` vs TensorFlow Model Garden's create_pretraining_data.

Same input, same vocab, same example settings (one phase, 128/20, dupe_factor, short_seq_prob 0.1,
masked_lm_prob 0.15), one run each:

- bertlib from the raw Wikipedia XML dump (markup removal + sentence splitting included), 1 and 2 workers;
- bertlib from the plain-text file Model Garden reads (one sentence per line, blank line between
  articles; produced by bertlib's own corpus reader from the same dump), 1 and 2 workers;
- Model Garden ``official.nlp.data.create_pretraining_data`` (tf-models-official 2.20.0, single
  process) on that text file. It is installed ``--no-deps`` with ``tf-keras`` and ``sentencepiece``
  into a throwaway ``--target`` directory (never into the project's requirements).

"tokens" = WordPiece tokens of the corpus (bert-base-uncased vocab). Per-core rates divide by the
worker processes (Model Garden: 1); CPU-time rates divide by the CPU seconds actually used (this
process + its children), which is the fairer number on a shared machine. Usage:

    .venv/bin/python bench/bench_data_prep.py [--dupe-factor 5] [--repeat 3] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

MG_PACKAGES = ["tf-models-official==2.20.0", "tf-keras==2.21.0", "sentencepiece==0.2.3"]


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def write_plain_text(dump: Path, out: Path) -> int:
    """Model Garden's input format from bertlib's reader; returns the number of articles."""
    from bertlib.data.corpus import document_sentences, iter_raw_documents

    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for doc in iter_raw_documents([dump]):
            sentences = document_sentences(doc)
            if sentences:
                f.write("\n".join(sentences) + "\n\n")
                n += 1
    return n


def run_bertlib(source: Path, vocab: Path, out: Path, workers: int, args) -> dict:
    from bertlib.core.config import build_config
    from bertlib.data.prepare import prepare

    shutil.rmtree(out, ignore_errors=True)
    cfg = build_config(
        "prepare-data",
        {
            "sources": [str(source)],
            "output_dir": str(out),
            "vocab_file": str(vocab),
            "do_lower_case": True,
            "num_workers": workers,
            "num_shards": 4,
            "validation_shards": 0,
            "dupe_factor": args.dupe_factor,
            "short_seq_prob": 0.1,
            "masked_lm_prob": 0.15,
            "seed": 12345,
            "phases": [{"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 20}],
        },
    )
    c0, t0 = cpu_seconds(), time.perf_counter()
    summary = prepare(cfg, progress=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    counts = summary["phases"]["phase1"]["counts"]
    return {
        "wall": wall,
        "cpu": cpu,
        "workers": workers,
        "tokens": summary["corpus"]["tokens"],
        "examples": counts["examples"],
        "masked": counts["masked_tokens"],
        "timings": summary["timings"],
    }


def ensure_model_garden(target: Path) -> None:
    if (target / "official" / "nlp" / "data" / "create_pretraining_data.py").is_file():
        return
    tmp = target.with_name(target.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp), *MG_PACKAGES], check=True
    )
    os.replace(tmp, target)


def run_model_garden(target: Path, text: Path, vocab: Path, out: Path, dupe_factor: int) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(target),
        TF_CPP_MIN_LOG_LEVEL="3",
        OMP_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    cmd = [
        sys.executable,
        "-m",
        "official.nlp.data.create_pretraining_data",
        f"--input_file={text}",
        f"--output_file={out}",
        f"--vocab_file={vocab}",
        "--do_lower_case=True",
        "--max_seq_length=128",
        "--max_predictions_per_seq=20",
        "--masked_lm_prob=0.15",
        "--short_seq_prob=0.1",
        "--random_seed=12345",
        f"--dupe_factor={dupe_factor}",
    ]
    c0, t0 = cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"Model Garden failed:\n{proc.stderr[-3000:]}")
    examples = next(
        (
            int(line.rsplit(" ", 3)[-3])
            for line in proc.stderr.splitlines()
            if "Wrote" in line and "total instances" in line
        ),
        -1,
    )
    return {"wall": wall, "cpu": cpu, "workers": 1, "examples": examples}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dupe-factor", type=int, default=5)
    p.add_argument("--work-dir", default="/tmp/bertlib-bench-data")
    p.add_argument("--skip-model-garden", action="store_true")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per configuration; the fastest is reported (a shared machine's load only ever slows a run down)",
    )
    args = p.parse_args(argv)

    from bertlib.core.assets import asset

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dump, vocab = asset("wiki_slice"), asset("bert_uncased_vocab")
    text = work / "wiki_slice.txt"
    articles = write_plain_text(dump, text)
    print(
        f"input: {dump.name} ({articles} articles) → {text} ({text.stat().st_size / 1e6:.1f} MB); "
        f"vocab: bert-base-uncased; one phase 128/20, dupe_factor={args.dupe_factor}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; best of {args.repeat}"
    )

    rows = []
    for label, source in (("bertlib, from XML dump", dump), ("bertlib, from text", text)):
        for workers in (1, 2):
            r = min(
                (
                    run_bertlib(source, vocab, work / f"out-{label.split()[-1]}-{workers}", workers, args)
                    for _ in range(args.repeat)
                ),
                key=lambda x: x["wall"],
            )
            rows.append((f"{label}, {workers} worker{'s' * (workers > 1)}", r))
    tokens = rows[0][1]["tokens"]
    if not args.skip_model_garden:
        target = work / "model-garden"
        ensure_model_garden(target)
        # startup (imports + TF init) measured on a two-sentence input, reported separately
        tiny = work / "tiny.txt"
        tiny.write_text("A first sentence. \nA second one.\n\nAnother document here.\nAnd more.\n")
        startup = min(
            (run_model_garden(target, tiny, vocab, work / "mg-tiny.tfrecord", 1) for _ in range(args.repeat)),
            key=lambda x: x["wall"],
        )
        mg = min(
            (run_model_garden(target, text, vocab, work / "mg.tfrecord", args.dupe_factor) for _ in range(args.repeat)),
            key=lambda x: x["wall"],
        )
        rows.append(("Model Garden create_pretraining_data, 1 process", mg))

    print(f"\ncorpus: {tokens} WordPiece tokens\n")
    print(f"{'run':<52}{'wall s':>8}{'cpu s':>8}{'examples':>10}{'tok/s/core':>12}{'tok/cpu-s':>11}")
    for name, r in rows:
        r["per_core"] = tokens / r["wall"] / r["workers"]
        r["per_cpu"] = tokens / r["cpu"]
        print(
            f"{name:<52}{r['wall']:>8.2f}{r['cpu']:>8.2f}{r['examples']:>10}{r['per_core']:>12.0f}{r['per_cpu']:>11.0f}"
        )
    if not args.skip_model_garden:
        mg_core, mg_cpu = mg["per_core"], mg["per_cpu"]
        print(f"\nModel Garden startup (imports, TF init; 2-sentence input): {startup['wall']:.1f} s wall")
        print("ratios vs Model Garden (same text input, goal >= 5x per core):")
        for name, r in rows[:-1]:
            print(
                f"  {name:<50} per core {r['per_core'] / mg_core:5.1f}x   per cpu-second {r['per_cpu'] / mg_cpu:5.1f}x"
            )
        excl = tokens / (mg["wall"] - startup["wall"])
        best_text = rows[2][1]
        print(
            f"  (Model Garden without its startup: {excl:.0f} tok/s; bertlib text 1 worker "
            f"{best_text['per_core'] / excl:.1f}x of that)"
        )
    for name, r in rows[:4]:
        print(f"stages {name}: " + ", ".join(f"{k}={v:.2f}" for k, v in r["timings"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
