"""What a prepared dataset holds, for a notebook: a counts table, a length/padding histogram and a
per-shard table (are the shards alike?).

Everything is read back from the dataset folder itself (``manifest.json`` and the TFRecords), so the
summary shows what training will see, not what the preparation meant to write.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bertlib.data.records import read_manifest, read_records, shard_mix


def counts_table(output_dir: str | os.PathLike):
    """A pandas DataFrame: one row per phase × split with documents, sentences, tokens, examples,
    masked tokens, shards, max_seq_length / max_predictions_per_seq and the vocab's casing."""
    import pandas as pd

    rows = []
    for manifest_path in sorted(Path(output_dir).glob("*/manifest.json")):
        m = read_manifest(manifest_path.parent)
        for split, c in m.get("splits", {"all": m["counts"]}).items():
            rows.append({"phase": manifest_path.parent.name, "split": split,
                         "max_seq_length": m["max_seq_length"],
                         "max_predictions_per_seq": m["max_predictions_per_seq"],
                         **{k: c.get(k) for k in ("documents", "sentences", "tokens", "examples", "masked_tokens")},
                         "shards": len(m["shards"].get(split, [])),
                         "lowercase": m["vocab"]["lowercase"], "vocab_size": m["vocab"]["size"]})
    return pd.DataFrame(rows).set_index(["phase", "split"]) if rows else pd.DataFrame()


def shard_table(output_dir: str | os.PathLike):
    """A pandas DataFrame: one row per phase × split × shard file with its ``examples`` and the
    fractions of examples with a random B (``random_next``) and of positions that are ``padding``
    (:func:`bertlib.data.records.shard_mix` of the manifest's counts). Every training rank reads its
    own shards, so these should agree across a split up to sampling noise."""
    import pandas as pd

    rows = []
    for manifest_path in sorted(Path(output_dir).glob("*/manifest.json")):
        m = read_manifest(manifest_path.parent)
        for split, shards in m["shards"].items():
            for shard in shards:
                mix = shard_mix(shard, m["max_seq_length"])
                rows.append({"phase": manifest_path.parent.name, "split": split, "shard": shard["file"],
                             "examples": shard["examples"], "random_next": round(mix["random_next_fraction"], 3),
                             "padding": round(mix["padding_fraction"], 3)})
    return pd.DataFrame(rows).set_index(["phase", "split", "shard"]) if rows else pd.DataFrame()


def example_lengths(phase_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000) -> np.ndarray:
    """Real tokens per example ([N] int, from ``input_mask``) of up to ``limit`` records of a split."""
    m = read_manifest(phase_dir)
    lengths, left = [], limit
    for shard in m["shards"][split]:
        if left is not None and left <= 0:
            break
        r = read_records(Path(phase_dir) / shard["file"], m["max_seq_length"], m["max_predictions_per_seq"], left)
        lengths.append(r["input_mask"].sum(axis=1))
        if left is not None:
            left -= len(r["input_mask"])
    return np.concatenate(lengths) if lengths else np.zeros(0, int)


def length_figure(output_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000):
    """A matplotlib Figure: per phase, a histogram of tokens per example, titled with the padding
    fraction (share of the ``[N, S]`` positions that are padding, i.e. wasted compute)."""
    import matplotlib.pyplot as plt

    phases = sorted(p.parent for p in Path(output_dir).glob("*/manifest.json"))
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(5 * max(len(phases), 1), 3.2), squeeze=False)
    for ax, pdir in zip(axes[0], phases):
        m = read_manifest(pdir)
        s = m["max_seq_length"]
        lengths = example_lengths(pdir, split, limit)
        padding = 1 - lengths.sum() / max(len(lengths) * s, 1)
        total = m.get("splits", {}).get(split, {}).get("examples")
        shown = f"first {len(lengths)} of {total}" if total and total > len(lengths) else f"{len(lengths)}"
        ax.hist(lengths, bins=min(64, s), range=(0, s), color="tab:blue")
        ax.set_title(f"{pdir.name}: {shown} {split} examples, padding {padding:.1%}")
        ax.set_yscale("log")
        ax.set_xlabel("tokens per example")
        ax.set_ylabel("examples")
    fig.tight_layout()
    return fig


def summarize(output_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000):
    """``(counts_table(...), length_figure(...))`` — the two things the data-prep notebook shows."""
    return counts_table(output_dir), length_figure(output_dir, split, limit)
