"""Extraction speed: the serial reader vs multistream byte ranges read by 1 and 2 workers, and the
full-dump projection.

Input: the real Wikipedia slice (``asset:wiki_slice``) re-compressed as Wikimedia publishes the
multistream dump (header stream, 100 pages per bz2 stream, footer stream, index;
``bench/make_multistream.py``), its pages repeated ``--copies`` times with distinct ids and titles
for volume; the same XML as one bz2 stream is the serial reader's input. Three measurements:

1. reading alone (bz2 decompression + XML parsing + the article filter): the serial reader
   (``iter_raw_documents``, one process — what the main process did for every source before) vs
   the ranges read by 1 and 2 worker processes;
2. the whole extract stage (``prepare-data`` stage 1: read, clean, split, write ``sentences.txt``),
   serial reader vs ranges, 1 and 2 workers, with the per-step rates ``extract.json`` records
   (per busy core: CPU seconds of the thread that ran the step) and the main process's CPU time;
3. one full ``prepare-data`` run (2 workers) for the later stages' rates (tokenize, examples).

The projection for the full dump (``--dump-gb``, ~20 GB of bz2) takes a worker's rate per
compressed MB (from the CPU seconds of its steps in the 1-worker run: read + clean + split with
ranges, clean + split before), times N workers, capped by what the main process can take (its CPU
seconds per compressed MB in the 2-worker run: results + writing with ranges; before, the serial
reading and sending the documents). The slice's
articles are long ones from the start of the dump; rates per compressed MB carry over to the whole
dump better than rates per document. Run on a quiet machine (other load slows every wall time).

usage: python bench/bench_extract.py [--copies 8] [--dupe-factor 5] [--dump-gb 20] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_multistream import write_multistream  # noqa: E402


def read_only(task) -> dict:
    """Worker: decompress and parse one range, dropping the documents; its reading stats."""
    from bertlib.data.multistream import RangeReader

    stats: dict = {}
    for _ in RangeReader(task, stats):
        pass
    return stats


def warm(_) -> None:
    """Worker: import what the timed tasks need (spawned workers start empty)."""
    import bertlib.data.corpus  # noqa: F401
    import bertlib.data.multistream  # noqa: F401
    import bertlib.data.prepare  # noqa: F401


def spawn_pool(workers: int) -> cf.ProcessPoolExecutor:
    from bertlib.data.prepare import worker_init

    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init)
    list(pool.map(warm, range(workers)))
    return pool


def main_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_reading(single: Path, multi: Path) -> list[dict]:
    from bertlib.data.corpus import iter_raw_documents
    from bertlib.data.multistream import stream_ranges

    stats: dict = {}
    t = time.perf_counter()
    docs = sum(1 for _ in iter_raw_documents([single], stats=stats))
    rows = [
        {
            "name": "serial reader (main process)",
            "wall": time.perf_counter() - t,
            "docs": docs,
            "input": single.stat().st_size,
            "xml": stats["xml_bytes"],
            "cpu": stats["read_s"],
        }
    ]
    for workers in (1, 2):
        with spawn_pool(workers) as pool:
            t = time.perf_counter()
            results = list(pool.map(read_only, stream_ranges(multi)))
            wall = time.perf_counter() - t
        rows.append(
            {
                "name": f"ranges, {workers} worker{'s' * (workers > 1)}",
                "wall": wall,
                "docs": sum(r.get("documents", 0) for r in results),
                "input": multi.stat().st_size,
                "xml": sum(r.get("xml_bytes", 0) for r in results),
                "cpu": sum(r.get("read_s", 0) for r in results),
            }
        )
    return rows


def data_config(source: Path, out: Path, workers: int, dupe_factor: int):
    from bertlib.core.assets import asset
    from bertlib.core.config import build_config

    return build_config(
        "prepare-data",
        {
            "sources": [str(source)],
            "output_dir": str(out),
            "vocab_file": str(asset("bert_uncased_vocab")),
            "do_lower_case": True,
            "num_workers": workers,
            "num_shards": 4,
            "validation_shards": 1,
            "validation_fraction": 0.02,
            "dupe_factor": dupe_factor,
            "seed": 12345,
            "phases": [
                {"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 20},
                {"name": "phase2", "max_seq_length": 512, "max_predictions_per_seq": 80},
            ],
        },
    )


def bench_extract_stage(source: Path, out: Path, workers: int) -> dict:
    from bertlib.data.prepare.extract import extract_sentences
    from bertlib.data.prepare.sources import validate

    shutil.rmtree(out, ignore_errors=True)
    plan = validate(data_config(source, out, workers, 1))
    with spawn_pool(workers) as pool:
        c, t = main_cpu(), time.perf_counter()
        info, _ = extract_sentences(plan, pool, workers, progress=False)
        wall, cpu = time.perf_counter() - t, main_cpu() - c
    return {
        "wall": wall,
        "main_cpu": cpu,
        "input": source.stat().st_size,
        "info": info,
        "sha": hashlib.sha256((out / ".corpus" / "sentences.txt").read_bytes()).hexdigest(),
    }


def fmt_time(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=8, help="the slice's pages repeated this many times")
    p.add_argument("--dupe-factor", type=int, default=5, help="for the full prepare-data run (stage rates)")
    p.add_argument("--dump-gb", type=float, default=20.0, help="compressed size of the dump to project")
    p.add_argument("--work-dir", default="/tmp/bertlib-bench-extract")
    p.add_argument("--skip-full", action="store_true", help="no full prepare-data run (tokenize/examples rates)")
    args = p.parse_args(argv)

    from bertlib.core.assets import asset
    from bertlib.data.prepare import prepare

    work = Path(args.work_dir)
    made = write_multistream(asset("wiki_slice"), work / "input", pages_per_stream=100, copies=args.copies)
    single, multi = made["single"], made["multistream"]
    print(
        f"input: the Wikipedia slice ×{args.copies}: {made['pages']} pages; multistream {multi.stat().st_size / 1e6:.1f} "
        f"MB in {len(made['streams'])} streams, single stream {single.stat().st_size / 1e6:.1f} MB; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
    )

    print("\n1. reading alone (decompress + parse + article filter)")
    rows = bench_reading(single, multi)
    print(
        f"{'reader':<32}{'wall s':>8}{'docs':>7}{'docs/s':>9}{'bz2 MB/s':>10}{'XML MB/s':>10}{'speed-up':>10}"
        f"{'CPU s':>8}{'bz2 MB/CPU-s':>14}"
    )
    for r in rows:
        print(
            f"{r['name']:<32}{r['wall']:>8.2f}{r['docs']:>7}{r['docs'] / r['wall']:>9.0f}"
            f"{r['input'] / 1e6 / r['wall']:>10.2f}{r['xml'] / 1e6 / r['wall']:>10.1f}"
            f"{rows[0]['wall'] / r['wall']:>9.2f}x{r['cpu']:>8.2f}{r['input'] / 1e6 / r['cpu']:>14.2f}"
        )
    print("   (CPU s: the reading's CPU seconds, summed over the processes doing it)")

    print("\n2. extract stage (read + clean + split + write sentences.txt)")
    runs = {}
    for label, source in (("serial reader", single), ("ranges", multi)):
        for workers in (1, 2):
            runs[(label, workers)] = bench_extract_stage(source, work / f"extract-{label[:6]}-{workers}", workers)
    assert len({r["sha"] for r in runs.values()}) == 1, "sentences.txt differs between runs"
    base = runs[("serial reader", 1)]["wall"]
    print(
        f"{'run':<28}{'wall s':>8}{'docs/s':>8}{'bz2 MB/s':>10}{'speed-up':>10}{'main cpu s':>12}   per-step rates "
        f"(per busy core)"
    )
    for (label, workers), r in runs.items():
        info, rates = r["info"], r["info"]["rates"]
        steps = (
            f"read {rates['read']['docs_per_s']:.0f} docs/s {rates['read']['input_MB_per_s']:.2f} bz2 MB/s "
            f"{rates['read']['xml_MB_per_s']:.1f} XML MB/s; clean {rates['clean']['docs_per_s']:.0f} docs/s; "
            f"split {rates['split']['docs_per_s']:.0f} docs/s; write {rates['write']['MB_per_s']:.0f} MB/s"
        )
        print(
            f"{label + f', {workers} worker' + 's' * (workers > 1):<28}{r['wall']:>8.2f}"
            f"{info['raw_documents'] / r['wall']:>8.1f}{r['input'] / 1e6 / r['wall']:>10.2f}"
            f"{base / r['wall']:>9.2f}x{r['main_cpu']:>12.2f}   {steps}"
        )
    print("   (sentences.txt byte-identical in all four runs)")

    if not args.skip_full:
        print(
            f"\n3. full prepare-data from the multistream dump, 2 workers (phases 128/20 + 512/80, "
            f"dupe_factor {args.dupe_factor})"
        )
        out = work / "full"
        shutil.rmtree(out, ignore_errors=True)
        summary = prepare(data_config(multi, out, 2, args.dupe_factor), progress=False)
        tm, corpus = summary["timings"], summary["corpus"]
        examples = sum(ph["counts"]["examples"] for ph in summary["phases"].values())
        rates = json.loads((out / ".corpus" / "extract.json").read_text())["rates"]
        print(f"{'stage':<12}{'wall s':>8}  rate (wall, 2 workers)")
        print(
            f"{'extract':<12}{tm['extract_s']:>8.2f}  {corpus['raw_documents'] / tm['extract_s']:.1f} docs/s, "
            f"{multi.stat().st_size / 1e6 / tm['extract_s']:.2f} bz2 MB/s  (read {rates['read']['s']:.1f} s, "
            f"clean {rates['clean']['s']:.1f} s, split {rates['split']['s']:.1f} s, write {rates['write']['s']:.2f} s "
            f"CPU)"
        )
        print(f"{'tokenize':<12}{tm['tokenize_s']:>8.2f}  {corpus['tokens'] / tm['tokenize_s']:,.0f} tokens/s")
        print(
            f"{'examples':<12}{tm['examples_s']:>8.2f}  {examples / tm['examples_s']:,.0f} examples/s "
            f"({examples} examples; instances, masking and TFRecord writing)"
        )

    def mb(run) -> float:
        return run["input"] / 1e6

    def cpu(run, *steps) -> float:
        return sum(run["info"]["rates"][step]["s"] for step in steps)

    dump_mb = args.dump_gb * 1000
    r1, s1 = runs[("ranges", 1)], runs[("serial reader", 1)]
    worker_now = mb(r1) / cpu(r1, "read", "clean", "split")  # bz2 MB per worker CPU-second
    worker_before = mb(s1) / cpu(s1, "clean", "split")
    cap_now = mb(runs[("ranges", 2)]) / runs[("ranges", 2)]["main_cpu"]  # bz2 MB per main-process CPU-second
    cap_before = mb(runs[("serial reader", 2)]) / runs[("serial reader", 2)]["main_cpu"]
    print(
        f"\nprojection, extract stage of a {args.dump_gb:.0f} GB (bz2) dump. Per worker: {worker_now:.2f} bz2 MB/s "
        f"with ranges (read + clean + split), {worker_before:.2f} before (clean + split). Main process cap: "
        f"{cap_now:.1f} MB/s with ranges (taking results, writing), {cap_before:.1f} MB/s before (serial reading, "
        f"sending documents): bound at ~{cap_now / worker_now:.0f} workers with ranges, "
        f"~{cap_before / worker_before:.0f} before"
    )
    print(f"{'workers':>8}{'ranges':>12}{'before':>12}")
    for n in (1, 2, 4, 8, 16, 32, 64, 96):
        print(
            f"{n:>8}{fmt_time(dump_mb / min(n * worker_now, cap_now)):>12}"
            f"{fmt_time(dump_mb / min(n * worker_before, cap_before)):>12}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
