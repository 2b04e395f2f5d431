"""``bertlib launch canary``: the canary of a pretraining run, run for real under ``horovodrun -np 2`` (Gloo,
CPU), its report checked against independent facts — the processes horovodrun started, the bus-bandwidth
formula applied to the times it reports, the checkpoint compared with the one the real ``bertlib
pretrain`` job writes after the same steps, the versions of the installed packages — and its launch
request (a dry run of the SageMaker path, offline).
"""

import contextlib
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
from test_sagemaker import offline_env

from bertlib.core.config import CanaryConfig, build_launched
from bertlib.core.errors import ConfigError
from bertlib.launch import canary, local

SIZES = [1024, 65536, 1024 * 1024]
#: the canary's steps; the run it precedes is TOTAL steps long (as many: the real job's checkpoint after
#: them must equal the canary's, and a schedule is a function of total_steps)
STEPS = TOTAL = 4


def run_config(run_dir, data_dir, **overrides):
    """A 2-rank local pretraining run (the "expensive run" the canary precedes): TOTAL steps."""
    return build_launched(
        "pretrain",
        {
            "backend": "local",
            "num_processes": 2,
            "threads_per_process": 1,
            "model_size": "tiny",
            "data_dir": str(data_dir),
            "run_dir": str(run_dir),
            "per_gpu_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "max_seq_length": 64,
            "max_predictions_per_seq": 10,
            "learning_rate": 1e-3,
            "warmup_steps": 2,
            "total_steps": TOTAL,
            "checkpoint_frequency": 100,
            "skip_xla": True,
            "precision": "fp32",
            "global_batch_size_check": 16,
            **overrides,
        },
    )


def installed(*names):
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    raise AssertionError(f"none of {names} installed")


@pytest.fixture(scope="module")
def canary_run(prepared_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("canary")
    launched = run_config(root / "phase1", prepared_dataset / "phase1")
    job = canary.canary_job(launched, steps=STEPS)
    job = job.updated({"allreduce_sizes": SIZES, "allreduce_iterations": 3})
    streamed = io.StringIO()
    with contextlib.redirect_stdout(streamed):
        report = canary.run(job)
    return root, launched, job, report, streamed.getvalue()


@pytest.mark.slow
def test_canary_report_under_horovodrun(canary_run):
    root, launched, job, r, log = canary_run
    # written where the notebook reads it, the canary's own run directory (never the run's)
    assert json.loads((root / "phase1-canary" / "canary.json").read_text()) == r
    assert not (root / "phase1").exists()
    # every rank up: the two processes horovodrun started on this host, other than this one
    assert r["world_size"] == 2 and r["hosts"] == [socket.gethostname()]
    assert [(x["rank"], x["local_rank"], x["world_size"]) for x in r["ranks"]] == [(0, 0, 2), (1, 1, 2)]
    pids = {x["pid"] for x in r["ranks"]}
    assert len(pids) == 2 and os.getpid() not in pids
    # allreduce: the sizes asked for, nccl-tests' formulas applied to the times it reports
    assert [a["bytes"] for a in r["allreduce"]] == SIZES
    for a in r["allreduce"]:
        assert a["correct"] and a["time_s"] > 0
        assert a["algbw_GBps"] == pytest.approx(a["bytes"] / a["time_s"] / 1e9, rel=1e-12)
        assert a["busbw_GBps"] == pytest.approx(a["bytes"] / a["time_s"] / 1e9 * 2 * (2 - 1) / 2, rel=1e-12)
    assert r["transport"]["kind"].startswith("CPU (Horovod") and "Gloo" in r["transport"]["kind"]
    assert r["transport"]["network"] == "TCP"
    # the run's own settings; its step times project the run's TOTAL steps (no price locally)
    t, p = r["training"], r["projection"]
    assert (t["per_gpu_batch_size"], t["gradient_accumulation_steps"], t["max_seq_length"]) == (4, 2, 64)
    assert t["global_batch_size"] == 4 * 2 * 2 and len(t["step_times_s"]) == STEPS
    assert t["step_s"] == statistics.median(t["step_times_s"][1:])
    assert all(np.isfinite(t["losses"]))
    assert t["tflops_per_rank"] > 0 and t["utilization"] is None  # no GPU: no share of a GPU's peak
    assert p["total_steps"] == TOTAL and p["hours"] == pytest.approx(TOTAL * t["step_s"] / 3600, rel=1e-12)
    assert p["usd"] is None and p["instance_type"] == "local"
    # the versions of the installed packages; no GPU here
    v = r["versions"]
    assert v["tensorflow"] == installed("tensorflow-cpu", "tensorflow")
    assert v["horovod"] == installed("horovod")
    assert v["nccl"].startswith("none") and v["cuda"] == "none (CPU)" and v["gpu_driver"] == "none (no GPU)"
    assert v["gpus_visible"] == 0
    # the verdict and what needs real GPUs, in the report and as the last line of the log
    assert r["passed"] and r["failures"] == []
    assert r["verdict"].startswith("canary: PASS — 2 ranks on 1 host(s) up")
    assert any("NCCL" in n and "EFA" in n for n in r["not_checked"])
    lines = [re.sub(r"^\[[\d,]+\]<stdout>:", "", line) for line in log.splitlines()]  # horovodrun's rank tag
    canary_lines = [line for line in lines if line.startswith("canary:")]
    assert canary_lines[-1] == r["verdict"]
    assert "needs real GPUs" in "\n".join(canary_lines)
    print("\n".join(lines[lines.index(canary_lines[0]) :]))  # the report, for the record (-s)


@pytest.mark.slow
def test_canary_checkpoint_is_the_real_job_after_the_same_steps(canary_run, tmp_path):
    """The canary's checkpoint (read back equal after its weights were zeroed) holds exactly the weights
    that ``bertlib pretrain`` — the real job, same config, as many steps — writes."""
    import tensorflow as tf

    root, launched, job, r, _ = canary_run
    c = r["checkpoint"]
    assert c["equal"] and c["max_abs_diff"] == 0.0 and c["variables_changed_by_zeroing"] > 0
    assert c["prefix"].startswith(str(root / "phase1-canary" / "checkpoints"))
    real = launched.updated({"run_dir": str(tmp_path / "real")})
    with contextlib.redirect_stdout(io.StringIO()):
        local.run("pretrain", real, progress=False)
    real_ckpt = tf.train.load_checkpoint(str(tmp_path / "real" / "checkpoints" / f"ckpt-{STEPS}"))
    canary_ckpt = tf.train.load_checkpoint(c["prefix"])
    names = [n for n in canary_ckpt.get_variable_to_shape_map() if n.startswith("model_weights/")]
    assert len(names) == c["variables"] > 10
    for name in names:
        np.testing.assert_array_equal(canary_ckpt.get_tensor(name), real_ckpt.get_tensor(name), err_msg=name)


ROLE = "arn:aws:iam::123456789012:role/bertlib-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bertlib-training:tf2.21"
PREFIX = "s3://my-bucket/bertlib"


def test_canary_job_is_the_run_on_fewer_instances(repo_root, monkeypatch):
    """The canary of params/sagemaker/phase1.yaml on 2 of its 8 × p3dn: the run's job config (its
    model, batch, sequence, precision, schedule), its own checkpoint prefix and run directory, and
    the projection keys naming the run."""
    from bertlib.params import load_configs

    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("BERTLIB_IMAGE_URI", IMAGE)
    monkeypatch.setenv("BERTLIB_S3_PREFIX", PREFIX)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    (run,) = load_configs("pretrain", repo_root / "params/sagemaker/phase1.yaml", {"dry_run": True}).values()
    job = canary.canary_job(run, instance_count=2)
    c, launch = job.job, job.launch
    same = {k: v for k, v in run.job.model_dump().items() if k not in ("run_dir", "global_batch_size_check")}
    assert {k: getattr(c, k) for k in same} == same
    assert (c.per_gpu_batch_size, c.gradient_accumulation_steps, c.max_seq_length, c.total_steps) == (
        128,
        4,
        128,
        14064,
    )
    assert c.run_dir == run.job.run_dir + "-canary" and c.global_batch_size_check is None
    assert (c.projected_instance_type, c.projected_instance_count, c.projected_world_size) == (
        "ml.p3dn.24xlarge",
        8,
        64,
    )
    assert launch.instance_count == 2 and job.world_size == 16 and launch.use_spot is False
    assert launch.checkpoint_s3_uri == f"{PREFIX}/checkpoints/phase1-canary" and launch.max_run_seconds == 3600
    assert canary.canary_job(run).job.global_batch_size_check == 32768  # all 8: the run's global batch, checked
    with pytest.raises(ConfigError, match="canary_instance_count 9: more than the run's instance_count 8"):
        canary.canary_job(run, instance_count=9)


def test_cli_dry_run_shows_the_canary_request(repo_root, subprocess_env, tmp_path):
    """``bertlib launch canary --config params/sagemaker/phase1.yaml --dry_run true --canary_instance_count 1``
    offline: the CreateTrainingJob request of the canary job."""
    env = offline_env(subprocess_env, tmp_path, ROLE, IMAGE, PREFIX)
    cmd = [
        sys.executable,
        "-m",
        "bertlib.cli",
        "launch",
        "canary",
        "--config",
        str(repo_root / "params/sagemaker/phase1.yaml"),
    ]
    out = subprocess.run(
        [*cmd, "--dry_run", "true", "--canary_instance_count", "1", "--canary_steps", "8"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout)["phase1-canary"]
    req = info["request"]
    assert info["status"] == "DryRun" and req["TrainingJobName"].startswith("bertlib-canary-phase1-")
    assert req["ResourceConfig"]["InstanceType"] == "ml.p3dn.24xlarge" and req["ResourceConfig"]["InstanceCount"] == 1
    assert req["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600 and not req.get("EnableManagedSpotTraining")
    assert req["CheckpointConfig"]["S3Uri"] == f"{PREFIX}/checkpoints/phase1-canary"
    hp = req["HyperParameters"]
    assert (hp["canary_steps"], hp["projected_instance_count"], hp["projected_world_size"]) == ("8", "8", "64")
    assert (hp["per_gpu_batch_size"], hp["total_steps"], hp["model_size"]) == ("128", "14064", "base")
    assert "global_batch_size_check" not in hp
    assert req["Environment"]["BERTLIB_JOB"] == "canary"
    bad = subprocess.run(
        [*cmd, "--dry_run", "true", "--canary_instance_count", "9"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "canary_instance_count 9: more than the run's instance_count 8" in bad.stderr


def measurements(**changes):
    """A canary's measurements on 2 GPU hosts × 1 rank of ml.p4d.24xlarge, all well (for the verdict rules)."""
    m = {
        "rank": 0,
        "world_size": 2,
        "ranks": [
            {"rank": i, "local_rank": 0, "world_size": 2, "hostname": f"algo-{i + 1}", "pid": 7, "gpus": 1}
            for i in range(2)
        ],
        "versions": {"gpus_visible": 1},
        "transport": {"kind": "NCCL (controller MPI)", "network": "NET/OFI (efa)", "detail": ""},
        "allreduce": [{"bytes": 1024, "time_s": 1e-4, "algbw_GBps": 0.01, "busbw_GBps": 0.01, "correct": True}],
        "training": {
            "step_times_s": [30.0, 2.0, 1.0, 3.0],
            "losses": [11.0, 10.9, 10.8, 10.7],
            "checkpoint": {"equal": True, "max_abs_diff": 0.0},
        },
    }
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = m
        for p in parents:
            target = target[p]
        target[leaf] = value
    return m


def test_verdicts():
    """PASS when every check holds; otherwise the first failed check, what to do, and the others counted."""
    cfg = CanaryConfig(
        data_dir="x",
        per_gpu_batch_size=8,
        max_seq_length=128,
        max_predictions_per_seq=20,
        learning_rate=1e-3,
        total_steps=7200,
        projected_instance_type="ml.p4d.24xlarge",
        projected_instance_count=4,
        projected_world_size=32,
        projected_max_run_seconds=3 * 3600,
    )
    ok = canary.build_report(cfg, measurements())
    # median of the steps after the first (2, 1, 3 s) = 2 s; 7200 steps = 4 h at 4 × $37.688/h
    assert ok["projection"]["hours"] == 4.0 and ok["projection"]["usd"] == round(4 * 4 * 37.688, 2)
    assert not ok["passed"] and ok["failures"][0]["check"] == "time limit"
    assert ok["verdict"].startswith(
        "canary: FAIL — the run needs ~4h00m but max_run_seconds is 10800 — raise max_run_seconds to at least 17280"
    )
    cfg = cfg.model_copy(update={"projected_max_run_seconds": 5 * 3600})
    ok = canary.build_report(cfg, measurements())
    assert ok["passed"] and ok["verdict"].startswith("canary: PASS — 2 ranks on 2 host(s) up")
    # the training FLOPs per step, as bertlib estimate counts them for the same run, over 2 s and 2 ranks
    from bertlib.launch.estimate import estimate

    same = build_launched(
        "pretrain",
        {
            **{
                k: getattr(cfg, k)
                for k in ("data_dir", "per_gpu_batch_size", "max_seq_length", "max_predictions_per_seq")
            },
            "learning_rate": 1e-3,
            "total_steps": 7200,
            "backend": "sagemaker",
            "instance_type": "ml.p4d.24xlarge",
            "processes_per_host": 2,
        },
    )
    per_rank = estimate(same)["flops_per_sequence"] * 16 / 2.0 / 2 / 1e12
    assert ok["training"]["tflops_per_rank"] == pytest.approx(per_rank, rel=1e-12)
    assert ok["training"]["utilization"] == pytest.approx(per_rank / 312, rel=1e-12)
    assert "$603.01 on 4 × ml.p4d.24xlarge" in ok["verdict"] and ok["not_checked"] == []
    sockets = canary.build_report(cfg, measurements(**{"transport.network": "NET/Socket (TCP sockets)"}))
    assert sockets["verdict"].startswith(
        "canary: FAIL — NCCL between hosts runs over NET/Socket (TCP sockets), not EFA"
    )
    broken = canary.build_report(
        cfg, measurements(**{"training.checkpoint": {"equal": False, "max_abs_diff": 0.5}, "versions.gpus_visible": 1})
    )
    assert broken["verdict"].startswith("canary: FAIL — the checkpoint read back differs (max |Δ| 0.5)")
    lost = measurements()
    lost["ranks"] = lost["ranks"][:1]
    assert canary.build_report(cfg, lost)["failures"][0]["check"] == "ranks"


def test_notebook_cell_dry_run_and_local_default(repo_root, monkeypatch, capsys, tmp_path):
    """notebooks/02_phase1's canary cell (``nb.canary(p)``): on SageMaker with ``dry_run`` it shows the
    canary's request on ``canary_instance_count`` instances; locally it is skipped unless asked for."""
    from bertlib import notebook as nb

    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("BERTLIB_IMAGE_URI", IMAGE)
    monkeypatch.setenv("BERTLIB_S3_PREFIX", PREFIX)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    base = {
        "runs_root": str(tmp_path / "runs"),
        "params_file": "params/sagemaker/phase1.yaml",
        "data_dir": f"{PREFIX}/d",
    }
    p = nb.parameters("phase1", {**base, "dry_run": True, "canary_instance_count": 2})
    result = nb.canary(p)
    req = result["info"]["request"]
    assert req["ResourceConfig"]["InstanceCount"] == 2 and req["HyperParameters"]["projected_instance_count"] == "8"
    shown = capsys.readouterr().out
    assert "canary: dry run — job bertlib-canary-phase1" in shown and "on 2 × ml.p3dn.24xlarge" in shown
    assert nb.canary(nb.parameters("phase1", {**base, "dry_run": True, "canary": False})) is None
    local_p = nb.parameters(
        "phase1",
        {"runs_root": str(tmp_path / "runs"), "params_file": "params/local/phase1.yaml", "data_dir": str(tmp_path)},
    )
    capsys.readouterr()
    assert nb.canary(local_p) is None and "canary: skipped" in capsys.readouterr().out
    with pytest.raises(nb.ParamsError, match="canary_instance_count"):
        nb.parameters("phase1", {**base, "canary_instance_count": -1})


def test_nccl_network_from_its_info_log():
    """The network NCCL chose, read from INFO lines of the form NCCL prints (as quoted in
    aws/aws-ofi-nccl#889 / NVIDIA/nccl#1597 and NVIDIA/nccl#229): EFA through aws-ofi-nccl, and a plugin
    that failed and fell back to sockets (its NET/OFI lines must not pass for EFA)."""
    efa = (
        "h:1:2 [0] NCCL INFO NET/Plugin: Failed to find ncclCollNetPlugin_v8 symbol.\n"
        "h:1:2 [0] NCCL INFO NET/OFI Selected Provider is efa (found 16 nics)\n"
        "h:1:2 [0] NCCL INFO NET/OFI Creating one domain per process\n"
        "h:1:2 [0] NCCL INFO Using network Libfabric\n"
    )
    assert canary.nccl_network(efa) == "NET/OFI (efa)"
    assert canary.nccl_network(efa.replace("Libfabric", "AWS Libfabric")) == "NET/OFI (efa)"
    fallback = (
        "h:1:2 [0] get_ofi_provider:312 NCCL WARN NET/OFI Could not find any optimal provider\n"
        "h:1:2 [0] NCCL INFO NET/IB : No device found.\n"
        "h:1:2 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0>\n"
        "h:1:2 [0] NCCL INFO Using network Socket\n"
    )
    assert canary.nccl_network(fallback) == "NET/Socket (TCP sockets)"
    assert canary.nccl_network("").startswith("unknown")
    cfg = CanaryConfig(
        data_dir="x",
        per_gpu_batch_size=8,
        max_seq_length=128,
        max_predictions_per_seq=20,
        learning_rate=1e-3,
        total_steps=100,
        projected_instance_type="ml.p4d.24xlarge",
    )
    ofi_tcp = canary.build_report(cfg, measurements(**{"transport.network": "NET/OFI (tcp)"}))
    assert ofi_tcp["failures"][0]["check"] == "efa"
