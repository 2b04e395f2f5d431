"""The boto3 session of bertlib's AWS calls (launch, status, attach, image build, endpoints).

Every new boto3 session reads and parses botocore's service descriptions again when it makes its first
client of a service (SageMaker's alone is 420 KB of gzipped JSON); a SageMaker SDK ``Session`` makes
clients of five services. One session per region and AWS environment, kept for the process, pays that
once: a notebook kernel or a command that launches, polls and attaches several jobs does not pay it at
every step. A changed ``AWS_*`` variable (profile, credentials, endpoint) gets a new session.
"""

from __future__ import annotations

import os

_SESSIONS: dict[tuple, object] = {}


def boto_session(region: str | None = None):
    """The process's boto3 session in ``region`` (None: the environment's / profile's) for the current
    ``AWS_*`` environment. Callers that register event handlers on a session make their own."""
    import boto3  # the sagemaker extra

    key = (region, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    if key not in _SESSIONS:
        _SESSIONS[key] = boto3.Session(region_name=region) if region else boto3.Session()
    return _SESSIONS[key]
