"""Launches that never pay twice (issue 21): record at creation, attach, reuse, ``new_job``, ``wait: false``,
``bertlib status`` and the progress display — the real SDK and boto3 against ``moto_server``.

moto creates every training job Completed; the server here (``moto_job_states.py``) gives its jobs
moto's state machinery, steered with moto's ``set-transition`` API: ``manual`` with ``times: N`` =
Completed at the N-th DescribeTrainingJob from then (a count of requests, never a time).
"""

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import pytest
import yaml

from bertlib import jobs
from bertlib.launch import monitor
from bertlib.params import load_params
from bertlib.registry import Registry
from bertlib.train.metrics import format_log_line

sys.path.insert(0, str(Path(__file__).parent))
import moto_job_states  # noqa: E402

steer = moto_job_states.steer

ROLE = "arn:aws:iam::123456789012:role/bertlib-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bertlib-training:tf2.21"
PARAMS = Path(__file__).resolve().parents[2] / "params" / "sagemaker"
NEVER = {"progression": "manual", "times": 10**9}


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """This module's moto_server: training jobs that run until the test lets them end (overrides the
    suite's plain moto_server for the aws_env / sm_session fixtures)."""
    with moto_job_states.serving(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture()
def env(aws_env, monkeypatch, tmp_path):
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("BERTLIB_IMAGE_URI", IMAGE)
    monkeypatch.setenv("BERTLIB_S3_PREFIX", f"s3://{aws_env['bucket']}/attach-{tmp_path.name}")
    monkeypatch.setenv("BERTLIB_POLL_SECONDS", "0.01")
    monkeypatch.chdir(tmp_path)
    steer(aws_env["endpoint"], {"progression": "immediate"})
    return aws_env


def prefix(tmp_path) -> str:
    """This test's job name prefix (the module's moto server holds every test's jobs)."""
    return "t-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]


def phase1(tmp_path, **overrides):
    """params/sagemaker/phase1.yaml as notebooks/02_phase1 resolves it, registry under tmp_path."""
    values = yaml.safe_load((PARAMS / "phase1.yaml").read_text())
    values.update(runs_root=str(tmp_path / "runs"), experiment="attach", total_steps=1000, warmup_steps=100)
    values.update(job_name=prefix(tmp_path), **overrides)
    return load_params("phase1", values)


def training_jobs(tmp_path) -> list[str]:
    """ListTrainingJobs: this test's jobs."""
    found = boto3.client("sagemaker").list_training_jobs(NameContains=prefix(tmp_path), MaxResults=100)
    return [j["TrainingJobName"] for j in found["TrainingJobSummaries"]]


def put_log(job_name: str, lines: list[str], stream: str = "algo-1-1700000000") -> None:
    """What the job's container writes to CloudWatch (mpirun's rank tag in front, as on SageMaker)."""
    logs = boto3.client("logs")
    group = monitor.LOG_GROUP
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=f"{job_name}/{stream}")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=f"{job_name}/{stream}",
        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
    )


def metric_line(step: int, elapsed: float, loss: float, seq: float) -> str:
    return "[1,0]<stdout>:" + format_log_line(
        "phase1", {"step": step, "loss": loss, "learning_rate": 1e-3, "seq_per_sec": seq, "elapsed_s": elapsed}
    )


# ----------------------------------------------------------------------------- the progress line


def test_progress_from_metric_lines_matches_hand_computed_values():
    parse = monitor.metric_parser("pretrain")
    # lines as the job prints them (typed here, not generated), with mpirun's rank tag
    lines = [
        "[1,0]<stdout>:[bertlib] phase=phase1 step=100 loss=7.5 mlm_loss=6.9 learning_rate=0.001 seq_per_sec=480 elapsed_s=50",
        "[1,0]<stdout>:[bertlib] phase=phase1 step=300 loss=6.25 mlm_loss=5.8 learning_rate=0.002 seq_per_sec=512.5 elapsed_s=150",
        "[1,0]<stdout>:[bertlib] phase=phase1 step=300 val_loss=6.5 val_mlm_acc=0.2",
        "[1,0]<stderr>:some warning without metrics",
    ]
    assert parse(lines[1]) == {
        "step": 300.0,
        "loss": 6.25,
        "mlm_loss": 5.8,
        "learning_rate": 0.002,
        "seq_per_sec": 512.5,
        "elapsed_s": 150.0,
    }
    assert parse(lines[3]) == {}
    p = monitor.JobProgress("job-1", total=1000, usd_per_hour=monitor.usd_per_hour("ml.p3dn.24xlarge", 8))
    for line in lines:
        p.add(parse(line))
    assert (p.step, p.loss, p.seq_per_sec) == (300, 6.25, 512.5)
    assert p.rate == pytest.approx((300 - 100) / (150 - 50))  # 2 steps/s between the job's own lines
    assert p.eta_s == pytest.approx((1000 - 300) / 2.0)  # 350 s
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
    p.described({"TrainingJobStatus": "InProgress", "TrainingStartTime": start}, now=start + timedelta(minutes=30))
    # 8 × ml.p3dn.24xlarge at $35.894 an hour, half an hour
    assert p.cost_usd == pytest.approx(35.894 * 8 * 0.5)
    text = p.text()
    assert "job-1 [InProgress]" in text and " 300/1000 " in text and "30%" in text
    assert "02:30<05:50" in text  # elapsed 150 s, ETA 350 s
    assert "loss=6.25" in text and "512.5 seq/s" in text and "$143.58 so far" in text
    # SageMaker's final billing wins once it is known
    p.described({"TrainingJobStatus": "Completed", "TrainingStartTime": start, "BillableTimeInSeconds": 3600})
    assert p.cost_usd == pytest.approx(35.894 * 8)


def test_terminal_display_redraws_one_line_with_the_log_above(subprocess_env):
    """On a terminal (a real pseudo-terminal as stderr) the display is one line redrawn with \\r; log
    lines go to stdout between redraws."""
    import os
    import pty

    code = (
        "from bertlib.core.progress import MeterDisplay; d = MeterDisplay(); d.show('job 1/3', key=1); "
        "d.write('[bertlib] a log line'); d.show('job 2/3', key=2); d.close()"
    )
    master, slave = pty.openpty()
    try:
        run = subprocess.run(
            [sys.executable, "-c", code],
            stderr=slave,
            stdout=subprocess.PIPE,
            text=True,
            timeout=120,
            env=subprocess_env,
        )
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert run.returncode == 0 and run.stdout == "[bertlib] a log line\n"
    clear = "\r\x1b[K"
    # the line, cleared for the log line and drawn again, then replaced; the tty turns \n into \r\n
    assert shown.decode() == f"{clear}job 1/3{clear}job 1/3{clear}job 2/3\r\n"


def test_local_mode_refuses_wait_false_and_new_job():
    from bertlib.core.config import LaunchConfig

    assert LaunchConfig(backend="sagemaker", instance_type="local").wait is True
    with pytest.raises(ValueError, match="the SDK's local mode\\) has no wait: false"):
        LaunchConfig(backend="sagemaker", instance_type="local", wait=False)
    with pytest.raises(ValueError, match="the SDK's local mode\\) has no new_job"):
        LaunchConfig(backend="sagemaker", instance_type="local", new_job=True)


# ----------------------------------------------------------------------------- launches


def test_recorded_at_creation_and_wait_false_returns_at_once(env, sm_session, tmp_path, capsys):
    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    info = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    assert info["action"] == "started" and info["status"] == "InProgress"
    entry = p.registry.get("phase1")
    assert entry["job_name"] == info["job_name"] and entry["status"] == "InProgress"
    assert entry["identity"] == jobs.identity("pretrain", p.cfg) and entry["total_steps"] == 1000
    assert training_jobs(tmp_path) == [info["job_name"]]
    assert "wait: false" in capsys.readouterr().out


def test_registry_entry_exists_before_the_request_is_sent(env, sm_session, tmp_path):
    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    at_send = []
    sm_session.boto_session.events.register(
        "before-send.sagemaker.CreateTrainingJob",
        lambda request, **_: at_send.append(Registry(p.registry.path).get("phase1")),
    )
    info = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    assert len(at_send) == 1 and at_send[0]["status"] == "Creating" and at_send[0]["job_name"] == info["job_name"]


def test_a_request_that_never_arrives_leaves_the_previous_entry(env, sm_session, tmp_path):
    import botocore.exceptions

    fail, at_send = [], []

    def drop(request, **_):  # the connection fails (as a network outage would), on the second job
        if fail:
            at_send.append(Registry(p.registry.path).get("phase1")["status"])
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)

    p = phase1(tmp_path)
    sm_session.boto_session.events.register("before-send.sagemaker.CreateTrainingJob", drop)
    first = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    kept = p.registry.get("phase1")
    assert kept["job_name"] == first["job_name"] and kept["status"] == "Completed"
    fail.append(True)
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        jobs.launch_once("pretrain", "phase1", phase1(tmp_path, new_job=True).cfg, p.registry, session=sm_session)
    assert at_send and set(at_send) == {"Creating"}  # recorded before the send (botocore retried it)
    assert p.registry.get("phase1") == kept  # the completed job's entry, not a job that does not exist
    assert training_jobs(tmp_path) == [first["job_name"]]


def test_rerun_attaches_to_the_running_job_and_shows_its_progress(env, sm_session, tmp_path, capsys):
    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    first = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    name = first["job_name"]
    put_log(
        name,
        [
            metric_line(100, 50, 7.5, 480),
            "[1,0]<stdout>:[bertlib] checkpoint saved",
            metric_line(300, 150, 6.25, 512.5),
        ],
    )
    capsys.readouterr()
    # the cell run again (wait: true): the job ends at the 3rd DescribeTrainingJob from now
    steer(env["endpoint"], {"progression": "manual", "times": 3})
    again = phase1(tmp_path)
    info = jobs.launch_once("pretrain", "phase1", again.cfg, again.registry, session=sm_session)
    out = capsys.readouterr().out
    assert info["action"] == "attached" and info["job_name"] == name and info["status"] == "Completed"
    assert training_jobs(tmp_path) == [name]  # no second CreateTrainingJob
    assert f"job {name} is InProgress: attaching" in out
    assert "[bertlib] checkpoint saved" in out  # the log
    meters = [line for line in out.splitlines() if line.startswith(f"{name} [")]
    assert any(" 300/1000 " in m and "loss=6.25" in m and "512.5 seq/s" in m and "so far" in m for m in meters)
    assert meters[-1].startswith(f"{name} [Completed]")
    assert again.registry.get("phase1")["status"] == "Completed"


def test_completed_job_is_reused_and_new_job_starts_another(env, sm_session, tmp_path, capsys):
    p = phase1(tmp_path)
    first = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    assert first["action"] == "started" and first["status"] == "Completed"
    again = jobs.launch_once("pretrain", "phase1", phase1(tmp_path).cfg, p.registry, session=sm_session)
    assert again["action"] == "reused" and again["job_name"] == first["job_name"]
    assert training_jobs(tmp_path) == [first["job_name"]]
    assert again["model_artifacts"] == first["model_artifacts"] and again["output_data"] == first["output_data"]

    forced = jobs.launch_once("pretrain", "phase1", phase1(tmp_path, new_job=True).cfg, p.registry, session=sm_session)
    assert forced["action"] == "started" and forced["job_name"] != first["job_name"]
    assert sorted(training_jobs(tmp_path)) == sorted([first["job_name"], forced["job_name"]])
    assert p.registry.get("phase1")["job_name"] == forced["job_name"]
    # another config is another job, even while the registry's one completed
    other = jobs.launch_once(
        "pretrain", "phase1", phase1(tmp_path, total_steps=2000).cfg, p.registry, session=sm_session
    )
    assert other["action"] == "started" and len(training_jobs(tmp_path)) == 3
    assert "has another config" in capsys.readouterr().out


def test_stopped_job_is_not_reused(env, sm_session, tmp_path, capsys):
    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    first = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    boto3.client("sagemaker").stop_training_job(TrainingJobName=first["job_name"])
    second = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    assert second["action"] == "started" and second["job_name"] != first["job_name"]
    assert len(training_jobs(tmp_path)) == 2
    out = capsys.readouterr().out
    assert f"job {first['job_name']} ended Stopped; starting a new one (it resumes from the checkpoints in s3://" in out


def test_notebook_cell_rerun_reads_the_completed_jobs_results(env, sm_session, tmp_path, capsys):
    """nb.launch (the notebook's cell) twice: one job; the entry holds the results of its output.tar.gz."""
    from bertlib import notebook as nb

    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    nb.launch(p)  # returns at once
    entry = p.registry.get("phase1")
    assert entry["status"] == "InProgress" and "steps" not in entry
    capsys.readouterr()
    nb.show_run(p)  # the next cell: nothing to plot yet, and says how to attach
    assert f"phase1: SageMaker job {entry['job_name']} is InProgress — nothing to plot yet" in capsys.readouterr().out
    # the job's results where SageMaker puts them (what the entry point writes to SM_OUTPUT_DATA_DIR)
    summary = {"steps": 1000, "wall_time_s": 1234.5, "seq_per_sec": 512.5, "final": {"loss": 2.5}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for fname, text in (("summary.json", json.dumps(summary)), ("metrics.jsonl", '{"step": 1000, "loss": 2.5}\n')):
            data = text.encode()
            member = tarfile.TarInfo(fname)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    bucket, key = entry["run_dir"][5:].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    steer(env["endpoint"], {"progression": "manual", "times": 2})
    again = phase1(tmp_path)
    (entry,) = nb.launch(again).values()
    assert training_jobs(tmp_path) == [entry["job_name"]]
    assert entry["status"] == "Completed" and entry["steps"] == 1000 and entry["wall_time_s"] == 1234.5
    assert entry["final"] == {"loss": 2.5} and entry["identity"] == jobs.identity("pretrain", again.cfg)
    assert "attaching to it instead of starting another" in capsys.readouterr().out


def test_auto_refuses_a_job_that_has_not_completed(env, sm_session, tmp_path):
    from bertlib.core.errors import ParamsError

    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    values = yaml.safe_load((PARAMS / "phase2.yaml").read_text())
    values.update(runs_root=str(tmp_path / "runs"), experiment="attach")
    with pytest.raises(ParamsError, match=r"checkpoint_path: auto needs it Completed \(bertlib status phase1\)"):
        load_params("phase2", values)


# ----------------------------------------------------------------------------- bertlib status / launch


def test_status_lists_and_attaches(env, sm_session, tmp_path, capsys):
    from bertlib import status_cli

    steer(env["endpoint"], NEVER)
    p = phase1(tmp_path, wait=False)
    info = jobs.launch_once("pretrain", "phase1", p.cfg, p.registry, session=sm_session)
    runs = str(tmp_path / "runs")
    capsys.readouterr()
    assert status_cli.main(["--runs_root", runs]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"attach/phase1  {info['job_name']}  registry: InProgress  live: InProgress  $")
    assert status_cli.main(["phase1", "--runs_root", runs, "--follow", "false"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{info['job_name']}: InProgress"]

    put_log(info["job_name"], [metric_line(500, 250, 5.0, 640.0)])
    steer(env["endpoint"], {"progression": "manual", "times": 3})
    assert status_cli.main(["phase1", "--runs_root", runs]) == 0
    out = capsys.readouterr().out
    assert any(" 500/1000 " in m and "loss=5" in m for m in out.splitlines() if m.startswith(info["job_name"] + " ["))
    assert out.splitlines()[-1] == f"{info['job_name']}: Completed"
    assert p.registry.get("phase1")["status"] == "Completed"
    assert status_cli.main(["--runs_root", runs]) == 0
    assert "registry: Completed  live: Completed" in capsys.readouterr().out


def test_status_of_an_unknown_job_is_one_line(env, tmp_path, repo_root, subprocess_env):
    import os

    run = subprocess.run(
        [sys.executable, "-m", "bertlib", "status", "no-such-job", "--runs_root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**subprocess_env, **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "BERTLIB_"))}},
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: status 'no-such-job': no registry entry or SageMaker training job of that name"
    ]


def test_bertlib_launch_twice_starts_one_job(env, tmp_path, capsys):
    from bertlib import launch_cli

    steer(env["endpoint"], NEVER)
    argv = [
        "pretrain",
        "--config",
        str(PARAMS / "phase1.yaml"),
        "--runs_root",
        str(tmp_path / "runs"),
        "--total_steps",
        "1000",
        "--warmup_steps",
        "100",
        "--wait",
        "false",
        "--job_name",
        prefix(tmp_path),
    ]
    assert launch_cli.main(argv) == 0
    assert launch_cli.main(argv) == 0
    out = capsys.readouterr().out
    (name,) = training_jobs(tmp_path)
    assert f"phase1: SageMaker job {name} InProgress (started)" in out
    assert f"phase1: SageMaker job {name} InProgress (attached)" in out
    assert launch_cli.main([*argv, "--new_job", "true"]) == 0
    assert len(training_jobs(tmp_path)) == 2
