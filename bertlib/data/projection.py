"""Projected wall time, disk and cost of ``prepare-data`` on CPU instances (``bertlib estimate``),
from per-stage rates measured on this machine.

The work is sized from the sources with the disk model of :mod:`bertlib.data.preflight` (source
bytes → text bytes → WordPiece tokens → training pairs per phase, TFRecord and instance-file bytes);
each stage's seconds on a host with ``W`` worker processes (``W`` = the instance's vCPUs, as
``num_workers: 0`` gives) are the larger of its compute time and the time to write its output at
``disk_MBps``::

    download   source bytes / download_MBps                                      (one HTTP stream)
    extract    max(M, (C_w + M) / W)   C_w = bz2 bytes / EXTRACT_BZ2_BYTES_PER_WORKER_S,
                                       M   = text bytes / EXTRACT_MAIN_TEXT_BYTES_PER_S
    vocab      0 for a given vocab_file (a trained vocabulary is not measured: left out)
    tokenize   max(M, (C_w + M) / W)   C_w = tokens / TOKENIZE_TOKENS_PER_WORKER_S,
                                       M   = tokens / TOKENIZE_MAIN_TOKENS_PER_S
    instances  pairs / (min(W, T) × INSTANCES_PAIRS_PER_WORKER_S)    (a group task per shard, T in all)
    shards     pairs × s / T / (min(W, s) × SHARDS_PAIRS_PER_WORKER_S),  s = ceil(T / N) shards per host

``M`` is the main process's CPU time: it takes every worker's result and writes ``sentences.txt`` /
the token file on one core, so it bounds the stage whatever ``W`` (the ``max``), and it shares the
``W`` vCPUs with the workers (the sum). With ``N`` hosts (:mod:`bertlib.data.hosts`) every host
repeats download, extract, vocab, tokenize and instances; only the shards are divided. The stages
run one after the other, so a host's hours are their sum, all hosts run at once, and the cost is
hours × N × the instance's on-demand USD/hour (:mod:`bertlib.core.instances`).

Assumptions: a vCPU of the instance runs a worker as fast as a vCPU of this machine (an AMD EPYC
VM, one thread per core) did. The instances' vCPUs are hyperthreads of 2.5-3.6 GHz Xeons, two per
physical core, so with every vCPU busy a worker may get well under a core's speed: the CPU-bound
stages can take up to ~1.5× longer than projected (not measured; no turbo or memory bandwidth
modelled either);
reads come from the page cache (the corpus and instance files fit in the RAM of the instances
listed); rates per bz2 byte, per token and per pair carry over from the slice (long, well-kept
articles) to the whole dump (many short ones — per-document overheads would make the whole dump
slower per byte); instances and shards are measured at the reference phases (128/20 + 512/80),
unpacked and statically masked, and are applied per pair to other settings.
"""

from __future__ import annotations

import math
from pathlib import Path

from bertlib.core.assets import asset, download_path
from bertlib.core.config import DataConfig, LaunchedJob
from bertlib.core.errors import ConfigError
from bertlib.core.instances import instance
from bertlib.data.preflight import INSTANCE_BYTES_PER_ROW, TEXT_BYTES_PER_TOKEN, disk_need, source_kind

# Per-worker rates and main-process caps measured on 2026-12-02 on this machine (a 2-vCPU AMD EPYC VM,
# shared: other jobs ran, load average up to 3.2 at the 1-worker runs' starts, 6.9 at the 2-worker
# runs') by ``python bench/bench_data_stages.py --copies 8 --workers 1,2 --repeat 3`` (output:
# runs/bench/data_stages/bench.log): prepare() on the real Wikipedia slice (asset wiki_slice) ×8 as a
# multistream dump (13,571,692 bytes bz2, 784 articles → 22,769,352 bytes of text, 4,773,824 tokens,
# 332,783 pairs), bert-base-uncased vocab, phases 128/20 + 512/80, dupe_factor 5, 8 + 1 shards per
# phase; each stage's fastest of the 3 repeats. Per-worker rates: the 1-worker runs (extract: bz2
# bytes per CPU-second of its read + clean + split steps; the others: items per wall second); caps:
# the 2-worker runs' items per CPU-second of the main process (the 1-worker runs gave 137.8M text
# bytes/s and 21.6M tokens/s: the caps below are the more conservative).
EXTRACT_BZ2_BYTES_PER_WORKER_S = 785_535
EXTRACT_MAIN_TEXT_BYTES_PER_S = 112_679_616
TOKENIZE_TOKENS_PER_WORKER_S = 411_619
TOKENIZE_MAIN_TOKENS_PER_S = 19_311_530
INSTANCES_PAIRS_PER_WORKER_S = 89_807
SHARDS_PAIRS_PER_WORKER_S = 17_347

#: size of the English Wikipedia multistream dump assumed for a dump URL not in the download cache
#: (the ~20 GB of bz2 that preflight's whole-dump ratio is based on); ``--source_bytes`` overrides it
WIKIPEDIA_DUMP_BYTES = 20_000_000_000
#: MB/s written to a host's volume: SageMaker gives EBS-only instances (ml.m5, ml.c5, ml.r5) a gp2
#: volume (the API reference of ResourceConfig.VolumeSizeInGB), and a gp2 volume's throughput is at
#: most 250 MiB/s (less below 334 GiB once its burst credits are spent); ``--disk_MBps`` overrides it
DEFAULT_DISK_MBPS = 250 * 2**20 / 1e6
#: MB/s of the one HTTP stream prepare-data downloads a dump URL with, from dumps.wikimedia.org: an
#: assumption, not measured (nothing here downloads the dump); Wikimedia limits the connections per
#: client and serves every dump user from a few machines. A copy of the dump in S3 in the instance's
#: region downloads far faster: override with ``--download_MBps``
DEFAULT_DOWNLOAD_MBPS = 5.0
STAGES = ("download", "extract", "vocab", "tokenize", "instances", "shards")


def source_sizes(cfg: DataConfig, source_bytes: int | None = None) -> dict[str, tuple[int, str]]:
    """``{source: (bytes, where the size comes from)}``: a local file's size (an ``asset:NAME`` is the
    cached asset, fetched if needed); a URL's ``source_bytes``, else its cached download's size, else
    :data:`WIKIPEDIA_DUMP_BYTES` for a Wikipedia dump (format by preflight's rules). A URL of any
    other kind, or a missing local file, needs ``source_bytes``."""

    sizes = {}
    for s in cfg.sources:
        remote = "://" in s
        if s.startswith("asset:"):  # keyed by its path: preflight judges the file, not the name
            path = asset(s.removeprefix("asset:"))
            sizes[str(path)] = (path.stat().st_size, "file")
        elif not remote and Path(s).is_file():
            sizes[s] = (Path(s).stat().st_size, "file")
        elif source_bytes is not None:
            sizes[s] = (int(source_bytes), "--source_bytes")
        elif remote and download_path(s, cfg.cache_dir).is_file():
            sizes[s] = (download_path(s, cfg.cache_dir).stat().st_size, "cached download")
        elif remote and source_kind(s, cfg.source_format)[0] == "wikipedia":
            sizes[s] = (WIKIPEDIA_DUMP_BYTES, "assumed: the whole English dump")
        else:
            raise ConfigError(f"{s}: size unknown; give --source_bytes N")
    return sizes


def workload(cfg: DataConfig, sizes: dict[str, int]) -> dict:
    """What the run processes and writes, from preflight's model (``sizes``: source → bytes):
    ``source_bytes``, ``download_bytes`` (URL sources), ``text_bytes``, ``corpus_bytes``, ``tokens``,
    ``pairs``, ``instance_bytes`` and ``record_bytes`` (per phase; one unpacked row per pair) and
    ``shards`` (``T``: files of all phases; one instance task — document group — per shard)."""
    need = disk_need(cfg, sizes)
    instance_bytes = {p.name: need[f"{p.name} instances"] for p in cfg.phases}
    per_phase = cfg.num_shards + cfg.validation_shards * (cfg.validation_fraction > 0)
    return {
        "source_bytes": sum(sizes.values()),
        "download_bytes": sum(n for s, n in sizes.items() if "://" in s),
        "text_bytes": need["text"],
        "corpus_bytes": need["corpus"],
        "tokens": need["text"] / TEXT_BYTES_PER_TOKEN,
        "pairs": {name: n / INSTANCE_BYTES_PER_ROW for name, n in instance_bytes.items()},
        "instance_bytes": instance_bytes,
        "record_bytes": {p.name: need[p.name] for p in cfg.phases},
        "shards": per_phase * len(cfg.phases),
    }


def _timed(compute_s: float, bound: str, written: float, disk_MBps: float) -> dict:
    """A stage's seconds: its compute time or the time to write ``written`` bytes, whichever is longer."""
    disk_s = written / (disk_MBps * 1e6)
    return {"s": disk_s, "bound": "disk writes"} if disk_s > compute_s else {"s": compute_s, "bound": bound}


def _with_main(worker_cpu_s: float, main_cpu_s: float, workers: int) -> tuple[float, str]:
    """Seconds of a stage whose workers need ``worker_cpu_s`` and whose main process needs
    ``main_cpu_s`` on one core, all on ``workers`` vCPUs; and what bounds it."""
    shared = (worker_cpu_s + main_cpu_s) / workers
    return (main_cpu_s, "main process") if main_cpu_s >= shared else (shared, "workers")


def host_share(work: dict, hosts: int) -> tuple[int, float]:
    """``(shards, fraction of all records)`` written by the busiest of ``hosts`` hosts."""
    shards = math.ceil(work["shards"] / hosts)
    return shards, shards / work["shards"]


def stage_seconds(
    work: dict,
    vcpus: int,
    hosts: int,
    download_MBps: float = DEFAULT_DOWNLOAD_MBPS,
    disk_MBps: float = DEFAULT_DISK_MBPS,
    vocab_given: bool = True,
) -> dict[str, dict]:
    """``{stage: {"s": seconds, "bound": what limits it}}`` on each of ``hosts`` hosts of ``vcpus``
    vCPUs (formulas: the module docstring)."""
    if vcpus < 1 or hosts < 1 or download_MBps <= 0 or disk_MBps <= 0:
        raise ConfigError(
            f"vcpus={vcpus}, hosts={hosts}, download_MBps={download_MBps}, disk_MBps={disk_MBps}: "
            "expected positive values"
        )
    pairs = sum(work["pairs"].values())
    shards, share = host_share(work, hosts)
    out = {"download": {"s": work["download_bytes"] / (download_MBps * 1e6), "bound": "network"}}
    out["extract"] = _timed(
        *_with_main(
            work["source_bytes"] / EXTRACT_BZ2_BYTES_PER_WORKER_S,
            work["text_bytes"] / EXTRACT_MAIN_TEXT_BYTES_PER_S,
            vcpus,
        ),
        work["text_bytes"],
        disk_MBps,
    )
    out["vocab"] = {
        "s": 0.0,
        "bound": "nothing (vocab_file given)" if vocab_given else "nothing: training a vocab is not measured, left out",
    }
    out["tokenize"] = _timed(
        *_with_main(work["tokens"] / TOKENIZE_TOKENS_PER_WORKER_S, work["tokens"] / TOKENIZE_MAIN_TOKENS_PER_S, vcpus),
        work["corpus_bytes"],
        disk_MBps,
    )
    busy = min(vcpus, work["shards"])
    out["instances"] = _timed(
        pairs / (busy * INSTANCES_PAIRS_PER_WORKER_S),
        "workers" if busy == vcpus else f"{busy} group tasks",
        sum(work["instance_bytes"].values()),
        disk_MBps,
    )
    busy = min(vcpus, shards)
    out["shards"] = _timed(
        pairs * share / (busy * SHARDS_PAIRS_PER_WORKER_S),
        "workers" if busy == vcpus else f"{busy} shards per host",
        sum(work["record_bytes"].values()) * share,
        disk_MBps,
    )
    return out


def disk_per_host(work: dict, hosts: int) -> float:
    """Peak bytes on each host: the download, the text, the tokenized corpus, every phase's instance
    files (each host makes them all) and its share of the TFRecords."""
    return (
        work["download_bytes"]
        + work["text_bytes"]
        + work["corpus_bytes"]
        + sum(work["instance_bytes"].values())
        + sum(work["record_bytes"].values()) * host_share(work, hosts)[1]
    )


def project(
    launched: LaunchedJob,
    source_bytes: int | None = None,
    download_MBps: float = DEFAULT_DOWNLOAD_MBPS,
    disk_MBps: float = DEFAULT_DISK_MBPS,
    counts=(1, 2, 4, 8),
) -> dict:
    """The projection of a launched prepare-data job (its DataConfig ``launched.job``) on the launch's
    ``instance_type`` for each instance count of ``counts`` and the launch's ``instance_count``: ``{"instance_type", "vcpus", "usd_per_hour", "instance_count", "sizes"
    (:func:`source_sizes`), "work" (:func:`workload`), "download_MBps", "disk_MBps", "notes" (what
    the projection leaves out for these settings), "runs": {N:
    {"stages", "hours", "usd", "disk_bytes", "bound", "next"}}}`` (``bound``: the stage with the most
    hours, ``next``: the one after it)."""
    cfg, launch = launched.job, launched.launch
    inst = instance(launch.instance_type)
    sizes = source_sizes(cfg, source_bytes)
    work = workload(cfg, {src: n for src, (n, _) in sizes.items()})
    runs = {}
    for n in sorted({*counts, launch.instance_count}):
        stages = stage_seconds(work, inst.vcpus, n, download_MBps, disk_MBps, vocab_given=bool(cfg.vocab_file))
        hours = sum(st["s"] for st in stages.values()) / 3600
        runs[n] = {
            "stages": stages,
            "hours": hours,
            "usd": hours * n * inst.usd_per_hour,
            "disk_bytes": disk_per_host(work, n),
            "bound": max(stages, key=lambda k: stages[k]["s"]),
            "next": sorted(stages, key=lambda k: stages[k]["s"])[-2],
        }
    notes = [
        note
        for on, note in (
            (
                cfg.pack_sequences or cfg.dynamic_masking,
                "packed / unmasked records: sized and timed as unpacked, masked ones (an upper bound)",
            ),
            (cfg.max_documents is not None, "max_documents: the whole sources are counted"),
            (not cfg.vocab_file, "vocab trained on the corpus: its time is not included"),
        )
        if on
    ]
    return {
        "instance_type": launch.instance_type,
        "vcpus": inst.vcpus,
        "usd_per_hour": inst.usd_per_hour,
        "instance_count": launch.instance_count,
        "sizes": sizes,
        "work": work,
        "download_MBps": download_MBps,
        "disk_MBps": disk_MBps,
        "runs": runs,
        "notes": notes,
    }
