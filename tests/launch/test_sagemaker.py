"""SageMaker launches against a real ``moto_server``, with the real SDK 3.x and boto3.

The CreateTrainingJob request is captured with the boto3 event ``provide-client-params`` (moto drops
Environment and MetricDefinitions on describe), and checked against the reference schedule of
DESIGN.md (BERT-base phase 1 on 8 × ml.p3dn.24xlarge = 64 V100).
"""

import copy
import io
import json
import math
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import botocore.client
import pytest
import yaml

from bertlib.core.config import LaunchConfig, load_config
from bertlib.core.errors import ConfigError
from bertlib.launch import sagemaker as sm
from bertlib.launch import sagemaker_sdk
from bertlib.launch.aws import boto_session
from bertlib.train.metrics import (
    METRIC_KEYS,
    VALIDATION_METRIC_KEYS,
    format_eval_line,
    format_log_line,
    format_reference_scoring_line,
)

ROLE = "arn:aws:iam::123456789012:role/bertlib-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/bertlib-training:tf2.21"
SUBNETS = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
SGS = ["sg-0123456789abcdef0"]
FSX = "fs-0123456789abcdef0"
MOUNT = "x7dkbbmv"  # FSx for Lustre generates the mount name of current file systems

PARAMS = Path(__file__).resolve().parents[2] / "params" / "sagemaker"
PREFIX = "s3://bertlib-launch-test/bertlib"
# DESIGN.md reference schedule, phase 1 (BERT-base, TF 2.1, 8 × p3dn.24xlarge = 64 V100)
REFERENCE_PHASE1 = dict(
    per_gpu_batch_size=128,
    gradient_accumulation_steps=4,
    max_seq_length=128,
    max_predictions_per_seq=20,
    optimizer="lamb",
    learning_rate=0.005,
    end_learning_rate=0.0003,
    warmup_steps=2812,
    learning_rate_decay_power=0.5,
    total_steps=14064,
    hidden_dropout_prob=0.1,
)


@pytest.fixture(autouse=True)
def params_env(monkeypatch, tmp_path):
    """The params files expand ${BERTLIB_S3_PREFIX}; run_dir 'auto' resolves under the cwd."""
    monkeypatch.setenv("BERTLIB_S3_PREFIX", PREFIX)
    monkeypatch.chdir(tmp_path)


def reference(step: str, name: str | None = None, **overrides):
    """The config of ``params/sagemaker/<step>.yaml`` as notebooks/0N resolves it, plus overrides.

    ``checkpoint_path: auto`` (a registry lookup in the notebooks) is a placeholder here; a test
    that chains jobs overrides it with the previous job's export.
    """
    from bertlib.params import parameters

    values = yaml.safe_load((PARAMS / f"{step}.yaml").read_text())
    if values.get("checkpoint_path") == "auto":
        values["checkpoint_path"] = "s3://placeholder/model.tar.gz"
    return parameters(step, values).configs[name or step].updated(overrides, "test overrides")


def from_export(path: str) -> dict:
    """The settings that start a job from a previous job's export (an S3 ``model.tar.gz`` or folder,
    or an FSx folder): the next phase's config, as the notebooks build it."""
    return {"load_from": "checkpoint", "checkpoint_path": path, "load_optimizer_state": False}


def phase1_config(**overrides):
    return reference(
        "phase1", **{"fsx_directory_path": f"/{MOUNT}/bertlib/phase1", "max_run_seconds": 12 * 3600, **overrides}
    )


@pytest.fixture()
def account_env(aws_env, monkeypatch):
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("BERTLIB_IMAGE_URI", IMAGE)
    monkeypatch.setenv("BERTLIB_SUBNETS", ",".join(SUBNETS))
    monkeypatch.setenv("BERTLIB_SECURITY_GROUP_IDS", ",".join(SGS))
    monkeypatch.setenv("BERTLIB_FSX_ID", FSX)
    monkeypatch.setenv("BERTLIB_FSX_MOUNT_NAME", MOUNT)


def capture_create(session) -> list:
    """Requests sent as CreateTrainingJob through ``session`` (deep copies, in order)."""
    seen = []
    session.boto_session.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: seen.append(copy.deepcopy(params))
    )
    return seen


def s3_json(uri: str):
    bucket, key = uri[5:].split("/", 1)
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def channel(request, name):
    return next(c for c in request["InputDataConfig"] if c["ChannelName"] == name)


def container_argv(hyperparameters: dict) -> list:
    """The command-line tail the SDK's MPI driver builds inside the container from SM_HPS."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    return hyperparameters_to_cli_args(json.loads(json.dumps(hyperparameters)))


def test_phase1_request_matches_reference(account_env, sm_session, aws_env):
    cfg = phase1_config(tags={"project": "bertlib"}, environment={"NCCL_DEBUG": "WARN"})
    sent = capture_create(sm_session)
    info = sm.launch("pretrain", cfg, session=sm_session)
    assert len(sent) == 1
    req = sent[0]
    assert info["job_name"] == req["TrainingJobName"] and info["status"]
    assert info["request"] == req

    for key, value in REFERENCE_PHASE1.items():
        assert yaml.safe_load(req["HyperParameters"][key]) == value, key
    assert req["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert req["RoleArn"] == ROLE
    assert req["ResourceConfig"]["InstanceType"] == "ml.p3dn.24xlarge"
    assert req["ResourceConfig"]["InstanceCount"] == 8
    assert req["VpcConfig"] == {"SecurityGroupIds": SGS, "Subnets": SUBNETS}
    assert channel(req, "train")["DataSource"]["FileSystemDataSource"] == {
        "FileSystemId": FSX,
        "FileSystemType": "FSxLustre",
        "DirectoryPath": f"/{MOUNT}/bertlib/phase1",
        "FileSystemAccessMode": "ro",
    }
    assert req["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert req["CheckpointConfig"]["S3Uri"].startswith("s3://")
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 12 * 3600}
    assert not req.get("EnableManagedSpotTraining")
    assert req["Environment"]["BERTLIB_JOB"] == "pretrain"
    assert req["Environment"]["BERTLIB_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
    assert req["Environment"]["NCCL_DEBUG"] == "WARN"
    assert {"Key": "project", "Value": "bertlib"} in req["Tags"]
    assert [m["Name"] for m in req["AlgorithmSpecification"]["MetricDefinitions"]] == list(
        METRIC_KEYS + VALIDATION_METRIC_KEYS
    )

    # MPI: 64 ranks, 8 per p3dn host (the SDK's driver reads distributed.json from the sm_drivers channel)
    drivers = channel(req, "sm_drivers")["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/")
    dist = s3_json(drivers + "/distributed.json")
    assert dist["process_count_per_node"] == 64
    assert dist["mpi_additional_options"][:2] == ["--map-by", "ppr:8:node"]
    assert s3_json(drivers + "/sourcecode.json")["entry_script"] == "bertlib/launch/sm_entry.py"
    code = channel(req, "code")["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/")
    bucket, prefix = code[5:].split("/", 1)
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert f"{prefix}/bertlib/launch/sm_entry.py" in keys and f"{prefix}/bertlib/core/config.py" in keys

    # hyperparameters: what the container's command line carries parses back to the same config
    argv = container_argv(req["HyperParameters"])
    parsed = load_config("pretrain", None, argv)
    expected = {
        **cfg.job.model_dump(),
        "data_dir": "/opt/ml/input/data/train",
    }  # the FSx channel, where the container mounts it
    assert parsed.model_dump() == expected  # global_batch_size_check too: the job checks it with its world
    assert not set(req["HyperParameters"]) & set(LaunchConfig.model_fields)  # the job gets only its own keys

    # the job exists on the (moto) service side with the same name
    described = sm_session.sagemaker_client.describe_training_job(TrainingJobName=req["TrainingJobName"])
    assert described["ResourceConfig"]["InstanceCount"] == 8
    assert (
        info["model_artifacts"] == f"{req['OutputDataConfig']['S3OutputPath'].rstrip('/')}/"
        f"{req['TrainingJobName']}/output/model.tar.gz"
    )


def test_spot_and_s3_channel(account_env, sm_session, aws_env):
    # the params file as it is: data_dir is the S3 prefix of the uploaded dataset
    cfg = reference(
        "phase1",
        use_spot=True,
        max_wait_seconds=24 * 3600,
        max_run_seconds=12 * 3600,
        processes_per_host=4,
        instance_count=2,
        global_batch_size_check=None,
        validation_dir=f"{PREFIX}/data/heldout",
    )
    sent = capture_create(sm_session)
    sm.launch("pretrain", cfg, session=sm_session)
    req = sent[0]
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 12 * 3600, "MaxWaitTimeInSeconds": 24 * 3600}
    assert req["CheckpointConfig"] == {"S3Uri": f"{PREFIX}/checkpoints/phase1", "LocalPath": "/opt/ml/checkpoints"}
    assert req["OutputDataConfig"]["S3OutputPath"] == f"{PREFIX}/output"
    src = channel(req, "train")["DataSource"]["S3DataSource"]
    assert src["S3Uri"] == f"{PREFIX}/data/phase1" and src["S3DataType"] == "S3Prefix"
    drivers = channel(req, "sm_drivers")["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/")
    dist = s3_json(drivers + "/distributed.json")
    assert dist["process_count_per_node"] == 8 and "ppr:4:node" in dist["mpi_additional_options"]
    assert req["HyperParameters"]["data_dir"] == "/opt/ml/input/data/train"
    # held-out shards of their own: the validation channel, which the entry point reads as validation_dir
    assert channel(req, "validation")["DataSource"]["S3DataSource"]["S3Uri"] == f"{PREFIX}/data/heldout"
    assert req["HyperParameters"]["validation_dir"] == "/opt/ml/input/data/validation"
    assert req["HyperParameters"]["validation_frequency"] == "2000"


def test_metric_regexes_parse_real_log_lines():
    values = dict(
        step=1200,
        loss=7.123456789,
        mlm_loss=6.5e-05,
        mlm_acc=0.25,
        nsp_loss=-1.5e-7,
        nsp_acc=1.0,
        learning_rate=0.0049999,
        loss_scale=32768.0,
        grad_norm=float("inf"),
        seq_per_sec=12345.678,
        elapsed_s=3.25,
    )
    line = format_log_line("phase1", values)
    regexes = {m["name"]: m["regex"] for m in sm.metric_definitions()}
    assert set(regexes) == set(METRIC_KEYS + VALIDATION_METRIC_KEYS)
    for key, value in values.items():
        m = re.search(regexes[key], line)
        assert m, (key, line)
        got = float(m.group(1))
        assert got == value if math.isinf(value) else math.isclose(got, value, rel_tol=1e-5), (key, got, value)
    nan_line = format_log_line("phase1", {"step": 3, "loss": float("nan")})
    assert math.isnan(float(re.search(regexes["loss"], nan_line).group(1)))
    # `loss` must not pick up mlm_loss / nsp_loss, and the eval line carries no training keys
    assert re.findall(regexes["loss"], line) == [re.search(r" loss=(\S+)", line).group(1)]
    assert re.search(regexes["loss"], format_eval_line("squadv1", {"exact_match": 80.1, "f1": 87.6})) is None
    # a step with a held-out evaluation: each training key still finds its own value, not the val_ one
    held_out = format_log_line(
        "phase1",
        {
            **values,
            "val_loss": 6.5,
            "val_mlm_loss": 6.0,
            "val_mlm_acc": 0.125,
            "val_nsp_loss": 0.5,
            "val_nsp_acc": 0.75,
            "val_examples": 366,
        },
    )
    for key in ("loss", "mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc"):
        assert [float(v) for v in re.findall(regexes[key], held_out)] == pytest.approx([values[key]], rel=1e-5)
    assert float(re.search(regexes["val_mlm_acc"], held_out).group(1)) == 0.125
    assert float(re.search(regexes["val_examples"], held_out).group(1)) == 366
    # a SQuAD job also reports its evaluation line; `exact` must not pick up `exact_match`
    squad = {m["name"]: m["regex"] for m in sm.metric_definitions("squad")}
    v1 = format_eval_line("squadv1", {"exact_match": 80.1, "f1": 87.68})
    assert float(re.search(squad["f1"], v1).group(1)) == 87.68
    assert float(re.search(squad["exact_match"], v1).group(1)) == 80.1 and re.search(squad["exact"], v1) is None
    # the reference-scored v1.1 line printed after it leaves them alone (the last match is what SageMaker keeps)
    ref = format_reference_scoring_line("squadv1", {"exact": 0.0, "f1": 0.5, "null_answers": 300})
    assert all(re.search(squad[k], ref) is None for k in ("f1", "exact", "exact_match"))
    v2 = format_eval_line("squadv2", {"exact": 73.0, "f1": 76.14})
    assert float(re.search(squad["exact"], v2).group(1)) == 73.0


def test_missing_role_or_image_fails_before_any_aws_call(monkeypatch):
    for key in (
        "BERTLIB_SAGEMAKER_ROLE",
        "BERTLIB_IMAGE_URI",
        "BERTLIB_FSX_ID",
        "BERTLIB_FSX_MOUNT_NAME",
        *REFERENCE_ENV,
    ):
        monkeypatch.delenv(key, raising=False)

    def no_aws(*args, **kwargs):
        raise AssertionError("an AWS call was made")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", no_aws)
    with pytest.raises(ConfigError, match="no IAM role.*BERTLIB_SAGEMAKER_ROLE"):
        sm.launch("pretrain", phase1_config())
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", ROLE)
    with pytest.raises(ConfigError, match="no training image.*BERTLIB_IMAGE_URI"):
        sm.launch("pretrain", phase1_config())
    monkeypatch.setenv("BERTLIB_IMAGE_URI", IMAGE)
    with pytest.raises(ConfigError, match="fsx_directory_path needs fsx_file_system_id"):
        sm.launch("pretrain", phase1_config())  # FSx path without a file system id
    with pytest.raises(ConfigError, match="data_dir '/local/data'"):
        sm.launch("pretrain", phase1_config(fsx_directory_path=None, data_dir="/local/data"))
    # FSx for Lustre: DirectoryPath is /<MountName>/<path>; the mount name is needed and must match
    monkeypatch.setenv("BERTLIB_FSX_ID", FSX)
    with pytest.raises(ConfigError, match=r"is /<MountName>/<path>; set fsx_mount_name .*BERTLIB_FSX_MOUNT_NAME"):
        sm.launch("pretrain", phase1_config())
    monkeypatch.setenv("BERTLIB_FSX_MOUNT_NAME", MOUNT)
    with pytest.raises(
        ConfigError, match=f"'/fsx/bertlib/phase1': not on FSx file system {FSX}, whose paths start with /{MOUNT}/"
    ):
        sm.launch("pretrain", phase1_config(fsx_directory_path="/fsx/bertlib/phase1"))


# the names the reference's users export (aws-samples/deep-learning-models models/nlp/common/arguments.py:196-203,
# bert/README.md:45-49); SAGEMAKER_IMAGE_NAME holds the full image URI there (README: =${IMAGE}, an ECR URI)
REFERENCE_ENV = {
    "SAGEMAKER_ROLE": ROLE,
    "SAGEMAKER_IMAGE_NAME": IMAGE,
    "SAGEMAKER_SUBNET_IDS": "subnet-1, subnet-2",
    "SAGEMAKER_SECURITY_GROUP_IDS": "sg-1,sg-2",
    "SAGEMAKER_FSX_ID": FSX,
    "SAGEMAKER_FSX_MOUNT_NAME": MOUNT,
}
BERTLIB_ENV_NAMES = (
    "BERTLIB_SAGEMAKER_ROLE",
    "BERTLIB_IMAGE_URI",
    "BERTLIB_SUBNETS",
    "BERTLIB_SECURITY_GROUP_IDS",
    "BERTLIB_FSX_ID",
    "BERTLIB_FSX_MOUNT_NAME",
)


def test_reference_env_names_are_aliases_and_bertlib_names_win(monkeypatch):
    def account(spec):
        return (spec.role, spec.image_uri, spec.subnets, spec.security_group_ids, spec.fsx_file_system_id)

    for key in BERTLIB_ENV_NAMES:
        monkeypatch.delenv(key, raising=False)
    for key, value in REFERENCE_ENV.items():
        monkeypatch.setenv(key, value)
    spec = sm.resolve("pretrain", phase1_config())  # the FSx channel needs the mount name: from the alias
    assert account(spec) == (ROLE, IMAGE, ["subnet-1", "subnet-2"], ["sg-1", "sg-2"], FSX)
    assert [(c.name, c.fsx, c.source) for c in spec.channels] == [("train", True, f"/{MOUNT}/bertlib/phase1")]

    # both set: the BERTLIB_* name wins (the aliases now hold values that would fail or differ)
    mine = (
        "arn:aws:iam::123456789012:role/mine",
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/mine:1",
        ["subnet-mine"],
        ["sg-mine"],
        "fs-mine",
    )
    for key, value in zip(BERTLIB_ENV_NAMES, [*mine[:2], "subnet-mine", "sg-mine", "fs-mine", MOUNT]):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SAGEMAKER_FSX_MOUNT_NAME", "notmine")
    spec = sm.resolve("pretrain", phase1_config())
    assert account(spec) == mine and spec.channels[0].source == f"/{MOUNT}/bertlib/phase1"
    # an empty BERTLIB_* counts as unset; a config value wins over both
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", "")
    assert sm.resolve("pretrain", phase1_config()).role == ROLE
    assert sm.resolve("pretrain", phase1_config(role=mine[0])).role == mine[0]
    # the messages name both variables
    for key in ("BERTLIB_SAGEMAKER_ROLE", "SAGEMAKER_ROLE"):
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match=r"no IAM role — set role or \$BERTLIB_SAGEMAKER_ROLE / \$SAGEMAKER_ROLE"):
        sm.resolve("pretrain", phase1_config())


def test_dry_run_builds_the_same_request_and_creates_nothing(account_env, sm_session, aws_env):
    s3 = boto3.client("s3")
    cfg = phase1_config(output_s3_uri=f"s3://{aws_env['bucket']}/dry")
    before_objects = s3.list_objects_v2(Bucket=aws_env["bucket"]).get("KeyCount", 0)
    before_jobs = len(sm_session.sagemaker_client.list_training_jobs()["TrainingJobSummaries"])
    dry = sm.launch("pretrain", cfg, dry_run=True)
    assert dry["status"] == "DryRun"
    assert s3.list_objects_v2(Bucket=aws_env["bucket"]).get("KeyCount", 0) == before_objects
    assert len(sm_session.sagemaker_client.list_training_jobs()["TrainingJobSummaries"]) == before_jobs

    sent = capture_create(sm_session)
    sm.launch("pretrain", cfg, session=sm_session)
    real = sent[0]
    req = dry["request"]
    for key in (
        "AlgorithmSpecification",
        "HyperParameters",
        "ResourceConfig",
        "VpcConfig",
        "StoppingCondition",
        "Environment",
        "RoleArn",
        "OutputDataConfig",
    ):
        assert req[key] == real[key], key
    assert channel(req, "train") == channel(real, "train")
    # staged code/driver channels point where a launch would upload them (job names differ by timestamp)
    strip = lambda uri: re.sub(r"bertlib-pretrain-phase1-[0-9-]+", "JOB", uri)  # noqa: E731
    for name in ("code", "sm_drivers"):
        assert strip(channel(req, name)["DataSource"]["S3DataSource"]["S3Uri"]).rstrip("/") == strip(
            channel(real, name)["DataSource"]["S3DataSource"]["S3Uri"]
        ).rstrip("/")


def test_phase_chaining_and_checkpoint_unpacking(account_env, sm_session, aws_env, tmp_path):
    out = f"s3://{aws_env['bucket']}/chain"
    sent = capture_create(sm_session)
    p1 = sm.launch("pretrain", phase1_config(output_s3_uri=out), session=sm_session)
    phase2 = dict(fsx_directory_path=f"/{MOUNT}/bertlib/phase2", output_s3_uri=out)
    p2 = sm.launch("pretrain", reference("phase2", **phase2, **from_export(p1["model_artifacts"])), session=sm_session)
    req2 = sent[-1]
    assert channel(req2, "init")["DataSource"]["S3DataSource"]["S3Uri"] == p1["model_artifacts"]
    assert req2["HyperParameters"]["checkpoint_path"] == "/opt/ml/input/data/init/model.tar.gz"
    assert req2["HyperParameters"]["load_from"] == "checkpoint"
    assert req2["HyperParameters"]["load_optimizer_state"] == "false"

    squad = reference(
        "squad",
        "squadv1",
        output_s3_uri=out,
        train_file=f"s3://{aws_env['bucket']}/squad/train-v1.1.json",
        predict_file=f"s3://{aws_env['bucket']}/squad/dev-v1.1.json",
        **from_export(p2["model_artifacts"]),
    )
    sm.launch("squad", squad, session=sm_session)
    req3 = sent[-1]
    assert channel(req3, "init")["DataSource"]["S3DataSource"]["S3Uri"] == p2["model_artifacts"]
    assert req3["HyperParameters"]["train_file"] == "/opt/ml/input/data/squad_train/train-v1.1.json"
    assert req3["HyperParameters"]["learning_rate"] == "5e-05"
    assert req3["Environment"]["BERTLIB_JOB"] == "squad"
    assert load_config("squad", None, container_argv(req3["HyperParameters"])).learning_rate == 5e-5

    # FSx chaining: an export folder on the same Lustre file system
    p2_fsx = reference("phase2", **phase2, **from_export(f"/{MOUNT}/bertlib/runs/phase1/export"))
    sm.launch("pretrain", p2_fsx, session=sm_session)
    init = channel(sent[-1], "init")["DataSource"]["FileSystemDataSource"]
    assert init["DirectoryPath"] == f"/{MOUNT}/bertlib/runs/phase1/export" and init["FileSystemId"] == FSX
    assert sent[-1]["HyperParameters"]["checkpoint_path"] == "/opt/ml/input/data/init"

    # container side: model.tar.gz is unpacked once and the argument replaced by the folder
    from bertlib.launch import sm_entry

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in (("bert_config.json", '{"hidden_size": 768}'), ("vocab.txt", "[PAD]\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    root = tmp_path / "unpacked"
    argv = sm_entry.rewrite_args(["--total_steps", "3", "--checkpoint_path", str(archive)], root=root)
    assert argv == ["--total_steps", "3", "--checkpoint_path", str(root / "model")]
    assert sm_entry.unpack_archive(archive, root) == root / "model"  # second rank: already there
    assert json.loads((root / "model" / "bert_config.json").read_text()) == {"hidden_size": 768}
    assert (root / "model" / "vocab.txt").read_text() == "[PAD]\n"
    assert sorted(p.name for p in root.iterdir()) == ["model"]  # no temporary folders left


HP_TEXTS = ("true", "null", "[a, b]", '"quoted"', "it's: odd", "don't", "a'b'c'", "plain/path", "5e-5", "$HOME")


def test_hyperparameters_survive_the_container_env_file(tmp_path, monkeypatch):
    """Strings that look like other types, or hold single quotes, come back exactly in the container.

    The SDK's ``environment.py`` writes every value into ``sm_training.env`` inside ``'...'`` and its
    ``sm_train.sh`` sources that file under ``set -e``: a quote inside a value would end the job there.
    The entry point reads ``hyperparameters.json`` (what SageMaker writes from the request) itself.
    """
    from sagemaker.train.container_drivers.scripts import environment

    from bertlib.core.config import parse_overrides
    from bertlib.launch import sm_entry

    sent = {f"k{i}": sm.hyperparameter_value(text) for i, text in enumerate(HP_TEXTS)}
    assert all(isinstance(v, str) and "'" not in v for v in sent.values()), sent
    env_file = tmp_path / "sm_training.env"
    resource = {
        "current_host": "algo-1",
        "current_instance_type": "ml.m5.xlarge",
        "hosts": ["algo-1"],
        "network_interface_name": "eth0",
    }
    monkeypatch.setenv("TRAINING_JOB_NAME", "bertlib-pretrain-phase1-2026-12-01")  # set by SageMaker
    environment.set_env(resource, {}, sent, output_file=str(env_file))
    sourced = subprocess.run(
        ["bash", "-c", f'set -e; source "{env_file}"; printf %s "$SM_HPS"'], capture_output=True, text=True, timeout=30
    )
    assert sourced.returncode == 0, sourced.stderr
    assert set(json.loads(sourced.stdout)) == set(sent)  # the driver still gets its JSON

    hp_file = tmp_path / "hyperparameters.json"
    hp_file.write_text(json.dumps(sent))
    assert parse_overrides(sm_entry.hyperparameter_args(["--ignored", "x"], hp_file)) == {
        f"k{i}": text for i, text in enumerate(HP_TEXTS)
    }
    # outside a SageMaker container the command line is used
    assert sm_entry.hyperparameter_args(["--total_steps", "3"], tmp_path / "absent.json") == ["--total_steps", "3"]


def test_unverified_sdk_driver_is_refused(account_env, monkeypatch):
    assert sagemaker_sdk._installed_version("sagemaker-train") in sagemaker_sdk.VERIFIED_SDK_DRIVERS  # requirements.txt
    monkeypatch.setattr(sagemaker_sdk, "_installed_version", lambda name: "1.28.0")
    with pytest.raises(
        ConfigError,
        match=r"^sagemaker-train 1\.28\.0: .*verified with the container driver of "
        r"sagemaker-train 1\.27\.0 only .*world size",
    ):
        sm.launch("pretrain", phase1_config(), dry_run=True)


def test_remote_ranks_get_the_job_environment_through_mpirun(account_env, sm_session, aws_env):
    cfg = phase1_config(environment={"NCCL_DEBUG": "WARN"})
    sent = capture_create(sm_session)
    sm.launch("pretrain", cfg, session=sm_session)
    drivers = channel(sent[0], "sm_drivers")["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/")
    options = s3_json(drivers + "/distributed.json")["mpi_additional_options"]
    forwarded = {options[i + 1] for i, o in enumerate(options) if o == "-x"}
    assert forwarded == {"BERTLIB_JOB", "BERTLIB_CHECKPOINT_DIR", "NCCL_DEBUG", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR"}


def offline_env(subprocess_env: dict, home, role=ROLE, image=IMAGE, prefix=PREFIX) -> dict:
    """A user's environment with bertlib's settings and no AWS credentials, config or endpoint (home: ``home``)."""
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("AWS_", "BERTLIB_", "SAGEMAKER_"))}
    return {
        **env,
        "BERTLIB_SAGEMAKER_ROLE": role,
        "BERTLIB_IMAGE_URI": image,
        "BERTLIB_S3_PREFIX": prefix,
        "AWS_DEFAULT_REGION": "us-east-1",
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
    }


def test_cli_dry_run_offline(repo_root, subprocess_env, tmp_path):
    """``bertlib launch pretrain --config params/sagemaker/phase1.yaml --dry_run true`` with no AWS
    credentials or endpoint: the SDK builds the full request, nothing is sent."""
    env = offline_env(subprocess_env, tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "bertlib.cli",
        "launch",
        "pretrain",
        "--config",
        str(PARAMS / "phase1.yaml"),
        "--dry_run",
        "true",
        "--use_spot",
        "true",
    ]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout)["phase1"]
    req = info["request"]
    assert info["status"] == "DryRun" and req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"]["MaxWaitTimeInSeconds"] == 2 * req["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert channel(req, "train")["DataSource"]["S3DataSource"]["S3Uri"] == f"{PREFIX}/data/phase1"
    assert info["placeholders"] == [] and req["RoleArn"] == ROLE
    no_role = {k: v for k, v in env.items() if k != "BERTLIB_SAGEMAKER_ROLE"}
    # a dry run still shows the request, with a placeholder role it names; a real launch refuses
    shown = subprocess.run(cmd, env=no_role, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    info = json.loads(shown.stdout)["phase1"]
    assert info["placeholders"] == ["BERTLIB_SAGEMAKER_ROLE"]
    assert info["request"]["RoleArn"] == sm.DRY_RUN_PLACEHOLDERS["BERTLIB_SAGEMAKER_ROLE"]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bertlib.cli",
            "launch",
            "pretrain",
            "--config",
            str(PARAMS / "phase1.yaml"),
            "--dry_run",
            "false",
        ],
        env=no_role,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "no IAM role" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_wait_reports_the_terminal_status(account_env, sm_session, aws_env):
    # moto completes a training job at once; the SDK's wait polls DescribeTrainingJob (and the logs)
    info = sm.launch("pretrain", phase1_config(), session=sm_session, wait=True, logs=True)
    assert info["status"] == "Completed"


def test_squad_files_are_staged_to_s3_before_the_job(account_env, sm_session, aws_env, squad_fixture, capsys):
    """A job in a VPC without NAT cannot download: the launcher stages the files (sha256-checked) to S3."""
    import functools
    import http.server
    import threading

    from bertlib.core.errors import AssetError
    from bertlib.core.files import sha256_file

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(squad_fixture.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{squad_fixture.name}"
    digest = sha256_file(squad_fixture)
    out = f"s3://{aws_env['bucket']}/staging"
    try:
        cfg = reference(
            "squad",
            "squadv1",
            output_s3_uri=out,
            train_file=url,
            predict_file=url,
            train_file_sha256=digest,
            predict_file_sha256=digest,
        )
        sent = capture_create(sm_session)
        sm.launch("squad", cfg, session=sm_session)
        staged = f"{out}/staged/squad/{digest}/{squad_fixture.name}"
        for name, key in (("squad_train", "train_file"), ("squad_predict", "predict_file")):
            assert channel(sent[0], name)["DataSource"]["S3DataSource"]["S3Uri"] == staged
            assert sent[0]["HyperParameters"][key] == f"/opt/ml/input/data/{name}/{squad_fixture.name}"
        bucket, key = staged[5:].split("/", 1)
        assert boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == squad_fixture.read_bytes()
        assert capsys.readouterr().out.count(f"staged {url} -> {staged}") == 1  # the same file once
        sm.launch("squad", cfg, session=sm_session)
        assert "staged" not in capsys.readouterr().out  # already there
        dry = sm.launch("squad", cfg, dry_run=True)
        assert channel(dry["request"], "squad_train")["DataSource"]["S3DataSource"]["S3Uri"] == staged

        bad = reference(
            "squad",
            "squadv1",
            output_s3_uri=out,
            train_file=url,
            predict_file=url,
            train_file_sha256="0" * 64,
            predict_file_sha256=digest,
        )
        with pytest.raises(AssetError, match="does not match expected 0000"):
            sm.launch("squad", bad, session=sm_session)
        assert len(sent) == 2  # the bad config sent no CreateTrainingJob
    finally:
        server.shutdown()
        server.server_close()


def test_every_reference_job_writes_its_output_under_the_project_prefix(account_env):
    """No job of params/sagemaker/ leaves output_s3_uri unset: the SDK would then write to its default
    bucket, which needs an STS call and CreateBucket rights."""
    steps = [("data", None), ("phase1", None), ("phase2", None), ("squad", "squadv1"), ("squad", "squadv2")]
    outputs = {(step, name): reference(step, name).launch.output_s3_uri for step, name in steps}
    assert set(outputs.values()) == {f"{PREFIX}/output"}, outputs


def test_prepare_data_job_writes_where_the_training_params_read(account_env, sm_session, aws_env, tmp_path, bert_vocab):
    """params/sagemaker/data.yaml as 01_data_prep resolves it: one MPI rank per CPU instance, the local
    vocab (an asset) and a local source staged to S3 as channels, the dataset written through the
    checkpoint folder into s3_data_uri — whose phases are exactly the data_dir of phase1.yaml / phase2.yaml."""
    from bertlib.core.files import sha256_file

    local_source = tmp_path / "extra.txt"
    local_source.write_text("A sentence.\nAnother one.\n\nA second document.\n")
    url = "https://dumps.wikimedia.org/enwiki/latest/enwiki-latest-pages-articles-multistream.xml.bz2"
    out = f"s3://{aws_env['bucket']}/staging"
    cfg = reference("data", sources=[url, str(local_source)], output_s3_uri=out)
    assert (cfg.launch.backend, cfg.launch.instance_type, cfg.launch.instance_count, cfg.launch.s3_data_uri) == (
        "sagemaker",
        "ml.m5.24xlarge",
        4,
        f"{PREFIX}/data",
    )
    sent = capture_create(sm_session)
    info = sm.launch("prepare-data", cfg, session=sm_session)
    req = sent[0]
    assert req["ResourceConfig"]["InstanceType"] == "ml.m5.24xlarge" and req["ResourceConfig"]["InstanceCount"] == 4
    assert req["CheckpointConfig"] == {"S3Uri": f"{PREFIX}/data", "LocalPath": "/opt/ml/checkpoints"}
    assert req["Environment"]["BERTLIB_JOB"] == "prepare-data"
    assert req["TrainingJobName"].startswith("bertlib-prepare-data-")
    drivers = channel(req, "sm_drivers")["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/")
    dist = s3_json(drivers + "/distributed.json")
    assert dist["process_count_per_node"] == 4 and dist["mpi_additional_options"][:2] == ["--map-by", "ppr:1:node"]
    assert [m["Name"] for m in req["AlgorithmSpecification"]["MetricDefinitions"]] == [
        "extract_documents_per_s",
        "tokenize_tokens_per_s",
        "instances_pairs_per_s",
        "shards_pairs_per_s",
    ]
    # staged inputs: the bytes in S3 are the local files', under their sha256
    staged = {
        "vocab": (bert_vocab, f"{out}/staged/data/{sha256_file(bert_vocab)}/vocab.txt"),
        "source1": (local_source, f"{out}/staged/data/{sha256_file(local_source)}/extra.txt"),
    }
    for name, (local, uri) in staged.items():
        assert channel(req, name)["DataSource"]["S3DataSource"]["S3Uri"] == uri
        bucket, key = uri[5:].split("/", 1)
        assert boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == local.read_bytes()
    assert {c["ChannelName"] for c in req["InputDataConfig"]} == {"vocab", "source1", "code", "sm_drivers"}
    # the container's command line parses back to the same DataConfig, with container paths
    parsed = load_config("prepare-data", None, container_argv(req["HyperParameters"]))
    expected = {
        **cfg.job.model_dump(),
        "output_dir": "/opt/ml/checkpoints",
        "work_dir": "/opt/ml/input/bertlib-work",
        "cache_dir": "/opt/ml/input/bertlib-work/cache",
        "vocab_file": "/opt/ml/input/data/vocab/vocab.txt",
        "vocab_sha256": sha256_file(bert_vocab),
        "sources": [url, "/opt/ml/input/data/source1/extra.txt"],
        "source_sha256": {"/opt/ml/input/data/source1/extra.txt": sha256_file(local_source)},
    }
    assert parsed.model_dump() == expected
    # where the training notebooks read the phases (an independent file: params/sagemaker/phase*.yaml)
    phase_dirs = {
        step: reference(step, checkpoint_path="s3://x/model.tar.gz").job.data_dir for step in ("phase1", "phase2")
    }
    assert info["datasets"] == phase_dirs == {"phase1": f"{PREFIX}/data/phase1", "phase2": f"{PREFIX}/data/phase2"}


def test_prepare_data_job_refuses_what_cannot_run_there(account_env):
    with pytest.raises(ConfigError, match="s3_data_uri None: a SageMaker prepare-data job writes the dataset"):
        sm.resolve("prepare-data", reference("data", s3_data_uri=None))
    with pytest.raises(ConfigError, match="sources\\[0\\] '/data/x.txt': on SageMaker a source is an s3:// object"):
        sm.resolve("prepare-data", reference("data", sources=["/data/x.txt"], vocab_file=None))
    with pytest.raises(ConfigError, match="leave them unset"):
        sm.resolve("prepare-data", reference("data", num_hosts=2, host_index=0, vocab_file=None))
    with pytest.raises(ValueError, match="processes_per_host: data preparation runs one process per host"):
        reference("data", processes_per_host=8)


@pytest.mark.parametrize("data_filter", [True, False], ids=["python-with-data-filter", "python-3.11.2"])
def test_archives_never_extract_outside_their_folder(tmp_path, monkeypatch, data_filter):
    """model.tar.gz / output.tar.gz are unpacked safely also on Pythons without ``filter="data"``
    (Debian bookworm's 3.11.2 in the local image); the rule is the data filter's."""
    import tarfile

    from bertlib.launch.results import extract_tar_gz

    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter")
    good, evil = tmp_path / "good.tar.gz", tmp_path / "evil.tar.gz"
    for archive, name in ((good, "sub/bert_config.json"), (evil, "../outside.txt")):
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    extract_tar_gz(good, tmp_path / "ok")
    assert (tmp_path / "ok" / "sub" / "bert_config.json").read_bytes() == b"{}"
    with pytest.raises((ConfigError, tarfile.TarError)):
        extract_tar_gz(evil, tmp_path / "no")
    assert not (tmp_path / "outside.txt").exists()


def test_one_boto_session_per_region_and_aws_environment(aws_env, monkeypatch):
    """Launches, status and attach share the process's boto3 session (botocore's service descriptions
    parsed once); another region or a changed AWS_ variable gets its own; a dry run's refusing session
    is never the shared one."""
    shared = boto_session(aws_env["region"])
    assert boto_session(aws_env["region"]) is shared and boto_session("eu-west-1") is not shared
    assert sagemaker_sdk.make_session(aws_env["region"], aws_env["bucket"], dry_run=False).boto_session is shared
    dry = sagemaker_sdk.make_session(aws_env["region"], aws_env["bucket"], dry_run=True)
    assert dry.boto_session is not shared
    with pytest.raises(sagemaker_sdk.DryRunRequestBlocked):
        dry.boto_session.client("s3").list_buckets()
    assert aws_env["bucket"] in [b["Name"] for b in shared.client("s3").list_buckets()["Buckets"]]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "other-key")
    other = boto_session(aws_env["region"])
    assert other is not shared and other.get_credentials().access_key == "other-key"
