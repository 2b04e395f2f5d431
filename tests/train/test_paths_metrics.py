"""Run paths (local and SageMaker), log-line format, and rank-0-only metric files."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

from bertlib.core.files import write_json
from bertlib.train.metrics import METRIC_KEYS, MetricsWriter, format_eval_line, format_log_line
from bertlib.train.paths import run_paths


def test_local_paths_live_under_run_dir():
    p = run_paths(SimpleNamespace(run_dir="runs/x", data_dir="data/phase1"), env={})
    assert (p.output_dir, p.checkpoint_dir, p.export_dir, p.data_dir) == (
        Path("runs/x"),
        Path("runs/x/checkpoints"),
        Path("runs/x/export"),
        Path("data/phase1"),
    )
    assert p.metrics_file == Path("runs/x/metrics.jsonl") and p.tb_dir == Path("runs/x/tb")


def test_sagemaker_paths_follow_the_container_contract():
    env = {
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
    }
    p = run_paths(SimpleNamespace(run_dir="runs/x", data_dir="SM_CHANNEL_TRAIN"), env=env)
    assert (p.export_dir, p.output_dir, p.checkpoint_dir, p.data_dir) == (
        Path("/opt/ml/model"),
        Path("/opt/ml/output/data"),
        Path("/opt/ml/checkpoints"),
        Path("/opt/ml/input/data/train"),
    )
    p = run_paths(SimpleNamespace(run_dir="r", data_dir="phase2"), env=dict(env, BERTLIB_CHECKPOINT_DIR="/ck"))
    assert p.data_dir == Path("/opt/ml/input/data/train/phase2") and p.checkpoint_dir == Path("/ck")
    p = run_paths(SimpleNamespace(run_dir="r", data_dir="/fsx/phase1"), env=env)
    assert p.data_dir == Path("/fsx/phase1")


def test_log_line_is_parsed_by_the_sagemaker_regexes():
    d = {
        "step": 100,
        "loss": 7.1234567,
        "mlm_loss": 6.5,
        "mlm_acc": 0.125,
        "nsp_loss": float("nan"),
        "nsp_acc": 0.5,
        "learning_rate": 1.25e-4,
        "loss_scale": 32768.0,
        "grad_norm": float("inf"),
        "seq_per_sec": 1234.5678,
        "elapsed_s": 12.0,
    }
    line = format_log_line("phase1", d)
    assert line.startswith("[bertlib] phase=phase1 step=100 loss=7.12346 mlm_loss=6.5 ")
    for key in METRIC_KEYS:
        got = re.search(rf"\b{key}=([-+0-9.eEinfa]+)", line).group(1)
        assert got == ("%.6g" % d[key] if isinstance(d[key], float) else str(d[key]))
    assert (
        format_eval_line("squadv1", {"exact_match": 80.1, "f1": 87.6})
        == "[bertlib] phase=squadv1 eval exact_match=80.1 f1=87.6"
    )


def test_only_rank_zero_writes(tmp_path, capsys):
    w = MetricsWriter(tmp_path / "r1", "phase1", 10, enabled=False)
    w.log({"step": 1, "loss": 1.0})
    w.close()
    assert not (tmp_path / "r1").exists() and capsys.readouterr().out == ""
    w = MetricsWriter(tmp_path / "r0", "phase1", 10, tensorboard=False)
    w.log({"step": 1, "loss": 1.0})
    w.log({"step": 2, "loss": 0.5})
    w.close()
    assert [json.loads(x)["loss"] for x in (tmp_path / "r0" / "metrics.jsonl").read_text().splitlines()] == [1.0, 0.5]


def test_json_written_atomically(tmp_path):
    path = write_json(tmp_path / "summary.json", {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
