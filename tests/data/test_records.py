"""The TensorFlow-free record writer, checked by TensorFlow's own parser."""

import numpy as np

from bertlib.core.files import sha256_file
from bertlib.data.records import encode_examples, feature_spec, read_records, write_tfrecord_file


def test_encoded_records_parse_identically_with_tensorflow(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    n, s, p = 37, 48, 7
    feats = {
        "input_ids": rng.integers(0, 30522, (n, s)),
        "input_mask": rng.integers(0, 2, (n, s)),
        "segment_ids": rng.integers(0, 2, (n, s)),
        "masked_lm_positions": rng.integers(0, s, (n, p)),
        "masked_lm_ids": rng.integers(0, 2**40, (n, p)),
        "masked_lm_weights": rng.random((n, p)).astype(np.float32),
        "next_sentence_labels": rng.integers(0, 2, (n, 1)),
    }
    feats["masked_lm_ids"][0, :3] = [-1, 2**63 - 1, 0]  # negative and extreme int64 values
    path = tmp_path / "x.tfrecord"
    sha = write_tfrecord_file(path, encode_examples(feats))
    assert sha == sha256_file(path) and not list(tmp_path.glob(".*tmp*"))
    # TFRecordDataset checks the framing CRCs; parse_example the protobuf
    raw = list(tf.data.TFRecordDataset(str(path)).batch(100))[0]
    parsed = tf.io.parse_example(raw, feature_spec(s, p))
    for k, v in feats.items():
        assert np.array_equal(parsed[k].numpy(), v), k
    one = tf.train.Example.FromString(encode_examples({k: v[5:6] for k, v in feats.items()})[0])
    assert list(one.features.feature["input_ids"].int64_list.value) == feats["input_ids"][5].tolist()
    assert np.allclose(one.features.feature["masked_lm_weights"].float_list.value, feats["masked_lm_weights"][5])
    back = read_records(path, s, p, limit=4)
    assert back["input_ids"].shape == (4, s) and back["input_ids"].dtype == np.int32


def test_packed_and_unmasked_layouts_parse_with_tensorflow(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    n, s, p, k = 9, 32, 5, 3
    feats = {
        "input_ids": rng.integers(0, 30522, (n, s)),
        "input_mask": rng.integers(0, k + 1, (n, s)),
        "segment_ids": rng.integers(0, 2, (n, s)),
        "next_sentence_labels": rng.integers(0, 2, (n, k)),
    }
    path = tmp_path / "unmasked.tfrecord"
    write_tfrecord_file(path, encode_examples(feats))
    raw = list(tf.data.TFRecordDataset(str(path)).batch(100))[0]
    spec = {name: tf.io.FixedLenFeature([k if name == "next_sentence_labels" else s], tf.int64) for name in feats}
    parsed = tf.io.parse_example(raw, spec)  # TF's parser with a spec written here
    for name, v in feats.items():
        assert np.array_equal(parsed[name].numpy(), v), name
    assert set(feature_spec(s, p, max_pairs_per_row=k, masked=False)) == set(feats)
    back = read_records(path, s, p, max_pairs_per_row=k, masked=False)
    assert back["next_sentence_labels"].shape == (n, k) and back["input_mask"].dtype == np.int32
    assert np.array_equal(back["input_mask"], feats["input_mask"])
