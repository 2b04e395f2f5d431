"""Every shard is the same mix, as Google's create_pretraining_data makes them (all instances shuffled,
then written round-robin): per-shard statistics counted from the records with TensorFlow's own
``tf.train.Example`` parser (not bertlib's reader), checked against the manifest and against the noise
of a random split, on a corpus laid out to skew contiguous or per-document shards."""

import numpy as np
import pytest

from bertlib.core.config import build_config
from bertlib.data.prepare import prepare
from bertlib.data.pretraining import deal, dealt_slice
from bertlib.data.records import read_manifest


def test_deal_is_round_robin():
    # row j of group g goes to shard (j + g) % n, written out with a loop; every shard's rows are where
    # dealt_slice says, in their order
    for rows, n in ((0, 3), (1, 4), (7, 3), (10, 5), (23, 4), (64, 8)):
        for g in range(n):
            instances = np.arange(rows * 5).reshape(rows, 5)
            dealt = deal(instances, g, n)
            assert dealt.shape == instances.shape
            for k in range(n):
                expected = [instances[j] for j in range(rows) if (j + g) % n == k]
                got = dealt[dealt_slice(rows, g, k, n)]
                assert np.array_equal(got.reshape(-1, 5), np.array(expected).reshape(-1, 5)), (rows, n, g, k)


def skewed_corpus(sentences_txt, out):
    """One very long document (4 real articles back to back, ~950 sentences) and ~420 documents of 1-3
    sentences (one-sentence chunks always get a random B and are short: much padding), in Google's
    text format (one sentence per line, a blank line between documents)."""
    docs, doc = [], []
    for line in sentences_txt.read_text(encoding="utf-8").splitlines():
        if line:
            doc.append(line)
        elif doc:
            docs.append(doc)
            doc = []
    long_doc = [s for d in docs[:4] for s in d]
    rest = [s for d in docs[4:6] for s in d]
    short, i = [], 0
    while i < len(rest):
        size = 1 + len(short) % 3
        short.append(rest[i : i + size])
        i += size
    out.write_text("\n\n".join("\n".join(d) for d in [long_doc, *short]) + "\n", encoding="utf-8")
    return len(long_doc), len(short)


def shard_counts(path, max_seq_length):
    """(examples, random-next labels, per-example padding fractions [N]) of one TFRecord file."""
    import tensorflow as tf

    labels, real = [], []
    for raw in tf.data.TFRecordDataset(str(path)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        assert len(feature["input_mask"].int64_list.value) == max_seq_length
        labels.append(feature["next_sentence_labels"].int64_list.value[0])
        real.append(sum(feature["input_mask"].int64_list.value))
    return len(labels), int(sum(labels)), 1 - np.asarray(real) / max_seq_length


def test_shards_are_the_same_mix_and_the_manifest_says_so(prepared_dataset, bert_vocab, tmp_path):
    num_shards = 3
    n_long, n_short = skewed_corpus(prepared_dataset / ".corpus" / "sentences.txt", tmp_path / "skewed.txt")
    assert n_long > 900 and n_short > 400
    seq = 64
    prepare(
        build_config(
            "prepare-data",
            {
                "sources": [str(tmp_path / "skewed.txt")],
                "source_format": "text",
                "output_dir": str(tmp_path / "out"),
                "vocab_file": str(bert_vocab),
                "num_shards": num_shards,
                "validation_shards": 0,
                "dupe_factor": 2,
                "num_workers": 1,
                "seed": 3,
                "phases": [{"name": "p64", "max_seq_length": seq, "max_predictions_per_seq": 10}],
            },
        ),
        progress=False,
    )
    phase = tmp_path / "out" / "p64"
    manifest = read_manifest(phase)
    shards = manifest["shards"]["train"]
    assert len(shards) == num_shards
    counted = [shard_counts(phase / s["file"], seq) for s in shards]

    # (a) the manifest's per-shard numbers are what the records hold
    for s, (n, random_next, padding) in zip(shards, counted):
        assert (s["examples"], s["random_next"]) == (n, random_next)
        assert s["random_next_fraction"] == pytest.approx(random_next / n, abs=1e-12)
        assert s["padding_fraction"] == pytest.approx(padding.mean(), abs=1e-12)

    # (b) balanced. Each shard must look like a random subset of all examples: its random-next
    # fraction within 4 binomial standard deviations of the pooled one, its mean padding within 4
    # standard errors (pooled per-example spread / sqrt(n)); counts equal up to the round-robin
    # remainders (at most one example per shard and document group).
    sizes = np.array([c[0] for c in counted])
    labels = np.array([c[1] for c in counted])
    padding = np.concatenate([c[2] for c in counted])
    p_all, pad_all, pad_sd = labels.sum() / sizes.sum(), padding.mean(), padding.std()
    assert sizes.sum() > 2000 and 0.6 < p_all < 0.95 and pad_sd > 0.1  # the corpus is a mix worth balancing
    assert sizes.max() - sizes.min() <= num_shards, sizes
    for n, random_next, pad in counted:
        assert abs(random_next / n - p_all) <= 4 * np.sqrt(p_all * (1 - p_all) / n), (random_next / n, p_all)
        assert abs(pad.mean() - pad_all) <= 4 * pad_sd / np.sqrt(n), (pad.mean(), pad_all)
    # the instance files, only needed while shards are made, are gone
    assert not list((phase / ".progress").glob("*.npy"))
