"""``instance_type: local`` / ``local_gpu``: the SageMaker SDK's local mode, without Docker (the run itself:
tests/image/test_local_mode.py). The ``ethwe`` rewrite against the SDK's own writer, the settings local
mode refuses (one line each), the channels and hyperparameters of each job, and a trainer built with no
AWS configuration at all."""

import json
import os
import stat

import pytest

from bertlib.core.config import build_launched
from bertlib.core.errors import ConfigError
from bertlib.launch import sagemaker as sm
from bertlib.launch import sagemaker_sdk

IMAGE = "bertlib-training:local"


@pytest.fixture(autouse=True)
def no_aws(monkeypatch, tmp_path):
    """No AWS credential, profile, region or endpoint; the image from the environment as a user sets it."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "SAGEMAKER_", "BERTLIB_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("BERTLIB_IMAGE_URI", IMAGE)


def pretrain(data_dir, **overrides):
    values = dict(
        backend="sagemaker",
        instance_type="local",
        instance_count=2,
        data_dir=str(data_dir),
        per_gpu_batch_size=8,
        max_seq_length=64,
        max_predictions_per_seq=10,
        learning_rate=1e-3,
        total_steps=4,
    )
    return build_launched("pretrain", {**values, **overrides})


def test_the_sdk_writes_ethwe_and_the_launch_rewrites_it_to_eth0(tmp_path):
    from sagemaker.train.local.local_container import _LocalContainer

    def written(root) -> dict:
        container = _LocalContainer(
            training_job_name="bertlib-pretrain-phase1",
            instance_type="local",
            instance_count=2,
            image=IMAGE,
            container_root=str(root),
            input_data_config=[],
            environment=None,
            hyper_parameters=None,
            container_entrypoint=None,
            container_arguments=None,
        )
        for host in container.hosts:
            (root / host / "input" / "config").mkdir(parents=True)
            container._write_config_files(host, [], {})
        return {h: json.loads((root / h / "input/config/resourceconfig.json").read_text()) for h in container.hosts}

    original = _LocalContainer._write_config_files
    as_sdk = written(tmp_path / "sdk")  # the pinned SDK (sagemaker-train 1.27.0) still writes ethwe
    assert {c["network_interface_name"] for c in as_sdk.values()} == {"ethwe"}
    with sagemaker_sdk.local_network_interface():
        fixed = written(tmp_path / "bertlib")
    assert _LocalContainer._write_config_files is original  # the SDK's writer is back after the block
    for host, config in fixed.items():  # that one value changed, nothing else
        assert config == {**as_sdk[host], "network_interface_name": "eth0"}
    assert not sagemaker_sdk.rewrite_network_interface(tmp_path / "bertlib/algo-1/input/config/resourceconfig.json")


def test_local_mode_refuses_what_it_cannot_do_in_one_line(tmp_path):
    data = tmp_path / "phase1"
    data.mkdir()
    for key, value in (
        ("checkpoint_s3_uri", "s3://bucket/ckpt"),
        ("use_spot", True),
        ("output_s3_uri", "s3://bucket/out"),
        ("dry_run", True),
    ):
        with pytest.raises(ConfigError) as e:
            pretrain(data, **{key: value})
        assert f"instance_type local (the SDK's local mode) has no {key}: unset it" in str(e.value)
        assert "\n" not in str(e.value)
    for data_dir in ("s3://bucket/data/phase1", "https://example.com/phase1"):
        with pytest.raises(ConfigError) as e:
            sm.resolve("pretrain", pretrain(data_dir))
        assert str(e.value) == (
            f"data_dir {data_dir!r}: instance_type local (the SDK's local mode) mounts local folders; copy "
            "the data here (e.g. aws s3 sync) and give its path"
        )
    with pytest.raises(ConfigError, match=r"data_dir '.*/missing': not found"):
        sm.resolve("pretrain", pretrain(tmp_path / "missing"))
    os.environ.pop("BERTLIB_IMAGE_URI")
    with pytest.raises(ConfigError, match="local mode: no training image"):
        sm.resolve("pretrain", pretrain(data))
    with pytest.raises(ConfigError, match="global batch"):  # the world is instance_count × processes_per_host
        sm.resolve("pretrain", pretrain(data, image_uri=IMAGE, global_batch_size_check=8))


def test_channels_of_each_job_are_local_folders(tmp_path, squad_fixture, bert_vocab):
    data, export = tmp_path / "phase1", tmp_path / "phase1-export"
    data.mkdir()
    export.mkdir()
    spec = sm.resolve(
        "pretrain",
        pretrain(f"file://{data}", load_from="checkpoint", checkpoint_path=str(export), processes_per_host=2),
    )
    assert spec.local and spec.world_size == 4 and spec.processes_per_host == 2
    assert [(c.name, c.source, c.container_path) for c in spec.channels] == [
        ("train", str(data), "/opt/ml/input/data/train"),
        ("init", str(export), "/opt/ml/input/data/init"),
    ]
    assert spec.hyperparameters["data_dir"] == "/opt/ml/input/data/train"
    assert spec.hyperparameters["checkpoint_path"] == "/opt/ml/input/data/init"
    assert spec.role == "" and spec.region is None and not spec.subnets

    squad = build_launched(
        "squad",
        dict(
            backend="sagemaker",
            instance_type="local_gpu",
            train_file=str(squad_fixture),
            predict_file="https://example.com/dev-v1.1.json",
            per_gpu_batch_size=4,
            max_seq_length=128,
            learning_rate=1e-4,
            total_steps=2,
        ),
    )
    spec = sm.resolve("squad", squad)
    assert [(c.name, c.source) for c in spec.channels] == [("squad_train", str(squad_fixture.parent))]
    assert spec.hyperparameters["train_file"] == f"/opt/ml/input/data/squad_train/{squad_fixture.name}"
    assert spec.hyperparameters["predict_file"] == "https://example.com/dev-v1.1.json"  # the job downloads it

    prepare = build_launched(
        "prepare-data",
        dict(
            backend="sagemaker",
            instance_type="local",
            instance_count=2,
            sources=[str(squad_fixture)],
            vocab_file=str(bert_vocab),
            output_dir=str(tmp_path / "dataset"),
            phases=[{"name": "phase1", "max_seq_length": 64, "max_predictions_per_seq": 10}],
        ),
    )
    spec = sm.resolve("prepare-data", prepare)
    assert {c.name: c.container_path for c in spec.channels} == {
        "source0": f"/opt/ml/input/data/source0/{squad_fixture.name}",
        "vocab": f"/opt/ml/input/data/vocab/{bert_vocab.name}",
        "dataset": "/opt/ml/input/data/dataset",
    }
    assert spec.hyperparameters["output_dir"] == "/opt/ml/input/data/dataset"
    assert spec.hyperparameters["sources"] == [f"/opt/ml/input/data/source0/{squad_fixture.name}"]


def test_a_local_mode_trainer_is_built_with_no_aws_configuration(tmp_path):
    from sagemaker.train.model_trainer import Mode

    data = tmp_path / "phase1"
    data.mkdir()
    root = tmp_path / "local-root"
    root.mkdir()
    trainer, inputs, code, spec = sm.build_trainer("pretrain", pretrain(data), local_root=str(root))
    with code:
        assert trainer.training_mode == Mode.LOCAL_CONTAINER and trainer.local_container_root == str(root)
        assert trainer.compute.instance_type == "local" and trainer.compute.instance_count == 2
        assert trainer.checkpoint_config is None and trainer.role is None
        assert [(i.channel_name, i.data_source) for i in inputs] == [("train", str(data))]
        # the session reaches nothing: no credentials (none go into the compose file), requests refused
        session = trainer.sagemaker_session
        assert session.boto_session.get_credentials() is None
        with pytest.raises(Exception, match="credentials|refused"):
            session.boto_session.client("s3").list_buckets()


def fake_docker(tmp_path, script: str):
    """A ``docker`` on PATH that runs ``script`` (sh), and nothing else on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\n" + script + "\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


def test_missing_docker_or_compose_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"^instance_type local: no `docker` command"):
        sagemaker_sdk.compose_command()
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "exit 1"))  # a Docker CLI without the compose plugin
    with pytest.raises(ConfigError) as e:
        sagemaker_sdk.compose_command()
    assert str(e.value) == (
        "instance_type local: neither `docker compose` nor `docker-compose` found — the SDK's local mode "
        "needs Docker Compose (Debian: apt-get install docker-compose)"
    )
    with pytest.raises(ConfigError, match=r"image 'bertlib-training:local' is not in the local Docker engine"):
        sagemaker_sdk.check_local_image(IMAGE)
    monkeypatch.setenv("PATH", fake_docker(tmp_path, 'echo "Docker Compose version v2.29.7"'))
    assert sagemaker_sdk.compose_command() == ["docker", "compose"]


def test_a_local_mode_dataset_is_read_where_it_was_written(tmp_path):
    """What ``notebooks/01_data_prep`` fetches after a prepare-data job: a local-mode job's phases are
    local folders, read in place (or copied from when the notebook's folder is another)."""
    from bertlib.launch.results import fetch_manifests

    written = tmp_path / "dataset" / "phase1"
    written.mkdir(parents=True)
    (written / "vocab.txt").write_text("[PAD]\n")
    (written / "manifest.json").write_text('{"counts": {}}')
    assert fetch_manifests({"phase1": str(written)}, tmp_path / "dataset") == tmp_path / "dataset"
    fetch_manifests({"phase1": str(written)}, tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere/phase1/manifest.json").read_text() == '{"counts": {}}'
    assert (tmp_path / "elsewhere/phase1/vocab.txt").read_text() == "[PAD]\n"


def test_a_refused_local_launch_leaves_nothing_behind(tmp_path, monkeypatch):
    data = tmp_path / "phase1"
    data.mkdir()
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "exit 1"))  # Docker without compose, and no image
    with pytest.raises(ConfigError, match="neither `docker compose` nor `docker-compose` found"):
        sm.launch("pretrain", pretrain(data, run_dir=str(tmp_path / "runs" / "phase1")))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["phase1"]  # no SDK folder beside the run
