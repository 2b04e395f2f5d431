"""The data-prep projection of ``bertlib estimate``, checked against an independent numpy reference
of the model in bertlib.data.projection's docstring (built here from its measured constants and
preflight's disk model, not from the module's functions), and the CLI on params/sagemaker/data.yaml.
"""

import math
import re

import numpy as np
import pytest

from bertlib import estimate_cli
from bertlib.core.config import build_launched
from bertlib.core.errors import ConfigError
from bertlib.core.instances import INSTANCES, gpus_per_instance
from bertlib.data import preflight
from bertlib.data import projection as pj
from bertlib.launch import estimate as est

DUMP_URL = "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-pages-articles-multistream.xml.bz2"
REFERENCE = dict(
    sources=[DUMP_URL],
    source_format="wikipedia",
    output_dir="out",
    vocab_file="vocab.txt",
    num_shards=512,
    validation_shards=8,
    validation_fraction=0.001,
    dupe_factor=5,
    instance_type="ml.m5.24xlarge",
    cache_dir="/nonexistent-bertlib-cache",
)
COUNTS = np.array([1, 2, 4, 8, 16, 64])


def reference(download_MBps, disk_MBps, vcpus=96, source=20e9):
    """Seconds per stage (rows: download, extract, tokenize, instances, shards) for each of COUNTS
    hosts, written out from the docstring's formulas with numpy."""
    cfg = build_launched("prepare-data", REFERENCE)
    need = preflight.disk_need(cfg.job, {DUMP_URL: int(source)})
    text, corpus = need["text"], need["corpus"]
    tokens = text / preflight.TEXT_BYTES_PER_TOKEN
    inst_bytes = need["phase1 instances"] + need["phase2 instances"]
    pairs = inst_bytes / preflight.INSTANCE_BYTES_PER_ROW
    records = need["phase1"] + need["phase2"]
    T = 2 * (512 + 8)
    share = np.ceil(T / COUNTS) / T
    disk = disk_MBps * 1e6
    ones = np.ones(len(COUNTS))

    def with_main(worker_s, main_s):
        return max(main_s, (worker_s + main_s) / vcpus)

    extract = max(
        with_main(source / pj.EXTRACT_BZ2_BYTES_PER_WORKER_S, text / pj.EXTRACT_MAIN_TEXT_BYTES_PER_S), text / disk
    )
    tokenize = max(
        with_main(tokens / pj.TOKENIZE_TOKENS_PER_WORKER_S, tokens / pj.TOKENIZE_MAIN_TOKENS_PER_S), corpus / disk
    )
    instances = max(pairs / (vcpus * pj.INSTANCES_PAIRS_PER_WORKER_S), inst_bytes / disk)
    shards = np.maximum(pairs * share / (vcpus * pj.SHARDS_PAIRS_PER_WORKER_S), records * share / disk)
    return np.vstack([ones * source / (download_MBps * 1e6), ones * extract, ones * tokenize, ones * instances, shards])


def test_stage_hours_match_the_numpy_reference_and_only_shards_divide():
    cfg = build_launched("prepare-data", REFERENCE)
    p = pj.project(cfg, download_MBps=40.0, disk_MBps=300.0, counts=COUNTS.tolist())
    got = np.array(
        [
            [p["runs"][n]["stages"][s]["s"] for n in COUNTS]
            for s in ("download", "extract", "tokenize", "instances", "shards")
        ]
    )
    np.testing.assert_allclose(got, reference(40.0, 300.0), rtol=1e-9)
    assert all(p["runs"][n]["stages"]["vocab"]["s"] == 0 for n in COUNTS)
    # every host repeats the corpus stages; the shards' time falls with N (1040 shards: 520, 260, ... per host)
    assert np.ptp(got[:4], axis=1).max() == 0
    np.testing.assert_allclose(got[4] * COUNTS, got[4, 0] * np.ceil(1040 / COUNTS) / (1040 / COUNTS), rtol=1e-9)


def test_bounding_stage_switches_as_hosts_are_added():
    """Fast download: one host is bound by writing the shards, many hosts by the corpus stages that
    each of them repeats (the reference's argmax, not the module's)."""
    cfg = build_launched("prepare-data", REFERENCE)
    p = pj.project(cfg, download_MBps=1e6, counts=COUNTS.tolist())
    ref = reference(1e6, pj.DEFAULT_DISK_MBPS)
    names = np.array(["download", "extract", "tokenize", "instances", "shards"])
    expected = names[ref.argmax(axis=0)]
    assert [p["runs"][n]["bound"] for n in COUNTS] == expected.tolist()
    assert expected[0] == "shards" and expected[-1] != "shards"
    # the slow default download bounds every count
    slow = pj.project(cfg, counts=[1, 8])
    assert {r["bound"] for r in slow["runs"].values()} == {"download"}


def test_cost_is_hours_times_price_times_instances_and_disk_splits_only_the_records():
    cfg = build_launched("prepare-data", {**REFERENCE, "instance_type": "ml.c5.18xlarge", "instance_count": 3})
    p = pj.project(cfg, counts=[1, 2])
    assert sorted(p["runs"]) == [1, 2, 3] and p["vcpus"] == 72
    need = preflight.disk_need(cfg.job, {DUMP_URL: 20_000_000_000})
    records = need["phase1"] + need["phase2"]
    whole = 20e9 + need["text"] + need["corpus"] + need["phase1 instances"] + need["phase2 instances"]
    for n, r in p["runs"].items():
        hours = sum(st["s"] for st in r["stages"].values()) / 3600
        assert r["hours"] == pytest.approx(hours, rel=1e-12)
        assert r["usd"] == pytest.approx(hours * 3.672 * n, rel=1e-12)
        assert r["disk_bytes"] == pytest.approx(whole + records * math.ceil(1040 / n) / 1040, rel=1e-9)
    # the reference's ~3.5B WordPiece tokens from ~20 GB of bz2 (preflight's whole-dump calibration)
    assert p["work"]["tokens"] == pytest.approx(3.5e9, rel=0.01)


def test_source_sizes_and_download_bandwidth(tmp_path):
    local = tmp_path / "corpus.txt"
    local.write_text("One sentence here.\n\nAnother document.\n")
    cfg = build_launched("prepare-data", {**REFERENCE, "sources": [DUMP_URL, str(local)]})
    sizes = pj.source_sizes(cfg.job)
    assert sizes[DUMP_URL] == (pj.WIKIPEDIA_DUMP_BYTES, "assumed: the whole English dump")
    assert sizes[str(local)] == (local.stat().st_size, "file")
    assert pj.source_sizes(cfg.job, 7_000_000_000)[DUMP_URL] == (7_000_000_000, "--source_bytes")
    p = pj.project(cfg, 7_000_000_000, download_MBps=2.0, counts=[1])
    assert p["runs"][1]["stages"]["download"]["s"] == pytest.approx(7e9 / 2e6)  # the local file is not downloaded
    with pytest.raises(ConfigError, match="--source_bytes"):
        pj.source_sizes(
            build_launched(
                "prepare-data", {**REFERENCE, "sources": ["https://example.com/books.txt"], "source_format": "auto"}
            ).job
        )


def test_cpu_instances_have_vcpus_and_do_not_train():
    for name in ("ml.m5.24xlarge", "ml.m5.12xlarge", "ml.c5.18xlarge", "ml.c5.9xlarge", "ml.r5.24xlarge"):
        assert INSTANCES[name].gpus == 0 and INSTANCES[name].vcpus >= 36 and INSTANCES[name].usd_per_hour > 0
    assert gpus_per_instance("ml.p3dn.24xlarge") == 8
    pretrain = build_launched(
        "pretrain",
        dict(
            backend="sagemaker",
            instance_type="ml.m5.24xlarge",
            processes_per_host=1,
            data_dir="s3://b/d",
            per_gpu_batch_size=8,
            max_seq_length=128,
            max_predictions_per_seq=20,
            learning_rate=1e-4,
            total_steps=10,
        ),
    )
    with pytest.raises(ConfigError, match="no GPU"):
        est.estimate(pretrain)


def test_cli_on_the_reference_data_params(repo_root, capsys, monkeypatch):
    """Offline (no network, no cached dump, ${BERTLIB_S3_PREFIX} unset): one line per stage with its
    hours on 1, 2, 4, 8 and instance_count instances, then the totals naming a bounding stage."""
    import yaml

    path = repo_root / "params" / "sagemaker" / "data.yaml"
    counts = sorted({1, 2, 4, 8, yaml.safe_load(path.read_text()).get("instance_count", 1)})
    monkeypatch.delenv("BERTLIB_S3_PREFIX", raising=False)
    monkeypatch.setenv("BERTLIB_CACHE", "/nonexistent-bertlib-cache")
    assert estimate_cli.main(["--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("data: 20.00 GB of sources") and "ml.m5.24xlarge: 96 vCPUs" in lines[0]
    stages = [line.split()[0] for line in lines[1:-1]]
    assert stages == ["download", "extract", "vocab", "tokenize", "instances", "shards"]
    hours = re.compile(r"(\d+)× +(\d+)h(\d\d)m")
    for line in lines[1:-1]:
        assert [int(n) for n, _, _ in hours.findall(line)] == counts and "bound by" in line
    total = lines[-1]
    assert total.strip().startswith("total: 1 × ") and "[instance_count]" in total
    bounds = re.findall(r"bound by (\w+)", total)
    assert len(bounds) == len(counts) and set(bounds) <= set(pj.STAGES)
    # the printed 8-instance shards time is the 1-instance one divided by 8 (1040 shards split evenly)
    shard_minutes = dict(zip(counts, (int(h) * 60 + int(m) for _, h, m in hours.findall(lines[6]))))
    assert shard_minutes[8] == pytest.approx(shard_minutes[1] / 8, abs=1)


def test_cli_options_set_bandwidths_and_instance_counts(repo_root, capsys, monkeypatch):
    monkeypatch.setenv("BERTLIB_CACHE", "/nonexistent-bertlib-cache")
    path = str(repo_root / "params" / "sagemaker" / "data.yaml")
    assert (
        estimate_cli.main(
            [
                "--config",
                path,
                "--download_MBps",
                "100",
                "--disk_MBps",
                "1000",
                "--source_bytes",
                "30e9",
                "--instance_counts",
                "1,16",
                "--instance_type",
                "ml.c5.9xlarge",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert "30.00 GB of sources (--source_bytes)" in lines[0] and "ml.c5.9xlarge: 36 vCPUs" in lines[0]
    assert "1000 MB/s" in lines[0] and re.search(r"1× +0h05m \|.* 16× +0h05m", lines[1])  # 30 GB at 100 MB/s
    assert "16 × " in lines[-1]
