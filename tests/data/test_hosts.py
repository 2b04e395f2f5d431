"""Data preparation shared by several machines (``bertlib.data.hosts``): the shares of N hosts on one
storage add up to the bytes one machine writes, the manifest comes once every shard is there, a
second run of the same share is refused, and one host's temp files are never another's to delete."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_prepare import shard_hashes, small_config, wiki_text  # noqa: F401  (wiki_text: a fixture)

from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError
from bertlib.core.files import is_stale, remove_stale, temp_path
from bertlib.data.hosts import HostShare, host_share, share_lock
from bertlib.data.prepare import prepare


def dataset_files(folder: Path) -> dict[str, bytes]:
    """Every file of a dataset folder a user keeps (no hidden markers, locks or temp files)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


@pytest.mark.slow
def test_two_hosts_on_shared_storage_write_one_machines_bytes(tmp_path, wiki_text, bert_vocab):  # noqa: F811
    phases = [
        {"name": "p64", "max_seq_length": 64, "max_predictions_per_seq": 11},
        {"name": "p128", "max_seq_length": 128, "max_predictions_per_seq": 20, "max_pairs_per_row": 2},
    ]
    common = dict(phases=phases, pack_sequences=True, max_pairs_per_row=3)
    one = prepare(
        build_config("prepare-data", small_config(tmp_path / "one", wiki_text, bert_vocab, **common)), progress=False
    )
    shared = tmp_path / "shared"
    cfg = {
        h: build_config(
            "prepare-data",
            small_config(
                shared,
                wiki_text,
                bert_vocab,
                num_hosts=2,
                host_index=h,
                work_dir=str(tmp_path / f"scratch{h}"),
                **common,
            ),
        )
        for h in (0, 1)
    }
    first = prepare(cfg[1], progress=False)
    # host 1 wrote every second shard (tasks 1, 3, ... of 8) and no manifest: host 0's shards are missing
    assert first["written_shards"] == 4 and first["host"] == {
        "index": 1,
        "count": 2,
        "mpi": False,
        "shards": 4,
        "pending_shards": 4,
        "manifests": "pending",
    }
    assert not list(shared.rglob("manifest.json")) and first["phases"] == {}
    assert sorted(p.name for p in (shared / "p64").glob("*.tfrecord")) == [
        "train-00001-of-00003.tfrecord",
        "validation-00000-of-00001.tfrecord",
    ]
    second = prepare(cfg[0], progress=False)
    assert second["written_shards"] == 4 and second["host"]["manifests"] == "written"
    assert second["phases"]["p128"]["counts"] == one["phases"]["p128"]["counts"]
    # byte for byte: shards, manifests, vocab of both phases
    assert dataset_files(shared) == dataset_files(tmp_path / "one")
    assert len(dataset_files(shared)) == 2 * (4 + 2)
    # the scratch (corpus, instances) stayed out of the dataset
    assert not (shared / ".corpus").exists() and (tmp_path / "scratch0" / ".corpus" / "sentences.txt").is_file()
    assert not list((shared / "p64" / ".progress").glob("*instances*"))
    # a rerun of one share reuses everything (re-hashing its own shards) and writes the manifest again
    again = prepare(cfg[1], progress=False)
    assert again["written_shards"] == 0 and again["skipped_shards"] == 4 and again["host"]["manifests"] == "written"
    assert dataset_files(shared) == dataset_files(tmp_path / "one")


def test_a_second_run_of_the_same_share_is_refused_in_one_line(tmp_path, wiki_text, bert_vocab):  # noqa: F811
    values = small_config(tmp_path / "out", wiki_text, bert_vocab, num_hosts=2, host_index=1)
    with share_lock(tmp_path / "out", HostShare(1, 2)):
        with pytest.raises(ConfigError) as err:
            prepare(build_config("prepare-data", values), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and ".prepare-host-1-of-2.lock" in msg and f"pid {os.getpid()}" in msg
    assert not (tmp_path / "out" / ".corpus").exists()  # refused before any work
    # the other share is free to run at the same time
    with share_lock(tmp_path / "out", HostShare(1, 2)), share_lock(tmp_path / "out", HostShare(0, 2)):
        pass


def test_host_share_from_settings_and_mpi(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK", raising=False)
    assert host_share(None, None) == HostShare(0, 1, False)
    assert host_share(3, 2) == HostShare(2, 3, False)
    assert [host_share(3, 2).owns(i) for i in range(7)] == [False, False, True, False, False, True, False]
    with pytest.raises(ConfigError, match="host_index=3: expected 0 <= host_index < num_hosts=3"):
        host_share(3, 3)
    with pytest.raises(ConfigError, match="needs num_hosts"):
        host_share(None, 1)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")  # what Open MPI's mpirun sets in every rank
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "2")
    assert host_share(None, None) == HostShare(2, 4, True)
    with pytest.raises(ConfigError, match="under MPI the hosts are the ranks"):
        host_share(2, 0)


def test_only_this_machines_dead_writers_leave_stale_temp_files(tmp_path):
    target = tmp_path / "train-00000-of-00004.tfrecord"
    mine = temp_path(target)
    assert mine.name.startswith(".train-00000-of-00004.tfrecord.tmp-") and mine.name.endswith(f"-{os.getpid()}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = mine.name.split(".tmp-")[1].rsplit("-", 1)[0]
    files = {
        "mine": mine,
        "dead": tmp_path / f".{target.name}.tmp-{host}-{dead_pid}",
        "dead_npy": tmp_path / f".x.npy.tmp-{host}-{dead_pid}.npy",
        "other_host": tmp_path / f".{target.name}.tmp-algo_2-{dead_pid}",
        "alive": tmp_path / f".{target.name}.tmp-{host}-{os.getppid()}",
    }
    for f in files.values():
        f.write_bytes(b"partial")
    assert {k: is_stale(f) for k, f in files.items()} == {
        "mine": False,
        "dead": True,
        "dead_npy": True,
        "other_host": False,
        "alive": False,
    }
    assert remove_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f.name for k, f in files.items() if k not in ("dead", "dead_npy")
    )
    assert socket.gethostname().split(".")[0].replace("-", "_") == host


def test_prepare_data_prints_rates_and_the_host_share(tmp_path, wiki_text, bert_vocab, subprocess_env):  # noqa: F811
    cfg = tmp_path / "data.yaml"
    cfg.write_text(json.dumps(small_config(tmp_path / "out", wiki_text, bert_vocab, num_hosts=2, host_index=0)))
    out = subprocess.run(
        [sys.executable, "-m", "bertlib", "prepare-data", "--config", str(cfg), "--no-progress"],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if line.startswith("[bertlib]")}
    assert "host=0 hosts=2 shards_of_host=2 pending_shards=2 manifests=pending" in lines["host=0"]
    rates = dict(kv.split("=") for kv in lines["rates"].split()[3:])
    assert set(rates) == {
        "extract_documents_per_s",
        "tokenize_tokens_per_s",
        "instances_pairs_per_s",
        "shards_pairs_per_s",
    } and all(float(v) > 0 for v in rates.values())
