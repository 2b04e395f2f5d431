"""``bertlib.launch.local`` running the real pretraining entry point under ``horovodrun -np 2``.

The processes get the SageMaker container contract (SM_CHANNEL_TRAIN, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR,
BERTLIB_CHECKPOINT_DIR) pointed at temp folders: they must train, write where SageMaker would collect
it, and resume from the checkpoint folder when started again (the spot-interruption case). The same
run's files, put on (moto) S3 the way SageMaker leaves them, must read back identically. And a request
built by ``bertlib.launch.sagemaker`` must run from its uploaded code channel in a simulated container.
"""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from bertlib.core.config import build_launched
from bertlib.core.errors import ConfigError
from bertlib.launch import local, results
from bertlib.launch import sagemaker as sm


def tiny_config(run_dir, data_dir, **overrides):
    return build_launched(
        "pretrain",
        {
            "backend": "local",
            "num_processes": 2,
            "threads_per_process": 1,
            "model_size": "tiny",
            "data_dir": data_dir,
            "run_dir": str(run_dir),
            "per_gpu_batch_size": 4,
            "max_seq_length": 64,
            "max_predictions_per_seq": 10,
            "learning_rate": 1e-3,
            "warmup_steps": 1,
            "total_steps": 2,
            "log_frequency": 1,
            "checkpoint_frequency": 2,
            "skip_xla": True,
            "precision": "fp32",
            "global_batch_size_check": 8,
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def sagemaker_style_run(prepared_dataset, tmp_path_factory):
    """Two launches of the same 2-rank job in SageMaker-contract folders: 2 steps, then to step 4."""
    root = tmp_path_factory.mktemp("sm")
    sm_env = {
        "SM_CHANNEL_TRAIN": str(prepared_dataset / "phase1"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output"),
        "BERTLIB_CHECKPOINT_DIR": str(root / "checkpoints"),
    }
    # data_dir "SM_CHANNEL_TRAIN": the entry point must take the data from the train channel
    cfg = tiny_config(root / "run", "SM_CHANNEL_TRAIN")
    logs = []
    for total in (2, 4):
        cfg = cfg.updated({"total_steps": total})
        streamed = io.StringIO()
        with contextlib.redirect_stdout(streamed):
            assert local.run("pretrain", cfg, env=sm_env, stream=True, progress=False) == root / "run"
        logs.append(streamed.getvalue())
    return root, cfg, logs


@pytest.mark.slow
def test_sagemaker_contract_under_horovodrun_and_resume(sagemaker_style_run):
    root, cfg, logs = sagemaker_style_run
    # the export goes to SM_MODEL_DIR (→ model.tar.gz), run files to SM_OUTPUT_DATA_DIR (→ output.tar.gz)
    assert {"bert_config.json", "vocab.txt", "bert_model.ckpt.index"} <= {p.name for p in (root / "model").iterdir()}
    out = root / "output"
    assert {"metrics.jsonl", "summary.json", "config.yaml"} <= {p.name for p in out.iterdir()}
    assert any((root / "checkpoints").iterdir())
    assert sorted(p.name for p in (root / "run").iterdir()) == ["launch_config.yaml"]  # nothing else locally
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the second start resumed at step 2 and appended
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] and summary["steps_run"] == 2 and summary["processes"] == 2


@pytest.mark.slow
def test_metric_regexes_on_the_streamed_log(sagemaker_style_run):
    """The SageMaker metric regexes, applied to the log lines the real run streamed, recover the
    numbers of metrics.jsonl (printed with %.6g)."""
    root, _, logs = sagemaker_style_run
    regexes = {m["name"]: re.compile(m["regex"]) for m in sm.metric_definitions()}
    lines = [line for line in "".join(logs).splitlines() if re.search(r"\[bertlib\] phase=phase1 step=", line)]
    records = [json.loads(line) for line in (root / "output" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(records) == 4
    for line, record in zip(lines, records):
        for key, regex in regexes.items():
            if key in record:
                assert float(regex.search(line).group(1)) == pytest.approx(record[key], rel=1e-5, abs=1e-12), key


def test_failure_raises_with_the_last_lines(tmp_path):
    cfg = tiny_config(tmp_path / "run", str(tmp_path / "no-such-data"), num_processes=1, global_batch_size_check=None)
    with pytest.raises(local.LaunchError, match=r"(?s)exited with code 2.*no-such-data: data_dir not found"):
        local.run("pretrain", cfg, stream=False)


@pytest.mark.slow
def test_report_from_s3_equals_report_from_the_local_folder(sagemaker_style_run, aws_env, tmp_path, monkeypatch):
    """The run's SM_OUTPUT_DATA_DIR, put on S3 as SageMaker does (``<output>/<job>/output/output.tar.gz``)
    and as a plain prefix of files, reads back into the same files, metrics, table and plot."""
    from bertlib import report

    root, cfg, _ = sagemaker_style_run
    monkeypatch.setenv("BERTLIB_CACHE", str(tmp_path / "bertlib-cache"))  # where report.load_run fetches to
    out = root / "output"
    s3 = boto3.client("s3")
    archive = tmp_path / "output.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(out)), recursive=False)
    job_prefix = f"s3://{aws_env['bucket']}/jobs/bertlib-pretrain-phase1-2026-11-25-05-00-00-000"
    bucket, key = job_prefix[5:].split("/", 1)
    s3.upload_file(str(archive), bucket, f"{key}/output/output.tar.gz")
    for path in out.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"synced/run/{path.relative_to(out)}")

    cache = tmp_path / "cache"
    local_files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for uri in (job_prefix, f"{job_prefix}/output/output.tar.gz", f"s3://{bucket}/synced/run/"):
        fetched = results.fetch_run(uri, cache_dir=cache)
        assert {p.relative_to(fetched): p.read_bytes() for p in fetched.rglob("*") if p.is_file()} == local_files

    import pandas as pd

    here, there = report.load_run(out), report.load_run(job_prefix)
    pd.testing.assert_frame_equal(here.metrics, there.metrics)
    assert (here.summary, here.config) == (there.summary, there.config)
    pd.testing.assert_frame_equal(report.results_table({"phase1": here}), report.results_table({"phase1": there}))
    assert report.figure_png(report.plot_run(here, title="phase1")) == report.figure_png(
        report.plot_run(there, title="phase1")
    )

    with pytest.raises(ConfigError, match="no bertlib run there"):
        results.fetch_run(f"s3://{bucket}/nothing-here/", cache_dir=cache)

    # the notebooks' registry: a completed SageMaker job gets the same summary values (times, and for
    # SQuAD EM/F1) as the local run; a later dry run of the same step does not replace that entry
    from bertlib import notebook as nb
    from bertlib.params import Params, _NotebookKeys
    from bertlib.registry import Registry

    params = Params(step="phase1", keys=_NotebookKeys(), registry=Registry(tmp_path / "registry.json"))
    info = {
        "job_name": "bertlib-pretrain-phase1-2026-11-25-05-00-00-000",
        "status": "Completed",
        "output_data": f"{job_prefix}/output/output.tar.gz",
        "model_artifacts": f"{job_prefix}/output/model.tar.gz",
        "checkpoint_s3_uri": None,
    }
    entry = nb._record_sagemaker(params, "phase1", cfg, info)
    summary = json.loads((out / "summary.json").read_text())
    assert (entry["wall_time_s"], entry["steps_run"], entry["final"]) == (
        summary["wall_time_s"],
        summary["steps_run"],
        summary["final"],
    )
    assert entry["export_dir"] == info["model_artifacts"] and entry["run_dir"] == info["output_data"]
    nb._record_sagemaker(params, "phase1", cfg.updated({"dry_run": True}), {**info, "status": "DryRun"})
    assert params.registry.get("phase1")["wall_time_s"] == summary["wall_time_s"]
    assert params.registry.get("phase1-dry-run")["dry_run"] is True


def test_command_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    cfg = tiny_config(tmp_path / "run", str(tmp_path / "data"))
    argv = local.command("pretrain", tmp_path / "c.yaml", 2)
    assert argv[:8] == [sys.executable, "-m", "bertlib.launch.horovodrun", "-np", "2", "-H", "localhost:2", "--gloo"]
    assert argv[8] == sys.executable
    assert argv[-4:] == ["-m", "bertlib.train.pretrain", "--config", str(tmp_path / "c.yaml")]
    assert local.command("squad", tmp_path / "c.yaml", 1)[0] == sys.executable
    env = local.environment(cfg, tmp_path / "run", "pretrain", {"EXTRA": "1"}, sagemaker_env=True)
    assert (env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"], env["OMP_NUM_THREADS"]) == ("1",) * 3
    assert env["SM_MODEL_DIR"] == str(tmp_path / "run" / "export")
    assert env["SM_OUTPUT_DATA_DIR"] == str(tmp_path / "run")
    assert env["BERTLIB_CHECKPOINT_DIR"] == str(tmp_path / "run" / "checkpoints")
    assert env["SM_CHANNEL_TRAIN"] == str(tmp_path / "data") and env["EXTRA"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(local.__file__).resolve().parents[2])
    assert "SM_MODEL_DIR" not in local.environment(cfg, tmp_path / "run", "pretrain")


@pytest.mark.slow
def test_launched_request_runs_in_a_simulated_container(prepared_dataset, aws_env, sm_session, tmp_path, monkeypatch):
    """A request built by ``sagemaker.launch`` (on moto) runs as SageMaker would run it on one GPU host:
    the uploaded code channel's ``sm_entry.py`` with the driver's command line from the
    hyperparameters and the request's environment, channels mounted under a temp /opt/ml."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    opt_ml = tmp_path / "opt_ml"
    monkeypatch.setattr(sm, "CHANNEL_ROOT", str(opt_ml / "input" / "data"))
    (opt_ml / "input" / "data").mkdir(parents=True)
    (opt_ml / "input" / "data" / "train").symlink_to(prepared_dataset / "phase1")  # the channel's download
    for key, value in {
        "BERTLIB_SAGEMAKER_ROLE": "arn:aws:iam::123456789012:role/r",
        "BERTLIB_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/b:1",
    }.items():
        monkeypatch.setenv(key, value)
    cfg = tiny_config(
        "runs/ignored",
        "unused",
        backend="sagemaker",
        instance_type="ml.g5.2xlarge",
        num_processes=1,
        global_batch_size_check=4,
        s3_data_uri=f"s3://{aws_env['bucket']}/data/p1",
        output_s3_uri=f"s3://{aws_env['bucket']}/sim",
    )
    sent = []
    sm_session.boto_session.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: sent.append(params)
    )
    sm.launch("pretrain", cfg, session=sm_session)
    req = sent[0]

    code_uri = next(c for c in req["InputDataConfig"] if c["ChannelName"] == "code")
    bucket, prefix = code_uri["DataSource"]["S3DataSource"]["S3Uri"][5:].rstrip("/").split("/", 1)
    s3 = boto3.client("s3")
    code = opt_ml / "input" / "data" / "code"
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]:
        target = code / obj["Key"][len(prefix) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, obj["Key"], str(target))

    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTLIB_")}
    env.pop("PYTHONPATH", None)
    env.update(req["Environment"])
    env.update(
        SM_MODEL_DIR=str(opt_ml / "model"),
        SM_OUTPUT_DATA_DIR=str(opt_ml / "output" / "data"),
        SM_CHANNEL_TRAIN=str(opt_ml / "input" / "data" / "train"),
        BERTLIB_CHECKPOINT_DIR=str(opt_ml / "checkpoints"),  # the request's /opt/ml/checkpoints
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
    )
    argv = hyperparameters_to_cli_args(json.loads(json.dumps(req["HyperParameters"])))
    out = subprocess.run(
        [sys.executable, "bertlib/launch/sm_entry.py", *argv],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (opt_ml / "model" / "bert_config.json").is_file()
    steps = [
        json.loads(line)["step"] for line in (opt_ml / "output" / "data" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2]
    assert any((opt_ml / "checkpoints").iterdir())
