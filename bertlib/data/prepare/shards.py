"""Stage 4b of ``prepare-data``: a worker per shard takes its round-robin share of every group's
instances (so all shards are the same mix, as Google's shuffle and round-robin write makes them),
shuffles, masks (unless ``dynamic_masking``), packs several pairs per record (if
``pack_sequences``) and writes ``<phase>/<split>-0000k-of-0000n.tfrecord`` through a temp name, then
a done-marker (``<phase>/.progress/<file>.json``: settings key, sha256, counts). A shard is only
reused when its marker has the same key and the file's sha256 matches."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertlib.core.files import remove_stale, sha256_file, write_json
from bertlib.core.vocab import read_vocab
from bertlib.data.prepare.common import SHARD_LAYOUT, read_json, settings_key
from bertlib.data.prepare.instances import CorpusRef, GroupTask, group_tasks, load_corpus
from bertlib.data.prepare.sources import Plan, phase_settings
from bertlib.data.pretraining import MaskSettings, SpecialIds, dealt_slice, derive_seed, make_shard
from bertlib.data.records import encode_examples, write_tfrecord_file

#: test hook, "N:DIR": a shard worker that has written N shards creates DIR/<its pid> and waits to be killed
HOLD_ENV = "BERTLIB_TEST_HOLD_AFTER_SHARDS"
_shards_written = 0  # by this worker process


@dataclass(frozen=True, eq=False)
class ShardTask:
    """One shard of one phase × split, made from its share of every group file (``groups``)."""

    corpus: CorpusRef
    phase: str
    split: str
    shard: int
    num_shards: int
    key: str  # settings + vocab + corpus + layout: a marker with another key is stale
    settings: dict  # the phase settings, recorded in the marker as they are
    path: str
    marker: str
    groups: tuple[str, ...]
    seed: int
    masking: MaskSettings
    pack_sequences: bool
    max_pairs_per_row: int


def _shard_task(task: ShardTask) -> dict:
    """Worker: build and write one shard from its share of every group's instances, then its
    done-marker; return the marker."""
    global _shards_written
    dealt = [np.load(path, mmap_mode="r") for path in task.groups]
    instances = np.concatenate(
        [rows[dealt_slice(len(rows), group, task.shard, task.num_shards)] for group, rows in enumerate(dealt)]
    )
    stats = {"examples": 0, "pairs": 0, "masked_tokens": 0, "real_tokens": 0, "random_next": 0}

    def records():
        for batch in make_shard(
            load_corpus(task.corpus),
            instances,
            settings=task.masking,
            seed=task.seed,
            pack_sequences=task.pack_sequences,
            max_pairs_per_row=task.max_pairs_per_row,
        ):
            stats["examples"] += len(batch["input_ids"])
            stats["pairs"] += int(batch["input_mask"].max(axis=1).sum())  # input_mask = pair number 1..K
            if "masked_lm_weights" in batch:
                stats["masked_tokens"] += int(batch["masked_lm_weights"].sum())
            stats["real_tokens"] += int((batch["input_mask"] > 0).sum())
            stats["random_next"] += int(batch["next_sentence_labels"].sum())
            yield from encode_examples(batch)

    path = Path(task.path)
    sha = write_tfrecord_file(path, records())
    marker = {
        "key": task.key,
        "file": path.name,
        "sha256": sha,
        "bytes": path.stat().st_size,
        **stats,
        "settings": task.settings,
    }
    write_json(Path(task.marker), marker)
    _shards_written += 1
    _hold_if_asked(_shards_written)
    return marker


def _hold_if_asked(written: int) -> None:
    """The :data:`HOLD_ENV` test hook: a known point for a test to kill this worker at (bounded:
    the worker goes on after 10 minutes or when its parent is gone)."""
    count, _, folder = os.environ.get(HOLD_ENV, "").partition(":")
    if not count or written != int(count):
        return
    parent, deadline = os.getppid(), time.monotonic() + 600
    Path(folder, str(os.getpid())).touch()
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.1)


def shard_tasks(
    plan: Plan, corpus_key: str, vocab_file: Path, vocab_info: dict, split_paths: dict
) -> tuple[list[GroupTask], list[ShardTask]]:
    """``(group tasks, shard tasks)`` of every phase × split, in a fixed order (phase, split, shard:
    the order :mod:`bertlib.data.hosts` shares them out in); shard k reads its share of all n group
    files (``ShardTask.groups``). Makes the phase folders and clears this machine's stale temp files."""
    cfg = plan.cfg
    ids = SpecialIds.from_vocab(read_vocab(vocab_file))
    corpus = CorpusRef(str(plan.corpus_dir), corpus_key)
    groups, tasks = [], []
    for phase in cfg.phases:
        pdir, wdir = plan.out / phase.name, plan.work / phase.name / ".progress"
        for folder in (pdir / ".progress", wdir):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (pdir, pdir / ".progress", wdir):  # temp files of this machine's interrupted runs
            remove_stale(folder)
        settings = phase_settings(plan, phase)
        key = settings_key({"settings": settings, "vocab": vocab_info, "corpus": corpus_key, "layout": SHARD_LAYOUT})
        masking = MaskSettings(
            max_seq_length=phase.max_seq_length,
            max_predictions_per_seq=phase.max_predictions_per_seq,
            masked_lm_prob=cfg.masked_lm_prob,
            whole_word_masking=cfg.whole_word_masking,
            ids=ids,
            masked=not cfg.dynamic_masking,
        )
        for split, docs_path in split_paths.items():
            n = cfg.num_shards if split == "train" else cfg.validation_shards
            phase_groups = group_tasks(plan, phase, split, n, docs_path, key, corpus)
            groups += phase_groups
            for k in range(n):
                name = f"{split}-{k:05d}-of-{n:05d}.tfrecord"
                tasks.append(
                    ShardTask(
                        corpus=corpus,
                        phase=phase.name,
                        split=split,
                        shard=k,
                        num_shards=n,
                        key=key,
                        settings=settings,
                        path=str(pdir / name),
                        marker=str(pdir / ".progress" / f"{name}.json"),
                        groups=tuple(g.path for g in phase_groups),
                        seed=derive_seed(cfg.seed, phase.name, split, k),
                        masking=masking,
                        pack_sequences=cfg.pack_sequences,
                        max_pairs_per_row=cfg.pairs_per_row(phase),
                    )
                )
    return groups, tasks


def finished(task: ShardTask, rehash: bool = True) -> dict | None:
    """The task's marker if its shard is complete for the same settings: same key and size, and
    with ``rehash`` the same sha256 (re-read; another host's shards are taken on their size)."""
    marker = read_json(Path(task.marker))
    path = Path(task.path)
    if not marker or marker.get("key") != task.key or not path.is_file():
        return None
    if path.stat().st_size != marker.get("bytes") or (rehash and sha256_file(path) != marker.get("sha256")):
        return None
    return marker
