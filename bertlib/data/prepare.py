"""``bertlib prepare-data``: sources → sentences → WordPiece → sharded pretraining TFRecords.

Stages (each skipped on a rerun when its output exists for the same settings):

1. extract   raw documents (dump pages / text blocks) are cleaned and sentence-split by worker
             processes, in order, into ``<output_dir>/.corpus/sentences.txt`` (one sentence per line,
             a blank line between documents: Google's input format).
2. vocab     the given ``vocab_file`` (checked: exists, checksum, casing) or one trained on stage 1.
3. tokenize  workers WordPiece-encode documents (``encode_batch``) into one flat token array with
             sentence/document offsets (``.corpus/*.int64``, memory-mapped by the next stage).
4. examples  the documents are split (seeded) into train/validation, and each split's into one
             group per shard. For each phase (e.g. 128/20 and 512/80) × split, a worker per group
             makes the group's instances (A/B token ranges), shuffles them and saves them
             (``<phase>/.progress/<split>-instances-*.npy``); then a worker per shard takes its
             round-robin share of every group (so all shards are the same mix, as Google's shuffle
             and round-robin write makes them), shuffles, masks (unless ``dynamic_masking``), packs
             several pairs per record (if ``pack_sequences``) and writes
             ``<phase>/<split>-0000k-of-0000n.tfrecord`` through a temp name, then a done-marker
             (``<phase>/.progress/<file>.json``: settings key, sha256, counts).
5. manifest  ``<phase>/vocab.txt`` and, last, ``<phase>/manifest.json`` (counts, settings, vocab,
             per-shard sha256, examples (= records), pairs, random-next and padding fractions, the
             record layout: ``packing`` (null, or K, pairs, rows and efficiency = real tokens /
             (rows × S)) and ``masking`` ("static" / "dynamic")), both atomically; the instance
             files are then deleted.

A shard is only skipped when its marker has the same settings key and the file's sha256 matches,
so an interrupted run (a killed worker, Ctrl-C) resumes and ends with the same bytes. Changed
settings on an existing phase folder are refused (one line naming the folder and the changed keys).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from bertlib.core.config import DataConfig, job_command, parse_job_args
from bertlib.core.errors import ConfigError
from bertlib.core.files import remove_stale, temp_path, write_json
from bertlib.core.progress import quiet_or_bar

EXTRACT_VERSION = 4  # bump when the cleaning/splitting rules change (invalidates .corpus caches)
SHARD_LAYOUT = 2  # bump when shard contents change for the same settings (2: instances dealt to all shards)
CHUNK_CHARS = 1 << 18  # documents are sent to workers in chunks of about this many characters
#: the keys of the ``[bertlib] rates`` line (per stage, its unit, per second; SageMaker metrics)
RATE_UNITS = {"extract": "raw documents", "tokenize": "tokens", "instances": "pairs", "shards": "pairs"}
RATE_KEYS = tuple(f"{stage}_{unit.split()[-1]}_per_s" for stage, unit in RATE_UNITS.items())


# ---------------------------------------------------------------------------------------------------
# Worker side (module-level functions: picklable under the spawn start method)
# ---------------------------------------------------------------------------------------------------

_WORKER_CACHE: dict = {}


def _worker_init() -> None:
    # one thread per worker process: parallelism comes from the processes
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


def _extract_chunk(task) -> dict:
    """One extract task: a list of raw documents (read by the main process) or a
    :class:`~bertlib.data.multistream.StreamRange` of a multistream dump, decompressed and parsed
    here. Returns each document's sentences in order (``"sentences"``), the stage stats
    (``"stats"``: seconds and counts) and, for a range, ``"range"``: the task, the offset of its first
    stream and where its last ended (for the main process's tiling check)."""
    from bertlib.data.corpus import document_sentences
    from bertlib.data.multistream import RangeReader, StreamRange

    stats: dict = {}
    reader = RangeReader(task, stats) if isinstance(task, StreamRange) else task
    sentences = [document_sentences(d, stats) for d in reader]
    stats["cleaned"], stats["sentences"] = len(sentences), sum(map(len, sentences))
    result = {"sentences": sentences, "stats": stats}
    if reader is not task:
        result["range"] = (task, reader.first, reader.end)
    return result


def _tokenizer(vocab_file: str, lowercase: bool, strip_accents):
    from bertlib.data.tokenization import load_wordpiece

    key = ("tok", vocab_file, lowercase, strip_accents)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = load_wordpiece(vocab_file, lowercase, strip_accents)
    return _WORKER_CACHE[key]


def _tokenize_chunk(args):
    from bertlib.data.pretraining import tokenize_documents

    vocab_file, lowercase, strip_accents, docs = args
    return tokenize_documents(_tokenizer(vocab_file, lowercase, strip_accents), docs)


def _corpus(task: dict):
    from bertlib.data.pretraining import TokenizedCorpus

    key = ("corpus", task["corpus_dir"], task["corpus_key"])
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = TokenizedCorpus.load(task["corpus_dir"])
    return _WORKER_CACHE[key]


def _group_task(task: dict) -> None:
    """Make one document group's shuffled instances, deal them to the shards and save them (``[N, 5]``
    int64 ``.npy``, grouped by shard)."""
    from bertlib.data.pretraining import deal, group_documents, group_instances

    split_docs = np.load(task["split_docs"])
    instances = group_instances(
        _corpus(task),
        group_documents(split_docs, task["group"], task["num_groups"]),
        split_docs,
        seed=task["seed"],
        **task["instance_settings"],
    )
    _save_npy(Path(task["path"]), deal(instances, task["group"], task["num_groups"]))


def _shard_task(task: dict) -> dict:
    """Build and write one shard from its share of every group's instances, then its done-marker;
    return the marker."""
    from bertlib.core.vocab import read_vocab
    from bertlib.data.pretraining import SpecialIds, dealt_slice, make_shard
    from bertlib.data.records import encode_examples, write_tfrecord_file

    vkey = ("ids", task["vocab_file"])
    if vkey not in _WORKER_CACHE:
        _WORKER_CACHE[vkey] = SpecialIds.from_vocab(read_vocab(task["vocab_file"]))
    dealt = [np.load(path, mmap_mode="r") for path in task["groups"]]
    instances = np.concatenate(
        [rows[dealt_slice(len(rows), group, task["shard"], task["num_shards"])] for group, rows in enumerate(dealt)]
    )
    stats = {"examples": 0, "pairs": 0, "masked_tokens": 0, "real_tokens": 0, "random_next": 0}

    def records():
        for batch in make_shard(
            _corpus(task), instances, ids=_WORKER_CACHE[vkey], seed=task["seed"], **task["example_settings"]
        ):
            stats["examples"] += len(batch["input_ids"])
            stats["pairs"] += int(batch["input_mask"].max(axis=1).sum())  # input_mask = pair number 1..K
            if "masked_lm_weights" in batch:
                stats["masked_tokens"] += int(batch["masked_lm_weights"].sum())
            stats["real_tokens"] += int((batch["input_mask"] > 0).sum())
            stats["random_next"] += int(batch["next_sentence_labels"].sum())
            yield from encode_examples(batch)

    path = Path(task["path"])
    sha = write_tfrecord_file(path, records())
    marker = {
        "key": task["key"],
        "file": path.name,
        "sha256": sha,
        "bytes": path.stat().st_size,
        **stats,
        "settings": task["settings"],
    }
    write_json(Path(task["marker"]), marker)
    return marker


# ---------------------------------------------------------------------------------------------------
# Main process
# ---------------------------------------------------------------------------------------------------


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = temp_path(path, ".npy")  # np.save keeps a name ending in .npy
    np.save(tmp, arr)
    os.replace(tmp, path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _ordered_map(pool, fn, items, max_in_flight: int):
    """``pool.map`` that keeps at most ``max_in_flight`` tasks queued (inputs may be huge streams)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= max_in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunks(docs, size_of):
    chunk, chars = [], 0
    for d in docs:
        chunk.append(d)
        chars += size_of(d)
        if chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _read_sentence_docs(path: Path):
    """Documents of a ``sentences.txt`` (one sentence per line, blank line between documents)."""
    doc: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                doc.append(line)
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


class _Preparer:
    def __init__(self, cfg: DataConfig, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.output_dir)
        self.work = Path(cfg.work_dir or cfg.output_dir)  # scratch: never part of the dataset
        self.corpus_dir = self.work / ".corpus"
        self.timings: dict[str, float] = {}
        self.reused: set[str] = set()  # stages whose output was already there

    # -- 0. everything that can be checked before heavy work -------------------------------------
    def validate(self) -> None:
        from bertlib.core.vocab import check_vocab_casing, read_vocab, vocab_info
        from bertlib.data.corpus import resolve_source, source_format

        cfg = self.cfg
        for key, folder in (("output_dir", self.out), ("work_dir", self.work)):
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"{folder}: {key} exists and is not a directory")
        names = [p.name for p in cfg.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phases: duplicate phase names {names}")
        for p in cfg.phases:
            if p.max_predictions_per_seq > p.max_seq_length - 3:
                raise ConfigError(
                    f"phases.{p.name}: max_predictions_per_seq={p.max_predictions_per_seq} "
                    f"exceeds max_seq_length - 3 = {p.max_seq_length - 3}"
                )
        from bertlib.data.hosts import host_share
        from bertlib.data.preflight import check_disk

        self.share = host_share(cfg.num_hosts, cfg.host_index)
        check_disk(cfg, self.share.count)  # before any download or extraction: prints the estimate, stops if short
        self.sources = []
        for s in cfg.sources:
            path = resolve_source(s, cfg.source_sha256.get(s), cfg.cache_dir)
            if not path.is_file():
                raise ConfigError(f"{path}: source is not a file")
            if path.stat().st_size == 0:
                raise ConfigError(f"{path}: source file is empty")
            try:
                sniffed = source_format(path)
            except (OSError, EOFError, UnicodeDecodeError) as e:
                raise ConfigError(f"{path}: cannot read source ({e})") from None
            if cfg.source_format == "wikipedia" and sniffed != "wikipedia":
                raise ConfigError(f"{path}: not a MediaWiki XML dump (source_format: wikipedia)")
            self.sources.append(path)
        self.lowercase = cfg.do_lower_case
        self.strip_accents = cfg.strip_accents
        if cfg.vocab_file:
            vocab = Path(cfg.vocab_file)
            if not vocab.is_file():
                raise FileNotFoundError(f"{vocab}: vocab file not found")
            info = vocab_info(vocab, self.lowercase, self.strip_accents)
            if cfg.vocab_sha256 and info["sha256"] != cfg.vocab_sha256:
                raise ConfigError(f"{vocab}: sha256 {info['sha256']} does not match vocab_sha256 {cfg.vocab_sha256}")
            missing = {"[UNK]", "[CLS]", "[SEP]", "[MASK]"} - set(read_vocab(vocab))
            if missing:
                raise ConfigError(f"{vocab}: vocab lacks the special tokens {sorted(missing)}")
            check_vocab_casing(vocab, self.lowercase)
            self.vocab_spec = {"sha256": info["sha256"]}
        else:
            self.vocab_spec = {"trained": cfg.vocab_size}
        self.extract_key = _key(
            {
                "v": EXTRACT_VERSION,
                "sources": [(str(p.resolve()), p.stat().st_size) for p in self.sources],
                "format": cfg.source_format,
                "doc_mode": cfg.text_doc_mode,
                "max_documents": cfg.max_documents,
            }
        )
        if cfg.max_documents is not None and cfg.max_documents < cfg.num_shards + cfg.validation_shards:
            raise ConfigError(
                f"max_documents={cfg.max_documents} is fewer than num_shards + validation_shards = "
                f"{cfg.num_shards + cfg.validation_shards} (every shard needs a document)"
            )
        for phase in cfg.phases:
            self._check_phase_dir(phase)

    def phase_settings(self, phase) -> dict:
        cfg = self.cfg
        return {
            "phase": phase.name,
            "max_seq_length": phase.max_seq_length,
            "max_predictions_per_seq": phase.max_predictions_per_seq,
            "sources": list(cfg.sources),
            "source_format": cfg.source_format,
            "text_doc_mode": cfg.text_doc_mode,
            "max_documents": cfg.max_documents,
            "vocab": self.vocab_spec,
            "do_lower_case": cfg.do_lower_case,
            "strip_accents": cfg.strip_accents,
            "num_shards": cfg.num_shards,
            "validation_shards": cfg.validation_shards,
            "validation_fraction": cfg.validation_fraction,
            "dupe_factor": cfg.dupe_factor,
            "short_seq_prob": cfg.short_seq_prob,
            "masked_lm_prob": cfg.masked_lm_prob,
            "whole_word_masking": cfg.whole_word_masking,
            "seed": cfg.seed,
            # only when on, so that the settings (and shard keys) of unpacked, static data stay as before
            **({"pack_sequences": True, "max_pairs_per_row": cfg.pairs_per_row(phase)} if cfg.pack_sequences else {}),
            **({"dynamic_masking": True} if cfg.dynamic_masking else {}),
        }

    def _check_phase_dir(self, phase) -> None:
        """Refuse to mix: an existing phase folder must have been made with the same settings."""
        pdir = self.out / phase.name
        new = self.phase_settings(phase)
        old, where = None, None
        manifest = _read_json(pdir / "manifest.json")
        if manifest is not None:
            old, where = manifest.get("settings"), pdir / "manifest.json"
        else:
            for marker in sorted((pdir / ".progress").glob("*.json")) if (pdir / ".progress").is_dir() else []:
                m = _read_json(marker)
                if m and m.get("settings") is not None:
                    old, where = m["settings"], marker
                    break
        if old is not None and old != new:
            changed = ", ".join(
                f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in {**new, **old} if old.get(k) != new.get(k)
            )
            raise ConfigError(
                f"{where}: {pdir} was prepared with other settings ({changed}); use a new output_dir or delete {pdir}"
            )

    # -- 1. extract --------------------------------------------------------------------------------
    def extract(self, pool, workers: int) -> dict:
        """Stage 1. A Wikimedia multistream dump is read by the workers, a byte range each
        (:mod:`bertlib.data.multistream`); other sources are read here and sent to the workers in
        chunks. Either way results are taken in order and cut at ``max_documents``, so
        ``sentences.txt`` is the same whatever the source's layout and the worker count.
        ``extract.json`` holds the counts and the stage's rates (``rates``: per busy core — the
        seconds of a step are the CPU seconds of the threads that ran it, summed over processes)."""
        from bertlib.data.corpus import iter_raw_documents, source_format
        from bertlib.data.multistream import TilingCheck, stream_ranges

        marker = self.corpus_dir / "extract.json"
        done = _read_json(marker)
        if done and done.get("key") == self.extract_key and (self.corpus_dir / "sentences.txt").is_file():
            self.reused.add("extract")
            return done
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        path = self.corpus_dir / "sentences.txt"
        tmp = temp_path(path)
        cfg, limit = self.cfg, self.cfg.max_documents
        read_here: dict = {}  # stats of the reading done in this process
        stats: dict = {}  # summed over the workers' results
        ranges = 0

        def tasks():
            nonlocal ranges
            for source in self.sources:
                parts = (
                    stream_ranges(source, limit) if source_format(source, cfg.source_format) == "wikipedia" else None
                )
                if parts:
                    ranges += len(parts)
                    yield from parts
                else:
                    docs = iter_raw_documents([source], cfg.source_format, cfg.text_doc_mode, limit, read_here)
                    yield from _chunks(docs, lambda d: len(d.text))

        counts = {"raw_documents": 0, "documents": 0, "sentences": 0, "words": 0}
        tiling = TilingCheck()
        t_start, write_s = time.perf_counter(), 0.0
        with (
            open(tmp, "w", encoding="utf-8") as out,
            quiet_or_bar(self.progress, desc="extract", unit="doc", total=limit) as bar,
        ):
            for result in _ordered_map(pool, _extract_chunk, tasks(), 2 * workers + 1):
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
            raise ConfigError(f"{', '.join(map(str, self.sources))}: no documents with text found")
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
        done = {"key": self.extract_key, **counts, "rates": rates}
        write_json(marker, done)
        return done

    # -- 2. vocab ----------------------------------------------------------------------------------
    def vocab(self) -> Path:
        from bertlib.core.files import sha256_file
        from bertlib.data.tokenization import train_wordpiece

        if self.cfg.vocab_file:
            return Path(self.cfg.vocab_file).resolve()
        path = self.out / "vocab.txt"
        marker = self.corpus_dir / "vocab.json"
        key = _key(
            {
                "extract": self.extract_key,
                "size": self.cfg.vocab_size,
                "lower": self.lowercase,
                "strip": self.strip_accents,
            }
        )
        done = _read_json(marker)
        if done and done.get("key") == key and path.is_file() and sha256_file(path) == done.get("sha256"):
            return path.resolve()
        lines = (line.rstrip("\n") for line in open(self.corpus_dir / "sentences.txt", encoding="utf-8"))
        train_wordpiece((line for line in lines if line), self.cfg.vocab_size, self.lowercase, self.strip_accents, path)
        write_json(marker, {"key": key, "sha256": sha256_file(path)})
        return path.resolve()

    # -- 3. tokenize -------------------------------------------------------------------------------
    def tokenize(self, pool, workers: int, vocab_file: Path, vocab_sha: str) -> dict:
        from bertlib.data.pretraining import CORPUS_FILES
        from bertlib.data.tokenization import MAX_INPUT_CHARS_PER_WORD

        key = _key(
            {
                "extract": self.extract_key,
                "vocab": vocab_sha,
                "lower": self.lowercase,
                "strip": self.strip_accents,
                "max_chars": MAX_INPUT_CHARS_PER_WORD,
            }
        )
        marker = self.corpus_dir / "tokenize.json"
        done = _read_json(marker)
        if done and done.get("key") == key and all((self.corpus_dir / f).is_file() for f in CORPUS_FILES):
            self.reused.add("tokenize")
            return done
        marker.unlink(missing_ok=True)
        tok_path = self.corpus_dir / CORPUS_FILES[0]
        tmp = temp_path(tok_path)
        sent_lens, doc_sents = [], []
        args = (
            (str(vocab_file), self.lowercase, self.strip_accents, chunk)
            for chunk in _chunks(_read_sentence_docs(self.corpus_dir / "sentences.txt"), lambda d: sum(map(len, d)))
        )
        with open(tmp, "wb") as out, quiet_or_bar(self.progress, desc="tokenize", unit="doc") as bar:
            for tokens, lengths, per_doc in _ordered_map(pool, _tokenize_chunk, args, 2 * workers + 1):
                out.write(np.ascontiguousarray(tokens, "<i4").tobytes())
                sent_lens.append(lengths)
                doc_sents.append(per_doc)
                bar.update(len(per_doc))
        os.replace(tmp, tok_path)
        sentence_starts = np.concatenate([[0], np.cumsum(np.concatenate(sent_lens))]).astype(np.int64)
        document_starts = np.concatenate([[0], np.cumsum(np.concatenate(doc_sents))]).astype(np.int64)
        for name, arr in zip(CORPUS_FILES[1:], (sentence_starts, document_starts)):
            p = self.corpus_dir / name
            t = temp_path(p)
            arr.tofile(t)
            os.replace(t, p)
        done = {
            "key": key,
            "documents": len(document_starts) - 1,
            "sentences": len(sentence_starts) - 1,
            "tokens": int(sentence_starts[-1]),
        }
        write_json(marker, done)
        return done

    # -- 4. split documents ------------------------------------------------------------------------
    def split(self, corpus_info: dict) -> dict[str, Path]:
        from bertlib.data.pretraining import derive_seed

        cfg = self.cfg
        n = corpus_info["documents"]
        perm = np.random.default_rng(derive_seed(cfg.seed, "split")).permutation(n).astype(np.int64)
        n_val = 0
        if cfg.validation_shards and cfg.validation_fraction > 0:
            n_val = max(cfg.validation_shards, int(round(n * cfg.validation_fraction)))
        splits = {"train": perm[n_val:]}
        if n_val:
            splits["validation"] = perm[:n_val]
        shards = {"train": cfg.num_shards, "validation": cfg.validation_shards}
        for name, docs in splits.items():
            if len(docs) < shards[name]:
                raise ConfigError(
                    f"{', '.join(map(str, self.sources))}: {len(docs)} {name} documents for "
                    f"{shards[name]} {name} shards (every shard needs at least one document); "
                    f"lower num_shards/validation_shards or add data"
                )
        paths = {}
        for name, docs in splits.items():
            paths[name] = self.corpus_dir / f"split-{name}.npy"
            _save_npy(paths[name], docs)
        return paths

    # -- 5. examples + manifests -------------------------------------------------------------------
    def shard_tasks(
        self, corpus_key: str, vocab_file: Path, vocab_info: dict, split_paths: dict
    ) -> tuple[list[dict], list[dict]]:
        """``(group tasks, shard tasks)`` of every phase × split: group g of n makes the instances of
        every n-th document (``<phase>/.progress/<split>-instances-0000g-of-0000n.<key>.npy``); shard
        k reads its share of all n group files (``task["groups"]``)."""
        from bertlib.data.pretraining import derive_seed

        cfg = self.cfg
        groups, tasks = [], []
        for phase in cfg.phases:
            pdir, wdir = self.out / phase.name, self.work / phase.name / ".progress"
            for folder in (pdir / ".progress", wdir):
                folder.mkdir(parents=True, exist_ok=True)
            for folder in (pdir, pdir / ".progress", wdir):  # temp files of this machine's interrupted runs
                remove_stale(folder)
            settings = self.phase_settings(phase)
            key = _key({"settings": settings, "vocab": vocab_info, "corpus": corpus_key, "layout": SHARD_LAYOUT})
            common = {"corpus_dir": str(self.corpus_dir), "corpus_key": corpus_key}
            for split, docs_path in split_paths.items():
                n = cfg.num_shards if split == "train" else cfg.validation_shards
                group_paths = [str(wdir / f"{split}-instances-{g:05d}-of-{n:05d}.{key[:16]}.npy") for g in range(n)]
                for g, path in enumerate(group_paths):
                    groups.append(
                        {
                            **common,
                            "group": g,
                            "num_groups": n,
                            "path": path,
                            "split_docs": str(docs_path),
                            "seed": derive_seed(cfg.seed, phase.name, split, "group", g),
                            "instance_settings": {
                                "max_seq_length": phase.max_seq_length,
                                "dupe_factor": cfg.dupe_factor,
                                "short_seq_prob": cfg.short_seq_prob,
                            },
                        }
                    )
                for k in range(n):
                    name = f"{split}-{k:05d}-of-{n:05d}.tfrecord"
                    tasks.append(
                        {
                            **common,
                            "phase": phase.name,
                            "split": split,
                            "shard": k,
                            "num_shards": n,
                            "key": key,
                            "settings": settings,
                            "path": str(pdir / name),
                            "marker": str(pdir / ".progress" / f"{name}.json"),
                            "vocab_file": str(vocab_file),
                            "groups": group_paths,
                            "seed": derive_seed(cfg.seed, phase.name, split, k),
                            "example_settings": {
                                "max_seq_length": phase.max_seq_length,
                                "max_predictions_per_seq": phase.max_predictions_per_seq,
                                "masked_lm_prob": cfg.masked_lm_prob,
                                "whole_word_masking": cfg.whole_word_masking,
                                "pack_sequences": cfg.pack_sequences,
                                "max_pairs_per_row": cfg.pairs_per_row(phase),
                                "masked": not cfg.dynamic_masking,
                            },
                        }
                    )
        return groups, tasks

    @staticmethod
    def finished(task: dict, rehash: bool = True) -> dict | None:
        """The task's marker if its shard is complete for the same settings: same key and size, and
        with ``rehash`` the same sha256 (re-read; another host's shards are taken on their size)."""
        from bertlib.core.files import sha256_file

        marker = _read_json(Path(task["marker"]))
        path = Path(task["path"])
        if not marker or marker.get("key") != task["key"] or not path.is_file():
            return None
        if path.stat().st_size != marker.get("bytes") or (rehash and sha256_file(path) != marker.get("sha256")):
            return None
        return marker

    def write_manifests(
        self, markers: dict, tasks: list[dict], vocab_file: Path, vocab_info: dict, split_paths: dict
    ) -> dict:
        from bertlib.data.pretraining import TokenizedCorpus
        from bertlib.data.records import MANIFEST_FORMAT, shard_mix

        corpus = TokenizedCorpus.load(self.corpus_dir)
        split_counts = {}
        for split, p in split_paths.items():
            docs = np.load(p)
            ds = np.asarray(corpus.document_starts)
            ss = np.asarray(corpus.sentence_starts)
            split_counts[split] = {
                "documents": int(len(docs)),
                "sentences": int((ds[docs + 1] - ds[docs]).sum()),
                "tokens": int((ss[ds[docs + 1]] - ss[ds[docs]]).sum()),
            }
        manifests = {}
        for phase in self.cfg.phases:
            pdir = self.out / phase.name
            shards: dict[str, list] = {s: [] for s in split_paths}
            splits = {s: dict(c, examples=0, pairs=0, masked_tokens=0) for s, c in split_counts.items()}
            for task in tasks:
                if task["phase"] != phase.name:
                    continue
                m = markers[task["path"]]
                shard = {
                    k: m[k]
                    for k in ("file", "sha256", "bytes", "examples", "masked_tokens", "real_tokens", "random_next")
                }
                shard["pairs"] = m.get("pairs", m["examples"])  # markers of unpacked shards made before packing
                shards[task["split"]].append({**shard, **shard_mix(shard, phase.max_seq_length)})
                for key in ("examples", "pairs", "masked_tokens"):
                    splits[task["split"]][key] += shard[key]
            counts = {
                k: sum(s[k] for s in splits.values())
                for k in ("documents", "sentences", "tokens", "examples", "pairs", "masked_tokens")
            }
            packing = None
            if self.cfg.pack_sequences:
                real = sum(shard["real_tokens"] for split in shards.values() for shard in split)
                packing = {
                    "max_pairs_per_row": self.cfg.pairs_per_row(phase),
                    "algorithm": "spfhp",
                    "pairs": counts["pairs"],
                    "rows": counts["examples"],
                    "efficiency": real / max(counts["examples"] * phase.max_seq_length, 1),
                }
            vtmp = temp_path(pdir / "vocab.txt")
            shutil.copyfile(vocab_file, vtmp)
            os.replace(vtmp, pdir / "vocab.txt")
            manifest = {
                "format": MANIFEST_FORMAT,
                "max_seq_length": phase.max_seq_length,
                "max_predictions_per_seq": phase.max_predictions_per_seq,
                "vocab": vocab_info,
                "settings": self.phase_settings(phase),
                "counts": counts,
                "splits": splits,
                "shards": shards,
                "packing": packing,
                "masking": "dynamic" if self.cfg.dynamic_masking else "static",
                "created_by": "bertlib prepare-data",
            }
            write_json(pdir / "manifest.json", manifest)
            manifests[phase.name] = manifest
            for instances in (self.work / phase.name / ".progress").glob("*-instances-*.npy"):  # only needed to
                instances.unlink(missing_ok=True)  # (re)make shards
        return manifests

    def run(self) -> dict:
        from bertlib.data.hosts import share_lock

        self.validate()
        with share_lock(self.out, self.share):
            return self._run(self.share)

    def _run(self, share) -> dict:
        from bertlib.core.vocab import vocab_info

        t_start = time.perf_counter()
        workers = self.cfg.num_workers or os.cpu_count() or 1
        self.out.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            try:
                t = time.perf_counter()
                extracted = self.extract(pool, workers)
                self.timings["extract_s"] = time.perf_counter() - t
                t = time.perf_counter()
                vocab_file = self.vocab()
                info = vocab_info(vocab_file, self.lowercase, self.strip_accents)
                self.timings["vocab_s"] = time.perf_counter() - t
                t = time.perf_counter()
                corpus = self.tokenize(pool, workers, vocab_file, info["sha256"])
                self.timings["tokenize_s"] = time.perf_counter() - t
                t = time.perf_counter()
                split_paths = self.split(corpus)
                groups, tasks = self.shard_tasks(corpus["key"], vocab_file, info, split_paths)
                mine = [task for i, task in enumerate(tasks) if share.owns(i)]
                markers = {}
                todo = []
                for task in mine:
                    m = self.finished(task)
                    if m is None:
                        todo.append(task)
                    else:
                        markers[task["path"]] = m
                for task in todo:  # a phase being (re)written has no manifest, a shard no stale marker
                    (Path(task["path"]).parent / "manifest.json").unlink(missing_ok=True)
                    Path(task["marker"]).unlink(missing_ok=True)
                needed = {path for task in todo for path in task["groups"]}
                groups_todo = [g for g in groups if g["path"] in needed and not Path(g["path"]).is_file()]
                with quiet_or_bar(
                    self.progress and bool(groups_todo), desc="instances", unit="group", total=len(groups_todo)
                ) as bar:
                    for fut in cf.as_completed([pool.submit(_group_task, g) for g in groups_todo]):
                        fut.result()
                        bar.update(1)
                self.timings["instances_s"] = time.perf_counter() - t
                t = time.perf_counter()
                with quiet_or_bar(
                    self.progress, desc="shards", unit="shard", total=len(mine), initial=len(mine) - len(todo)
                ) as bar:
                    futures = {pool.submit(_shard_task, {**task}): task for task in todo}
                    for fut in cf.as_completed(futures):
                        m = fut.result()
                        markers[futures[fut]["path"]] = m
                        bar.update(1)
                self.timings["shards_s"] = time.perf_counter() - t
                self.timings["examples_s"] = self.timings["instances_s"] + self.timings["shards_s"]
            except BrokenProcessPool:
                raise RuntimeError(
                    f"{self.out}: a worker process died; finished shards are kept — rerun the "
                    f"same command to resume (calling prepare() from a script? workers are "
                    f"spawned and re-import it: put the call under if __name__ == '__main__')"
                ) from None
        written = {path: markers[path] for path in (task["path"] for task in todo)}
        every = dict(markers)
        if share.mpi:  # the other hosts' shards are on their disks: their markers come over MPI
            for host_markers in share.allgather(markers):
                every.update(host_markers)
        else:  # one host, or hosts sharing this storage: the others' markers are on the disk
            for task in tasks:
                if task["path"] not in every and (m := self.finished(task, rehash=False)) is not None:
                    every[task["path"]] = m
        pending = sum(task["path"] not in every for task in tasks)
        manifests = {}
        if not pending and (share.leader or not share.mpi):
            manifests = self.write_manifests(every, tasks, vocab_file, info, split_paths)
        self.timings["total_s"] = time.perf_counter() - t_start
        return {
            "output_dir": str(self.out),
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
                    "dir": str(self.out / name),
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
            "timings": dict(self.timings),
            "rates": stage_rates(self.timings, extracted, corpus, written, workers, self.reused),
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


def prepare(cfg: DataConfig, progress: bool = True) -> dict:
    """Run data preparation for ``cfg``; return a summary dict (corpus counts, per-phase counts,
    shards written/skipped, stage timings). Bad input raises ConfigError/FileNotFoundError before
    any heavy work; an interrupted run can simply be rerun."""
    return _Preparer(cfg, progress).run()


def main(argv: list[str]) -> int:
    """``bertlib prepare-data --config FILE [--key value ...]`` (``--help``: every DataConfig key)."""
    import click

    cli = job_command(
        "prepare-data",
        help=__doc__.splitlines()[0] + " Give a --config FILE and/or any DataConfig "
        "key as --key value (values are YAML).",
        params=[click.Option(["--no_progress"], is_flag=True, help="no progress bars")],
    )
    cfg, args = parse_job_args("prepare-data", cli, argv)
    if cfg is None:
        return 0
    try:
        summary = prepare(cfg, progress=not args.extras["no_progress"])
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
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


if __name__ == "__main__":
    from bertlib.core.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
