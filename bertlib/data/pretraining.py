"""Tokenized documents → BERT pretraining examples (google-research/bert ``create_pretraining_data``).

The algorithm is the original one, step for step:

1. Per document, a target length ``max_seq_length - 3`` (with probability ``short_seq_prob`` a random
   length in ``[2, max_seq_length - 3]``); consecutive sentences are gathered into a chunk until it
   reaches the target (or the document ends).
2. The chunk is split at a random sentence boundary into A | B. With probability 0.5 (always when the
   chunk has one sentence) B is replaced by sentences from a random other document, starting at a
   random sentence, up to the remaining target length; the unused sentences of the chunk are "put
   back" and start the next chunk. ``next_sentence_labels`` is 1 for a random B (Google's convention).
3. ``truncate_seq_pair``: while A + B is too long, drop a token from the longer one, from the front or
   the back with equal probability.
4. ``[CLS] A [SEP] B [SEP]``, segment ids 0…0 1…1, then masked LM: ``num_to_predict =
   min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))`` candidates (all tokens
   but ``[CLS]``/``[SEP]``, or whole words with ``whole_word_masking``) in random order; a whole word
   that would overshoot is skipped; each chosen token becomes ``[MASK]`` 80%, stays 10%, becomes a
   random vocab entry 10%.
5. ``dupe_factor`` passes over the documents, each with fresh random choices and masks.
6. All instances are shuffled and dealt round-robin to the shards, so every shard is the same mix.

Two options leave Google's format (both off by default, and then the shards are as above):
``pack_sequences`` packs a shard's shuffled pairs, several per record, with shortest-pack-first
histogram packing (:mod:`bertlib.data.packing`; Krell et al. 2021), each pair masked as in step 4
on its own (:func:`build_packed_examples`); ``dynamic_masking`` skips step 4's masked LM and stores
the pairs unmasked, for masks drawn anew in the input pipeline.

What differs is the machinery, not the distribution: the corpus is one flat int32 token array with
sentence and document offsets (memory-mapped, shared by worker processes), an example is a pair of
token ranges until the end, truncation draws its front/back coin flips at once, and masking and
padding run vectorized over whole batches with numpy. The shuffle-and-deal of step 6 runs in two
bounded steps: the split's documents form one group per shard, each group's instances are made and
shuffled (:func:`group_instances`) and dealt round-robin to all shards (:func:`deal`); a shard then
shuffles what it was dealt. Random streams are seeded from (seed, phase, split, group or shard,
pass), so a shard's bytes depend only on the settings, never on worker count or timing.
One difference from the original: a whole word never spans the ``[SEP]`` between A and B (the
original glues a ``##`` piece that starts B, after a front truncation, onto A's last word).
"""

from __future__ import annotations

import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertlib.data.packing import pack, place_pairs

CORPUS_FILES = ("tokens.int32", "sentences.int64", "documents.int64")


@dataclass
class TokenizedCorpus:
    """All documents as flat arrays.

    tokens: [T] int32 WordPiece ids of all sentences back to back.
    sentence_starts: [n_sentences + 1] int64 offsets into ``tokens`` (sentence i = tokens[s[i]:s[i+1]]).
    document_starts: [n_documents + 1] int64 offsets into the sentences (doc d = sentences d[d]..d[d+1]).
    """

    tokens: np.ndarray
    sentence_starts: np.ndarray
    document_starts: np.ndarray

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TokenizedCorpus":
        """Memory-mapped (read-only) view of the raw little-endian arrays :data:`CORPUS_FILES` that
        ``prepare-data`` writes into ``<output_dir>/.corpus``."""
        d = Path(directory)

        def mm(name, dtype):
            return np.memmap(d / name, dtype=dtype, mode="r") if (d / name).stat().st_size else np.zeros(0, dtype)

        return cls(mm(CORPUS_FILES[0], np.int32), mm(CORPUS_FILES[1], np.int64), mm(CORPUS_FILES[2], np.int64))


def tokenize_documents(tokenizer, documents: list[list[str]]):
    """Sentences of documents → (tokens [T] int32, sentence lengths [n_s] int64, sentences per doc
    [n_d] int64). One ``encode_batch`` call for all sentences; sentences that tokenize to nothing and
    documents left without sentences are dropped (as the original's reader does)."""
    flat = [s for doc in documents for s in doc]
    encoded = tokenizer.encode_batch(flat, add_special_tokens=False) if flat else []
    ids = [e.ids for e in encoded]
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    doc_of = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    keep = lengths > 0
    per_doc = np.bincount(doc_of[keep], minlength=len(documents)).astype(np.int64)
    tokens = np.fromiter((t for x in ids for t in x), np.int32, int(lengths.sum()))
    return tokens, lengths[keep], per_doc[per_doc > 0]


def derive_seed(*parts) -> int:
    """A 64-bit seed from ints and strings (stable across processes and Python runs)."""
    words = [p & (2**64 - 1) if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def create_instances(
    corpus: TokenizedCorpus, doc_ids, pool: np.ndarray, max_seq_length: int, short_seq_prob: float, rng: random.Random
) -> np.ndarray:
    """Google's ``create_instances_from_document`` for each document of ``doc_ids``.

    ``pool`` holds the documents a random B may come from (the split's documents). Returns
    ``[N, 5]`` int64 rows ``(a_start, a_end, b_start, b_end, is_random_next)``: token ranges into
    ``corpus.tokens``, already truncated so that ``len(A) + len(B) <= max_seq_length - 3``.
    """
    ss, ds = corpus.sentence_starts, corpus.document_starts
    max_num_tokens = max_seq_length - 3
    out = []
    for d in doc_ids:
        s0, s1 = int(ds[d]), int(ds[d + 1])
        target = max_num_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_num_tokens)
        chunk_start, i = s0, s0  # current chunk = sentences chunk_start..i (absolute indices)
        while i < s1:
            current_length = int(ss[i + 1] - ss[chunk_start])
            if i == s1 - 1 or current_length >= target:
                k = i + 1 - chunk_start
                a_end = chunk_start + (rng.randint(1, k - 1) if k >= 2 else 1)
                a0, a1 = int(ss[chunk_start]), int(ss[a_end])
                if k == 1 or rng.random() < 0.5:
                    is_random = 1
                    target_b = target - (a1 - a0)
                    for _ in range(10):
                        rd = int(pool[rng.randint(0, len(pool) - 1)])
                        if rd != d:
                            break
                    r0, r1 = int(ds[rd]), int(ds[rd + 1])
                    start = rng.randint(r0, r1 - 1)
                    # sentences from `start` until B reaches target_b tokens (at least one sentence)
                    need = int(ss[start]) + max(target_b, 1)
                    end = min(int(np.searchsorted(ss[start + 1 : r1 + 1], need)) + start + 1, r1)
                    b0, b1 = int(ss[start]), int(ss[end])
                    i = a_end - 1  # put the unused sentences back
                else:
                    is_random = 0
                    b0, b1 = a1, int(ss[i + 1])
                a0, a1, b0, b1 = truncate_seq_pair(a0, a1, b0, b1, max_num_tokens, rng)
                out.append((a0, a1, b0, b1, is_random))
                chunk_start = i + 1
            i += 1
    return np.asarray(out, np.int64).reshape(-1, 5)


def truncate_seq_pair(a0: int, a1: int, b0: int, b1: int, max_num_tokens: int, rng: random.Random):
    """Google's ``truncate_seq_pair`` on ranges: while too long, the longer of A/B loses a token at the
    front or the back (fair coin). The cut sequence is deterministic given the lengths (the longer
    side, ties → B), so only the coins are drawn: front cuts ~ Binomial(cuts, 1/2) per side."""
    la, lb = a1 - a0, b1 - b0
    excess = la + lb - max_num_tokens
    if excess <= 0:
        return a0, a1, b0, b1
    cut_a = min(excess, la - lb) if la > lb else 0  # the longer side alone, until lengths are equal
    cut_b = min(excess, lb - la) if lb > la else 0
    rest = excess - cut_a - cut_b  # then alternately, B first (ties go to B)
    cut_a += rest // 2
    cut_b += rest - rest // 2
    front_a = bin(rng.getrandbits(cut_a)).count("1") if cut_a else 0
    front_b = bin(rng.getrandbits(cut_b)).count("1") if cut_b else 0
    return a0 + front_a, a1 - (cut_a - front_a), b0 + front_b, b1 - (cut_b - front_b)


@dataclass(frozen=True)
class SpecialIds:
    """Ids the example builder needs; ``continuation`` [V] bool marks ``##`` pieces."""

    cls: int
    sep: int
    mask: int
    vocab_size: int
    continuation: np.ndarray

    @classmethod
    def from_vocab(cls, vocab: list[str]) -> "SpecialIds":
        index = {t: i for i, t in enumerate(vocab)}
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in index]
        if missing:
            raise ValueError(f"vocab lacks {missing}")
        cont = np.fromiter((t.startswith("##") for t in vocab), bool, len(vocab))
        return cls(index["[CLS]"], index["[SEP]"], index["[MASK]"], len(vocab), cont)


@dataclass(frozen=True, eq=False)
class MaskSettings:
    """How pairs become feature rows (:func:`build_examples`, :func:`build_packed_examples`,
    :func:`make_shard`): rows of ``max_seq_length`` tokens, masked LM with up to
    ``max_predictions_per_seq`` predictions per pair (``masked_lm_prob`` of its tokens; whole words
    with ``whole_word_masking``), the vocab's special ``ids``; ``masked=False`` (dynamic masking)
    leaves the pairs unmasked."""

    max_seq_length: int
    max_predictions_per_seq: int
    masked_lm_prob: float
    whole_word_masking: bool
    ids: SpecialIds
    masked: bool = True


def build_examples(
    tokens: np.ndarray, instances: np.ndarray, settings: MaskSettings, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Instances [N, 5] → padded, masked feature arrays (the records' features, see records.py).

    Returns ``input_ids, input_mask, segment_ids`` [N, S] int64, ``masked_lm_positions,
    masked_lm_ids`` [N, P] int64, ``masked_lm_weights`` [N, P] float32, ``next_sentence_labels`` [N, 1].
    ``settings.masked=False`` (dynamic masking): no ``masked_lm_*`` arrays, ``input_ids`` unmasked,
    and no random numbers are drawn.
    """
    ids, masked_lm_prob = settings.ids, settings.masked_lm_prob
    n, s, p = len(instances), settings.max_seq_length, settings.max_predictions_per_seq
    a0, a1, b0, b1, rand_next = (instances[:, j : j + 1] for j in range(5))
    la, lb = a1 - a0, b1 - b0
    length = la + lb + 3
    pos = np.arange(s)[None, :]
    in_a = (pos >= 1) & (pos <= la)
    in_b = (pos >= la + 2) & (pos < la + 2 + lb)
    src = np.where(in_a, a0 + pos - 1, np.where(in_b, b0 + pos - la - 2, 0))
    input_ids = np.where(in_a | in_b, np.asarray(tokens)[src], 0).astype(np.int64)
    input_ids[:, 0] = ids.cls
    rows = np.arange(n)
    input_ids[rows, la[:, 0] + 1] = ids.sep
    input_ids[rows, length[:, 0] - 1] = ids.sep
    input_mask = (pos < length).astype(np.int64)
    segment_ids = ((pos >= la + 2) & (pos < length)).astype(np.int64)
    if not settings.masked:
        return {
            "input_ids": input_ids,
            "input_mask": input_mask,
            "segment_ids": segment_ids,
            "next_sentence_labels": rand_next.astype(np.int64),
        }

    # -- masked LM: candidates in random order, greedily taken up to num_to_predict ----------------
    cand = in_a | in_b
    num_to_predict = np.minimum(p, np.maximum(1, np.rint(length[:, 0] * masked_lm_prob).astype(np.int64)))
    if settings.whole_word_masking:
        prev_cand = np.zeros_like(cand)
        prev_cand[:, 1:] = cand[:, :-1]
        starts = cand & ~(ids.continuation[input_ids] & prev_cand)
    else:
        starts = cand
    unit = np.cumsum(starts, axis=1) - 1  # [N, S] word index
    keys = np.where(starts, rng.random((n, s)), np.inf)
    order = np.argsort(keys, axis=1, kind="stable")  # starts first, random order
    flat_unit = (rows[:, None] * s + unit)[cand]
    unit_len = np.bincount(flat_unit, minlength=n * s).reshape(n, s)  # tokens per word
    ranked_unit = unit[rows[:, None], order]  # [N, S] word at each rank
    n_units = starts.sum(axis=1)
    ranked_len = np.where(np.arange(s)[None, :] < n_units[:, None], unit_len[rows[:, None], ranked_unit], 0)
    if settings.whole_word_masking:
        taken = np.zeros((n, s), bool)
        count = np.zeros(n, np.int64)
        for k in range(int(n_units.max()) if n else 0):
            ok = (ranked_len[:, k] > 0) & (count + ranked_len[:, k] <= num_to_predict)
            taken[:, k] = ok
            count += np.where(ok, ranked_len[:, k], 0)
    else:
        taken = np.arange(s)[None, :] < np.minimum(num_to_predict, n_units)[:, None]
    unit_taken = np.zeros((n, s), bool)
    unit_taken[np.broadcast_to(rows[:, None], (n, s))[taken], ranked_unit[taken]] = True
    masked = cand & unit_taken[rows[:, None], unit]

    # 80% [MASK], 10% unchanged, 10% a random vocab entry
    u = rng.random((n, s))
    keep = rng.random((n, s)) < 0.5
    random_ids = rng.integers(0, ids.vocab_size, (n, s))
    replacement = np.where(u < 0.8, ids.mask, np.where(keep, input_ids, random_ids))
    n_masked = masked.sum(axis=1)
    positions = np.argsort(~masked, axis=1, kind="stable")[:, :p]  # masked positions, ascending
    weights = np.arange(p)[None, :] < n_masked[:, None]
    masked_lm_positions = np.where(weights, positions, 0)
    masked_lm_ids = np.where(weights, input_ids[rows[:, None], positions], 0)
    input_ids = np.where(masked, replacement, input_ids)
    return {
        "input_ids": input_ids,
        "input_mask": input_mask,
        "segment_ids": segment_ids,
        "masked_lm_positions": masked_lm_positions.astype(np.int64),
        "masked_lm_ids": masked_lm_ids.astype(np.int64),
        "masked_lm_weights": weights.astype(np.float32),
        "next_sentence_labels": rand_next.astype(np.int64),
    }


def build_packed_examples(
    tokens: np.ndarray, instances: np.ndarray, rows: np.ndarray, settings: MaskSettings, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Instances [N, 5] packed into rows [R, K] (pair indices in row order, -1 = no pair; see
    :func:`bertlib.data.packing.pack`) → packed feature arrays (records.py's packed layout).

    Every pair is made and masked by :func:`build_examples` on its own (Google's rule per pair:
    ``min(P, max(1, rint(L_j * masked_lm_prob)))`` predictions among its tokens), then the pairs of a
    row are placed back to back by :func:`bertlib.data.packing.place_pairs`.
    """
    present = rows >= 0  # [R, K]; pairs fill a prefix
    pairs = build_examples(tokens, instances[rows[present]], settings, rng)  # [M, ...] in row-major order
    pair_of = np.full(rows.shape, -1, np.int64)  # [R, K] row of `pairs` per slot
    pair_of[present] = np.arange(present.sum())
    return place_pairs(pairs, pair_of, settings.max_seq_length, settings.max_predictions_per_seq)


def group_documents(doc_ids: np.ndarray, group: int, num_groups: int) -> np.ndarray:
    """Documents of one instance group: every ``num_groups``-th of the (already shuffled) split."""
    return doc_ids[group::num_groups]


def group_instances(
    corpus: TokenizedCorpus,
    group_docs: np.ndarray,
    pool: np.ndarray,
    *,
    max_seq_length: int,
    dupe_factor: int,
    short_seq_prob: float,
    seed: int,
) -> np.ndarray:
    """All instances of one document group, in a seeded random order: ``dupe_factor`` passes of
    :func:`create_instances` over ``group_docs``, each with its own random stream.

    Returns ``[N, 5]`` int64 rows (see :func:`create_instances`), to be dealt to the shards with
    :func:`deal`.
    """
    instances = (
        np.concatenate(
            [
                create_instances(
                    corpus,
                    group_docs,
                    pool,
                    max_seq_length,
                    short_seq_prob,
                    random.Random(derive_seed(seed, "instances", dupe)),
                )
                for dupe in range(dupe_factor)
            ]
        )
        if len(group_docs)
        else np.zeros((0, 5), np.int64)
    )
    return instances[np.random.default_rng(derive_seed(seed, "deal")).permutation(len(instances))]


def deal(instances: np.ndarray, group: int, num_shards: int) -> np.ndarray:
    """A group's shuffled instances ``[N, 5]`` dealt round-robin to the shards, returned grouped by
    shard (shard 0's rows first; :func:`dealt_slice` says where each shard's rows are).

    Google shuffles all instances and deals them round-robin to the output files, so every file is
    the same mix. Here each group's shuffled instances are dealt: row j → shard
    ``(j + group) % num_shards`` (so the remainders land on different shards), and every shard gets an
    equal share of every document group, whatever the documents' lengths or target draws.
    """
    return np.concatenate([instances[(k - group) % num_shards :: num_shards] for k in range(num_shards)])


def dealt_slice(num_rows: int, group: int, shard: int, num_shards: int) -> slice:
    """Where ``shard``'s rows are in the output of :func:`deal` for a group of ``num_rows`` instances."""
    first = (np.arange(num_shards) - group) % num_shards  # index of each shard's first row
    counts = np.maximum(num_rows - first + num_shards - 1, 0) // num_shards
    start = int(counts[:shard].sum())
    return slice(start, start + int(counts[shard]))


def make_shard(
    corpus: TokenizedCorpus,
    instances: np.ndarray,
    *,
    settings: MaskSettings,
    seed: int,
    batch_size: int = 1024,
    pack_sequences: bool = False,
    max_pairs_per_row: int = 1,
):
    """All examples of one shard from its instances ``[N, 5]`` (its :func:`dealt_slice` of every
    group): shuffled, masked (unless not ``settings.masked``: dynamic masking).

    With ``pack_sequences`` the shuffled pairs are packed (:func:`bertlib.data.packing.pack`, up to
    ``max_pairs_per_row`` per row, rows shuffled) and ``batch_size`` counts rows. Yields
    feature-array batches (see :func:`build_examples` / :func:`build_packed_examples`) in the shard's
    final record order.
    """
    rng = np.random.default_rng(derive_seed(seed, "mask"))
    instances = instances[rng.permutation(len(instances))]
    if not pack_sequences:
        for start in range(0, len(instances), batch_size):
            yield build_examples(corpus.tokens, instances[start : start + batch_size], settings, rng)
        return
    lengths = instances[:, 1] - instances[:, 0] + instances[:, 3] - instances[:, 2] + 3
    rows = pack(lengths, settings.max_seq_length, max_pairs_per_row, rng)
    for start in range(0, len(rows), batch_size):
        yield build_packed_examples(corpus.tokens, instances, rows[start : start + batch_size], settings, rng)
