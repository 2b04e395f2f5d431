"""Fixtures for the launch tests: a real ``moto_server`` on 127.0.0.1 and SDK/boto3 pointed at it."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BUCKET = "bertlib-launch-test"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """Start ``moto_server`` (bounded: 30 s to come up), yield its URL, kill it at the end."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto_server did not start (exit code {proc.poll()})")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture()
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    """Fake credentials, the moto endpoint, role validation and telemetry off; a fresh bucket."""
    sdk_config = tmp_path / "sagemaker_config.yaml"
    sdk_config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "SAGEMAKER_VALIDATE_ROLE": "false",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "BERTLIB_SAGEMAKER_ROLE", "BERTLIB_IMAGE_URI", "BERTLIB_SUBNETS",
                "BERTLIB_SECURITY_GROUP_IDS", "BERTLIB_FSX_ID"):
        monkeypatch.delenv(key, raising=False)
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=BUCKET)
    return {"endpoint": moto_endpoint, "bucket": BUCKET, "region": REGION}


@pytest.fixture()
def sm_session(aws_env):
    """A real SDK Session on moto with a fixed default bucket."""
    import boto3
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto3.Session(region_name=REGION), default_bucket=BUCKET)
