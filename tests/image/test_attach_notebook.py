"""Issue 21's duplicate launch, end to end: the kernel dies while the job runs, the notebook is run again.

``notebooks/02_phase1`` runs under papermill (a real kernel) on SageMaker params: the real SDK creates
the job on moto (``tests/launch/moto_job_states.py``: its jobs stay InProgress until the test ends them,
and every CreateTrainingJob request is kept as sent). The kernel is killed while the cell follows the
job; the notebook is run again and attaches to that job. The runner then runs the job's request in the
training image, as SageMaker would; the job's log goes to (moto) CloudWatch Logs and the job is let
complete. The second notebook ends with the job's results: one CreateTrainingJob in all.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import nbformat
import pytest
from tiny_jobs import phase1_values, upload_dataset

from bertlib.launch import monitor
from bertlib.registry import Registry

REPO = Path(__file__).resolve().parents[2]
NEVER = {"progression": "manual", "times": 10**9}
_spec = importlib.util.spec_from_file_location("moto_job_states", REPO / "tests" / "launch" / "moto_job_states.py")
states = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(states)


@pytest.fixture(scope="module")
def requests_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory, requests_dir):
    """moto whose training jobs run until the test ends them, keeping each CreateTrainingJob request."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with states.serving(log, env={"MOTO_TRAINING_REQUESTS": str(requests_dir)}) as url:
        yield url


def params_yaml(path: Path, runs_root: Path) -> Path:
    """A notebook params file (as params/sagemaker/phase1.yaml) for a tiny 1-host CPU job."""
    import yaml

    values = phase1_values(
        "attach-e2e",
        runs_root,
        "attach-e2e",
        instance_type="ml.g5.2xlarge",  # a GPU type for the notebook's estimate; the runner has CPUs only
        instance_count=1,
        total_steps=20,
        canary=False,  # the canary cell would start its own job first (tests/image/test_canary.py runs it)
    )
    path.write_text(yaml.safe_dump(values))
    return path


def papermill(params: Path, out: Path, log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "02_phase1.ipynb"), str(out)]
        + ["-p", "params_file", str(params), "-k", "python3", "--cwd", str(cwd), "--log-output"]
        + ["--request-save-on-cell-execute", "--no-progress-bar"],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 300):
    """Poll ``check()`` until it is truthy (bounded); fail with the notebook's log if it exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"papermill ended ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout} s:\n{log.read_text()[-4000:]}")


def put_log(job_name: str, text: str) -> None:
    logs = boto3.client("logs")
    if not logs.describe_log_groups(logGroupNamePrefix=monitor.LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=monitor.LOG_GROUP)
    stream = f"{job_name}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=monitor.LOG_GROUP, logStreamName=stream)
    lines = text.splitlines() or [""]
    now = int(time.time() * 1000)
    for i in range(0, len(lines), 500):
        events = [{"timestamp": now + i + j, "message": m or " "} for j, m in enumerate(lines[i : i + 500])]
        logs.put_log_events(logGroupName=monitor.LOG_GROUP, logStreamName=stream, logEvents=events)


@pytest.mark.slow
def test_killed_kernel_rerun_attaches_to_the_one_job_and_ends_with_its_results(
    aws_env, account, runner, prepared_dataset, requests_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("BERTLIB_POLL_SECONDS", "0.5")
    upload_dataset(prepared_dataset, "attach-e2e", phases=("phase1",))
    states.steer(aws_env["endpoint"], NEVER)
    runs = tmp_path / "runs"
    params = params_yaml(tmp_path / "phase1.yaml", runs)
    registry = Registry.for_experiment("attach-e2e", runs)

    # 1. the notebook starts the job and follows it; the kernel is killed while the job runs
    log1 = tmp_path / "run1.log"
    first = papermill(params, tmp_path / "run1.ipynb", log1, tmp_path)
    wait_for(
        "the job being followed",
        lambda: "started SageMaker training job" in log1.read_text()
        and (registry.get("phase1") or {}).get("status") == "InProgress",
        first,
        log1,
    )
    for pid in [*descendants(first.pid), first.pid]:  # the kernel (its own session) and papermill
        os.kill(pid, signal.SIGKILL)
    first.wait(timeout=60)
    entry = registry.get("phase1")
    name = entry["job_name"]
    assert entry["status"] == "InProgress" and entry["identity"]

    # 2. the notebook run again: it attaches to the job instead of starting another
    log2 = tmp_path / "run2.log"
    second = papermill(params, tmp_path / "run2.ipynb", log2, tmp_path)
    wait_for("the attach", lambda: f"job {name} is InProgress: attaching" in log2.read_text(), second, log2)

    # 3. SageMaker runs the job (the runner, the image), its log reaches CloudWatch, it completes
    (request_file,) = sorted(requests_dir.glob("*.json"))
    import json

    request = json.loads(request_file.read_text())
    assert request["TrainingJobName"] == name
    result = runner.run(request)
    assert result.status == "Completed", f"{result.failure_reason}\n{result.log[-3000:]}"
    put_log(name, result.log)
    states.steer(aws_env["endpoint"], {"progression": "immediate"})
    try:
        assert second.wait(timeout=600) == 0, log2.read_text()[-4000:]
    finally:
        if second.poll() is None:
            for pid in [*descendants(second.pid), second.pid]:
                os.kill(pid, signal.SIGKILL)

    # one job in all, and the notebook ends with its results
    assert len(list(requests_dir.glob("*.json"))) == 1
    listed = boto3.client("sagemaker").list_training_jobs(NameContains="bertlib-pretrain-phase1")
    assert [j["TrainingJobName"] for j in listed["TrainingJobSummaries"]] == [name]
    entry = registry.get("phase1")
    assert entry["job_name"] == name and entry["status"] == "Completed"
    assert entry["steps"] == 20 and entry["export_dir"] == result.model_artifacts
    nb = nbformat.read(tmp_path / "run2.ipynb", as_version=4)
    texts = [
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    ]
    text = "\n".join(texts)
    assert f"job {name} is InProgress: attaching to it instead of starting another" in text
    # the one progress display, in its last state: the job's last step of 20, its loss, the cost
    (meter,) = [t for t in texts if t.startswith(f"{name} [")]
    assert meter.startswith(f"{name} [Completed]") and " 20/20 " in meter and "loss=" in meter and "so far" in meter
    assert "[bertlib] phase=phase1 step=20 " in text  # the job's log, streamed into the cell
    pngs = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert pngs, "show_run plotted the job's metrics"
