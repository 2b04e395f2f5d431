"""Fixtures for the launch tests: a real SDK Session on the ``moto_server`` of ``tests/conftest.py``."""

import pytest


@pytest.fixture()
def sm_session(aws_env):
    """A real SDK Session on moto with a fixed default bucket."""
    import boto3
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto3.Session(region_name=aws_env["region"]), default_bucket=aws_env["bucket"])
