"""``bertlib prepare-data`` end to end: determinism, resume after a killed worker, refusing bad input
or mixed settings, the trained-vocab path, dataset validation, the notebook summary."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import run_prepare

from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError, DataError
from bertlib.core.vocab import vocab_info
from bertlib.data.prepare import prepare
from bertlib.data.prepare.shards import HOLD_ENV
from bertlib.data.records import read_manifest, read_records, validate_dataset


@pytest.fixture(scope="module")
def wiki_text(prepared_dataset, tmp_path_factory) -> Path:
    """The first 30 articles of the Wikipedia slice as plain text (one sentence per line, a blank line
    between articles: Google's input format), as extracted by the session's prepare-data run. Runs
    below start from it so that they do not re-parse the same wikitext again and again."""
    dst = tmp_path_factory.mktemp("wikitext") / "wiki30.txt"
    shutil.copyfile(prepared_dataset / ".corpus" / "sentences.txt", dst)
    return dst


def small_config(out, wiki_text, bert_vocab, **kw):
    values = {
        "sources": [str(wiki_text)],
        "output_dir": str(out),
        "vocab_file": str(bert_vocab),
        "max_documents": 12,
        "num_shards": 3,
        "validation_shards": 1,
        "validation_fraction": 0.1,
        "dupe_factor": 2,
        "num_workers": 1,
        "seed": 7,
        "phases": [{"name": "p64", "max_seq_length": 64, "max_predictions_per_seq": 10}],
    }
    values.update(kw)
    return values


def shard_hashes(phase_dir: Path) -> dict:
    """file → sha256 of the bytes on disk (not the manifest's claim)."""
    from bertlib.core.files import sha256_file

    return {p.name: sha256_file(p) for p in sorted(phase_dir.glob("*.tfrecord"))}


def test_same_seed_same_bytes_any_worker_count_other_seed_differs(tmp_path, wiki_text, bert_vocab):
    a = prepare(build_config("prepare-data", small_config(tmp_path / "a", wiki_text, bert_vocab)), progress=False)
    prepare(
        build_config("prepare-data", small_config(tmp_path / "b", wiki_text, bert_vocab, num_workers=2)), progress=False
    )
    prepare(build_config("prepare-data", small_config(tmp_path / "c", wiki_text, bert_vocab, seed=8)), progress=False)
    ha, hb, hc = (shard_hashes(tmp_path / x / "p64") for x in "abc")
    assert len(ha) == 4 and ha == hb
    assert all(ha[f] != hc[f] for f in ha)
    manifest = read_manifest(tmp_path / "a" / "p64")
    assert {s["file"]: s["sha256"] for s in manifest["shards"]["train"] + manifest["shards"]["validation"]} == ha
    assert a["phases"]["p64"]["counts"] == manifest["counts"]
    # the manifest's example counts are what the files hold
    for split in ("train", "validation"):
        for s in manifest["shards"][split]:
            assert len(read_records(tmp_path / "a" / "p64" / s["file"], 64, 10)["input_ids"]) == s["examples"] > 0
    assert manifest["counts"]["documents"] == 12
    assert manifest["splits"]["validation"]["documents"] == 1
    assert (tmp_path / "a" / "p64" / "vocab.txt").read_bytes() == bert_vocab.read_bytes()


@pytest.mark.slow
def test_killed_worker_then_rerun_gives_identical_shards(tmp_path, wiki_text, bert_vocab, subprocess_env):
    """Both workers stop after their 2nd shard (the HOLD_ENV test hook) and one is killed there: the
    run fails with exactly 4 of the 9 shards done (the reference's bytes); the rerun writes the other
    5 and ends with the reference's shards."""
    reference = tmp_path / "ref"
    prepare(
        build_config(
            "prepare-data",
            small_config(reference, wiki_text, bert_vocab, num_shards=8, dupe_factor=3, max_documents=24),
        ),
        progress=False,
    )
    cfg = small_config(
        tmp_path / "run", wiki_text, bert_vocab, num_shards=8, dupe_factor=3, max_documents=24, num_workers=2
    )
    import yaml

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "bertlib", "prepare-data", "--config", str(cfg_path), "--no-progress"]
    held = tmp_path / "held"  # a worker holding after its 2nd shard creates held/<its pid>
    held.mkdir()
    env = {**subprocess_env, HOLD_ENV: f"2:{held}"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    phase = tmp_path / "run" / "p64"
    try:
        deadline = time.monotonic() + 240
        while len(list(held.iterdir())) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # a bounded poll for the hold markers, not a synchronization
        holding = sorted(int(p.name) for p in held.iterdir())
        assert len(holding) == 2, f"workers holding: {holding}; run exit code: {proc.poll()}"
        os.kill(holding[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "a worker process died" in err and "rerun" in err
    assert not (phase / "manifest.json").exists()
    partial, expected = shard_hashes(phase), shard_hashes(reference / "p64")
    assert len(partial) == 4 and len(expected) == 9
    assert partial == {name: expected[name] for name in partial}
    rerun = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert "shards_written=5 shards_skipped=4 " in rerun.stdout
    assert shard_hashes(phase) == expected
    assert not list(phase.glob(".*tmp*"))  # no temp files left behind
    validate_dataset(phase, 64, 10)


def test_rerun_skips_finished_shards_and_rewrites_a_corrupted_one(tmp_path, wiki_text, bert_vocab):
    cfg = build_config(
        "prepare-data",
        small_config(tmp_path / "d", wiki_text, bert_vocab, max_documents=6, num_shards=2, dupe_factor=1),
    )
    first = prepare(cfg, progress=False)
    phase = tmp_path / "d" / "p64"
    before = shard_hashes(phase)
    again = prepare(cfg, progress=False)
    assert again["written_shards"] == 0 and again["skipped_shards"] == first["written_shards"] == 3
    shard = phase / "train-00001-of-00002.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-00001-of-00002.tfrecord: sha256 does not match manifest.json"):
        validate_dataset(phase)
    repaired = prepare(cfg, progress=False)
    assert repaired["written_shards"] == 1 and shard_hashes(phase) == before
    validate_dataset(phase, 64, 10)


def test_changed_settings_are_refused(tmp_path, wiki_text, bert_vocab):
    values = small_config(tmp_path / "e", wiki_text, bert_vocab, max_documents=4, num_shards=2, dupe_factor=1)
    prepare(build_config("prepare-data", values), progress=False)
    changed = build_config("prepare-data", dict(values, dupe_factor=2))
    t = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"p64/manifest.json: .*p64 was prepared with other settings "
        r"\(dupe_factor: 1 → 2\); use a new output_dir or delete",
    ):
        prepare(changed, progress=False)
    assert time.perf_counter() - t < 5  # refused before any heavy work


def test_bad_input_is_one_line_before_heavy_work(tmp_path, wiki_text, bert_vocab, subprocess_env):
    base = small_config(tmp_path / "f", wiki_text, bert_vocab, max_documents=4)
    cases = [
        (dict(base, sources=[str(tmp_path / "nope.xml.bz2")]), "nope.xml.bz2: no such file"),
        (dict(base, vocab_file=str(tmp_path / "vocab.txt")), "vocab.txt: vocab file not found"),
        (dict(base, do_lower_case=False), "vocab is uncased (no capitalized entries) but do_lower_case is false"),
        (dict(base, vocab_sha256="0" * 64), "does not match vocab_sha256"),
        (dict(base, dupe_factor=0), "key 'dupe_factor'"),
    ]
    for values, message in cases:
        proc = run_prepare(values, tmp_path, subprocess_env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "f").exists()


def test_trained_vocab_path(tmp_path, wiki_text):
    values = {
        "sources": [str(wiki_text)],
        "output_dir": str(tmp_path / "g"),
        "vocab_size": 3000,
        "do_lower_case": True,
        "max_documents": 8,
        "num_shards": 2,
        "validation_shards": 0,
        "dupe_factor": 1,
        "num_workers": 1,
        "phases": [{"name": "phase1", "max_seq_length": 128, "max_predictions_per_seq": 20}],
    }
    summary = prepare(build_config("prepare-data", values), progress=False)
    phase = tmp_path / "g" / "phase1"
    vocab = (phase / "vocab.txt").read_text().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and 1000 < len(vocab) <= 3000
    manifest = validate_dataset(phase, 128, 20, vocab=vocab_info(phase / "vocab.txt", True))
    assert manifest["vocab"]["size"] == len(vocab) and summary["vocab"] == manifest["vocab"]
    assert "validation" not in manifest["shards"]
    r = read_records(phase / manifest["shards"]["train"][0]["file"], 128, 20)
    real = r["input_mask"].sum()
    assert r["input_ids"].max() < len(vocab) and (r["input_ids"] == 1).sum() / real < 0.005


@pytest.fixture
def dataset_copy(prepared_dataset, tmp_path):
    dst = tmp_path / "phase1"
    shutil.copytree(prepared_dataset / "phase1", dst)
    return dst


def test_validate_dataset_names_the_problem(dataset_copy, bert_vocab):
    d = dataset_copy
    manifest = validate_dataset(d, 64, 10, vocab=vocab_info(bert_vocab, lowercase=True))
    train0 = d / manifest["shards"]["train"][0]["file"]
    with pytest.raises(DataError, match=r"manifest.json: data has max_seq_length=64 but the run expects 128"):
        validate_dataset(d, max_seq_length=128)
    with pytest.raises(DataError, match=r"max_predictions_per_seq=10 but the run expects 20"):
        validate_dataset(d, 64, 20)
    with pytest.raises(
        DataError,
        match=r"phase1/manifest.json: data was tokenized with lowercase=True but the "
        r"model vocab expects lowercase=False",
    ):
        validate_dataset(d, vocab=vocab_info(bert_vocab, lowercase=False))
    # truncated shard
    saved = train0.read_bytes()
    train0.write_bytes(saved[:-100])
    with pytest.raises(DataError, match=rf"{train0.name}: size \d+ bytes, manifest.json says \d+"):
        validate_dataset(d)
    # a shard with another feature set (manifest updated to match, so only the content is wrong)
    from bertlib.core.files import sha256_file
    from bertlib.data.records import encode_examples, write_tfrecord_file

    feats = read_records(d / manifest["shards"]["validation"][0]["file"], 64, 10, limit=3)
    bad = {k: v for k, v in feats.items()}
    bad["input_ids"] = bad["input_ids"][:, :32]  # wrong length
    write_tfrecord_file(train0, encode_examples(bad))
    m = json.loads((d / "manifest.json").read_text())
    m["shards"]["train"][0].update(sha256=sha256_file(train0), bytes=train0.stat().st_size)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=rf"{train0.name}: feature 'input_ids' has length 32, expected 64"):
        validate_dataset(d)
    # missing shard, missing manifest
    train0.unlink()
    with pytest.raises(DataError, match=rf"{train0.name}: train shard listed in manifest.json is missing"):
        validate_dataset(d)
    (d / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"manifest.json: not found \(not a prepared dataset"):
        validate_dataset(d)


def test_notebook_summary(prepared_dataset):
    import matplotlib

    matplotlib.use("Agg")
    from bertlib.data.summary import example_lengths, shard_table, summarize

    table, fig = summarize(prepared_dataset)
    m1 = read_manifest(prepared_dataset / "phase1")
    row = table.loc[("phase1", "train")]
    assert row["examples"] == m1["splits"]["train"]["examples"] and row["max_seq_length"] == 64
    assert set(table.index.get_level_values(0)) == {"phase1", "phase2"}
    lengths = example_lengths(prepared_dataset / "phase1")
    assert len(lengths) == m1["splits"]["train"]["examples"] and lengths.max() <= 64
    axes = fig.get_axes()
    assert len(axes) == 2 and "padding" in axes[0].get_title()
    real = sum(s["real_tokens"] for s in m1["shards"]["train"])
    padding = 1 - real / (len(lengths) * 64)
    assert f"padding {padding:.1%}" in axes[0].get_title()
    assert np.isclose(lengths.sum(), real)
    assert axes[0].get_title().startswith(f"phase1: {len(lengths)} train examples")
    # a histogram of a sample says so
    n = m1["splits"]["train"]["examples"]
    _, small = summarize(prepared_dataset, limit=10)
    assert small.get_axes()[0].get_title().startswith(f"phase1: first 10 of {n} train examples")
    # the per-shard table holds what the records hold
    shards = shard_table(prepared_dataset)
    assert len(shards) == 6  # 2 phases × (2 train + 1 validation shards)
    for (phase, split, file), row in shards.iterrows():
        seq = {"phase1": 64, "phase2": 128}[phase]
        r = read_records(prepared_dataset / phase / file, seq, {"phase1": 10, "phase2": 20}[phase])
        assert row["examples"] == len(r["input_ids"])
        assert row["random_next"] == round(r["next_sentence_labels"].mean(), 3)
        assert row["padding"] == round(1 - r["input_mask"].mean(), 3)
