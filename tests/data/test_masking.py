"""Dynamic masking (bertlib.data.masking) vs Google's create_pretraining_data masking rule, restated here
in plain Python per pair, and vs bertlib's static numpy masking (pretraining.build_examples)."""

import numpy as np
import pytest
import tensorflow as tf

import bertlib.data.pretraining as pt
from bertlib.data.masking import dynamic_mask, mask_seed

CLS, SEP, MASK, VOCAB = 101, 102, 103, 30522
S, K, P, PROB = 128, 3, 20, 0.15
ARGS = dict(masked_lm_prob=PROB, cls_id=CLS, sep_id=SEP, mask_id=MASK, vocab_size=VOCAB)
# pairs of length L with L * 0.15 at x.5: Google's round is half to even (10 → 2, 30 → 4, 50 → 8, 70 → 10)
HALF_LENGTHS = [(10, 30, 70), (50, 50), (30,), (70,), (10, 10, 10)]


def pair_tokens(rng, length: int) -> tuple[list[int], list[int]]:
    """One pair "[CLS] A [SEP] B [SEP]" of ``length`` tokens (A, B ≥ 1): (ids, segment ids)."""
    la = int(rng.integers(1, length - 3))
    lb = length - 3 - la
    words = rng.integers(1000, VOCAB, length - 3).tolist()
    return [CLS, *words[:la], SEP, *words[la:], SEP], [0] * (la + 2) + [1] * (lb + 1)


def make_batch(rng, pair_lengths: list[tuple[int, ...]], packed: bool) -> dict[str, np.ndarray]:
    """Rows of back-to-back pairs with the given lengths, padded to S: the records' unmasked features
    (``input_mask`` = pair number 1..k if packed, else Google's 0/1 for rows of one pair)."""
    rows = {"input_ids": [], "input_mask": [], "segment_ids": [], "next_sentence_labels": []}
    for lengths in pair_lengths:
        assert sum(lengths) <= S and (packed or len(lengths) == 1)
        ids, mask, seg = [], [], []
        for j, length in enumerate(lengths):
            t, g = pair_tokens(rng, length)
            ids += t
            seg += g
            mask += [j + 1] * length
        pad = S - len(ids)
        rows["input_ids"].append(ids + [0] * pad)
        rows["input_mask"].append(mask + [0] * pad)
        rows["segment_ids"].append(seg + [0] * pad)
        nsp = rng.integers(0, 2, len(lengths)).tolist()
        rows["next_sentence_labels"].append(nsp + [0] * (K - len(lengths)) if packed else nsp)
    return {k: np.asarray(v, np.int32) for k, v in rows.items()}


def random_lengths(rng, n: int, packed: bool) -> list[tuple[int, ...]]:
    """Pair lengths of n rows: 1..K pairs of 5..S/k tokens (packed) or one pair of 5..S (unpacked)."""
    out = []
    for _ in range(n):
        k = int(rng.integers(1, K + 1)) if packed else 1
        out.append(tuple(int(x) for x in rng.integers(5, S // k + 1, k)))
    return out


def google_num_to_predict(length: int, max_predictions: int = P, prob: float = PROB) -> int:
    """create_pretraining_data: min(max_predictions_per_seq, max(1, int(round(len(tokens) * prob))))."""
    return min(max_predictions, max(1, int(round(length * prob))))


def run(batch, seed=(1, 2), max_predictions=P, **kw) -> dict[str, np.ndarray]:
    seed = seed if tf.is_tensor(seed) else tf.constant(seed, tf.int64)
    out = dynamic_mask({k: tf.constant(v) for k, v in batch.items()}, seed, max_predictions, **{**ARGS, **kw})
    return {k: v.numpy() for k, v in out.items()}


def differing(x, y) -> float:
    """Fraction of the weighted prediction slots whose position differs between two outputs."""
    real = x["masked_lm_weights"] > 0
    return (x["masked_lm_positions"] != y["masked_lm_positions"])[real].mean()


def predictions(out, row):
    """(positions, original ids) of a row's weighted predictions."""
    real = out["masked_lm_weights"][row] > 0
    return out["masked_lm_positions"][row][real], out["masked_lm_ids"][row][real]


@pytest.fixture(scope="module")
def batch():
    """Packed rows (1..3 pairs, half-even lengths among them) and unpacked 0/1 rows with padding."""
    rng = np.random.default_rng(0)
    packed = make_batch(rng, HALF_LENGTHS + random_lengths(rng, 59, True), packed=True)
    unpacked = make_batch(rng, [(5,), (10,), (S,)] + random_lengths(rng, 61, False), packed=False)
    unpacked["next_sentence_labels"] = np.pad(unpacked["next_sentence_labels"], [(0, 0), (0, K - 1)])
    return {k: np.concatenate([packed[k], unpacked[k]]) for k in packed}


def check_google_rule(batch, out):
    """Per pair: Google's number of predictions, candidates only, original ids, the rest unchanged."""
    ids, mask = batch["input_ids"], batch["input_mask"]
    b = len(ids)
    assert out["input_ids"].shape == (b, S) and out["input_ids"].dtype == np.int32
    for key in ("masked_lm_positions", "masked_lm_ids"):
        assert out[key].shape == (b, P) and out[key].dtype == np.int32
    assert out["masked_lm_weights"].shape == (b, P) and out["masked_lm_weights"].dtype == np.float32
    for key in ("input_mask", "segment_ids", "next_sentence_labels"):
        np.testing.assert_array_equal(out[key], batch[key])
    for row in range(b):
        w = out["masked_lm_weights"][row]
        n = int(w.sum())
        np.testing.assert_array_equal(w, np.arange(P) < n)  # weights 1…1 0…0
        pos, orig = predictions(out, row)
        assert np.all(out["masked_lm_positions"][row][n:] == 0) and np.all(out["masked_lm_ids"][row][n:] == 0)
        assert np.all(np.diff(pos) > 0)  # ascending, no repeats
        assert np.all(mask[row, pos] > 0)  # not padding
        assert not np.isin(ids[row, pos], [CLS, SEP]).any()  # not [CLS]/[SEP]
        np.testing.assert_array_equal(orig, ids[row, pos])  # original tokens
        untouched = np.ones(S, bool)
        untouched[pos] = False
        np.testing.assert_array_equal(out["input_ids"][row, untouched], ids[row, untouched])
        pairs = [v for v in np.unique(mask[row]) if v > 0]
        n_cand = {v: int(((mask[row] == v) & ~np.isin(ids[row], [CLS, SEP])).sum()) for v in pairs}
        expected = {v: min(google_num_to_predict(int((mask[row] == v).sum())), n_cand[v]) for v in pairs}
        assert sum(expected.values()) <= P  # no truncation here
        assert {v: int((mask[row, pos] == v).sum()) for v in pairs} == expected


@pytest.mark.parametrize("seed", [(0, 0), (1, 2), (12345, 2**40 + 7)])
def test_google_rule_per_pair(batch, seed):
    check_google_rule(batch, run(batch, seed))


def test_half_even_counts(batch):
    out = run(batch)
    for row, lengths in enumerate(HALF_LENGTHS):
        pos, _ = predictions(out, row)
        counts = [int((batch["input_mask"][row, pos] == j + 1).sum()) for j in range(len(lengths))]
        assert counts == [{10: 2, 30: 4, 50: 8, 70: 10}[length] for length in lengths]


@pytest.mark.parametrize("prob", [0.15, 0.3, 0.7])
def test_count_rule_for_every_length(prob):
    # one pair of every length 5..S; 0.3 * 95 and 0.7 * 45 are x.5 in Python (float64) but not in float32
    rng = np.random.default_rng(6)
    rows = make_batch(rng, [(length,) for length in range(5, S + 1)], packed=False)
    out = run(rows, max_predictions=100, masked_lm_prob=prob)
    # all candidates (L - 3 of them) when there are fewer than num_to_predict (e.g. 4 for L = 5, prob = 0.7)
    np.testing.assert_array_equal(
        out["masked_lm_weights"].sum(axis=1),
        [min(google_num_to_predict(length, 100, prob), length - 3) for length in range(5, S + 1)],
    )


def test_choice_is_uniform_within_each_pair():
    # one row (pairs of 12, 40, 9 tokens) 4000 times: each candidate is chosen with probability n_j / c_j
    rng = np.random.default_rng(1)
    lengths = (12, 40, 9)
    one = make_batch(rng, [lengths], packed=True)
    out = run({k: np.repeat(v, 4000, axis=0) for k, v in one.items()}, seed=(5, 6))
    chosen = np.zeros((4000, S))
    rows, cols = np.nonzero(out["masked_lm_weights"] > 0)
    chosen[rows, out["masked_lm_positions"][rows, cols]] = 1
    freq = chosen.mean(axis=0)
    ids, mask = one["input_ids"][0], one["input_mask"][0]
    for j, length in enumerate(lengths):
        cand = (mask == j + 1) & ~np.isin(ids, [CLS, SEP])
        q = google_num_to_predict(length) / cand.sum()
        assert np.all(np.abs(freq[cand] - q) < 4 * np.sqrt(q * (1 - q) / 4000)), (j, freq[cand], q)
    assert np.all(freq[~((mask > 0) & ~np.isin(ids, [CLS, SEP]))] == 0)


def test_80_10_10_and_uniform_random_ids():
    rng = np.random.default_rng(2)
    big = make_batch(rng, random_lengths(rng, 4000, True), packed=True)
    out = run(big, seed=(9, 9))
    rows, cols = np.nonzero(out["masked_lm_weights"] > 0)
    pos = out["masked_lm_positions"][rows, cols]
    new, orig = out["input_ids"][rows, pos], out["masked_lm_ids"][rows, cols]
    n = len(new)
    assert n > 40000
    # a random id may also hit [MASK] or the original token (1/V each)
    for observed, prob in (((new == MASK).sum(), 0.8 + 0.1 / VOCAB), ((new == orig).sum(), 0.1 + 0.1 / VOCAB)):
        assert abs(observed - n * prob) < 4 * np.sqrt(n * prob * (1 - prob)), (observed, n * prob)
    replaced = new[(new != MASK) & (new != orig)]
    prob = 0.1 * (1 - 2 / VOCAB)
    assert abs(len(replaced) - n * prob) < 4 * np.sqrt(n * prob * (1 - prob))
    assert replaced.min() >= 0 and replaced.max() < VOCAB
    # uniform over [0, V): 10 equal bins, chi-square with 9 degrees of freedom below its 1 - 1e-4 quantile
    hist = np.bincount(replaced * 10 // VOCAB, minlength=10)
    expected = len(replaced) / 10
    assert ((hist - expected) ** 2 / expected).sum() < 33.72, hist


def test_more_than_p_keeps_the_first_p_in_position_order():
    # three pairs of 20 tokens want 3 predictions each: with P = 5 the first 5 (by position) of P = 9's
    rng = np.random.default_rng(3)
    rows = make_batch(rng, [(20, 20, 20)] * 50, packed=True)
    full, cut = run(rows, (4, 4), max_predictions=9), run(rows, (4, 4), max_predictions=5)
    assert np.all(full["masked_lm_weights"].sum(axis=1) == 9)
    np.testing.assert_array_equal(cut["masked_lm_weights"], np.ones((50, 5)))
    for key in ("masked_lm_positions", "masked_lm_ids"):
        np.testing.assert_array_equal(cut[key], full[key][:, :5])
    # tokens after the 5th prediction stay unmasked
    after = np.arange(S)[None, :] > cut["masked_lm_positions"][:, 4:5]
    np.testing.assert_array_equal(np.where(after, cut["input_ids"], 0), np.where(after, rows["input_ids"], 0))
    np.testing.assert_array_equal(np.where(after, 0, cut["input_ids"]), np.where(after, 0, full["input_ids"]))


def test_mask_seed():
    np.testing.assert_array_equal(mask_seed(7, 3, 5).numpy(), [7, 3 * 2**40 + 5])
    assert mask_seed(7, 0, tf.constant(5, tf.int64)).dtype == tf.int64
    with pytest.raises(ValueError):
        mask_seed(7, 2**23, 0)


def test_seed_determines_the_masks(batch):
    a, b = run(batch, mask_seed(11, 0, 3)), run(batch, mask_seed(11, 0, 3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    for other in (mask_seed(11, 1, 3), mask_seed(11, 0, 4), mask_seed(12, 0, 3)):
        c = run(batch, other)
        assert differing(a, c) > 0.5
        np.testing.assert_array_equal(c["masked_lm_weights"], a["masked_lm_weights"])  # counts are not random
    int32_seed = run(batch, tf.constant([11, 3], tf.int32))
    assert int32_seed["masked_lm_weights"].sum() == a["masked_lm_weights"].sum()


def test_in_dataset_map_with_enumerate(batch):
    def masked_batches(rank):
        ds = tf.data.Dataset.from_tensor_slices(batch).batch(32).enumerate()
        ds = ds.map(lambda i, f: dynamic_mask(f, mask_seed(11, rank, i), P, **ARGS))
        return [{k: v.numpy() for k, v in x.items()} for x in ds]

    epoch1, epoch2, rank1 = masked_batches(0), masked_batches(0), masked_batches(1)
    assert len(epoch1) == 4
    for i, (x, y, z) in enumerate(zip(epoch1, epoch2, rank1)):
        eager = run({k: v[32 * i : 32 * (i + 1)] for k, v in batch.items()}, mask_seed(11, 0, i))
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])  # resume / rerun repeats the masks
            np.testing.assert_array_equal(x[key], eager[key])  # graph == eager
        assert differing(x, z) > 0.5
    first = epoch1[0]["masked_lm_positions"]
    assert (epoch1[1]["masked_lm_positions"] != first).any()  # not one mask for every batch


def test_compiles_with_xla(batch):
    # XLA's random streams differ from TF's kernels (other masks for the seed), but the rule and determinism hold
    fn = tf.function(lambda f, seed: dynamic_mask(f, seed, P, **ARGS), jit_compile=True)
    features = {k: tf.constant(v) for k, v in batch.items()}
    xla, again = ({k: v.numpy() for k, v in fn(features, mask_seed(11, 0, 2)).items()} for _ in range(2))
    check_google_rule(batch, xla)
    for key in xla:
        np.testing.assert_array_equal(xla[key], again[key])
    assert differing(xla, {k: v.numpy() for k, v in fn(features, mask_seed(11, 0, 3)).items()}) > 0.5


def test_counts_equal_static_build_examples():
    # unpacked rows from bertlib's static masking, unmasked again: same number of predictions per row
    rng = np.random.default_rng(4)
    tokens = rng.integers(1000, VOCAB, 100_000).astype(np.int32)
    n = 400
    la = rng.integers(1, S - 4, n)
    lb = np.maximum(1, (rng.random(n) * (S - 3 - la)).astype(np.int64))
    la[:4], lb[:4] = [1, 3, 13, 33], [1, 4, 14, 34]  # lengths 5, 10, 30, 70
    a0 = rng.integers(0, len(tokens) - S, n)
    b0 = rng.integers(0, len(tokens) - S, n)
    instances = np.stack([a0, a0 + la, b0, b0 + lb, rng.integers(0, 2, n)], axis=1)
    ids = pt.SpecialIds(CLS, SEP, MASK, VOCAB, np.zeros(VOCAB, bool))
    static = pt.build_examples(tokens, instances, pt.MaskSettings(S, P, PROB, False, ids), np.random.default_rng(5))
    unmasked = static["input_ids"].copy()
    rows, cols = np.nonzero(static["masked_lm_weights"] > 0)
    unmasked[rows, static["masked_lm_positions"][rows, cols]] = static["masked_lm_ids"][rows, cols]
    features = {
        "input_ids": unmasked,
        "input_mask": static["input_mask"],
        "segment_ids": static["segment_ids"],
        "next_sentence_labels": static["next_sentence_labels"],
    }
    out = run({k: v.astype(np.int32) for k, v in features.items()}, mask_seed(3, 0, 0))
    np.testing.assert_array_equal(out["masked_lm_weights"].sum(axis=1), static["masked_lm_weights"].sum(axis=1))
    lengths = static["input_mask"].sum(axis=1)
    np.testing.assert_array_equal(
        out["masked_lm_weights"].sum(axis=1), [google_num_to_predict(int(x)) for x in lengths]
    )
    np.testing.assert_array_equal(np.unique(lengths[:4]), [5, 10, 30, 70])
