"""Sequence packing: several pretraining pairs per record instead of one padded pair.

Shortest-pack-first histogram packing (SPFHP) of Krell et al. 2021, "Efficient Sequence Packing
without Cross-contamination" (arXiv 2107.02027, and Graphcore's reference ``spfhp.py``). It works
on the histogram of pair lengths, not on the pairs:

* lengths are processed from the longest to the shortest;
* a sequence goes into the open pack with the *most* remaining space that still fits it (the
  shortest pack first: remaining ``r`` is tried from ``S`` down to the sequence's length); if none
  fits, it opens a new pack;
* a pack is closed when it is full or holds ``max_pairs_per_row`` sequences;
* packs of the same lengths are one "strategy" with a repeat count, so whole histogram bins move
  at once and the cost is O(S² · K) whatever the number of pairs.

:func:`pack` turns the strategies back into rows of pair indices and shuffles the rows;
:func:`place_pairs` lays the pairs' features out in those rows.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def spfhp(histogram: np.ndarray, max_seq_length: int, max_pairs_per_row: int) -> list[tuple[int, list[int]]]:
    """Packing strategies for a length histogram.

    ``histogram`` [S + 1] int: ``histogram[l]`` = number of sequences of length l (1 <= l <= S; index
    0 must be 0). Returns ``[(count, lengths), ...]``: ``count`` packs, each holding sequences of the
    given ``lengths`` in pack order (longest first). Every sequence of the histogram is in exactly one
    pack; no pack exceeds ``max_seq_length`` tokens or ``max_pairs_per_row`` sequences.
    """
    s, k = max_seq_length, max_pairs_per_row
    histogram = np.asarray(histogram, np.int64)
    if len(histogram) != s + 1 or histogram[0] or (histogram < 0).any():
        raise ValueError(f"histogram must have {s + 1} non-negative bins with none of length 0")
    open_packs: dict[int, list[list]] = defaultdict(list)  # remaining space → [[count, lengths], ...]
    closed: list[tuple[int, list[int]]] = []

    def add(count: int, lengths: list[int], remaining: int) -> None:
        if remaining == 0 or len(lengths) == k:
            closed.append((count, lengths))
        else:
            open_packs[remaining].append([count, lengths])

    for length in range(s, 0, -1):
        todo = int(histogram[length])
        remaining = s  # open packs are never empty, so at most S - 1 is left in any of them
        while todo and remaining >= length:
            if not open_packs.get(remaining):
                remaining -= 1
                continue
            group = open_packs[remaining][-1]  # the newest strategy with this much room
            moved = min(group[0], todo)
            group[0] -= moved
            if not group[0]:
                open_packs[remaining].pop()
            todo -= moved
            add(moved, group[1] + [length], remaining - length)
        if todo:
            add(todo, [length], s - length)
    closed.extend((count, lengths) for remaining in sorted(open_packs) for count, lengths in open_packs[remaining])
    return closed


def pack(lengths: np.ndarray, max_seq_length: int, max_pairs_per_row: int, rng: np.random.Generator) -> np.ndarray:
    """Pairs of the given lengths → rows of pair indices, packed by :func:`spfhp`, rows shuffled.

    lengths: [N] int, each in 1..S. Returns ``[R, K]`` int64 (K = ``max_pairs_per_row``): row r holds
    pairs ``rows[r, :n_r]`` in pack order, then -1. Every index 0..N-1 appears exactly once; the
    pairs of one length fill the packs of that length in index order. Deterministic given
    ``lengths`` and the state of ``rng`` (one permutation of R is drawn).
    """
    lengths = np.asarray(lengths, np.int64)
    s, k = max_seq_length, max_pairs_per_row
    if len(lengths) and (lengths.min() < 1 or lengths.max() > s):
        raise ValueError(f"pair lengths must be in 1..{s}, got {lengths.min()}..{lengths.max()}")
    histogram = np.bincount(lengths, minlength=s + 1)
    by_length = np.argsort(lengths, kind="stable")  # indices grouped by length, in index order
    next_of = np.concatenate([[0], np.cumsum(histogram)[:-1]])  # next unused position in by_length per length
    strategies = spfhp(histogram, s, k)
    rows = np.full((sum(c for c, _ in strategies), k), -1, np.int64)
    r = 0
    for count, pack_lengths in strategies:
        for slot, length in enumerate(pack_lengths):
            rows[r : r + count, slot] = by_length[next_of[length] : next_of[length] + count]
            next_of[length] += count
        r += count
    return rows[rng.permutation(len(rows))]


def packing_efficiency(lengths: np.ndarray, rows: np.ndarray, max_seq_length: int) -> float:
    """Real tokens / row tokens: ``sum(lengths) / (R * S)`` for rows [R, K] of :func:`pack`."""
    return float(np.asarray(lengths).sum() / max(len(rows) * max_seq_length, 1))


def place_pairs(
    pairs: dict[str, np.ndarray], rows: np.ndarray, max_seq_length: int, max_predictions_per_seq: int
) -> dict[str, np.ndarray]:
    """One-pair-per-row features (Google's layout, e.g. :func:`bertlib.data.pretraining.build_examples`
    or records read back) → packed rows (records.py's packed layout).

    ``pairs``: ``input_ids, input_mask`` (0/1), ``segment_ids`` [M, S'] (S' >= each pair's length),
    ``next_sentence_labels`` [M, 1] and, if masked, ``masked_lm_positions, masked_lm_ids,
    masked_lm_weights`` [M, P']. ``rows`` [R, K]: indices into ``pairs`` in row order, -1 for no pair
    (pairs fill a prefix of the row). Returns ``input_ids``, ``input_mask`` (1-based pair number, 0 on
    padding), ``segment_ids`` [R, S] int64, ``masked_lm_positions, masked_lm_ids`` [R, P] int64
    (row positions, ascending), ``masked_lm_weights`` [R, P] float32 and ``next_sentence_labels``
    [R, K] int64 (0 for absent pairs). ValueError if a row's pairs exceed S tokens or P predictions.
    """
    s, p = max_seq_length, max_predictions_per_seq
    n_rows, k = rows.shape
    present = rows >= 0
    width = pairs["input_ids"].shape[1]
    length = np.where(present, (pairs["input_mask"] > 0).sum(axis=1)[rows], 0)  # [R, K]
    ends = np.cumsum(length, axis=1)
    if ends[:, -1].max(initial=0) > s:
        raise ValueError(f"a packed row has more than max_seq_length={s} tokens")
    starts = ends - length
    pos = np.arange(s)
    slot = (pos[None, :, None] >= ends[:, None, :]).sum(axis=2)  # [R, S] 0..K-1, K on padding
    real = slot < k
    slot = np.minimum(slot, k - 1)
    row_ix = np.arange(n_rows)[:, None]
    src = np.where(real, rows[row_ix, slot] * width + pos[None, :] - starts[row_ix, slot], 0)  # into [M * S']
    out = {
        "input_ids": np.where(real, np.asarray(pairs["input_ids"]).reshape(-1)[src], 0).astype(np.int64),
        "input_mask": np.where(real, slot + 1, 0).astype(np.int64),
        "segment_ids": np.where(real, np.asarray(pairs["segment_ids"]).reshape(-1)[src], 0).astype(np.int64),
        "next_sentence_labels": np.where(present, pairs["next_sentence_labels"][rows, 0], 0).astype(np.int64),
    }
    if "masked_lm_weights" in pairs:
        p_in = pairs["masked_lm_weights"].shape[1]
        weights = (pairs["masked_lm_weights"][rows] > 0) & present[:, :, None]  # [R, K, P']
        if weights.sum(axis=(1, 2)).max(initial=0) > p:
            raise ValueError(
                f"a packed row has more than max_predictions_per_seq={p} masked tokens; "
                f"raise max_predictions_per_seq (DataConfig validation says how far)"
            )
        positions = (pairs["masked_lm_positions"][rows] + starts[:, :, None]).reshape(n_rows, k * p_in)
        order = np.argsort(~weights.reshape(n_rows, k * p_in), axis=1, kind="stable")[:, :p]  # pair by pair
        taken = np.take_along_axis(weights.reshape(n_rows, k * p_in), order, axis=1)
        if taken.shape[1] < p:  # fewer slots than P in the inputs: pad
            order = np.pad(order, ((0, 0), (0, p - taken.shape[1])))
            taken = np.pad(taken, ((0, 0), (0, p - taken.shape[1])))
        out["masked_lm_positions"] = np.where(taken, np.take_along_axis(positions, order, axis=1), 0).astype(np.int64)
        out["masked_lm_ids"] = np.where(
            taken, np.take_along_axis(pairs["masked_lm_ids"][rows].reshape(n_rows, k * p_in), order, axis=1), 0
        ).astype(np.int64)
        out["masked_lm_weights"] = taken.astype(np.float32)
    return out
