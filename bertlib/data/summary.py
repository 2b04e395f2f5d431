"""What a prepared dataset holds, for a notebook: a counts table, a length/padding histogram and a
per-shard table (are the shards alike?). Packed datasets (several pairs per record) show pairs per
row and the packing efficiency (real tokens / row tokens); their histograms count tokens per pair.

Everything is read back from the dataset folder itself (``manifest.json`` and the TFRecords), so the
summary shows what training will see, not what the preparation meant to write.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bertlib.data.records import dataset_layout, read_manifest, read_records, shard_mix


def counts_table(output_dir: str | os.PathLike):
    """A pandas DataFrame: one row per phase × split with documents, sentences, tokens, examples
    (records), pairs, ``pairs_per_row`` (1 unless packed), ``efficiency`` (real tokens / (records × S),
    from the shards' counts), masked tokens, shards, max_seq_length / max_predictions_per_seq,
    ``max_pairs_per_row``, ``masking`` (static / dynamic) and the vocab's casing."""
    import pandas as pd  # heavy, and only for the notebook tables

    rows = []
    for manifest_path in sorted(Path(output_dir).glob("*/manifest.json")):
        m = read_manifest(manifest_path.parent)
        layout = dataset_layout(m)
        for split, c in m.get("splits", {"all": m["counts"]}).items():
            shards = m["shards"].get(split, []) if split != "all" else sum(m["shards"].values(), [])
            examples = sum(sh["examples"] for sh in shards)
            pairs = sum(sh.get("pairs", sh["examples"]) for sh in shards)
            real = sum(sh["real_tokens"] for sh in shards)
            rows.append(
                {
                    "phase": manifest_path.parent.name,
                    "split": split,
                    "max_seq_length": m["max_seq_length"],
                    "max_predictions_per_seq": m["max_predictions_per_seq"],
                    **{k: c.get(k) for k in ("documents", "sentences", "tokens", "examples")},
                    "pairs": pairs,
                    "pairs_per_row": round(pairs / max(examples, 1), 3),
                    "efficiency": round(real / max(examples * m["max_seq_length"], 1), 4),
                    "masked_tokens": c.get("masked_tokens"),
                    "shards": len(shards),
                    "max_pairs_per_row": layout["max_pairs_per_row"],
                    "masking": "static" if layout["masked"] else "dynamic",
                    "lowercase": m["vocab"]["lowercase"],
                    "vocab_size": m["vocab"]["size"],
                }
            )
    return pd.DataFrame(rows).set_index(["phase", "split"]) if rows else pd.DataFrame()


def shard_table(output_dir: str | os.PathLike):
    """A pandas DataFrame: one row per phase × split × shard file with its ``examples`` (records),
    ``pairs_per_row`` and the fractions of pairs with a random B (``random_next``) and of positions
    that are ``padding`` (1 - packing efficiency; :func:`bertlib.data.records.shard_mix` of the
    manifest's counts). Every training rank reads its own shards, so these should agree across a
    split up to sampling noise."""
    import pandas as pd  # heavy, and only for the notebook tables

    rows = []
    for manifest_path in sorted(Path(output_dir).glob("*/manifest.json")):
        m = read_manifest(manifest_path.parent)
        for split, shards in m["shards"].items():
            for shard in shards:
                mix = shard_mix(shard, m["max_seq_length"])
                rows.append(
                    {
                        "phase": manifest_path.parent.name,
                        "split": split,
                        "shard": shard["file"],
                        "examples": shard["examples"],
                        "pairs_per_row": round(shard.get("pairs", shard["examples"]) / shard["examples"], 3),
                        "random_next": round(mix["random_next_fraction"], 3),
                        "padding": round(mix["padding_fraction"], 3),
                    }
                )
    return pd.DataFrame(rows).set_index(["phase", "split", "shard"]) if rows else pd.DataFrame()


def input_masks(phase_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000) -> np.ndarray:
    """``input_mask`` [N, S] of up to ``limit`` records of a split (0 = padding; 1, or the pair number
    1..K of a packed record, on real tokens)."""
    m = read_manifest(phase_dir)
    layout = dataset_layout(m)
    masks, left = [], limit
    for shard in m["shards"][split]:
        if left is not None and left <= 0:
            break
        r = read_records(
            Path(phase_dir) / shard["file"],
            m["max_seq_length"],
            m["max_predictions_per_seq"],
            left,
            layout["max_pairs_per_row"],
            layout["masked"],
        )
        masks.append(r["input_mask"])
        if left is not None:
            left -= len(r["input_mask"])
    return np.concatenate(masks) if masks else np.zeros((0, m["max_seq_length"]), np.int32)


def pair_lengths(input_mask: np.ndarray) -> np.ndarray:
    """Real tokens per pair ([N_pairs] int, records in order, pairs in pack order) from ``input_mask``
    [N, S]: the count of each pair number 1..K per record (an unpacked record is one pair)."""
    k = int(input_mask.max(initial=1))
    counts = np.stack([(input_mask == j).sum(axis=1) for j in range(1, k + 1)], axis=1)  # [N, K]
    return counts[counts > 0]


def example_lengths(phase_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000) -> np.ndarray:
    """Real tokens per pair ([N_pairs] int, from ``input_mask``; one per example unless packed) of up to
    ``limit`` records of a split."""
    return pair_lengths(input_masks(phase_dir, split, limit))


def length_figure(output_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000):
    """A matplotlib Figure: per phase, a histogram of tokens per example (per pair if packed), titled
    with the padding fraction (share of the ``[N, S]`` record positions that are padding, i.e. wasted
    compute; 1 - packing efficiency)."""
    import matplotlib.pyplot as plt

    phases = sorted(p.parent for p in Path(output_dir).glob("*/manifest.json"))
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(5 * max(len(phases), 1), 3.2), squeeze=False)
    for ax, pdir in zip(axes[0], phases):
        m = read_manifest(pdir)
        s = m["max_seq_length"]
        masks = input_masks(pdir, split, limit)
        lengths = pair_lengths(masks)
        padding = 1 - (masks > 0).sum() / max(masks.size, 1)
        total = m.get("splits", {}).get(split, {}).get("examples")
        shown = f"first {len(masks)} of {total}" if total and total > len(masks) else f"{len(masks)}"
        packed = dataset_layout(m)["max_pairs_per_row"] > 1
        ax.hist(lengths, bins=min(64, s), range=(0, s), color="tab:blue")
        what = f"{len(lengths)} pairs in {shown} {split} rows" if packed else f"{shown} {split} examples"
        ax.set_title(f"{pdir.name}: {what}, padding {padding:.1%}")
        ax.set_yscale("log")
        ax.set_xlabel("tokens per pair" if packed else "tokens per example")
        ax.set_ylabel("pairs" if packed else "examples")
    fig.tight_layout()
    return fig


def summarize(output_dir: str | os.PathLike, split: str = "train", limit: int | None = 20000):
    """``(counts_table(...), length_figure(...))`` — the two things the data-prep notebook shows."""
    return counts_table(output_dir), length_figure(output_dir, split, limit)
