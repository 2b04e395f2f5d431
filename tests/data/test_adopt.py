"""``bertlib adopt-data`` on records written the way Google's ``create_pretraining_data.py`` writes them
(``tf.train.Example`` + ``tf.io.TFRecordWriter``, in this file: independent of bertlib's own writer),
in NVIDIA's ``training/`` + ``test/`` layout; the expected manifest is counted from the arrays the test
generated, and ``bertlib pretrain`` then trains on the folder."""

import collections
import hashlib
import json
import re

import numpy as np
import pytest
import yaml

from bertlib.cli import main as cli

S, P, V = 16, 3, 64  # max_seq_length, max_predictions_per_seq, vocab size
CLS, SEP, MASK = 2, 3, 4


def write_vocab(path):
    path.write_text(
        "".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(V - 5)])
    )
    return path


def google_instances(n: int, seed: int, s: int = S, p: int = P) -> list[dict]:
    """``n`` padded examples as Google's ``write_instance_to_example_files`` builds them (lists of ints)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(8, s + 1))
        a = int(rng.integers(1, length - 3))
        tokens = [CLS] + rng.integers(5, V, a).tolist() + [SEP] + rng.integers(5, V, length - a - 3).tolist() + [SEP]
        segment = [0] * (a + 2) + [1] * (length - a - 2)
        k = int(rng.integers(1, p + 1))
        positions = sorted(rng.choice([i for i in range(1, length) if tokens[i] not in (CLS, SEP)], k, replace=False))
        labels = [tokens[i] for i in positions]
        for i in positions:
            tokens[i] = MASK
        pad = s - length
        out.append(
            {
                "input_ids": tokens + [0] * pad,
                "input_mask": [1] * length + [0] * pad,
                "segment_ids": segment + [0] * pad,
                "masked_lm_positions": [int(i) for i in positions] + [0] * (p - k),
                "masked_lm_ids": labels + [0] * (p - k),
                "masked_lm_weights": [1.0] * k + [0.0] * (p - k),
                "next_sentence_labels": [int(rng.integers(0, 2))],
            }
        )
    return out


def write_google_records(path, instances, float_features=("masked_lm_weights",), compression=None):
    """Google's create_int_feature / create_float_feature + TFRecordWriter, feature order as Google's."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options=compression) as writer:
        for inst in instances:
            features = collections.OrderedDict()
            for name, values in inst.items():
                if name in float_features:
                    features[name] = tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))
                else:
                    features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return path


FILES = {
    "training/wiki_training_0.tfrecord": (10, 1),
    "training/wiki_training_1.tfrecord": (9, 2),
    "test/wiki_test_0.tfrecord": (6, 3),
}


@pytest.fixture
def nvidia_folder(tmp_path):
    """A folder as NVIDIA's bertPrep.py leaves it (training/, test/), plus the instances of each file."""
    root = tmp_path / "tfrecord"
    made = {rel: google_instances(n, seed) for rel, (n, seed) in FILES.items()}
    for rel, inst in made.items():
        write_google_records(root / rel, inst)
    return root, made, write_vocab(tmp_path / "vocab.txt")


def adopt_args(root, vocab, *more):
    return ["adopt-data", "--data_dir", str(root), "--vocab_file", str(vocab), "--no-progress", *more]


@pytest.mark.slow
def test_adopted_folder_has_the_inferred_manifest_and_pretrain_trains_on_it(nvidia_folder, tmp_path, capsys):
    from bertlib.data.records import validate_dataset

    root, made, vocab = nvidia_folder
    args = adopt_args(root, vocab, "--train_files", "training/*", "--validation_files", "test/*")
    assert cli(args) == 0
    m = json.loads((root / "manifest.json").read_text())
    assert (m["max_seq_length"], m["max_predictions_per_seq"]) == (S, P)
    assert m["created_by"] == "bertlib adopt-data"
    assert m["vocab"] == {
        "sha256": hashlib.sha256(vocab.read_bytes()).hexdigest(),
        "size": V,
        "lowercase": True,
        "strip_accents": True,
    }
    assert (root / "vocab.txt").read_bytes() == vocab.read_bytes()
    assert [sh["file"] for sh in m["shards"]["train"]] == list(FILES)[:2]
    assert [sh["file"] for sh in m["shards"]["validation"]] == list(FILES)[2:]
    for shard in m["shards"]["train"] + m["shards"]["validation"]:
        inst = made[shard["file"]]
        data = (root / shard["file"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest() and shard["bytes"] == len(data)
        assert shard["examples"] == len(inst)
        assert shard["masked_tokens"] == sum(sum(i["masked_lm_weights"]) for i in inst)
        assert shard["real_tokens"] == sum(sum(i["input_mask"]) for i in inst)
        assert shard["random_next"] == sum(i["next_sentence_labels"][0] for i in inst)
        assert shard["random_next_fraction"] == pytest.approx(np.mean([i["next_sentence_labels"][0] for i in inst]))
        assert shard["padding_fraction"] == pytest.approx(np.mean(np.array([i["input_mask"] for i in inst]) == 0))
    assert m["counts"]["examples"] == 25 and m["splits"]["validation"]["examples"] == 6
    assert validate_dataset(root, S, P)["shards"] == m["shards"]

    # a rerun reads nothing and writes the same manifest; a rewritten file alone is read again
    capsys.readouterr()
    assert cli(args) == 0
    assert "files_read=0 files_reused=3" in capsys.readouterr().out
    assert json.loads((root / "manifest.json").read_text()) == m
    write_google_records(root / list(FILES)[1], google_instances(4, seed=9))
    assert cli(args) == 0
    assert "files_read=1 files_reused=2" in capsys.readouterr().out
    assert json.loads((root / "manifest.json").read_text())["shards"]["train"][1]["examples"] == 4

    # bertlib pretrain trains on it (2 steps of a tiny model; the export ships the copied vocab.txt)
    from bertlib.train.pretrain import main as pretrain

    run = tmp_path / "run"
    cfg = dict(
        model_size="tiny",
        data_dir=str(root),
        run_dir=str(run),
        max_seq_length=S,
        max_predictions_per_seq=P,
        per_gpu_batch_size=4,
        learning_rate=1e-3,
        total_steps=2,
        log_frequency=1,
        skip_xla=True,
        shuffle_buffer=8,
    )
    (tmp_path / "phase1.yaml").write_text(yaml.safe_dump(cfg))
    assert pretrain(["--config", str(tmp_path / "phase1.yaml")]) == 0
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in steps] == [1, 2] and all(np.isfinite(d["mlm_loss"]) for d in steps)
    assert (run / "export" / "vocab.txt").read_bytes() == vocab.read_bytes()


def test_casing_and_a_manifest_of_prepare_data_replaced_only_when_forced(nvidia_folder, capsys):
    root, _, vocab = nvidia_folder
    assert cli(adopt_args(root, vocab, "--do_lower_case", "false")) == 2  # the casing check of prepare-data
    assert "vocab is uncased" in capsys.readouterr().err
    (root / "manifest.json").write_text(json.dumps({"created_by": "bertlib prepare-data"}))
    assert cli(adopt_args(root, vocab, "--train_files", "**/*.tfrecord", "--validation_shards", "1")) == 2
    assert "written by bertlib prepare-data" in capsys.readouterr().err
    assert (
        cli(adopt_args(root, vocab, "--train_files", "**/*.tfrecord", "--validation_shards", "1", "--force", "true"))
        == 0
    )
    m = json.loads((root / "manifest.json").read_text())
    assert [sh["file"] for sh in m["shards"]["validation"]] == ["training/wiki_training_1.tfrecord"]


def _rename(inst, old, new):
    inst[new] = inst.pop(old)


@pytest.mark.parametrize(
    "case",
    [
        "foreign_name",
        "extra_feature",
        "wrong_dtype",
        "other_lengths",
        "id_too_large",
        "not_cls",
        "segment_two",
        "corrupt",
        "gzip",
        "not_records",
    ],
)
def test_records_not_in_googles_layout_are_refused_with_one_line(tmp_path, capsys, case):
    root = tmp_path / "data"
    vocab = write_vocab(tmp_path / "vocab.txt")
    write_google_records(root / "part-00000-of-00002", google_instances(8, seed=1))
    second = google_instances(8, seed=2)
    bad = root / "part-00001-of-00002"
    floats = ("masked_lm_weights",)
    if case == "foreign_name":  # the HF / ELECTRA name of segment_ids, in the middle of the file
        _rename(second[5], "segment_ids", "token_type_ids")
        expected = r"part-00001-of-00002: record 5: feature 'token_type_ids' is not a pretraining feature"
    elif case == "extra_feature":  # ALBERT's token_boundary: tf.io.parse_example alone would not notice it
        second[7]["token_boundary"] = [1] * S
        expected = r"part-00001-of-00002: record 7: feature 'token_boundary' is not a pretraining feature"
    elif case == "wrong_dtype":
        floats = ()
        expected = r"part-00001-of-00002: record 0: feature 'masked_lm_weights' is int64_list, expected float_list"
        second = [dict(i, masked_lm_weights=[int(w) for w in i["masked_lm_weights"]]) for i in second]
    elif case == "other_lengths":  # a phase-2 file among phase-1 files
        second = google_instances(8, seed=2, s=2 * S)
        expected = r"part-00001-of-00002: record 0: feature 'input_ids' has length 32, expected 16"
    elif case == "id_too_large":
        second[3]["masked_lm_ids"][0] = V
        expected = rf"part-00001-of-00002: record 3: feature 'masked_lm_ids' token id {V} outside the vocab \(size {V}"
    elif case == "not_cls":  # ids from a vocab whose [CLS] is elsewhere
        second[2]["input_ids"][0] = 7
        expected = r"part-00001-of-00002: record 2: feature 'input_ids' first token 7 is not \[CLS\] \(id 2 in "
    elif case == "segment_two":
        second[4]["segment_ids"][1] = 2
        expected = r"part-00001-of-00002: record 4: feature 'segment_ids' value 2 is not 0 or 1$"
    elif case == "gzip":  # Model Garden's --gzip_compress
        expected = r"part-00001-of-00002: GZIP-compressed TFRecords"
    elif case == "not_records":  # a stray text file that train_files ('*') also matches
        (root / "NOTES").write_text("how these records were made\n" * 4)
        expected = r"NOTES: not a readable TFRecord file \(corrupted record at 0 \(Is this even a TFRecord file\?\)\)$"
    write_google_records(bad, second, floats, compression="GZIP" if case == "gzip" else None)
    if case == "corrupt":  # one flipped byte inside a record's data (its CRC no longer matches)
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
        expected = r"part-00001-of-00002: corrupt or not a TFRecord file \(TensorFlow: corrupted record at \d+\)$"
    assert cli(adopt_args(root, vocab)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {root}/")
    assert re.search(expected, err), err
    assert not (root / "manifest.json").exists()
