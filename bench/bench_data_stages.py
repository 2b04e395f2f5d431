"""Per-stage rates of ``prepare-data`` at the reference settings, for the full-dump projection of
``bertlib estimate`` (:mod:`bertlib.data.projection`).

Input: the real Wikipedia slice (``asset:wiki_slice``, gensim 4.4.0's test dump) re-compressed as
Wikimedia publishes the multistream dump (100 pages per bz2 stream, ``bench/make_multistream.py``),
its pages repeated ``--copies`` times with distinct ids and titles for volume, so the extract stage
reads byte ranges in the workers as it does on the real dump. Settings: the reference's
(``params/sagemaker/data.yaml``): bert-base-uncased vocab (given file), phases 128/20 and 512/80,
dupe_factor 5, seed 12345 — except the shard counts (``--num-shards`` / ``--validation-shards``,
default 8 + 1 instead of 512 + 8: the slice has 98 articles per copy). ``prepare()`` runs once
per worker count (``--workers``, default 1 and 2) into ``runs/bench/data_stages/w<N>``, from scratch,
``--repeat`` times; each stage's (and each CPU time's) fastest repeat is kept, since other load on a
shared machine only ever slows a stage down.

For each run the table gives, per stage: wall seconds, items (extract: bz2 bytes; tokenize:
tokens; instances and shards: training pairs), items per second, per second per worker, the
speed-up over the first run, and the stage's share of the run's total time. The main process's CPU
seconds during extract and tokenize (it takes the workers' results and writes sentences.txt / the
token file) are measured by wrapping those two methods; they give the main-process caps.

The constants printed at the end are the ones :mod:`bertlib.data.projection` holds: per-worker
rates from the 1-worker run (the main process then has the second core to itself, so the worker is
measured alone; extract from the CPU seconds of its read + clean + split steps in ``extract.json``,
which leaves out the workers' start-up; the other stages from wall time), main-process caps from
the run with the most workers (main-process CPU seconds per item). On 2 cores the 2-worker run
shares the cores between 2 workers and the main process, so its speed-up is below 2 by design.

usage: python bench/bench_data_stages.py [--copies 16] [--workers 1,2] [--repeat 2] [--out runs/bench/data_stages]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_multistream import write_multistream  # noqa: E402

STAGES = ("extract", "vocab", "tokenize", "instances", "shards")


def data_config(source: Path, out: Path, workers: int, args):
    """The reference settings (params/sagemaker/data.yaml) with the bench's shard counts."""
    from bertlib.core.assets import asset
    from bertlib.core.config import build_config

    return build_config(
        "prepare-data",
        {
            "sources": [str(source)],
            "source_format": "wikipedia",
            "output_dir": str(out),
            "vocab_file": str(asset("bert_uncased_vocab")),
            "do_lower_case": True,
            "num_workers": workers,
            "num_shards": args.num_shards,
            "validation_shards": args.validation_shards,
            "validation_fraction": 0.01,
            "dupe_factor": args.dupe_factor,
            "seed": 12345,
            "phases": [
                {"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 20},
                {"name": "phase2", "max_seq_length": 512, "max_predictions_per_seq": 80},
            ],
        },
    )


def instrument_main_cpu() -> dict:
    """Wrap the extract and tokenize stages (``bertlib.data.prepare.extract``, ``.tokens``) to record the
    main process's CPU seconds (all its threads: result handling, pickling, writing) into the returned
    dict, per call."""
    from bertlib.data.prepare import extract, tokens

    seconds: dict = {}

    def timed(name, method):
        def wrapper(*a, **kw):
            c = time.process_time()
            try:
                return method(*a, **kw)
            finally:
                seconds[name] = time.process_time() - c

        return wrapper

    extract.extract_sentences = timed("extract", extract.extract_sentences)
    tokens.tokenize = timed("tokenize", tokens.tokenize)
    return seconds


def run(source: Path, out: Path, workers: int, args, main_cpu: dict) -> dict:
    """One ``prepare()`` from scratch; the stage table's numbers."""
    from bertlib.data.prepare import prepare

    shutil.rmtree(out, ignore_errors=True)
    main_cpu.clear()
    load = os.getloadavg()[0]
    summary = prepare(data_config(source, out, workers, args), progress=False)
    tm, rates, corpus = summary["timings"], summary["rates"], summary["corpus"]
    steps = rates["extract"]["steps"]
    pairs = sum(ph["counts"]["pairs"] for ph in summary["phases"].values())
    items = {
        "extract": source.stat().st_size,
        "vocab": 0,
        "tokenize": corpus["tokens"],
        "instances": pairs,
        "shards": pairs,
    }
    return {
        "workers": workers,
        "load": load,
        "timings": tm,
        "items": items,
        "corpus": corpus,
        "text_bytes": (out / ".corpus" / "sentences.txt").stat().st_size,
        "records": rates["shards"]["records"],
        "record_bytes": rates["shards"]["bytes"],
        "worker_cpu": {"extract": sum(steps[k]["s"] for k in ("read", "clean", "split"))},
        "main_cpu": dict(main_cpu),
        "steps": steps,
    }


def fastest(repeats: list[dict]) -> dict:
    """One run's numbers from repeats of the same run: per stage (and per CPU time) the smallest."""
    best = dict(repeats[0])
    best["load"] = max(r["load"] for r in repeats)
    for key in ("timings", "worker_cpu", "main_cpu"):
        best[key] = {k: min(r[key][k] for r in repeats) for k in repeats[0][key]}
    best["timings"]["total_s"] = sum(best["timings"][f"{stage}_s"] for stage in STAGES) + min(
        r["timings"]["total_s"] - sum(r["timings"][f"{stage}_s"] for stage in STAGES) for r in repeats
    )
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=16, help="the slice's pages repeated this many times")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, one prepare() each")
    p.add_argument("--repeat", type=int, default=2, help="runs per worker count; the fastest stages are kept")
    p.add_argument("--dupe-factor", type=int, default=5)
    p.add_argument("--num-shards", type=int, default=8)
    p.add_argument("--validation-shards", type=int, default=1)
    p.add_argument("--out", default="runs/bench/data_stages")
    args = p.parse_args(argv)

    from bertlib.core.assets import asset

    out = Path(args.out)
    made = write_multistream(asset("wiki_slice"), out / "input", pages_per_stream=100, copies=args.copies)
    source = made["multistream"]
    print(
        f"input: the Wikipedia slice ×{args.copies} as a multistream dump: {made['pages']} pages, "
        f"{source.stat().st_size:,} bytes bz2 in {len(made['streams'])} streams; {os.cpu_count()} cores; "
        f"phases 128/20 + 512/80, dupe_factor {args.dupe_factor}, {args.num_shards} + {args.validation_shards} "
        f"shards per phase, bert-base-uncased vocab"
    )
    main_cpu = instrument_main_cpu()
    runs = [
        fastest([run(source, out / f"w{w}", w, args, main_cpu) for _ in range(args.repeat)])
        for w in map(int, args.workers.split(","))
    ]

    units = {"extract": "bz2 bytes", "vocab": "-", "tokenize": "tokens", "instances": "pairs", "shards": "pairs"}
    base = runs[0]
    for r in runs:
        total = r["timings"]["total_s"]
        print(
            f"\n{r['workers']} worker(s), fastest of {args.repeat} per stage (highest load average at a start "
            f"{r['load']:.2f}): total {total:.1f} s; "
            f"{r['corpus']['raw_documents']} raw documents, {r['corpus']['documents']} documents, "
            f"{r['text_bytes']:,} bytes of text, {r['corpus']['tokens']:,} tokens, {r['items']['shards']:,} pairs, "
            f"{r['record_bytes']:,} bytes of TFRecords"
        )
        print(
            f"{'stage':<11}{'wall s':>8}{'items':>13} {'unit':<10}{'items/s':>13}{'per worker':>13}"
            f"{'speed-up':>10}{'share':>8}"
        )
        for stage in STAGES:
            s, n = r["timings"][f"{stage}_s"], r["items"][stage]
            rate = n / s if n and s > 0 else 0.0
            up = base["timings"][f"{stage}_s"] / s if s > 0 else 0.0
            print(
                f"{stage:<11}{s:>8.2f}{n:>13,} {units[stage]:<10}{rate:>13,.0f}{rate / r['workers']:>13,.0f}"
                f"{up:>9.2f}x{s / total:>8.1%}"
            )
        other = total - sum(r["timings"][f"{stage}_s"] for stage in STAGES)
        print(f"{'(other)':<11}{other:>8.2f}{'':>71}{other / total:>8.1%}")
        mc = r["main_cpu"]
        print(
            f"main process CPU: extract {mc['extract']:.2f} s ({r['text_bytes'] / mc['extract']:,.0f} text bytes/s), "
            f"tokenize {mc['tokenize']:.2f} s ({r['corpus']['tokens'] / mc['tokenize']:,.0f} tokens/s); "
            f"extract worker CPU (read + clean + split) {r['worker_cpu']['extract']:.2f} s "
            f"({r['items']['extract'] / r['worker_cpu']['extract']:,.0f} bz2 bytes/CPU-s)"
        )

    one, most = runs[0], runs[-1]
    if one["workers"] != 1:
        print("\n(no 1-worker run: constants not printed)")
        return 0

    def per_worker(stage):
        return one["items"][stage] / one["timings"][f"{stage}_s"]

    consts = {
        "EXTRACT_BZ2_BYTES_PER_WORKER_S": one["items"]["extract"] / one["worker_cpu"]["extract"],
        "EXTRACT_MAIN_TEXT_BYTES_PER_S": most["text_bytes"] / most["main_cpu"]["extract"],
        "TOKENIZE_TOKENS_PER_WORKER_S": per_worker("tokenize"),
        "TOKENIZE_MAIN_TOKENS_PER_S": most["corpus"]["tokens"] / most["main_cpu"]["tokenize"],
        "INSTANCES_PAIRS_PER_WORKER_S": per_worker("instances"),
        "SHARDS_PAIRS_PER_WORKER_S": per_worker("shards"),
    }
    print(
        f"\nconstants for bertlib/data/projection.py (per-worker rates: the 1-worker run; main-process caps: "
        f"the {most['workers']}-worker run; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores):"
    )
    for name, value in consts.items():
        print(f"{name} = {value:,.0f}".replace(",", "_"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
