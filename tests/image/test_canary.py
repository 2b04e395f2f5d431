"""The canary as SageMaker runs it: launched by bertlib with the real SDK against moto, run by :mod:`runner` in
the training image on 2 hosts (the SDK's driver, mpirun over ssh, Horovod over MPI), on CPU. Its report
(``canary.json`` in the job's output.tar.gz, read back the way ``bertlib launch canary`` reads it) is
checked against the hosts the runner started, nccl-tests' bus-bandwidth formula on the times it reports,
the versions the image holds (asked of the image itself) and the checkpoint synced to the canary's own
S3 prefix; the job's log ends with the verdict and names what needs real GPUs.
"""

import json
import re
import subprocess

import boto3
import pytest
from tiny_jobs import BUCKET, phase1_values, upload_dataset

from bertlib.launch import canary
from bertlib.launch import sagemaker as sm
from bertlib.launch.results import fetch_run
from bertlib.params import parameters

PREFIX = f"s3://{BUCKET}/canary-tests"
SIZES = [1024, 1024 * 1024, 4 * 1024 * 1024]


def image_versions(image: str) -> dict:
    """TensorFlow's, Horovod's and NCCL's versions, asked of the image itself."""
    code = (
        "import json, tensorflow as tf, horovod, horovod.tensorflow as hvd; "
        "print(json.dumps([tf.__version__, horovod.__version__, hvd.nccl_built()]))"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    tf_version, hvd_version, nccl = json.loads(out.stdout.strip().splitlines()[-1])
    return {"tensorflow": tf_version, "horovod": hvd_version, "nccl": nccl}


def test_canary_on_two_hosts(account, prepared_dataset, sm_session, runner, image, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTLIB_CACHE", str(tmp_path / "cache"))  # where fetch_run unpacks output.tar.gz
    upload_dataset(prepared_dataset, "canary-tests", phases=("phase1",))
    # the 2-host × 1-rank CPU phase 1 of tests/image/test_jobs.py, as the start of a 2000-step run
    values = phase1_values("sm-canary", tmp_path / "runs", "canary-tests", total_steps=2000, max_run_seconds=7200)
    run = parameters("phase1", values).cfg
    job = canary.canary_job(run, steps=3).updated({"allreduce_sizes": SIZES, "allreduce_iterations": 3})
    info = sm.launch("canary", job, session=sm_session)
    request = info["request"]
    assert request["CheckpointConfig"]["S3Uri"] == f"{PREFIX}/checkpoints/phase1-canary"
    result = runner.run(request)
    tail = "\n".join(result.log.splitlines()[-60:])
    assert result.status == "Completed", f"{result.status}: {result.failure_reason}\n{tail}"

    r = canary.read_report(fetch_run(result.output_data))
    # every rank up, one per host, under mpirun (Horovod's MPI controller)
    assert r["world_size"] == 2 and r["hosts"] == ["algo-1", "algo-2"]
    assert [(x["rank"], x["local_rank"], x["world_size"], x["hostname"]) for x in r["ranks"]] == [
        (0, 0, 2, "algo-1"),
        (1, 0, 2, "algo-2"),
    ]
    assert "controller MPI" in r["transport"]["kind"] and r["transport"]["network"] == "TCP"
    # the bus bandwidth from the times it reports (between two containers: 2 (n-1)/n = 1)
    assert [a["bytes"] for a in r["allreduce"]] == SIZES
    for a in r["allreduce"]:
        assert a["correct"] and a["busbw_GBps"] == pytest.approx(a["bytes"] / a["time_s"] / 1e9, rel=1e-12)
    # the run's steps and price: 2000 steps × the measured step on 2 × ml.m5.xlarge (not in the price table)
    p = r["projection"]
    assert p["total_steps"] == 2000 and p["hours"] == pytest.approx(2000 * r["training"]["step_s"] / 3600, rel=1e-12)
    assert p["usd"] is None and (p["instance_type"], p["instance_count"]) == ("ml.m5.xlarge", 2)
    # the image's versions; its TensorFlow is a CUDA build, but no GPU is visible here
    want = image_versions(image)
    v = r["versions"]
    assert (v["tensorflow"], v["horovod"]) == (want["tensorflow"], want["horovod"])
    nccl = want["nccl"]
    assert v["nccl"] == (f"{nccl // 10000}.{nccl % 10000 // 100}.{nccl % 100}" if nccl else v["nccl"])
    assert v["gpus_visible"] == 0 and v["gpu_driver"] == "none (no GPU)" and "no GPU visible" in v["cuda"]
    # the checkpoint read back equal, and synced to the canary's own prefix (never the run's)
    assert r["checkpoint"]["equal"] and r["checkpoint"]["prefix"].startswith("/opt/ml/checkpoints/ckpt-3")
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="canary-tests/checkpoints/").get("Contents", [])]
    assert "canary-tests/checkpoints/phase1-canary/checkpoint" in keys
    assert not any(k.startswith("canary-tests/checkpoints/phase1/") for k in keys)
    # PASS, what needs real GPUs, and the verdict as the job's last canary line
    assert r["passed"] and r["verdict"].startswith("canary: PASS — 2 ranks on 2 host(s) up")
    assert "they need real GPUs" in r["verdict"]
    # mpirun tags each chunk it forwards ([1,0]<stdout>:), also where a long line is split
    log = re.sub(r"\[\d+,\d+\]<std(?:out|err)>:", "", result.log)
    (tmp_path / "algo-1.log").write_text(result.log)
    lines = log.splitlines()
    said = [line for line in lines if line.startswith("canary:")]
    assert r["verdict"] in log and said[-1].startswith("canary: PASS — "), result.log[-3000:]
    assert any(line.startswith("canary: needs real GPUs") for line in said)
    print(f"job {result.seconds:.0f} s\n" + "\n".join(lines[lines.index(said[0]) : lines.index(said[-1]) + 1]))
