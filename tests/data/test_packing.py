"""Sequence packing (Krell et al. 2021, SPFHP) and unmasked records, checked against independent
references: plain-Python first-fit-decreasing packing, the pairs' tokens taken straight from the
corpus arrays, Google's per-pair masking rule, TensorFlow's own record parser with a spec written
here, and the same pairs prepared unpacked."""

import itertools
import json
import math
import shutil

import numpy as np
import pytest

import bertlib.data.pretraining as pt
from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError, DataError
from bertlib.core.vocab import read_vocab
from bertlib.data.packing import pack, spfhp
from bertlib.data.prepare import prepare
from bertlib.data.records import (
    check_example_layout,
    dataset_layout,
    encode_examples,
    first_example,
    read_manifest,
    read_records,
    validate_dataset,
    write_tfrecord_file,
)

S, P, K, PROB = 128, 20, 3, 0.15


def ffd_rows(lengths, s, k) -> int:
    """Rows used by first-fit decreasing (at most k items per row): the baseline packer."""
    rows = []  # [room, items]
    for length in sorted(lengths, reverse=True):
        for row in rows:
            if row[0] >= length and row[1] < k:
                row[0] -= length
                row[1] += 1
                break
        else:
            rows.append([s - length, 1])
    return len(rows)


def check_rows(rows, lengths, s, k):
    """Every pair exactly once, pairs first then -1, no row over s tokens or k pairs."""
    assert rows.shape[1] == k
    used = rows[rows >= 0]
    assert sorted(used.tolist()) == list(range(len(lengths)))
    present = rows >= 0
    assert (present[:, 1:] <= present[:, :-1]).all()  # pairs fill a prefix of the row
    assert present[:, 0].all()
    assert (np.where(present, np.asarray(lengths)[rows], 0).sum(axis=1) <= s).all()


@pytest.fixture(scope="module")
def prepared_lengths(prepared_dataset):
    """Real pair lengths: tokens per example of the session dataset's phase-2 records (S=128)."""
    m = read_manifest(prepared_dataset / "phase2")
    return np.concatenate(
        [
            read_records(prepared_dataset / "phase2" / sh["file"], 128, 20)["input_mask"].sum(axis=1)
            for sh in m["shards"]["train"]
        ]
    )


@pytest.mark.parametrize("dist", ["real", "uniform", "google_like", "short"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_spfhp_uses_every_pair_once_and_packs_as_well_as_ffd(dist, k, prepared_lengths):
    rng = np.random.default_rng(len(dist) * 10 + k)
    s = S
    lengths = {
        "real": prepared_lengths,
        "uniform": rng.integers(5, s + 1, 3000),
        # Google's: most chunks reach the target length, short_seq_prob / document ends give the rest
        "google_like": np.where(rng.random(3000) < 0.7, s, rng.integers(5, s, 3000)),
        "short": rng.integers(5, 40, 3000),
    }[dist]
    rows = pack(lengths, s, k, np.random.default_rng(0))
    check_rows(rows, lengths, s, k)
    n_rows = len(rows)
    # never fewer rows than any packer needs, and about as few as first-fit decreasing: within 0.5% on
    # length mixes like BERT's; within 3% when any k pairs fit in a row ("short": SPFHP never puts two
    # pairs of one length together while they open packs, so up to one bin's count stays alone)
    assert n_rows >= max(math.ceil(lengths.sum() / s), math.ceil(len(lengths) / k))
    assert n_rows <= math.ceil(ffd_rows(lengths.tolist(), s, k) * (1.03 if dist == "short" else 1.005))
    if k == 1:
        assert n_rows == len(lengths)
    # deterministic given lengths and rng; rows shuffled (not in pack order)
    assert np.array_equal(rows, pack(lengths, s, k, np.random.default_rng(0)))
    again = pack(lengths, s, k, np.random.default_rng(1))
    assert not np.array_equal(rows, again) and sorted(map(tuple, rows)) == sorted(map(tuple, again))


def test_spfhp_strategies_and_rejects_bad_lengths():
    # three of 64, then three of 60 go into the three open packs of 64: 3 × (64 + 60)
    hist = np.zeros(S + 1, np.int64)
    hist[60], hist[64] = 3, 3
    assert spfhp(hist, S, 2) == [(3, [64, 60])]
    # shortest pack first: 20 goes into the pack with the most room (90 + 20), not the fullest (100)
    hist = np.zeros(S + 1, np.int64)
    hist[[100, 90, 20]] = 1
    assert sorted(spfhp(hist, S, 3)) == [(1, [90, 20]), (1, [100])]
    with pytest.raises(ValueError, match="pair lengths must be in 1..128"):
        pack(np.array([5, 129]), S, K, np.random.default_rng(0))


@pytest.fixture(scope="module")
def vocab(bert_vocab):
    return read_vocab(bert_vocab)


@pytest.fixture(scope="module")
def ids(vocab):
    return pt.SpecialIds.from_vocab(vocab)


@pytest.fixture(scope="module")
def corpus(prepared_dataset):
    return pt.TokenizedCorpus.load(prepared_dataset / ".corpus")


@pytest.fixture(scope="module")
def instances(corpus):
    """Real instances of all 30 documents, S=128, many short ones (short_seq_prob 0.5), dupe 4."""
    docs = np.arange(corpus.num_documents)
    return pt.group_instances(corpus, docs, docs, max_seq_length=S, dupe_factor=4, short_seq_prob=0.5, seed=3)


def reference_pair(corpus, ids, inst):
    """``[CLS] A [SEP] B [SEP]`` token ids and segment ids of one instance, from the corpus arrays."""
    a0, a1, b0, b1, _ = (int(x) for x in inst)
    tok = np.asarray(corpus.tokens)
    tokens = [ids.cls, *tok[a0:a1], ids.sep, *tok[b0:b1], ids.sep]
    return np.array(tokens), np.array([0] * (a1 - a0 + 2) + [1] * (b1 - b0 + 1))


def tf_parse(path, s, p, k, masked):
    """Parse a shard with TensorFlow and a spec written here (not records.feature_spec)."""
    import tensorflow as tf

    spec = {
        "input_ids": tf.io.FixedLenFeature([s], tf.int64),
        "input_mask": tf.io.FixedLenFeature([s], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([s], tf.int64),
        "next_sentence_labels": tf.io.FixedLenFeature([k], tf.int64),
    }
    if masked:
        spec.update(
            {
                "masked_lm_positions": tf.io.FixedLenFeature([p], tf.int64),
                "masked_lm_ids": tf.io.FixedLenFeature([p], tf.int64),
                "masked_lm_weights": tf.io.FixedLenFeature([p], tf.float32),
            }
        )
    raw = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    return {key: v.numpy() for key, v in tf.io.parse_example(raw, spec).items()}


@pytest.fixture(scope="module")
def packed(tmp_path_factory, corpus, ids, instances):
    """The instances packed (K=3), masked, written and read back by TensorFlow; with the rows."""
    lengths = instances[:, 1] - instances[:, 0] + instances[:, 3] - instances[:, 2] + 3
    rows = pack(lengths, S, K, np.random.default_rng(5))
    feats = pt.build_packed_examples(
        corpus.tokens, instances, rows, pt.MaskSettings(S, P, PROB, False, ids), np.random.default_rng(6)
    )
    path = tmp_path_factory.mktemp("packed") / "packed.tfrecord"
    write_tfrecord_file(path, encode_examples(feats))
    return rows, tf_parse(path, S, P, K, masked=True), path


def test_packed_records_decode_into_their_pairs(packed, corpus, ids, instances):
    rows, r, _ = packed
    assert len(rows) < 0.8 * len(instances)  # packing saves rows on this data
    counts = []
    for row in range(len(rows)):
        mask, ids_, seg = r["input_mask"][row], r["input_ids"][row], r["segment_ids"][row]
        positions = r["masked_lm_positions"][row][r["masked_lm_weights"][row] > 0]
        assert (np.diff(positions) > 0).all()  # ascending
        assert (r["masked_lm_weights"][row][len(positions) :] == 0).all()
        assert (r["masked_lm_positions"][row][len(positions) :] == 0).all()
        original = ids_.copy()
        original[positions] = r["masked_lm_ids"][row][: len(positions)]
        start = 0
        pairs = [int(x) for x in rows[row] if x >= 0]
        for j, pair in enumerate(pairs):
            tokens, segments = reference_pair(corpus, ids, instances[pair])
            span = np.arange(start, start + len(tokens))
            assert (mask[span] == j + 1).all()
            assert np.array_equal(original[span], tokens)
            assert np.array_equal(seg[span], segments)
            assert r["next_sentence_labels"][row, j] == instances[pair, 4]
            in_pair = positions[(positions >= start) & (positions < span[-1] + 1)]
            # Google's rule per pair; never [CLS] or [SEP]
            assert len(in_pair) == min(P, max(1, round(len(tokens) * PROB)))
            assert not np.isin(tokens[in_pair - start], [ids.cls, ids.sep]).any()
            counts.append(len(in_pair))
            start += len(tokens)
        assert (mask[start:] == 0).all() and (ids_[start:] == 0).all() and (seg[start:] == 0).all()
        assert (r["next_sentence_labels"][row, len(pairs) :] == 0).all()
    assert sum(counts) == r["masked_lm_weights"].sum()


def test_packed_masking_is_80_10_10(packed, ids, vocab):
    _, r, _ = packed
    rows_, cols = np.nonzero(r["masked_lm_weights"] > 0)
    at = r["input_ids"][rows_, r["masked_lm_positions"][rows_, cols]]
    orig = r["masked_lm_ids"][rows_, cols]
    n = len(at)
    v = len(vocab)
    for observed, p in (
        ((at == ids.mask).sum(), 0.8 + 0.1 / v),
        (((at == orig) & (at != ids.mask)).sum(), 0.1 + 0.1 / v),
        (((at != orig) & (at != ids.mask)).sum(), 0.1 * (1 - 2 / v)),
    ):
        assert abs(observed - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), (observed, n, p)


@pytest.mark.parametrize("whole_word_masking", [False, True])
def test_packed_rows_equal_the_pairs_built_unpacked(whole_word_masking, corpus, ids, instances):
    # the same pairs in the same order and random stream, built one per record: the packed row is
    # the pairs' records with padding cut, laid back to back, masked positions shifted
    lengths = instances[:, 1] - instances[:, 0] + instances[:, 3] - instances[:, 2] + 3
    rows = pack(lengths, S, K, np.random.default_rng(5))[:300]
    settings = pt.MaskSettings(S, P, PROB, whole_word_masking, ids)
    r = pt.build_packed_examples(corpus.tokens, instances, rows, settings, np.random.default_rng(6))
    present = rows >= 0
    single = pt.build_examples(corpus.tokens, instances[rows[present]], settings, np.random.default_rng(6))
    m = 0
    for row in range(len(rows)):
        start, pos, ids_of = 0, [], []
        for _ in range(present[row].sum()):
            length = single["input_mask"][m].sum()
            assert np.array_equal(r["input_ids"][row, start : start + length], single["input_ids"][m, :length])
            w = single["masked_lm_weights"][m] > 0
            pos += (single["masked_lm_positions"][m][w] + start).tolist()
            ids_of += single["masked_lm_ids"][m][w].tolist()
            start += length
            m += 1
        assert r["masked_lm_positions"][row, : len(pos)].tolist() == pos
        assert r["masked_lm_ids"][row, : len(pos)].tolist() == ids_of
        assert r["masked_lm_weights"][row].sum() == len(pos)


def test_unmasked_records(tmp_path, corpus, ids, instances):
    lengths = instances[:, 1] - instances[:, 0] + instances[:, 3] - instances[:, 2] + 3
    rows = pack(lengths, S, K, np.random.default_rng(5))[:50]
    unmasked = pt.MaskSettings(S, P, PROB, False, ids, masked=False)
    for k, feats in (
        (K, pt.build_packed_examples(corpus.tokens, instances, rows, unmasked, np.random.default_rng(6))),
        (1, pt.build_examples(corpus.tokens, instances[:50], unmasked, np.random.default_rng(6))),
    ):
        assert sorted(feats) == ["input_ids", "input_mask", "next_sentence_labels", "segment_ids"]
        path = tmp_path / f"k{k}.tfrecord"
        write_tfrecord_file(path, encode_examples(feats))
        example = first_example(path)
        assert "masked_lm_positions" not in example.features.feature
        check_example_layout(example, "x", S, P, max_pairs_per_row=k, masked=False)
        with pytest.raises(DataError, match=r"^x: feature 'masked_lm_positions' is missing \(Google's layout"):
            check_example_layout(example, "x", S, P, max_pairs_per_row=k)
        r = tf_parse(path, S, P, k, masked=False)
        row_pairs = rows if k > 1 else np.arange(50)[:, None]
        for row in range(len(row_pairs)):
            tokens = np.concatenate([reference_pair(corpus, ids, instances[i])[0] for i in row_pairs[row] if i >= 0])
            assert np.array_equal(r["input_ids"][row, : len(tokens)], tokens)  # the original tokens
            assert (r["input_ids"][row, len(tokens) :] == 0).all()


def test_check_example_layout_and_dataset_layout(packed):
    _, _, path = packed
    example = first_example(path)
    check_example_layout(example, "p", S, P, max_pairs_per_row=K)
    with pytest.raises(DataError, match=r"^p: feature 'next_sentence_labels' has length 3, expected 1 "):
        check_example_layout(example, "p", S, P)
    with pytest.raises(
        DataError,
        match=r"^p: feature 'masked_lm_ids' is not in unmasked records "
        r"\(unmasked layout \(dynamic masking\): input_ids, input_mask, ",
    ):
        check_example_layout(example, "p", S, P, max_pairs_per_row=K, masked=False)

    def layout(manifest):
        return {k: dataset_layout(manifest)[k] for k in ("max_pairs_per_row", "masked")}

    assert layout({}) == {"max_pairs_per_row": 1, "masked": True}  # manifests from before packing
    assert layout({"packing": None, "masking": "static"}) == {"max_pairs_per_row": 1, "masked": True}
    assert layout({"packing": {"max_pairs_per_row": 4}, "masking": "dynamic"}) == {
        "max_pairs_per_row": 4,
        "masked": False,
    }
    with pytest.raises(DataError, match=r"^m.json: masking 'sometimes' is not 'static' or 'dynamic'"):
        dataset_layout({"masking": "sometimes"}, "m.json")


# -- prepare-data end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(prepared_dataset, bert_vocab, tmp_path_factory):
    """prepare-data on 12 real articles, three ways: packed (K=3), packed + dynamic masking, and
    unpacked + dynamic masking (the same pairs one per record, unmasked)."""
    root = tmp_path_factory.mktemp("packruns")
    text = root / "wiki.txt"
    shutil.copyfile(prepared_dataset / ".corpus" / "sentences.txt", text)
    out = {}
    for name, kw in (
        ("packed", {"pack_sequences": True}),
        ("packed_dynamic", {"pack_sequences": True, "dynamic_masking": True}),
        ("dynamic", {"dynamic_masking": True}),
    ):
        values = {
            "sources": [str(text)],
            "output_dir": str(root / name),
            "vocab_file": str(bert_vocab),
            "max_documents": 12,
            "num_shards": 2,
            "validation_shards": 1,
            "validation_fraction": 0.1,
            "dupe_factor": 2,
            "short_seq_prob": 0.3,
            "num_workers": 1,
            "seed": 7,
            "max_pairs_per_row": K,
            "phases": [{"name": "p", "max_seq_length": S, "max_predictions_per_seq": P}],
            **kw,
        }
        out[name] = (prepare(build_config("prepare-data", values), progress=False), root / name / "p")
    return out


def read_all(phase_dir):
    m = read_manifest(phase_dir)
    return m, {
        sh["file"]: tf_parse(
            phase_dir / sh["file"], S, P, dataset_layout(m)["max_pairs_per_row"], dataset_layout(m)["masked"]
        )
        for split in m["shards"]
        for sh in m["shards"][split]
    }


def pair_token_tuples(r):
    """Every pair of a shard as (tokens, segment ids, next sentence label), via input_mask pair numbers."""
    out = []
    for row in range(len(r["input_ids"])):
        for j in range(1, r["input_mask"][row].max() + 1):
            at = r["input_mask"][row] == j
            out.append(
                (
                    tuple(r["input_ids"][row][at]),
                    tuple(r["segment_ids"][row][at]),
                    int(r["next_sentence_labels"][row, j - 1]),
                )
            )
    return sorted(out)


def test_prepare_packed_manifest_matches_records(runs):
    summary, d = runs["packed"]
    m, recs = read_all(d)
    assert m["masking"] == "static" and m["packing"]["algorithm"] == "spfhp"
    assert m["packing"]["max_pairs_per_row"] == K and summary["phases"]["p"]["packing"] == m["packing"]
    validate_dataset(d, S, P)
    rows = sum(len(r["input_ids"]) for r in recs.values())
    real = sum(int((r["input_mask"] > 0).sum()) for r in recs.values())
    pairs = sum(int(r["input_mask"].max(axis=1).sum()) for r in recs.values())
    assert m["packing"]["rows"] == rows == m["counts"]["examples"]
    assert m["packing"]["pairs"] == pairs == m["counts"]["pairs"] > rows
    assert m["packing"]["efficiency"] == pytest.approx(real / (rows * S), abs=1e-12)
    for split in m["shards"]:
        for sh in m["shards"][split]:
            r = recs[sh["file"]]
            assert sh["examples"] == len(r["input_ids"]) and sh["pairs"] == r["input_mask"].max(axis=1).sum()
            assert sh["real_tokens"] == (r["input_mask"] > 0).sum()
            assert sh["random_next"] == r["next_sentence_labels"].sum()
            assert sh["masked_tokens"] == r["masked_lm_weights"].sum()
            assert sh["random_next_fraction"] == pytest.approx(r["next_sentence_labels"].sum() / sh["pairs"])
    # the same pairs as unpacked: per shard the same multiset of pair lengths and labels
    _, unpacked = read_all(runs["dynamic"][1])
    for file, r in recs.items():
        u = unpacked[file]
        lengths = sorted(
            (int((r["input_mask"][i] == j).sum()), int(r["next_sentence_labels"][i, j - 1]))
            for i in range(len(r["input_mask"]))
            for j in range(1, r["input_mask"][i].max() + 1)
        )
        assert lengths == sorted(zip(u["input_mask"].sum(axis=1).tolist(), u["next_sentence_labels"][:, 0].tolist()))


def test_prepare_dynamic_masking_stores_the_pairs_unmasked(runs, ids):
    m_u, unpacked = read_all(runs["dynamic"][1])
    m_p, packed = read_all(runs["packed_dynamic"][1])
    assert m_u["masking"] == m_p["masking"] == "dynamic" and m_u["packing"] is None
    assert m_u["counts"]["masked_tokens"] == 0
    validate_dataset(runs["dynamic"][1], S, P)
    validate_dataset(runs["packed_dynamic"][1], S, P)
    for file, u in unpacked.items():
        assert "masked_lm_positions" not in u and not (u["input_ids"] == ids.mask).any()
        assert pair_token_tuples(packed[file]) == pair_token_tuples(u)  # same pairs, unmasked, packed or not
    # a manifest that claims another layout than the records have is refused, naming the feature
    d = runs["dynamic"][1]
    saved = (d / "manifest.json").read_text()
    try:
        (d / "manifest.json").write_text(json.dumps({**m_u, "masking": "static"}))
        with pytest.raises(DataError, match=r"feature 'masked_lm_positions' is missing"):
            validate_dataset(d)
        (d / "manifest.json").write_text(json.dumps({**m_u, "packing": {"max_pairs_per_row": 3}}))
        with pytest.raises(DataError, match=r"feature 'next_sentence_labels' has length 1, expected 3"):
            validate_dataset(d)
    finally:
        (d / "manifest.json").write_text(saved)


def test_packing_settings_are_part_of_the_phase_settings(runs, tmp_path):
    _, d = runs["packed"]
    settings = read_manifest(d)["settings"]
    assert settings["pack_sequences"] is True and settings["max_pairs_per_row"] == K
    assert "dynamic_masking" not in settings
    # an existing phase folder made packed is refused for unpacked data
    values = {
        **{
            k: settings[k]
            for k in (
                "sources",
                "max_documents",
                "num_shards",
                "validation_shards",
                "validation_fraction",
                "dupe_factor",
                "short_seq_prob",
                "seed",
            )
        },
        "output_dir": str(d.parent),
        "vocab_file": str(d / "vocab.txt"),
        "num_workers": 1,
        "phases": [{"name": "p", "max_seq_length": S, "max_predictions_per_seq": P}],
    }
    with pytest.raises(ConfigError, match=r"was prepared with other settings \(pack_sequences: True → None"):
        prepare(build_config("prepare-data", values), progress=False)


def test_config_validation_lines():
    base = {
        "sources": ["x"],
        "output_dir": "y",
        "phases": [{"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 19}],
    }
    with pytest.raises(
        ConfigError,
        match=r"^params: phases.phase1: pack_sequences "
        r"with max_pairs_per_row=3 needs max_predictions_per_seq >= 20 ",
    ):
        build_config("prepare-data", {**base, "pack_sequences": True})
    build_config("prepare-data", {**base, "pack_sequences": False})
    with pytest.raises(ConfigError, match=r"dynamic_masking draws token-level masks only"):
        build_config("prepare-data", {**base, "dynamic_masking": True, "whole_word_masking": True})
    cfg = build_config(
        "prepare-data",
        {
            **base,
            "phases": [{"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 20}],
            "pack_sequences": True,
        },
    )
    assert cfg.max_pairs_per_row == 3 and not cfg.dynamic_masking


def test_the_config_bound_covers_every_packed_row():
    # brute force: the most predictions any row of pairs (each >= 5 tokens) can need under Google's rule
    for s, k in ((128, 3), (64, 4), (256, 2)):
        need = math.floor(PROB * s + k / 2 + 1e-9)
        worst = 0
        for n in range(1, k + 1):
            for combo in itertools.combinations_with_replacement(range(5, s + 1), n):
                if sum(combo) <= s:
                    worst = max(worst, sum(max(1, round(length * PROB)) for length in combo))
        assert worst <= need, (s, k, worst, need)
        if (s, k) == (128, 3):
            assert worst == need == 20


def test_summary_of_packed_data(runs):
    import matplotlib

    matplotlib.use("Agg")
    from bertlib.data.summary import counts_table, example_lengths, length_figure, shard_table

    _, d = runs["packed"]
    m, recs = read_all(d)
    table = counts_table(d.parent)
    for split, shards in m["shards"].items():
        rs = [recs[sh["file"]] for sh in shards]
        rows = sum(len(r["input_mask"]) for r in rs)
        pairs = sum(int(r["input_mask"].max(axis=1).sum()) for r in rs)
        real = sum(int((r["input_mask"] > 0).sum()) for r in rs)
        row = table.loc[("p", split)]
        assert row["examples"] == rows and row["pairs"] == pairs and row["max_pairs_per_row"] == K
        assert row["pairs_per_row"] == round(pairs / rows, 3) and row["efficiency"] == round(real / (rows * S), 4)
    shards = shard_table(d.parent)
    for (_, _, file), row in shards.iterrows():
        r = recs[file]
        assert row["pairs_per_row"] == round(r["input_mask"].max(axis=1).mean(), 3)
        assert row["padding"] == round(1 - (r["input_mask"] > 0).mean(), 3)
    # tokens per pair: the same lengths as the same pairs prepared one per record
    lengths = example_lengths(d)
    assert sorted(lengths) == sorted(example_lengths(runs["dynamic"][1]))
    train = [recs[sh["file"]] for sh in m["shards"]["train"]]
    rows = sum(len(r["input_mask"]) for r in train)
    padding = 1 - sum(int((r["input_mask"] > 0).sum()) for r in train) / (rows * S)
    title = length_figure(d.parent).get_axes()[0].get_title()
    assert title == f"p: {len(lengths)} pairs in {rows} train rows, padding {padding:.1%}"
