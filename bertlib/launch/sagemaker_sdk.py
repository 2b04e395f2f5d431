"""The one module that touches the SageMaker Python SDK (3.x: ``sagemaker-train`` + ``sagemaker-core``).

:mod:`bertlib.launch.sagemaker` resolves a job — channels, hyperparameters, staging — into a
:class:`~bertlib.launch.sagemaker.JobSpec` without the SDK; this module turns that spec into SDK
objects and runs them. Most of what it relies on is private or version-specific, so an SDK upgrade
is checked against this file (and :data:`VERIFIED_SDK_DRIVERS` raised) and nothing else:

=================================  ==============================================================
bertlib function                   SDK surface it depends on
=================================  ==============================================================
:func:`check_sdk_driver`           the installed ``sagemaker-train`` version: its container MPI
                                   driver takes ``process_count_per_node`` as the WORLD size
:func:`make_session`               ``sagemaker.core`` ``Session``; the dry run's subclass overrides
                                   ``default_bucket`` / ``upload_data`` and reads
                                   ``_default_bucket_name_override``
:func:`model_trainer`              ``sagemaker.train.ModelTrainer``, ``distributed.MPI``, the
                                   ``sagemaker.core.training.configs`` classes, and the
                                   ``SAGEMAKER_VALIDATE_ROLE`` switch (dry run)
:func:`dry_run_request`            ``ModelTrainer._create_training_job_args`` (private)
:func:`start_job`                  ``Base.get_sagemaker_client`` (the client the SDK caches per boto
                                   session, whose event hooks capture the CreateTrainingJob
                                   request, and hand it on before it is sent) and
                                   ``ModelTrainer._latest_training_job`` (private)
:func:`make_local_session`         ``Session(sagemaker_config=...)`` and the telemetry opt-out key
:func:`local_network_interface`    ``sagemaker.train.local.local_container._LocalContainer.
                                   _write_config_files`` (private; writes ``ethwe``)
:func:`run_local`                  ``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)``, its
                                   ``local_container_root`` layout (``docker-compose.yaml``,
                                   ``artifacts/model``, ``artifacts/output``) and ``_rmtree``
                                   (private); which compose command local mode runs
:func:`hf_inference_image`         ``sagemaker.core.image_uris.retrieve("huggingface", ...,
                                   image_scope="inference")`` (the SDK's image table)
:func:`create_endpoint`            ``sagemaker.core.resources`` ``Model`` / ``EndpointConfig`` /
                                   ``Endpoint.create`` and ``wait_for_status``, the shapes
                                   ``ContainerDefinition`` / ``ProductionVariant``, and
                                   ``Base.get_sagemaker_client``'s per-(session, region) client cache
                                   (where the requests are captured)
:func:`invoke_endpoint`,           ``Endpoint.get`` / ``invoke`` (sagemaker-runtime), ``.delete()`` of
:func:`delete_endpoint`            the three resources
=================================  ==============================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bertlib.core.errors import ConfigError, JobFailed, failure_line
from bertlib.launch.aws import boto_session

#: sagemaker-train releases whose container MPI driver (uploaded from the launching machine as the
#: ``sm_drivers`` channel) has been read and run with bertlib: it passes ``process_count_per_node`` to
#: ``mpirun -np``, i.e. takes it as the WORLD size, which is what :func:`model_trainer` gives it
VERIFIED_SDK_DRIVERS = ("1.27.0",)
#: set in every container by the SDK's ``sm_training.env``; forwarded to the ranks on other hosts with
#: ``mpirun -x`` (Open MPI starts those over ssh, where only ``-x`` variables dependably arrive)
CONTAINER_CONTRACT_ENV = ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR")


# ----------------------------------------------------------------------------- SDK version


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def check_sdk_driver() -> None:
    """Refuse an SDK whose container MPI driver bertlib has not been verified with (one line).

    The driver scripts are uploaded from this machine's SDK; bertlib passes the world size as
    ``process_count_per_node`` because sagemaker-train 1.27's driver runs ``mpirun -np`` with it. A
    driver that read it per node would start (hosts ×) too many ranks.
    """
    found = _installed_version("sagemaker-train")
    if found not in VERIFIED_SDK_DRIVERS:
        raise ConfigError(
            f"sagemaker-train {found or '(not installed)'}: bertlib's MPI settings are verified with "
            f"the container driver of sagemaker-train {' / '.join(VERIFIED_SDK_DRIVERS)} only (it "
            "takes process_count_per_node as the world size); install sagemaker-train=="
            f"{VERIFIED_SDK_DRIVERS[-1]} as pinned in requirements.txt"
        )


# ----------------------------------------------------------------------------- sessions


class DryRunRequestBlocked(RuntimeError):
    """An AWS request was attempted during a dry run."""


def _refuse(request=None, **_):
    raise DryRunRequestBlocked(f"dry run: refused to send {getattr(request, 'url', 'a request')}")


def _dry_run_session_class():
    from sagemaker.core.helper.session_helper import Session

    class DryRunSession(Session):
        """A Session that never writes: uploads return the URI they would write to, and the default
        bucket is taken as given. Its boto session refuses to send any request (see ``_refuse``)."""

        def default_bucket(self):
            return self._default_bucket_name_override or f"sagemaker-{self.boto_region_name}-ACCOUNT"

        def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
            bucket = bucket or self.default_bucket()
            suffix = "" if os.path.isdir(path) else "/" + os.path.basename(path)
            return f"s3://{bucket}/{key_prefix}{suffix}"

    return DryRunSession


def make_session(region: str, default_bucket: str | None, dry_run: bool):
    """A SageMaker ``Session`` in ``region`` whose default bucket is ``default_bucket`` (None: the
    SDK's ``sagemaker-<region>-<account>``). A dry run's session uploads and sends nothing: every
    AWS request raises :class:`DryRunRequestBlocked`, uploads only name their URI."""
    import boto3

    if dry_run:  # a session of its own: the refusal must not reach the process's shared one
        boto = boto3.Session(region_name=region)
        boto.events.register("before-send", _refuse)
        return _dry_run_session_class()(boto_session=boto, default_bucket=default_bucket)
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto_session(region), default_bucket=default_bucket)


#: the SDK configuration of a local-mode session: telemetry off (the SDK would otherwise send a GET to
#: an S3 bucket of its own, and ask STS for the account, after every ``train``)
_LOCAL_SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def make_local_session():
    """A ``Session`` for the SDK's local mode that reaches no AWS service: no credentials (so none are
    written into the containers' compose file, which local mode does with a session's credentials),
    every request refused (:class:`DryRunRequestBlocked`) and telemetry off. The region only fills the
    containers' ``AWS_REGION``; nothing is sent there."""
    import boto3
    import botocore.credentials
    import botocore.session
    from sagemaker.core.helper.session_helper import Session

    core = botocore.session.get_session()
    core.register_component("credential_provider", botocore.credentials.CredentialResolver(providers=[]))
    boto = boto3.Session(botocore_session=core, region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    boto.events.register("before-send", _refuse)
    return Session(boto_session=boto, sagemaker_config=_LOCAL_SDK_CONFIG)


# ----------------------------------------------------------------------------- the trainer


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables for the duration of a block (restoring the previous values)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def model_trainer(
    spec,
    cfg,
    session,
    code_dir: str,
    entry_script: str,
    checkpoint_s3_uri: str | None,
    checkpoint_local_path: str,
    metric_definitions: list[dict[str, str]],
    dry_run: bool,
    local_root: str | None = None,
):
    """``(ModelTrainer, input channels)`` for a resolved ``spec`` (:class:`bertlib.launch.sagemaker.JobSpec`).

    ``cfg`` (the :class:`~bertlib.core.config.LaunchConfig`) gives the compute, stopping, output and tag settings; ``code_dir`` (holding
    ``entry_script``) is the code channel; every rank runs the entry script under the MPI driver. A
    local-mode ``spec`` gets a trainer in the SDK's local-container mode whose compose project,
    host folders and artifacts live under ``local_root`` (no checkpoint, output, VPC or tag settings:
    local mode has none).
    """
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        FileSystemDataSource,
        InputData,
        MetricDefinition,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import MPI
    from sagemaker.train.model_trainer import Mode

    # SDK 3.27's MPI driver runs `mpirun -np <process_count_per_node>` with every host listed as
    # host:<process_count_per_node> slots, i.e. process_count_per_node is the TOTAL rank count.
    # Ask for the world size and place processes_per_host ranks on each node explicitly.
    # Ranks on the other hosts are started over ssh, where the job's environment arrives only
    # through `-x` (the driver's /etc/environment reaches them only if sshd's PAM stack reads it).
    forwarded = [arg for name in sorted({*spec.environment, *CONTAINER_CONTRACT_ENV}) for arg in ("-x", name)]
    mpi = MPI(
        process_count_per_node=spec.world_size,
        mpi_additional_options=[
            "--map-by",
            f"ppr:{spec.processes_per_host}:node",
            "--bind-to",
            "none",
            *forwarded,
            *spec.mpi_options,
        ],
    )
    networking = Networking(subnets=spec.subnets, security_group_ids=spec.security_group_ids) if spec.subnets else None
    max_wait = (cfg.max_wait_seconds or 2 * cfg.max_run_seconds) if cfg.use_spot else None
    if spec.local:
        mode = {"training_mode": Mode.LOCAL_CONTAINER, "local_container_root": local_root}
    else:
        mode = {
            "output_data_config": OutputDataConfig(s3_output_path=cfg.output_s3_uri) if cfg.output_s3_uri else None,
            "checkpoint_config": CheckpointConfig(s3_uri=checkpoint_s3_uri, local_path=checkpoint_local_path),
            "tags": [Tag(key=k, value=v) for k, v in cfg.tags.items()] or None,
        }
    # A dry run skips the SDK's client-side IAM role check (read-only IAM calls); SageMaker still
    # checks the role when a real job is created.
    with _environ(SAGEMAKER_VALIDATE_ROLE="false") if dry_run else contextlib.nullcontext():
        trainer = ModelTrainer(
            sagemaker_session=session,
            role=spec.role or None,
            training_image=spec.image_uri,
            base_job_name=spec.base_job_name,
            source_code=SourceCode(source_dir=code_dir, entry_script=entry_script),
            distributed=mpi,
            compute=Compute(
                instance_type=cfg.instance_type,
                instance_count=cfg.instance_count,
                volume_size_in_gb=cfg.volume_size_gb,
                enable_managed_spot_training=cfg.use_spot,
            ),
            networking=networking,
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=cfg.max_run_seconds, max_wait_time_in_seconds=max_wait
            ),
            environment=spec.environment,
            hyperparameters=spec.hyperparameters,
            **mode,
        )
    trainer.with_metric_definitions([MetricDefinition(**m) for m in metric_definitions])
    inputs = []
    for c in spec.channels:
        source = (
            FileSystemDataSource(
                file_system_id=spec.fsx_file_system_id,
                file_system_type="FSxLustre",
                directory_path=c.source,
                file_system_access_mode="ro",
            )
            if c.fsx
            else c.source
        )
        inputs.append(InputData(channel_name=c.name, data_source=source))
    return trainer, inputs


# ----------------------------------------------------------------------------- requests and jobs


@dataclass
class StartedJob:
    """A created training job: its name and status, and where its outputs and checkpoints go."""

    name: str
    status: str
    s3_output_path: str
    checkpoint_s3_uri: str | None


def dry_run_request(trainer, inputs) -> dict:
    """The CreateTrainingJob request (boto3 names) that ``trainer.train(inputs)`` would send, built by
    the SDK without sending it."""
    return trainer._create_training_job_args(input_data_config=inputs, boto3=True)


def start_job(trainer, inputs, wait: bool = False, logs: bool = True, on_request=None) -> tuple[dict, StartedJob]:
    """Create the training job → ``(the CreateTrainingJob request as sent, the job)``; ``wait`` polls it
    to a terminal state, streaming its CloudWatch logs when ``logs``. ``on_request(request)`` is called
    with the CreateTrainingJob parameters (the job's name among them) just before they are sent."""
    with _captured_create_request(trainer.sagemaker_session.boto_session, on_request) as request:
        trainer.train(input_data_config=inputs, wait=False, logs=False)
    job = trainer._latest_training_job
    if wait:
        from sagemaker.core.utils.exceptions import FailedStatusError

        try:
            job.wait(logs=logs)
        except FailedStatusError:  # its message repeats the SDK's wording around the reason: one line instead
            raise JobFailed(failure_line(job.training_job_name, job.training_job_status, job.failure_reason)) from None
    return request, StartedJob(
        name=job.training_job_name,
        status=job.training_job_status,
        s3_output_path=job.output_data_config.s3_output_path,
        checkpoint_s3_uri=job.checkpoint_config.s3_uri,
    )


@contextlib.contextmanager
def _captured_create_request(boto_session, on_request=None):
    """Yield a dict that receives the CreateTrainingJob parameters sent through ``boto_session``
    (and hand them to ``on_request`` before they are sent).

    The SDK sends through a client it caches per boto session (``Base.get_sagemaker_client``),
    whose event hooks were copied when it was made: the hook goes on that client.
    """
    from sagemaker.core.resources import Base

    client = Base.get_sagemaker_client(session=boto_session, region_name=None, service_name="sagemaker")
    captured: dict = {}
    event = "provide-client-params.sagemaker.CreateTrainingJob"
    client.meta.events.register(event, _copy_into(captured, on_request), unique_id="bertlib-capture")
    try:
        yield captured
    finally:
        client.meta.events.unregister(event, unique_id="bertlib-capture")


def _copy_into(target: dict, on_request=None):
    def handler(params, **_):
        target.update(json.loads(json.dumps(params, default=str)))
        if on_request is not None:
            on_request(dict(target))

    return handler


# ----------------------------------------------------------------------------- local mode

#: the network interface of a container on a Docker (compose) network
LOCAL_NETWORK_INTERFACE = "eth0"


def rewrite_network_interface(resourceconfig: str | os.PathLike, interface: str = LOCAL_NETWORK_INTERFACE) -> bool:
    """Set ``network_interface_name`` of a ``resourceconfig.json`` to ``interface``; True if it changed."""
    path = Path(resourceconfig)
    config = json.loads(path.read_text())
    if config.get("network_interface_name") == interface:
        return False
    config["network_interface_name"] = interface
    path.write_text(json.dumps(config))
    return True


@contextlib.contextmanager
def local_network_interface():
    """While the block runs, the SDK's local mode writes ``eth0`` as the hosts' network interface.

    THE one workaround for ``ethwe``: sagemaker-train 1.27.0 writes ``"network_interface_name": "ethwe"``
    into every host's ``/opt/ml/input/config/resourceconfig.json``
    (``sagemaker/train/local/local_container.py``, ``_LocalContainer._write_config_files``, line 351:
    an interface of the old Weave-based local networking that no compose container has). Its container
    driver copies that value into ``SM_NETWORK_INTERFACE_NAME`` (``container_drivers/scripts/environment.py``
    line 202) and the MPI driver passes it to ``mpirun -mca btl_tcp_if_include`` / ``oob_tcp_if_include``
    and ``-x NCCL_SOCKET_IFNAME`` (``container_drivers/distributed_drivers/mpi_utils.py`` lines 237-272),
    so every MPI job fails, on 1 host as on 2. The file is rewritten right after the SDK writes it, before
    ``docker compose up``: the least fragile of the options, because
    - an environment variable cannot do it: ``sm_train.sh`` sources the driver's ``sm_training.env``
      after the container's environment, and that file sets ``SM_NETWORK_INTERFACE_NAME`` from
      ``resourceconfig.json``;
    - extra ``mpirun -mca btl_tcp_if_include eth0`` options would leave ``oob_tcp_if_include`` and
      ``NCCL_SOCKET_IFNAME`` (local_gpu) at ``ethwe`` and give Open MPI the same parameter twice;
    - editing the file once the containers run races the driver that reads it.
    It wraps the SDK's private writer only for the block (restored after), changes that one value
    and nothing else, and is a no-op once the SDK writes the interface the containers have.
    """
    from sagemaker.train.local.local_container import _LocalContainer

    original = _LocalContainer._write_config_files

    def write_config_files(self, host, *args, **kwargs):
        original(self, host, *args, **kwargs)
        rewrite_network_interface(Path(self.container_root, host, "input", "config", "resourceconfig.json"))

    _LocalContainer._write_config_files = write_config_files
    try:
        yield
    finally:
        _LocalContainer._write_config_files = original


def compose_command() -> list[str]:
    """The Docker Compose command the SDK's local mode runs (``docker compose`` v2, else
    ``docker-compose``, as ``_LocalContainer._get_compose_cmd_prefix`` looks for them); ConfigError in
    one line naming what is missing."""
    if shutil.which("docker") is None:
        raise ConfigError("instance_type local: no `docker` command — local mode runs the job with Docker")
    found = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if found.returncode == 0 and " v1." not in found.stdout:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ConfigError(
        "instance_type local: neither `docker compose` nor `docker-compose` found — the SDK's local mode "
        "needs Docker Compose (Debian: apt-get install docker-compose)"
    )


def check_local_image(image: str) -> None:
    """ConfigError unless ``image`` is in the local Docker engine (local mode would try to pull it)."""
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    if found.returncode != 0:
        raise ConfigError(
            f"instance_type local: image {image!r} is not in the local Docker engine — build it (make image) "
            "or docker pull it first"
        )


@dataclass
class LocalRun:
    """A job run in the SDK's local mode: its status, why it failed, and its complete log."""

    name: str
    status: str  # Completed | Failed
    failure_reason: str | None
    log: str


def run_local(trainer, inputs, model_dest: Path | None, output_dest: Path | None) -> LocalRun:
    """Run ``trainer`` (local-container mode) in the foreground and bring its results home.

    ``train(wait=True)``: the detached path (``wait=False``) returns while the containers run and the SDK
    then deletes the host folders they use. With ``eth0`` for ``ethwe`` (:func:`local_network_interface`).
    Afterwards the hosts' merged ``/opt/ml/model`` is copied to ``model_dest`` (replacing it) and
    ``/opt/ml/output/data`` into ``output_dest``; the complete log is read from compose, the
    containers are removed (``down``) and the trainer's ``local_container_root`` is deleted.
    """
    from sagemaker.train.local.local_container import _rmtree

    root = Path(trainer.local_container_root)
    compose_file = root / "docker-compose.yaml"
    compose = [*compose_command(), "-f", str(compose_file)]
    check_local_image(trainer.training_image)
    error = None
    try:
        try:
            with local_network_interface():
                trainer.train(input_data_config=inputs, wait=True, logs=True)
        except RuntimeError as e:  # the SDK: "Failed to run: [compose ...]. Process exited with code: N"
            error = str(e)
        log, name = "", trainer.base_job_name
        if compose_file.is_file():
            found = re.search(r"TRAINING_JOB_NAME=(\S+)", compose_file.read_text())
            name = found.group(1) if found else name
            log = subprocess.run([*compose, "logs", "--no-color"], capture_output=True, text=True, timeout=300).stdout
        artifacts = root / "artifacts"
        failure = artifacts / "output" / "failure"
        reason = failure.read_text().strip() if failure.is_file() else None
        status = "Failed" if (error or reason) else "Completed"
        if model_dest is not None and (artifacts / "model").is_dir():
            if model_dest.exists():
                shutil.rmtree(model_dest)
            shutil.copytree(artifacts / "model", model_dest)
        if output_dest is not None and (artifacts / "output" / "data").is_dir():
            shutil.copytree(artifacts / "output" / "data", output_dest, dirs_exist_ok=True)
    finally:  # also on an interrupt: no container, compose project or SDK folder is left behind
        if compose_file.is_file():
            subprocess.run([*compose, "down"], capture_output=True, text=True, timeout=300)
        _rmtree(str(root), trainer.training_image)
    return LocalRun(name, status, reason or error, log)


# ----------------------------------------------------------------------------- real-time endpoints

#: the SDK 3 ``sagemaker.core.resources`` calls of :func:`create_endpoint`, in order, with the request each sends
ENDPOINT_OPERATIONS = ("CreateModel", "CreateEndpointConfig", "CreateEndpoint")


def hf_inference_image(
    region: str, transformers_version: str, pytorch_version: str, py_version: str, instance_type: str
) -> str:
    """AWS's Hugging Face PyTorch inference image for ``instance_type`` (CPU or GPU build), from the SDK's
    image table (``sagemaker.core.image_uris``, no AWS call)."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(
            "huggingface",
            region=region,
            version=transformers_version,
            base_framework_version=f"pytorch{pytorch_version}",
            py_version=py_version,
            instance_type=instance_type,
            image_scope="inference",
        )
    except ValueError as e:
        raise ConfigError(f"Hugging Face inference image: {str(e).splitlines()[0]}") from None


@contextlib.contextmanager
def _captured_requests(boto_session, service: str, operations: tuple[str, ...]):
    """Yield ``{operation: parameters}`` of the ``operations`` sent through the SDK's cached ``service``
    client of ``boto_session`` (as :func:`_captured_create_request`)."""
    from sagemaker.core.resources import Base

    # the SDK caches a client per (session, region): the resources below are called with the session's region
    client = Base.get_sagemaker_client(session=boto_session, region_name=boto_session.region_name, service_name=service)
    captured: dict = {}
    events = [f"provide-client-params.{client.meta.service_model.endpoint_prefix}.{op}" for op in operations]
    for event, op in zip(events, operations):
        captured[op] = {}
        client.meta.events.register(event, _copy_into(captured[op]), unique_id=f"bertlib-capture-{op}")
    try:
        yield captured
    finally:
        for event, op in zip(events, operations):
            client.meta.events.unregister(event, unique_id=f"bertlib-capture-{op}")


def create_endpoint(boto_session, requests: dict[str, dict], wait: bool = True) -> tuple[dict, str]:
    """Create the model, endpoint config and endpoint of ``requests`` (``{operation: boto3 parameters}``,
    :data:`ENDPOINT_OPERATIONS`) with ``sagemaker.core.resources`` → ``(the requests as sent, endpoint
    status)``; ``wait``: until it is InService (or failed: the SDK's FailedStatusError)."""
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant

    model, config, endpoint = (requests[op] for op in ENDPOINT_OPERATIONS)
    container = model["PrimaryContainer"]
    (variant,) = config["ProductionVariants"]
    region = boto_session.region_name
    with _captured_requests(boto_session, "sagemaker", ENDPOINT_OPERATIONS) as sent:
        Model.create(
            model_name=model["ModelName"],
            primary_container=ContainerDefinition(
                image=container["Image"], model_data_url=container["ModelDataUrl"], environment=container["Environment"]
            ),
            execution_role_arn=model["ExecutionRoleArn"],
            session=boto_session,
            region=region,
        )
        EndpointConfig.create(
            endpoint_config_name=config["EndpointConfigName"],
            production_variants=[
                ProductionVariant(
                    variant_name=variant["VariantName"],
                    model_name=variant["ModelName"],
                    initial_instance_count=variant["InitialInstanceCount"],
                    instance_type=variant["InstanceType"],
                )
            ],
            session=boto_session,
            region=region,
        )
        created = Endpoint.create(
            endpoint_name=endpoint["EndpointName"],
            endpoint_config_name=endpoint["EndpointConfigName"],
            session=boto_session,
            region=region,
        )
    if wait:
        created.wait_for_status("InService")
    return sent, created.endpoint_status


def endpoint_status(boto_session, name: str) -> str | None:
    """The endpoint's status, or None if there is no endpoint of that name."""
    from botocore.exceptions import ClientError
    from sagemaker.core.resources import Endpoint

    try:
        return Endpoint.get(endpoint_name=name, session=boto_session, region=boto_session.region_name).endpoint_status
    except ClientError as e:
        if e.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def invoke_endpoint(boto_session, name: str, body: str) -> tuple[dict, str, str]:
    """InvokeEndpoint (JSON in, JSON accepted) → ``(the request as sent, response body, content type)``."""
    from sagemaker.core.resources import Endpoint

    region = boto_session.region_name
    endpoint = Endpoint.get(endpoint_name=name, session=boto_session, region=region)
    with _captured_requests(boto_session, "sagemaker-runtime", ("InvokeEndpoint",)) as sent:
        out = endpoint.invoke(
            body=body, content_type="application/json", accept="application/json", session=boto_session, region=region
        )
    data = out.body.read() if hasattr(out.body, "read") else out.body
    return sent["InvokeEndpoint"], data.decode() if isinstance(data, bytes) else str(data), str(out.content_type)


def delete_endpoint(boto_session, name: str) -> list[str]:
    """Delete endpoint, endpoint config and model named ``name`` (those that exist) → what was deleted."""
    from botocore.exceptions import ClientError
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model

    region = boto_session.region_name
    deleted = []
    for kind, cls, key in (
        ("endpoint", Endpoint, "endpoint_name"),
        ("endpoint config", EndpointConfig, "endpoint_config_name"),
        ("model", Model, "model_name"),
    ):
        try:
            resource = cls.get(**{key: name}, session=boto_session, region=region)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                continue
            raise
        resource.delete()
        deleted.append(kind)
    return deleted
