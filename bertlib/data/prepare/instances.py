"""Stage 4a of ``prepare-data``: the documents are split (seeded) into train/validation, and each
split's into one group per shard; per phase × split a worker per group makes the group's instances
(A/B token ranges), shuffles them, deals them to the shards and saves them
(``<work_dir>/<phase>/.progress/<split>-instances-*.npy``, deleted once the manifest is written)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertlib.core.errors import ConfigError
from bertlib.data.prepare.common import WORKER_CACHE, save_npy
from bertlib.data.prepare.sources import Plan
from bertlib.data.pretraining import TokenizedCorpus, deal, derive_seed, group_documents, group_instances


@dataclass(frozen=True)
class CorpusRef:
    """Stage 3's corpus as a worker finds it: its folder and its tokenize key."""

    corpus_dir: str
    corpus_key: str


def load_corpus(ref: CorpusRef) -> TokenizedCorpus:
    """The memory-mapped corpus, loaded once per worker process."""
    if ref not in WORKER_CACHE:
        WORKER_CACHE[ref] = TokenizedCorpus.load(ref.corpus_dir)
    return WORKER_CACHE[ref]


@dataclass(frozen=True)
class GroupTask:
    """One document group's instances: every ``num_groups``-th document of the split, written to ``path``."""

    corpus: CorpusRef
    group: int
    num_groups: int
    path: str
    split_docs: str  # the split's shuffled document ids (.npy)
    seed: int
    max_seq_length: int
    dupe_factor: int
    short_seq_prob: float


def _group_task(task: GroupTask) -> None:
    """Worker: make one document group's shuffled instances, deal them to the shards and save them
    (``[N, 5]`` int64 ``.npy``, grouped by shard)."""
    split_docs = np.load(task.split_docs)
    instances = group_instances(
        load_corpus(task.corpus),
        group_documents(split_docs, task.group, task.num_groups),
        split_docs,
        max_seq_length=task.max_seq_length,
        dupe_factor=task.dupe_factor,
        short_seq_prob=task.short_seq_prob,
        seed=task.seed,
    )
    save_npy(Path(task.path), deal(instances, task.group, task.num_groups))


def split_documents(plan: Plan, corpus_info: dict) -> dict[str, Path]:
    """The documents shuffled (seeded) and split: ``{"train": path, ["validation": path]}`` of
    ``.corpus/split-<name>.npy`` (document ids)."""
    cfg = plan.cfg
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
                f"{', '.join(map(str, plan.sources))}: {len(docs)} {name} documents for "
                f"{shards[name]} {name} shards (every shard needs at least one document); "
                f"lower num_shards/validation_shards or add data"
            )
    paths = {}
    for name, docs in splits.items():
        paths[name] = plan.corpus_dir / f"split-{name}.npy"
        save_npy(paths[name], docs)
    return paths


def group_tasks(
    plan: Plan, phase, split: str, num_groups: int, docs_path: Path, key: str, corpus: CorpusRef
) -> list[GroupTask]:
    """The group tasks of one phase × split: group g of n makes the instances of every n-th document
    (``<work_dir>/<phase>/.progress/<split>-instances-0000g-of-0000n.<key>.npy``)."""
    cfg, wdir, n = plan.cfg, plan.work / phase.name / ".progress", num_groups
    return [
        GroupTask(
            corpus=corpus,
            group=g,
            num_groups=n,
            path=str(wdir / f"{split}-instances-{g:05d}-of-{n:05d}.{key[:16]}.npy"),
            split_docs=str(docs_path),
            seed=derive_seed(cfg.seed, phase.name, split, "group", g),
            max_seq_length=phase.max_seq_length,
            dupe_factor=cfg.dupe_factor,
            short_seq_prob=cfg.short_seq_prob,
        )
        for g in range(n)
    ]
