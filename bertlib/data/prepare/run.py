"""The ``prepare-data`` run: the stages in order in one worker pool (:func:`prepare`), the per-stage
rates of the summary, and the command line (:func:`main`)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from bertlib.core.config import DataConfig, job_command, parse_job_args
from bertlib.core.errors import print_error
from bertlib.core.progress import quiet_or_bar
from bertlib.core.vocab import vocab_info
from bertlib.data.hosts import share_lock
from bertlib.data.prepare import extract, instances, manifest, shards, sources, tokens, vocab
from bertlib.data.prepare.common import worker_init

#: the keys of the ``[bertlib] rates`` line (per stage, its unit, per second; SageMaker metrics)
RATE_UNITS = {"extract": "raw documents", "tokenize": "tokens", "instances": "pairs", "shards": "pairs"}
RATE_KEYS = tuple(f"{stage}_{unit.split()[-1]}_per_s" for stage, unit in RATE_UNITS.items())


def prepare(cfg: DataConfig, progress: bool = True) -> dict:
    """Run data preparation for ``cfg``; return a summary dict (corpus counts, per-phase counts,
    shards written/skipped, stage timings). Bad input raises ConfigError/FileNotFoundError before
    any heavy work; an interrupted run can simply be rerun."""
    plan = sources.validate(cfg)
    with share_lock(plan.out, plan.share):
        return _run(plan, progress)


def _run(plan: sources.Plan, progress: bool) -> dict:
    cfg, share = plan.cfg, plan.share
    timings: dict[str, float] = {}
    reused: set[str] = set()  # stages whose output was already there
    t_start = time.perf_counter()
    workers = cfg.num_workers or os.cpu_count() or 1
    plan.out.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init) as pool:
        try:
            t = time.perf_counter()
            extracted, was_there = extract.extract_sentences(plan, pool, workers, progress)
            reused |= {"extract"} if was_there else set()
            timings["extract_s"] = time.perf_counter() - t
            t = time.perf_counter()
            vocab_path = vocab.vocab_file(plan)
            info = vocab_info(vocab_path, cfg.do_lower_case, cfg.strip_accents)
            timings["vocab_s"] = time.perf_counter() - t
            t = time.perf_counter()
            corpus, was_there = tokens.tokenize(plan, pool, workers, vocab_path, info["sha256"], progress)
            reused |= {"tokenize"} if was_there else set()
            timings["tokenize_s"] = time.perf_counter() - t
            t = time.perf_counter()
            split_paths = instances.split_documents(plan, corpus)
            groups, tasks = shards.shard_tasks(plan, corpus["key"], vocab_path, info, split_paths)
            mine = [task for i, task in enumerate(tasks) if share.owns(i)]
            markers = {}
            todo = []
            for task in mine:
                m = shards.finished(task)
                if m is None:
                    todo.append(task)
                else:
                    markers[task.path] = m
            for task in todo:  # a phase being (re)written has no manifest, a shard no stale marker
                (Path(task.path).parent / "manifest.json").unlink(missing_ok=True)
                Path(task.marker).unlink(missing_ok=True)
            needed = {path for task in todo for path in task.groups}
            groups_todo = [g for g in groups if g.path in needed and not Path(g.path).is_file()]
            with quiet_or_bar(
                progress and bool(groups_todo), desc="instances", unit="group", total=len(groups_todo)
            ) as bar:
                for fut in cf.as_completed([pool.submit(instances._group_task, g) for g in groups_todo]):
                    fut.result()
                    bar.update(1)
            timings["instances_s"] = time.perf_counter() - t
            t = time.perf_counter()
            with quiet_or_bar(
                progress, desc="shards", unit="shard", total=len(mine), initial=len(mine) - len(todo)
            ) as bar:
                futures = {pool.submit(shards._shard_task, task): task for task in todo}
                for fut in cf.as_completed(futures):
                    markers[futures[fut].path] = fut.result()
                    bar.update(1)
            timings["shards_s"] = time.perf_counter() - t
            timings["examples_s"] = timings["instances_s"] + timings["shards_s"]
        except BrokenProcessPool:
            raise RuntimeError(
                f"{plan.out}: a worker process died; finished shards are kept — rerun the "
                f"same command to resume (calling prepare() from a script? workers are "
                f"spawned and re-import it: put the call under if __name__ == '__main__')"
            ) from None
    written = {path: markers[path] for path in (task.path for task in todo)}
    every = dict(markers)
    if share.mpi:  # the other hosts' shards are on their disks: their markers come over MPI
        for host_markers in share.allgather(markers):
            every.update(host_markers)
    else:  # one host, or hosts sharing this storage: the others' markers are on the disk
        for task in tasks:
            if task.path not in every and (m := shards.finished(task, rehash=False)) is not None:
                every[task.path] = m
    pending = sum(task.path not in every for task in tasks)
    manifests = {}
    if not pending and (share.leader or not share.mpi):
        manifests = manifest.write_manifests(plan, every, tasks, vocab_path, info, split_paths)
    timings["total_s"] = time.perf_counter() - t_start
    return {
        "output_dir": str(plan.out),
        "workers": workers,
        "vocab": info,
        "host": {
            "index": share.index,
            "count": share.count,
            "mpi": share.mpi,
            "shards": len(mine),
            "pending_shards": pending,
            "manifests": "written" if manifests else "by host 0" if not pending else "pending",
        },
        "corpus": {
            "raw_documents": extracted["raw_documents"],
            "words": extracted["words"],
            "documents": corpus["documents"],
            "sentences": corpus["sentences"],
            "tokens": corpus["tokens"],
        },
        "phases": {
            name: {
                "dir": str(plan.out / name),
                "counts": m["counts"],
                "splits": m["splits"],
                "shards": {s: len(v) for s, v in m["shards"].items()},
                "packing": m["packing"],
                "masking": m["masking"],
            }
            for name, m in manifests.items()
        },
        "skipped_shards": len(mine) - len(todo),
        "written_shards": len(todo),
        "timings": dict(timings),
        "rates": stage_rates(timings, extracted, corpus, written, workers, reused),
    }


def stage_rates(
    timings: dict, extracted: dict, corpus: dict, written: dict, workers: int, reused: set[str] = frozenset()
) -> dict:
    """Per stage of this run: wall seconds and throughput (per second of wall time with ``workers``
    processes, and per worker). ``extract``: raw documents (plus the per-step CPU rates of
    ``extract.json``); ``tokenize``: tokens; ``instances``: the training pairs of the shards written
    (each group makes its instances for every shard); ``shards``: records, pairs and bytes written.
    Stages that did nothing (``reused``, or no shard to write) are left out."""

    def rate(n, key):
        s = timings.get(key, 0.0)
        if key.removesuffix("_s") in reused or not n or s <= 0:
            return None
        return {"s": round(s, 3), "per_s": round(n / s, 2), "per_worker_s": round(n / s / workers, 2)}

    pairs = sum(m.get("pairs", m["examples"]) for m in written.values())
    rates = {
        "workers": workers,
        "extract": {
            "unit": RATE_UNITS["extract"],
            **(rate(extracted["raw_documents"], "extract_s") or {}),
            "steps": extracted.get("rates"),
        },
        "tokenize": {"unit": RATE_UNITS["tokenize"], **(rate(corpus["tokens"], "tokenize_s") or {})},
        "instances": {"unit": RATE_UNITS["instances"], **(rate(pairs, "instances_s") or {})},
        "shards": {
            "unit": RATE_UNITS["shards"],
            **(rate(pairs, "shards_s") or {}),
            "records": sum(m["examples"] for m in written.values()),
            "bytes": sum(m["bytes"] for m in written.values()),
        },
    }
    return {k: v for k, v in rates.items() if not isinstance(v, dict) or "s" in v}


def main(argv: list[str]) -> int:
    """``bertlib prepare-data --config FILE [--key value ...]`` (``--help``: every DataConfig key)."""
    cli = job_command(
        "prepare-data",
        help="``bertlib prepare-data``: sources → sentences → WordPiece → sharded pretraining TFRecords. "
        "Give a --config FILE and/or any DataConfig key as --key value (values are YAML).",
        progress_flag=True,
    )
    cfg, args = parse_job_args("prepare-data", cli, argv)
    if cfg is None:
        return 0
    try:
        summary = prepare(cfg, progress=not args.extras["no_progress"])
    except RuntimeError as e:
        print_error(str(e))
        return 1
    c = summary["corpus"]
    print(
        f"[bertlib] prepare-data documents={c['documents']} sentences={c['sentences']} tokens={c['tokens']} "
        f"shards_written={summary['written_shards']} shards_skipped={summary['skipped_shards']} "
        f"seconds={summary['timings']['total_s']:.1f}"
    )
    host = summary["host"]
    if host["count"] > 1:
        print(
            f"[bertlib] host={host['index']} hosts={host['count']} shards_of_host={host['shards']} "
            f"pending_shards={host['pending_shards']} manifests={host['manifests'].replace(' ', '_')}"
        )
    rates = summary["rates"]
    print(
        "[bertlib] rates workers="
        + str(rates["workers"])
        + "".join(
            f" {stage}_{r['unit'].split()[-1]}_per_s={r['per_s']:g}"
            for stage, r in rates.items()
            if isinstance(r, dict)
        )
    )
    for name, ph in summary["phases"].items():
        pc = ph["counts"]
        packed = f" pairs={pc['pairs']} packing_efficiency={ph['packing']['efficiency']:.3f}" if ph["packing"] else ""
        print(
            f"[bertlib] {name}: {ph['dir']} examples={pc['examples']}{packed} masked_tokens={pc['masked_tokens']} "
            f"shards={ph['shards']}"
        )
    return 0
