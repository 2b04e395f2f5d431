"""Fixtures for the image tests: the built training image and the SageMaker stand-in runner.

These tests need a Docker engine and the image that ``make image`` builds (``make test-image`` does
both). Without them they fail with the command to run, never skip.
"""

import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("BERTLIB_TEST_IMAGE", "bertlib-training:local")
STANDIN_IMAGE = os.environ.get("BERTLIB_TEST_STANDIN_IMAGE", "bertlib/tensorflow-training-standin:2.21")


def _built(name: str) -> str:
    if shutil.which("docker") is None:
        pytest.fail("no docker CLI: run `make test-image` (it installs and starts Docker)")
    found = subprocess.run(["docker", "image", "inspect", name], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(f"image {name} not found ({found.stderr.strip()[:200]}): run `make image` first")
    return name


@pytest.fixture(scope="session")
def image() -> str:
    return _built(IMAGE)


@pytest.fixture(scope="session")
def standin_image() -> str:
    """The stand-in for the AWS base image that `image` was built on."""
    return _built(STANDIN_IMAGE)


@pytest.fixture()
def runner(image, aws_env, tmp_path_factory):
    import boto3
    from runner import SageMakerRunner

    work = tmp_path_factory.mktemp("sagemaker")
    yield SageMakerRunner(boto3.client("s3"), work, fsx_root=work / "fsx", timeout=600)


@pytest.fixture()
def account(aws_env, image, monkeypatch):
    """The environment a user sets (README "Launching on SageMaker"), pointing at the local image."""
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", "arn:aws:iam::123456789012:role/bertlib-training")
    monkeypatch.setenv("BERTLIB_IMAGE_URI", image)
    return aws_env
