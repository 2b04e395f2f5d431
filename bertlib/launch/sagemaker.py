"""Run ``bertlib pretrain`` / ``bertlib squad`` / ``bertlib prepare-data`` as a SageMaker training job over MPI.

Built on SageMaker Python SDK 3.x: ``sagemaker.train.ModelTrainer`` with the ``MPI`` distribution. The
job ships a copy of this ``bertlib`` package as its code channel and runs
``bertlib/launch/sm_entry.py`` on every rank, with the job's config (:attr:`LaunchedJob.job <bertlib.core.config.LaunchedJob>`, never the launch
settings) flattened to ``--key value`` hyperparameters (the same parser as a local run reads them). The image (``container/Dockerfile``)
holds TensorFlow, Horovod and the requirements.

This module resolves and checks everything without the SDK (:func:`resolve` → :class:`JobSpec`:
channels, hyperparameters, environment; staging of local files and URLs to S3);
:mod:`bertlib.launch.sagemaker_sdk` is the only code that calls the SDK (the trainer, sessions, the
request of a dry run, starting a job, the verified driver version).

Container contract (what the entry points see):

==========================  ===========================================================
training data               channel ``train`` (FSx for Lustre or S3) → ``data_dir``
init checkpoint             channel ``init`` (S3 folder / ``model.tar.gz``, or FSx)
                            → ``checkpoint_path``
checkpoints                 ``/opt/ml/checkpoints`` (``BERTLIB_CHECKPOINT_DIR``), synced
                            to ``checkpoint_s3_uri``; a restarted (spot) job resumes there
export (model.tar.gz)       ``SM_MODEL_DIR`` = ``/opt/ml/model``
metrics.jsonl, summary...   ``SM_OUTPUT_DATA_DIR`` → ``<output>/<job>/output/output.tar.gz``
==========================  ===========================================================

``prepare-data`` is a training job of the same image rather than a Processing job: it reuses this
launcher, the MPI driver (one rank per instance: the ranks exchange their shards' done-markers and
host 0 writes the manifests, :mod:`bertlib.data.hosts`) and the checkpoint sync, which gives it the
output location and the resume. Each host writes its share of the shards into ``/opt/ml/checkpoints``
(its ``output_dir``), which SageMaker syncs to ``s3_data_uri`` — one prefix for all hosts, the files
of different hosts never share a name; a restarted job gets them back and writes only what is
missing. Sources: ``s3://`` objects are channels (``source0``, ...), ``http(s)`` URLs are downloaded
by every host (the job needs internet access), local files (and the vocab file) are staged to S3
first. Corpus and instance files stay on each host's ML storage volume (``work_dir``).

Account-specific values — role, image, subnets, security groups, FSx id — come from the config
(set in a notebook / on the command line) or from the environment variables
``BERTLIB_SAGEMAKER_ROLE``, ``BERTLIB_IMAGE_URI``, ``BERTLIB_SUBNETS``,
``BERTLIB_SECURITY_GROUP_IDS`` (comma-separated), ``BERTLIB_FSX_ID``, ``BERTLIB_FSX_MOUNT_NAME``; never
from committed files. The names the reference's users export (``SAGEMAKER_ROLE``,
``SAGEMAKER_IMAGE_NAME``, ``SAGEMAKER_SUBNET_IDS``, ``SAGEMAKER_SECURITY_GROUP_IDS``,
``SAGEMAKER_FSX_ID``, ``SAGEMAKER_FSX_MOUNT_NAME``) are read when the ``BERTLIB_*`` one is unset.
``SAGEMAKER_IMAGE_NAME`` is the full image URI, as the reference passed it to the SDK's ``image_name``.

``instance_type: local`` / ``local_gpu`` runs the same job in the SDK's own local mode
(:func:`launch_local`): ``instance_count`` containers on this machine's Docker, local folders as the
channels, no AWS call, the results in the run directory as a local run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertlib.core.assets import fetch_url
from bertlib.core.config import LaunchedJob, global_batch
from bertlib.core.errors import ConfigError, LaunchError
from bertlib.core.files import sha256_file
from bertlib.data.prepare import RATE_KEYS
from bertlib.launch import sagemaker_sdk
from bertlib.train.metrics import EVAL_METRIC_KEYS, METRIC_KEYS, VALIDATION_METRIC_KEYS

CHANNEL_ROOT = "/opt/ml/input/data"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
#: prepare-data's scratch (corpus, instance files, download cache): on the ML storage volume, which
#: SageMaker mounts for the /opt/ml paths (ResourceConfig.VolumeSizeInGB; instance storage on NVMe types)
PREPARE_WORK_DIR = "/opt/ml/input/bertlib-work"
JOBS = ("pretrain", "squad", "prepare-data", "canary")
ENTRY_SCRIPT = "bertlib/launch/sm_entry.py"
_ENV = {
    "role": "BERTLIB_SAGEMAKER_ROLE",
    "image_uri": "BERTLIB_IMAGE_URI",
    "subnets": "BERTLIB_SUBNETS",
    "security_group_ids": "BERTLIB_SECURITY_GROUP_IDS",
    "fsx_file_system_id": "BERTLIB_FSX_ID",
    "fsx_mount_name": "BERTLIB_FSX_MOUNT_NAME",
}
#: the reference's names for the same settings (aws-samples/deep-learning-models
#: models/nlp/common/arguments.py:196-203), read when the ``BERTLIB_*`` variable is unset or empty
_ENV_ALIASES = {
    "role": "SAGEMAKER_ROLE",
    "image_uri": "SAGEMAKER_IMAGE_NAME",
    "subnets": "SAGEMAKER_SUBNET_IDS",
    "security_group_ids": "SAGEMAKER_SECURITY_GROUP_IDS",
    "fsx_file_system_id": "SAGEMAKER_FSX_ID",
    "fsx_mount_name": "SAGEMAKER_FSX_MOUNT_NAME",
}


#: what a dry run puts in the request for account settings that are not set, so that the request and
#: the estimate can be shown on any machine; the result lists them and a real launch refuses them
DRY_RUN_PLACEHOLDERS = {
    "BERTLIB_SAGEMAKER_ROLE": "arn:aws:iam::000000000000:role/SET-BERTLIB_SAGEMAKER_ROLE",
    "BERTLIB_IMAGE_URI": "000000000000.dkr.ecr.us-east-1.amazonaws.com/set-bertlib-image-uri:latest",
    "BERTLIB_S3_PREFIX": "s3://set-bertlib-s3-prefix/bertlib",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Channel:
    """One input channel: ``source`` is an S3 URI or an FSx directory path; ``container_path`` is
    where the entry point finds it (the value its hyperparameter gets)."""

    name: str
    source: str
    fsx: bool
    container_path: str


@dataclass
class JobSpec:
    """Everything a launch needs, resolved and validated before any AWS call."""

    job: str
    base_job_name: str
    role: str
    image_uri: str
    region: str | None
    processes_per_host: int
    world_size: int
    subnets: list[str]
    security_group_ids: list[str]
    fsx_file_system_id: str | None
    channels: list[Channel]
    hyperparameters: dict[str, Any]
    environment: dict[str, str]
    mpi_options: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)  # dry run: unset settings shown as placeholders
    local: bool = False  # the SDK's local mode: channels are local folders


# ----------------------------------------------------------------------------- resolution


def _from_env(cfg, name: str):
    # cfg: the LaunchConfig
    """The config's value, else ``$BERTLIB_*``, else the reference's ``$SAGEMAKER_*`` name."""
    value = getattr(cfg, name)
    if value:
        return value
    raw = os.environ.get(_ENV[name], "").strip() or os.environ.get(_ENV_ALIASES[name], "").strip()
    if name in ("subnets", "security_group_ids"):
        return [s.strip() for s in raw.split(",") if s.strip()]
    return raw or None


def _env_names(name: str) -> str:
    """``$BERTLIB_X / $SAGEMAKER_Y`` (bertlib's name, then the reference's) for messages."""
    return f"${_ENV[name]} / ${_ENV_ALIASES[name]}"


def _job_name(job: str, launched: LaunchedJob) -> str:
    cfg = launched.job
    if launched.launch.job_name:
        name = launched.launch.job_name
    elif job == "prepare-data":
        name = "bertlib-prepare-data"
    else:
        name = f"bertlib-{job}-{cfg.phase if job in ('pretrain', 'canary') else cfg.squad_version}"
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,40}", name):
        raise ConfigError(
            f"job_name {name!r}: use letters, digits and '-' (at most 41 characters; SageMaker appends a timestamp)"
        )
    return name


def _channel(name: str, source: str, fsx: tuple[str | None, str | None], what: str) -> Channel:
    """An S3 URI or (with an FSx file system ``fsx`` = (id, mount name)) an FSx path → a channel.

    An FSx for Lustre ``DirectoryPath`` is ``/<MountName>/<path>``; current file systems get a
    generated mount name (``/fsx`` only fits old scratch ones), so the mount name is required and the
    path must lie under it.
    """
    if source.startswith("s3://"):
        path = f"{CHANNEL_ROOT}/{name}"
        if source.endswith(".tar.gz") or source.endswith(".json"):  # a single object: keep its name
            path += "/" + source.rstrip("/").rsplit("/", 1)[-1]
        return Channel(name, source, False, path)
    fsx_id, mount = fsx
    if source.startswith("/") and fsx_id:
        if not mount:
            raise ConfigError(
                f"{what} {source!r}: an FSx for Lustre path is /<MountName>/<path>; set "
                f"fsx_mount_name (or {_env_names('fsx_mount_name')}) to the MountName of {fsx_id} "
                "(aws fsx describe-file-systems: LustreConfiguration.MountName)"
            )
        if not source.startswith(f"/{mount.strip('/')}/"):
            raise ConfigError(
                f"{what} {source!r}: not on FSx file system {fsx_id}, whose paths start with "
                f"/{mount.strip('/')}/ (its MountName)"
            )
        return Channel(name, source, True, f"{CHANNEL_ROOT}/{name}")
    raise ConfigError(
        f"{what} {source!r}: on SageMaker this must be an s3:// URI or, with "
        f"fsx_file_system_id (or {_env_names('fsx_file_system_id')}), an FSx path /<MountName>/..."
    )


def resolve(job: str, launched: LaunchedJob) -> JobSpec:
    """Check a launched job for SageMaker and resolve every setting (no AWS call).

    The hyperparameters are the job's config only (:attr:`LaunchedJob.job`); the launch settings
    become the request's compute, networking, stopping and environment. Raises ConfigError naming the
    missing/invalid setting — e.g. no role or image.
    """
    if job not in JOBS:
        raise ConfigError(f"job {job!r}: expected one of {', '.join(JOBS)}")
    cfg, job_cfg = launched.launch, launched.job
    if cfg.local_mode:
        return _resolve_local(job, launched)
    settings = {
        "role": _from_env(cfg, "role"),
        "image_uri": _from_env(cfg, "image_uri"),
        "region": cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    }
    placeholders = []
    if cfg.dry_run:  # show the request anyway, with placeholders that say what to set
        for name, var in (("role", _ENV["role"]), ("image_uri", _ENV["image_uri"]), ("region", "AWS_DEFAULT_REGION")):
            if not settings[name]:
                settings[name] = DRY_RUN_PLACEHOLDERS[var]
                placeholders.append(var)
    role, image, region = settings["role"], settings["image_uri"], settings["region"]
    if not role:
        raise ConfigError(f"SageMaker launch: no IAM role — set role or {_env_names('role')}")
    if not image:
        raise ConfigError(
            f"SageMaker launch: no training image — set image_uri or {_env_names('image_uri')} "
            "(build it with container/build_and_push.sh, or without Docker: bertlib launch image)"
        )
    subnets, sgs = _from_env(cfg, "subnets"), _from_env(cfg, "security_group_ids")
    fsx_id = _from_env(cfg, "fsx_file_system_id")
    fsx = (fsx_id, _from_env(cfg, "fsx_mount_name"))
    if bool(subnets) != bool(sgs):
        raise ConfigError(
            "SageMaker launch: a VPC needs both subnets and security_group_ids "
            f"({_env_names('subnets')}, {_env_names('security_group_ids')})"
        )
    per_host, world = _world(job, launched)
    if cfg.use_spot:
        if cfg.max_wait_seconds is not None and cfg.max_wait_seconds < cfg.max_run_seconds:
            raise ConfigError(
                f"max_wait_seconds ({cfg.max_wait_seconds}) must be >= max_run_seconds "
                f"({cfg.max_run_seconds}) for spot training"
            )
    elif cfg.max_wait_seconds is not None:
        raise ConfigError("max_wait_seconds only applies to spot training (use_spot: true)")

    hp = job_cfg.model_dump(mode="json")
    channels: list[Channel] = []
    if job == "prepare-data":
        channels = _prepare_data_channels(launched, hp)
    elif job in ("pretrain", "canary"):
        if cfg.fsx_directory_path:
            if not fsx_id:
                raise ConfigError(
                    f"fsx_directory_path needs fsx_file_system_id (or {_env_names('fsx_file_system_id')})"
                )
            channels.append(_channel("train", cfg.fsx_directory_path, fsx, "fsx_directory_path"))
        else:
            channels.append(
                _channel(
                    "train",
                    cfg.s3_data_uri or job_cfg.data_dir,
                    (None, None),
                    "s3_data_uri" if cfg.s3_data_uri else "data_dir",
                )
            )
        if job_cfg.validation_dir:
            channels.append(_channel("validation", job_cfg.validation_dir, fsx, "validation_dir"))
    else:
        for key, name in (("train_file", "squad_train"), ("predict_file", "squad_predict")):
            if getattr(job_cfg, key).startswith("s3://"):
                channels.append(_channel(name, getattr(job_cfg, key), (None, None), key))
    if getattr(job_cfg, "load_from", None) == "checkpoint":
        channels.append(_channel("init", job_cfg.checkpoint_path, fsx, "checkpoint_path"))
    if any(c.fsx for c in channels) and not subnets:
        raise ConfigError(
            "FSx for Lustre input needs a VPC: set subnets and security_group_ids "
            f"({_env_names('subnets')}, {_env_names('security_group_ids')})"
        )
    return JobSpec(
        job=job,
        base_job_name=_job_name(job, launched),
        role=role,
        image_uri=image,
        region=region,
        placeholders=placeholders,
        processes_per_host=per_host,
        world_size=world,
        subnets=subnets,
        security_group_ids=sgs,
        fsx_file_system_id=fsx_id,
        channels=channels,
        hyperparameters=_hyperparameters(hp, channels),
        environment=_environment(job, cfg),
        mpi_options=list(cfg.mpi_options),
    )


#: the job's config key that each channel's container path replaces
_CHANNEL_KEYS = {
    "train": "data_dir",
    "validation": "validation_dir",
    "init": "checkpoint_path",
    "squad_train": "train_file",
    "squad_predict": "predict_file",
}


def _hyperparameters(hp: dict, channels: list[Channel]) -> dict[str, Any]:
    """The job's config values ``hp`` with the channels' container paths in place of their sources."""
    for c in channels:
        if c.name in _CHANNEL_KEYS:
            hp[_CHANNEL_KEYS[c.name]] = c.container_path
    return {k: hyperparameter_value(v) for k, v in hp.items() if v is not None}


def _environment(job: str, cfg) -> dict[str, str]:
    # cfg: the LaunchConfig
    """Every rank's environment: the job, its checkpoint folder, the launch's ``environment``."""
    # threads_per_process is a local setting (a notebook run with -f params/sagemaker/... keeps the local
    # file's 1): a SageMaker job's TF uses its defaults unless `environment` sets TF_NUM_*_THREADS
    return {"BERTLIB_JOB": job, "BERTLIB_CHECKPOINT_DIR": CHECKPOINT_LOCAL_PATH, **cfg.environment}


def _world(job: str, launched: LaunchedJob) -> tuple[int, int]:
    """``(ranks per host, world size)`` of the launch; a training job's ``global_batch_size_check`` is
    checked against that world size."""
    per_host = launched.launch.per_host
    world = per_host * launched.launch.instance_count
    if job != "prepare-data":
        global_batch(launched.job, world)
    return per_host, world


# ----------------------------------------------------------------------------- local mode


def _local_channel(name: str, source: str, what: str) -> Channel:
    """A local folder or file (a path or ``file://`` URI) → a channel of the SDK's local mode, which
    bind-mounts the folder at ``/opt/ml/input/data/<name>``; a file's folder is mounted and the file
    keeps its name (as an S3 object channel does). Anything remote is one clear line."""
    if "://" in source and not source.startswith("file://"):
        raise ConfigError(
            f"{what} {source!r}: instance_type local (the SDK's local mode) mounts local folders; "
            "copy the data here (e.g. aws s3 sync) and give its path"
        )
    path = Path(source.removeprefix("file://")).resolve()
    if path.is_dir():
        return Channel(name, str(path), False, f"{CHANNEL_ROOT}/{name}")
    if path.is_file():
        return Channel(name, str(path.parent), False, f"{CHANNEL_ROOT}/{name}/{path.name}")
    raise ConfigError(f"{what} {source!r}: not found (local mode mounts a local folder or file)")


def _resolve_local(job: str, launched: LaunchedJob) -> JobSpec:
    """:func:`resolve` for the SDK's local mode (``instance_type`` local / local_gpu): the image is
    required, no role or region (nothing is sent to AWS), every input a local channel. ``prepare-data``
    writes its dataset through the channel ``dataset``, the job's ``output_dir`` mounted read-write
    into every container (all hosts share it, as hosts share an S3 prefix on SageMaker)."""
    cfg, job_cfg = launched.launch, launched.job
    image = _from_env(cfg, "image_uri")
    if not image:
        raise ConfigError(
            f"local mode: no training image — set image_uri or {_env_names('image_uri')} to a local tag "
            "(make image builds bertlib-training:local)"
        )
    per_host, world = _world(job, launched)
    hp = job_cfg.model_dump(mode="json")
    channels: list[Channel] = []
    if job in ("pretrain", "canary"):
        channels.append(_local_channel("train", job_cfg.data_dir, "data_dir"))
        if job_cfg.validation_dir:
            channels.append(_local_channel("validation", job_cfg.validation_dir, "validation_dir"))
    elif job == "squad":  # an http(s) file stays a URL: the job downloads it (and checks its sha256)
        for key, name in (("train_file", "squad_train"), ("predict_file", "squad_predict")):
            if not getattr(job_cfg, key).startswith(("http://", "https://")):
                channels.append(_local_channel(name, getattr(job_cfg, key), key))
    else:
        _check_hosts_unset(job_cfg)
        sources, sha = [], dict(job_cfg.source_sha256)
        for i, source in enumerate(job_cfg.sources):
            if source.startswith(("http://", "https://")):  # every container downloads it
                sources.append(source)
                continue
            c = _local_channel(f"source{i}", source, f"sources[{i}]")
            channels.append(c)
            sources.append(c.container_path)
            if source in sha:
                sha[c.container_path] = sha.pop(source)
        if job_cfg.vocab_file:
            c = _local_channel("vocab", job_cfg.vocab_file, "vocab_file")
            channels.append(c)
            hp["vocab_file"] = c.container_path
        dataset = Channel("dataset", str(Path(job_cfg.output_dir).resolve()), False, f"{CHANNEL_ROOT}/dataset")
        channels.append(dataset)
        hp.update(
            sources=sources,
            source_sha256=sha,
            output_dir=dataset.container_path,
            work_dir=PREPARE_WORK_DIR,
            cache_dir=f"{PREPARE_WORK_DIR}/cache",
        )
    if getattr(job_cfg, "load_from", None) == "checkpoint":
        channels.append(_local_channel("init", job_cfg.checkpoint_path, "checkpoint_path"))
    return JobSpec(
        job=job,
        base_job_name=_job_name(job, launched),
        role=_from_env(cfg, "role") or "",
        image_uri=image,
        region=None,
        processes_per_host=per_host,
        world_size=world,
        subnets=[],
        security_group_ids=[],
        fsx_file_system_id=None,
        channels=channels,
        hyperparameters=_hyperparameters(hp, channels),
        environment=_environment(job, cfg),
        mpi_options=list(cfg.mpi_options),
        local=True,
    )


def _prepare_data_channels(launched: LaunchedJob, hp: dict) -> list[Channel]:
    """Channels of a prepare-data job, with ``hp`` (its hyperparameters) pointed at them: ``s3://``
    sources → ``source<i>``, an ``s3://`` vocab file → ``vocab``; the dataset goes to ``s3_data_uri``
    through the checkpoint folder. Local files must have been staged (:func:`stage_data_files`)."""
    cfg, s3_data_uri = launched.job, launched.launch.s3_data_uri
    if not s3_data_uri or not s3_data_uri.startswith("s3://"):
        raise ConfigError(
            f"s3_data_uri {s3_data_uri!r}: a SageMaker prepare-data job writes the dataset to an "
            "s3:// prefix (its phases become <s3_data_uri>/<phase>)"
        )
    _check_hosts_unset(cfg)
    channels, sources, sha = [], [], dict(cfg.source_sha256)
    for i, source in enumerate(cfg.sources):
        if source.startswith("s3://"):
            c = _channel(f"source{i}", source.rstrip("/"), (None, None), f"sources[{i}]")
            c.container_path = f"{CHANNEL_ROOT}/{c.name}/{source.rstrip('/').rsplit('/', 1)[-1]}"  # one object
            channels.append(c)
            if source in sha:
                sha[c.container_path] = sha.pop(source)
            sources.append(c.container_path)
        elif source.startswith(("http://", "https://")):
            sources.append(source)
        else:
            raise ConfigError(
                f"sources[{i}] {source!r}: on SageMaker a source is an s3:// object or an http(s) URL "
                "(local files are staged to S3 by bertlib launch)"
            )
    if cfg.vocab_file:
        if not cfg.vocab_file.startswith("s3://"):
            raise ConfigError(
                f"vocab_file {cfg.vocab_file!r}: on SageMaker an s3:// object (bertlib launch stages a "
                "local vocab file to S3)"
            )
        c = _channel("vocab", cfg.vocab_file, (None, None), "vocab_file")
        c.container_path = f"{CHANNEL_ROOT}/vocab/{cfg.vocab_file.rsplit('/', 1)[-1]}"
        channels.append(c)
        hp["vocab_file"] = c.container_path
    hp.update(
        sources=sources,
        source_sha256=sha,
        output_dir=CHECKPOINT_LOCAL_PATH,
        work_dir=PREPARE_WORK_DIR,
        cache_dir=f"{PREPARE_WORK_DIR}/cache",
    )
    return channels


def _check_hosts_unset(cfg) -> None:
    # cfg: a DataConfig
    """A prepare-data job's hosts are its MPI ranks: ``num_hosts`` / ``host_index`` must be unset."""
    if cfg.num_hosts is not None or cfg.host_index is not None:
        raise ConfigError(
            "num_hosts / host_index: a SageMaker job's hosts are its instance_count MPI ranks; leave them unset"
        )


def hyperparameter_value(value: Any) -> Any:
    """A config value as a hyperparameter that ``bertlib.core.config.parse_overrides`` reads back equal.

    Numbers, booleans and lists go as they are (the SDK JSON-encodes them, which YAML reads back).
    Strings go as they are unless YAML would read them as something else (``"123"``, ``"true"``,
    ``"1e-4"``), JSON would decode them (the SDK's container driver decodes every value once), or
    they hold a single quote; those go as a YAML double-quoted scalar with ``'`` written ``\\x27``.
    No value ever holds a ``'``: the driver's ``sm_training.env`` wraps every value in ``'...'`` for
    ``source``, where a quote inside would end the job (or split the value at its spaces). The entry
    point reads the values from ``hyperparameters.json`` itself (:mod:`bertlib.launch.sm_entry`).
    """
    if not isinstance(value, str):
        return value
    try:
        json.loads(value)
        survives = False
    except ValueError:
        try:
            survives = "'" not in value and yaml.safe_load(value) == value
        except yaml.YAMLError:
            survives = False
    return value if survives else json.dumps(value).replace("'", "\\x27")


def metric_definitions(job: str = "pretrain") -> list[dict[str, str]]:
    """SageMaker metric regexes for every key of the entry points' ``key=value`` log lines: the
    training keys, plus for ``pretrain`` the held-out evaluation keys (``val_mlm_acc`` ...) and for
    ``squad`` the evaluation keys of its ``eval`` line (``exact_match``, ``exact``, ``f1``); for
    ``prepare-data`` the stage rates of its ``rates`` line."""
    if job == "prepare-data":
        return [{"name": key, "regex": rf"\b{key}=([-+0-9.eE]+)"} for key in RATE_KEYS]
    keys = METRIC_KEYS + (EVAL_METRIC_KEYS if job == "squad" else VALIDATION_METRIC_KEYS)
    return [{"name": key, "regex": rf"\b{key}=([-+0-9.eEinfa]+)"} for key in keys]


# ----------------------------------------------------------------------------- staging and launching


def _stage_code() -> tempfile.TemporaryDirectory:
    """A temporary folder holding a copy of the bertlib package (the job's ``code`` channel)."""
    tmp = tempfile.TemporaryDirectory(prefix="bertlib-code-")
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(
        package, Path(tmp.name) / "bertlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    )
    return tmp


def _bucket_of(uri: str | None) -> str | None:
    return uri[5:].split("/", 1)[0] if uri and uri.startswith("s3://") else None


def _session(spec: JobSpec, cfg, session, dry_run: bool):
    # cfg: the LaunchConfig (output and checkpoint buckets)
    """The SageMaker session of a launch: the caller's ``session``, else one in the spec's region. A
    dry run always gets a session that sends nothing (:func:`bertlib.launch.sagemaker_sdk.make_session`)."""
    if session is not None and not dry_run:
        return session
    region = spec.region or (session.boto_region_name if session is not None else None)
    if not region:
        raise ConfigError("SageMaker launch: no AWS region — set region, $AWS_REGION or $AWS_DEFAULT_REGION")
    if dry_run:
        bucket = (
            session.default_bucket()
            if session is not None
            else _bucket_of(cfg.output_s3_uri) or _bucket_of(cfg.checkpoint_s3_uri)
        )
        return sagemaker_sdk.make_session(region, bucket, dry_run=True)
    # code and drivers are staged next to the outputs when an output bucket is given
    return sagemaker_sdk.make_session(region, _bucket_of(cfg.output_s3_uri), dry_run=False)


def _stage(source: str, digest: str | None, base: str, session, dry_run: bool) -> tuple[str, str | None]:
    """``(s3 URI, sha256)`` of a local file or an http(s) URL (fetched into the cache, checked) once
    uploaded to ``<base>/<sha256>/<name>``; an object already there with that sha256 is not uploaded
    again. A dry run names the URI without reading the file (``SHA256`` when no digest is known)."""
    import botocore.exceptions  # boto3 comes with the sagemaker extra

    name = source.rstrip("/").rsplit("/", 1)[-1]
    if dry_run:
        return f"{base}/{digest or 'SHA256'}/{name}", digest
    local = fetch_url(source, digest) if source.startswith(("http://", "https://")) else Path(source)
    if not local.is_file():
        raise ConfigError(f"{local}: file to stage for the job not found")
    digest = digest or sha256_file(local)
    uri = f"{base}/{digest}/{name}"
    bucket, object_key = uri[5:].split("/", 1)
    s3 = session.boto_session.client("s3")
    try:
        present = s3.head_object(Bucket=bucket, Key=object_key)["Metadata"].get("sha256") == digest
    except botocore.exceptions.ClientError:
        present = False
    if not present:
        s3.upload_file(str(local), bucket, object_key, ExtraArgs={"Metadata": {"sha256": digest}})
        print(f"staged {source} -> {uri}")
    return uri, digest


def _staging_base(cfg, session, what: str) -> str:
    """``<output_s3_uri or s3://<the session's bucket>/bertlib>/staged/<what>`` (no session: a dry
    placeholder for the bucket)."""
    bucket = session.default_bucket() if session is not None else "SESSION-BUCKET"
    return (cfg.output_s3_uri or f"s3://{bucket}/bertlib").rstrip("/") + f"/staged/{what}"


def stage_squad_files(launched: LaunchedJob, session, dry_run: bool = False) -> LaunchedJob:
    """``launched`` with http(s) ``train_file`` / ``predict_file`` replaced by S3 copies of them.

    A SQuAD job in a VPC without a NAT gateway cannot download from the internet, so the files are
    fetched here (cached, sha256-checked), uploaded once to
    ``<output_s3_uri or the session's bucket>/staged/squad/<sha256>/<name>`` and given to the job as
    channels; the job checks the sha256 again. A dry run names the URI without downloading (the
    sha256 part is ``SHA256`` when the config gives none). Local mode stages nothing (the job downloads).
    """
    if launched.launch.local_mode:
        return launched
    base = _staging_base(launched.launch, session, "squad")
    cfg = launched.job
    updates = {}
    for key in ("train_file", "predict_file"):
        url = getattr(cfg, key)
        if url.startswith(("http://", "https://")):
            updates[key], digest = _stage(url, getattr(cfg, f"{key}_sha256"), base, session, dry_run)
            if digest:
                updates[f"{key}_sha256"] = digest
    if not updates:
        return launched
    return launched.updated(updates, "staged SQuAD files")


def stage_data_files(launched: LaunchedJob, session, dry_run: bool = False) -> LaunchedJob:
    """``launched`` (a prepare-data job) with its local files — sources and ``vocab_file`` — replaced by S3 copies
    under ``<output_s3_uri or the session's bucket>/staged/data/<sha256>/<name>``; s3:// and http(s)
    sources stay as they are (a job downloads URLs itself). Local mode stages nothing (it mounts them)."""
    if launched.launch.local_mode:
        return launched
    base = _staging_base(launched.launch, session, "data")
    cfg = launched.job
    sources, sha = [], dict(cfg.source_sha256)
    for source in cfg.sources:
        if source.startswith(("s3://", "http://", "https://")):
            sources.append(source)
            continue
        uri, digest = _stage(source, sha.pop(source, None), base, session, dry_run)
        sources.append(uri)
        if digest:
            sha[uri] = digest
    updates = {"sources": sources, "source_sha256": sha}
    if cfg.vocab_file and not cfg.vocab_file.startswith("s3://"):
        updates["vocab_file"], digest = _stage(cfg.vocab_file, cfg.vocab_sha256, base, session, dry_run)
        updates["vocab_sha256"] = digest or cfg.vocab_sha256
    return launched.updated(updates, "staged data files")


def build_trainer(job: str, launched: LaunchedJob, session=None, dry_run: bool = False, local_root: str | None = None):
    """(ModelTrainer, input channels, staged code dir, JobSpec) for ``launched``; validates first.

    A SQuAD config's http(s) files and a prepare-data config's local files are staged to S3 first
    (:func:`stage_squad_files`, :func:`stage_data_files`); the SDK objects are made by
    :func:`bertlib.launch.sagemaker_sdk.model_trainer`. In local mode nothing is staged (local folders
    are mounted) and the trainer's local-mode files live under ``local_root``.
    """
    sagemaker_sdk.check_sdk_driver()
    if launched.launch.local_mode:
        spec = resolve(job, launched)
        session = sagemaker_sdk.make_local_session()
        dry_run = False
    else:
        launched, spec, session = _staged(job, launched, session, dry_run)
    code = _stage_code()
    cfg = launched.launch
    trainer, inputs = sagemaker_sdk.model_trainer(
        spec,
        cfg,
        session,
        code.name,
        ENTRY_SCRIPT,
        checkpoint_s3_uri=cfg.s3_data_uri if job == "prepare-data" else cfg.checkpoint_s3_uri,
        checkpoint_local_path=CHECKPOINT_LOCAL_PATH,
        metric_definitions=metric_definitions(job),
        dry_run=dry_run,
        local_root=local_root,
    )
    return trainer, inputs, code, spec


def _staged(job: str, launched: LaunchedJob, session, dry_run: bool) -> tuple[LaunchedJob, JobSpec, Any]:
    """``(launched with its files staged to S3, its JobSpec, the SageMaker session)``: every check runs
    before any upload."""
    staged = {"squad": stage_squad_files, "prepare-data": stage_data_files}.get(job)
    spec = resolve(job, staged(launched, None, dry_run=True) if staged else launched)  # every check before any upload
    cfg = launched.launch
    sm_session = _session(spec, cfg, session, dry_run)
    if staged:
        launched = staged(launched, sm_session, dry_run)
        spec = resolve(job, launched)
    return launched, spec, sm_session


def model_artifacts_uri(output_s3_uri: str, job_name: str) -> str:
    """Where SageMaker puts a job's ``SM_MODEL_DIR`` (the export): ``.../<job>/output/model.tar.gz``."""
    return f"{output_s3_uri.rstrip('/')}/{job_name}/output/model.tar.gz"


def output_data_uri(output_s3_uri: str, job_name: str) -> str:
    """Where SageMaker puts a job's ``SM_OUTPUT_DATA_DIR`` (metrics.jsonl, summary.json, tb/)."""
    return f"{output_s3_uri.rstrip('/')}/{job_name}/output/output.tar.gz"


def launch(
    job: str,
    launched: LaunchedJob,
    dry_run: bool | None = None,
    session=None,
    wait: bool = False,
    logs: bool = True,
    on_request=None,
) -> dict:
    """Start ``job`` ("pretrain" | "squad" | "prepare-data") on SageMaker as ``launched`` describes.

    Returns ``{"job_name", "status", "model_artifacts", "output_data", "checkpoint_s3_uri",
    "request", "placeholders"}`` (and for ``prepare-data`` ``"datasets"``: phase → S3 URI): S3 URIs of the export ``model.tar.gz``, of ``output.tar.gz``
    (metrics.jsonl, summary.json) and of the checkpoints, the CreateTrainingJob request with boto3
    names, and the variables a dry run filled with :data:`DRY_RUN_PLACEHOLDERS`. With ``dry_run``
    (default: the launch's ``dry_run``) the SDK builds the request exactly as for a launch but nothing is
    uploaded or created (every AWS request is refused). ``wait`` polls the job to a
    terminal state, streaming its CloudWatch logs when ``logs``; ``on_request(request)`` gets the
    CreateTrainingJob parameters (the job's name) just before they are sent (the registry records the
    job then, :mod:`bertlib.jobs`). Local mode (``instance_type`` local / local_gpu): :func:`launch_local`.
    """
    if launched.launch.local_mode:
        return launch_local(job, launched)
    dry_run = launched.launch.dry_run if dry_run is None else dry_run
    trainer, inputs, code, spec = build_trainer(job, launched, session=session, dry_run=dry_run)
    with code:
        if dry_run:
            request = sagemaker_sdk.dry_run_request(trainer, inputs)
            name, status = request["TrainingJobName"], "DryRun"
            output, checkpoint = request["OutputDataConfig"]["S3OutputPath"], request["CheckpointConfig"]["S3Uri"]
        else:
            request, started = sagemaker_sdk.start_job(trainer, inputs, wait=wait, logs=logs, on_request=on_request)
            name, status = started.name, started.status
            output, checkpoint = started.s3_output_path, started.checkpoint_s3_uri
    info = {
        "job_name": name,
        "status": status,
        "model_artifacts": model_artifacts_uri(output, name),
        "output_data": output_data_uri(output, name),
        "checkpoint_s3_uri": checkpoint,
        "request": request,
        "placeholders": spec.placeholders,
    }
    if job == "prepare-data":  # the phases' datasets, where 02_phase1 / 03_phase2 read them
        info["datasets"] = {p.name: f"{checkpoint.rstrip('/')}/{p.name}" for p in launched.job.phases}
    return info


#: the complete log of a local-mode job, in its run directory (prepare-data: its output_dir)
LOCAL_LOG = "sagemaker-local.log"


def launch_local(job: str, launched: LaunchedJob) -> dict:
    """Run ``job`` in the SageMaker SDK's local mode (``instance_type`` local / local_gpu): ``instance_count``
    containers of the image on this machine, in the foreground, its log streaming to stdout.

    The results land where a local run's do, so the registry and :mod:`bertlib.report` read them the
    same way: the export in ``<run_dir>/export``, ``metrics.jsonl`` / ``summary.json`` / ``tb/`` in
    ``run_dir``, the job's whole log in ``<run_dir>/sagemaker-local.log``; a ``prepare-data`` job
    writes its phases straight into ``output_dir``. Returns :func:`launch`'s keys with local paths
    (``model_artifacts``: the export folder, ``output_data``: the run directory; no request, no
    checkpoint URI). A job that fails raises LaunchError with its failure reason and last log lines.
    """
    dest = Path(launched.job.output_dir if job == "prepare-data" else launched.job.run_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    # the SDK's compose project, host folders and artifacts: beside the results, never inside a mounted folder
    root = tempfile.mkdtemp(prefix=f".{dest.name}.sagemaker-local-", dir=dest.parent)
    export = None if job == "prepare-data" else dest / "export"
    try:
        trainer, inputs, code, _ = build_trainer(job, launched, local_root=root)
        with code:
            run = sagemaker_sdk.run_local(trainer, inputs, model_dest=export, output_dest=dest if export else None)
    finally:  # run_local removes it; still there when the launch was refused before the job started
        shutil.rmtree(root, ignore_errors=True)
    (dest / LOCAL_LOG).write_text(run.log)
    if run.status != "Completed":  # as a SageMaker job waited for raises when it fails
        # the ranks' one-line errors (mpirun tags them [job,rank]<stderr>:), else the driver's failure file
        ranks = dict.fromkeys(
            line.split("<stderr>:", 1)[1] for line in run.log.splitlines() if "<stderr>:error: " in line
        )
        reason = "; ".join(ranks) or (run.failure_reason or "no failure reason").strip().splitlines()[-1]
        tail = "\n".join(run.log.splitlines()[-25:])
        raise LaunchError(
            f"{job} in the SDK's local mode: job {run.name} {run.status}: {reason} (whole log: {dest / LOCAL_LOG}); "
            f"last lines:\n{tail}"
        )
    info = {
        "job_name": run.name,
        "status": run.status,
        "model_artifacts": str(export) if export is not None else None,
        "output_data": str(dest),
        "checkpoint_s3_uri": None,
        "request": None,
        "placeholders": [],
    }
    if job == "prepare-data":
        info["datasets"] = {p.name: str(dest / p.name) for p in launched.job.phases}
    return info
