"""Stage 5 of ``prepare-data``: once every shard of a phase is there, ``<phase>/vocab.txt`` and,
last, ``<phase>/manifest.json`` (counts, settings, vocab, per-shard sha256, examples (= records),
pairs, random-next and padding fractions, the record layout: ``packing`` (null, or K, pairs, rows
and efficiency = real tokens / (rows × S)) and ``masking`` ("static" / "dynamic")), both atomically;
the instance files are then deleted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from bertlib.core.files import temp_path, write_json
from bertlib.data.prepare.shards import ShardTask
from bertlib.data.prepare.sources import Plan, phase_settings
from bertlib.data.pretraining import TokenizedCorpus
from bertlib.data.records import MANIFEST_FORMAT, shard_mix


def write_manifests(
    plan: Plan, markers: dict, tasks: list[ShardTask], vocab_file: Path, vocab_info: dict, split_paths: dict
) -> dict:
    """Write every phase's vocab and manifest from the shard ``markers`` (by shard path); return the
    manifests by phase name."""
    cfg = plan.cfg
    corpus = TokenizedCorpus.load(plan.corpus_dir)
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
    for phase in cfg.phases:
        pdir = plan.out / phase.name
        shards: dict[str, list] = {s: [] for s in split_paths}
        splits = {s: dict(c, examples=0, pairs=0, masked_tokens=0) for s, c in split_counts.items()}
        for task in tasks:
            if task.phase != phase.name:
                continue
            m = markers[task.path]
            shard = {
                k: m[k] for k in ("file", "sha256", "bytes", "examples", "masked_tokens", "real_tokens", "random_next")
            }
            shard["pairs"] = m.get("pairs", m["examples"])  # markers of unpacked shards made before packing
            shards[task.split].append({**shard, **shard_mix(shard, phase.max_seq_length)})
            for key in ("examples", "pairs", "masked_tokens"):
                splits[task.split][key] += shard[key]
        counts = {
            k: sum(s[k] for s in splits.values())
            for k in ("documents", "sentences", "tokens", "examples", "pairs", "masked_tokens")
        }
        packing = None
        if cfg.pack_sequences:
            real = sum(shard["real_tokens"] for split in shards.values() for shard in split)
            packing = {
                "max_pairs_per_row": cfg.pairs_per_row(phase),
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
            "settings": phase_settings(plan, phase),
            "counts": counts,
            "splits": splits,
            "shards": shards,
            "packing": packing,
            "masking": "dynamic" if cfg.dynamic_masking else "static",
            "created_by": "bertlib prepare-data",
        }
        write_json(pdir / "manifest.json", manifest)
        manifests[phase.name] = manifest
        for instances in (plan.work / phase.name / ".progress").glob("*-instances-*.npy"):  # only needed to
            instances.unlink(missing_ok=True)  # (re)make shards
    return manifests
