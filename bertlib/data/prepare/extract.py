"""Stage 1 of ``prepare-data``: raw documents (dump pages / text blocks) → cleaned, sentence-split
``<work_dir>/.corpus/sentences.txt`` (one sentence per line, a blank line between documents:
Google's input format), made by the worker processes, taken in order."""

from __future__ import annotations

import os
import time

from bertlib.core.errors import ConfigError
from bertlib.core.files import temp_path, write_json
from bertlib.core.progress import quiet_or_bar
from bertlib.data.corpus import document_sentences, iter_raw_documents, source_format
from bertlib.data.multistream import RangeReader, StreamRange, TilingCheck, stream_ranges
from bertlib.data.prepare.common import chunks, ordered_map, read_json
from bertlib.data.prepare.sources import Plan


def _extract_chunk(task) -> dict:
    """Worker: one extract task, a list of raw documents (read by the main process) or a
    :class:`~bertlib.data.multistream.StreamRange` of a multistream dump, decompressed and parsed
    here. Returns each document's sentences in order (``"sentences"``), the stage stats
    (``"stats"``: seconds and counts) and, for a range, ``"range"``: the task, the offset of its first
    stream and where its last ended (for the main process's tiling check)."""
    stats: dict = {}
    reader = RangeReader(task, stats) if isinstance(task, StreamRange) else task
    sentences = [document_sentences(d, stats) for d in reader]
    stats["cleaned"], stats["sentences"] = len(sentences), sum(map(len, sentences))
    result = {"sentences": sentences, "stats": stats}
    if reader is not task:
        result["range"] = (task, reader.first, reader.end)
    return result


def extract_sentences(plan: Plan, pool, workers: int, progress: bool) -> tuple[dict, bool]:
    """Stage 1: ``(extract.json's content, reused)``. A Wikimedia multistream dump is read by the
    workers, a byte range each (:mod:`bertlib.data.multistream`); other sources are read here and
    sent to the workers in chunks. Either way results are taken in order and cut at
    ``max_documents``, so ``sentences.txt`` is the same whatever the source's layout and the worker
    count. ``extract.json`` holds the counts and the stage's rates (``rates``: per busy core — the
    seconds of a step are the CPU seconds of the threads that ran it, summed over processes)."""
    corpus_dir = plan.corpus_dir
    marker = corpus_dir / "extract.json"
    done = read_json(marker)
    if done and done.get("key") == plan.extract_key and (corpus_dir / "sentences.txt").is_file():
        return done, True
    corpus_dir.mkdir(parents=True, exist_ok=True)
    path = corpus_dir / "sentences.txt"
    tmp = temp_path(path)
    cfg, limit = plan.cfg, plan.cfg.max_documents
    read_here: dict = {}  # stats of the reading done in this process
    stats: dict = {}  # summed over the workers' results
    ranges = 0

    def tasks():
        nonlocal ranges
        for source in plan.sources:
            parts = stream_ranges(source, limit) if source_format(source, cfg.source_format) == "wikipedia" else None
            if parts:
                ranges += len(parts)
                yield from parts
            else:
                docs = iter_raw_documents([source], cfg.source_format, cfg.text_doc_mode, limit, read_here)
                yield from chunks(docs, lambda d: len(d.text))

    counts = {"raw_documents": 0, "documents": 0, "sentences": 0, "words": 0}
    tiling = TilingCheck()
    t_start, write_s = time.perf_counter(), 0.0
    with (
        open(tmp, "w", encoding="utf-8") as out,
        quiet_or_bar(progress, desc="extract", unit="doc", total=limit) as bar,
    ):
        for result in ordered_map(pool, _extract_chunk, tasks(), 2 * workers + 1):
            if "range" in result:
                tiling(*result["range"])
            for k, v in result["stats"].items():
                stats[k] = stats.get(k, 0) + v
            t = time.thread_time()
            taken = result["sentences"][: None if limit is None else limit - counts["raw_documents"]]
            for sentences in taken:
                counts["raw_documents"] += 1
                if sentences:
                    counts["documents"] += 1
                    counts["sentences"] += len(sentences)
                    counts["words"] += sum(s.count(" ") + 1 for s in sentences)
                    out.write("\n".join(sentences) + "\n\n")
            write_s += time.thread_time() - t
            bar.update(len(taken))
            if counts["raw_documents"] == limit:
                break  # the cut: later results (read ahead by the workers) are not needed
    if counts["documents"] == 0:
        tmp.unlink()
        raise ConfigError(f"{', '.join(map(str, plan.sources))}: no documents with text found")
    os.replace(tmp, path)
    for k, v in read_here.items():
        stats[k] = stats.get(k, 0) + v

    def rate(n, seconds):
        return round(n / seconds, 2) if seconds else None

    read_s, clean_s, split_s = (stats.get(k, 0.0) for k in ("read_s", "clean_s", "split_s"))
    rates = {
        "workers": workers,
        "wall_s": round(time.perf_counter() - t_start, 3),
        "read_by": "workers" if not read_here else "main process" if not ranges else "both",
        "read": {
            "s": round(read_s, 3),
            "docs_per_s": rate(stats.get("documents", 0), read_s),
            "pages_per_s": rate(stats.get("pages", 0), read_s),
            "input_MB_per_s": rate(stats.get("input_bytes", 0) / 1e6, read_s),
            "xml_MB_per_s": rate(stats.get("xml_bytes", 0) / 1e6, read_s),
        },
        "clean": {"s": round(clean_s, 3), "docs_per_s": rate(stats["cleaned"], clean_s)},
        "split": {
            "s": round(split_s, 3),
            "docs_per_s": rate(stats["cleaned"], split_s),
            "sentences_per_s": rate(stats["sentences"], split_s),
        },
        "write": {"s": round(write_s, 3), "MB_per_s": rate(path.stat().st_size / 1e6, write_s)},
    }
    done = {"key": plan.extract_key, **counts, "rates": rates}
    write_json(marker, done)
    return done, False
