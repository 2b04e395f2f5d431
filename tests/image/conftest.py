"""Fixtures for the image tests: the built training image and the SageMaker stand-in runner.

These tests need a Docker engine and the image that ``make image`` builds (``make test-image`` does
both). Without them they fail with the command to run, never skip.
"""

import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("BERTLIB_TEST_IMAGE", "bertlib-training:local")


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("docker") is None:
        pytest.fail("no docker CLI: run `make test-image` (it installs and starts Docker)")
    found = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(f"image {IMAGE} not found ({found.stderr.strip()[:200]}): run `make image` first")
    return IMAGE


@pytest.fixture()
def runner(image, aws_env, tmp_path_factory):
    import boto3
    from runner import SageMakerRunner

    work = tmp_path_factory.mktemp("sagemaker")
    yield SageMakerRunner(boto3.client("s3"), work, fsx_root=work / "fsx", timeout=600)
