"""``bertlib launch image``: build and push the training image with AWS CodeBuild, from a machine without
Docker (a SageMaker Studio kernel).

The build itself stays in ``container/build_and_push.sh``: this module zips the build context that
``container/context.sh`` assembles (the Dockerfile's files plus the build scripts), uploads it to S3 and has
CodeBuild run ``bash container/build_and_push.sh TAG`` in a privileged (Docker) build. Each step is
idempotent, so a re-run updates instead of failing:

1. the context zip (deterministic: the same files give the same bytes) goes to
   ``<s3_prefix>/staged/image/<sha256>/context.zip``, unless it is there already;
2. the ECR repository (``bertlib-training``, scan on push) is created if missing; with the default tag
   (``tf2.21-<12 hex of the context's sha256>``) an image already pushed under it is not built again;
3. the build's service role is ``role_arn`` or else ``bertlib-codebuild``, created if missing (trust:
   CodeBuild projects of this account), with the least-privilege inline policy
   ``bertlib-image-build-<region>`` (:func:`role_policy`) put on every run;
4. the CodeBuild project (``bertlib-image``) is created, or updated when its settings differ;
5. a build starts with the uploaded zip as its source and ``IMAGE_TAG``; it is polled to the end, printing
   each phase; a failure is one line (build id, failed phase, its message, the CloudWatch logs link).

Every request goes through :class:`Requests`, which records it; a dry run sends nothing: it validates each
request against the botocore model and records it as a first run would send it (reads included — a
re-run sends the same reads and only the writes whose target is missing or differs). boto3 is imported
only when a build runs (it comes with the ``sagemaker`` extra).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bertlib.core.errors import ConfigError
from bertlib.launch.aws import boto_session

#: where the zipped build context goes, under ``s3_prefix``
STAGED = "staged/image"
#: the DLC repository the Dockerfile builds FROM (in the region's DLC registry, container/dlc_registry.sh)
BASE_REPOSITORY = "tensorflow-training"
#: what a dry run names the account (it sends no GetCallerIdentity)
DRY_RUN_ACCOUNT = "000000000000"
#: what a dry run names the S3 prefix and region when none is set (as ``bertlib launch`` dry runs do)
DRY_RUN_S3_PREFIX = "s3://set-bertlib-s3-prefix/bertlib"
DRY_RUN_REGION = "us-east-1"
#: CodeBuild's view of the build: the commands run from the unzipped context. CodeBuild may unpack an S3
#: zip without its file modes; build_and_push.sh runs context.sh and dlc_registry.sh directly.
BUILDSPEC = """\
version: 0.2
phases:
  build:
    commands:
      - chmod +x container/*.sh
      - bash container/build_and_push.sh "$IMAGE_TAG"
"""
_DONE = ("SUCCEEDED", "FAILED", "FAULT", "STOPPED", "TIMED_OUT")


class BuildFailed(RuntimeError):
    """The build, or an AWS request it needs, failed; ``str(err)`` is one line (Jupyter shows only it)."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: replaces the traceback display
        return [f"BuildFailed: {self}"]


class ImageBuildConfig(BaseModel):
    """Build and push the training image with AWS CodeBuild (no Docker here)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    region: str | None = Field(None, description="AWS region; default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's")
    tag: str | None = Field(
        None,
        description="image tag; default: tf2.21-<12 hex of the build context's sha256> (an image already "
        "pushed under the default tag is not built again)",
    )
    s3_prefix: str | None = Field(None, description="where the build context is uploaded; default: $BERTLIB_S3_PREFIX")
    repository: str = Field("bertlib-training", description="ECR repository (created with scan on push)")
    project: str = Field("bertlib-image", description="CodeBuild project (created, or updated when it differs)")
    role_arn: str | None = Field(
        None, description="CodeBuild service role; default: bertlib-codebuild, created with a least-privilege policy"
    )
    role_name: str = Field("bertlib-codebuild", description="the service role created when role_arn is not given")
    compute_type: str = Field("BUILD_GENERAL1_LARGE", description="CodeBuild compute type (8 vCPU, 15 GB)")
    codebuild_image: str = Field("aws/codebuild/standard:7.0", description="CodeBuild image (Docker + AWS CLI v2)")
    timeout_minutes: int = Field(120, ge=5, le=2160, description="CodeBuild build timeout")
    poll_seconds: float = Field(15.0, ge=0, description="seconds between BatchGetBuilds polls")
    force: bool = Field(
        False, description="build even when the image is already in ECR", json_schema_extra={"cli": {"flag": True}}
    )
    dry_run: bool = Field(
        False,
        description="print every request a first run would send; send nothing",
        json_schema_extra={"cli": {"flag": True}},
    )


# ----------------------------------------------------------------------------------- requests


@dataclass
class Requests:
    """Sends AWS requests through one boto3 session and records each one (service, API name, params).

    In a dry run nothing is sent: a request is validated against the botocore model, recorded, and answered
    with None, which every step reads as "not there" (so the record is what a first run sends).
    """

    session: Any
    region: str
    dry_run: bool
    sent: list[dict] = field(default_factory=list)
    _clients: dict = field(default_factory=dict)

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=self.region)
        return self._clients[service]

    def call(self, service: str, method: str, missing: tuple[str, ...] = (), retry_on: str | None = None, **params):
        """``client.method(**params)``; None when the error code is in ``missing`` (and in a dry run). An error
        whose message holds ``retry_on`` is retried for a minute (IAM changes take seconds to reach CodeBuild);
        any other AWS error raises :class:`BuildFailed` with one line."""
        import botocore.exceptions
        from botocore.validate import validate_parameters

        client = self.client(service)
        api = client.meta.method_to_api_mapping[method]
        self.sent.append({"service": service, "operation": api, "params": _printable(params)})
        if self.dry_run:
            validate_parameters(params, client.meta.service_model.operation_model(api).input_shape)
            return None
        for attempt in range(7):
            try:
                return getattr(client, method)(**params)
            except botocore.exceptions.ClientError as e:
                code, message = e.response["Error"].get("Code", "?"), e.response["Error"].get("Message", "")
                if code in missing:
                    return None
                if retry_on and retry_on in message and attempt < 6:
                    time.sleep(10)
                    continue
                raise BuildFailed(f"image build: {service} {api}: {code}: {_one_line(message)}") from None
            except botocore.exceptions.BotoCoreError as e:  # no credentials, no endpoint
                raise BuildFailed(f"image build: {service} {api}: {_one_line(str(e))}") from None
        raise AssertionError("unreachable")


def _printable(params: dict) -> dict:
    """``params`` as shown: bytes as ``<N bytes>`` (PutObject's Body is the zip), IAM policy documents (JSON
    strings in the request) as the JSON they hold."""
    shown = {}
    for k, v in params.items():
        if isinstance(v, bytes | bytearray):
            v = f"<{len(v)} bytes>"
        elif k.endswith("PolicyDocument"):
            v = json.loads(v)
        shown[k] = v
    return shown


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------------- context


@dataclass
class Context:
    """The zipped build context: its bytes, sha256 and the files it holds."""

    data: bytes
    sha256: str
    files: list[str]


def container_dir() -> Path:
    """``container/`` of the bertlib checkout: beside the imported package (a clone, or an editable install),
    else in the working directory or one of its parents (a clone whose package was pip-installed)."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd(), *Path.cwd().parents):
        if (base / "container" / "context.sh").is_file() and (base / "bertlib").is_dir():
            return base / "container"
    raise ConfigError(
        "bertlib launch image: no container/context.sh beside the bertlib package or above the working "
        "directory — the image is built from a checkout of the bertlib repository: run it there"
    )


def build_context() -> Context:
    """Zip what ``container/context.sh`` assembles (it is run, never re-implemented here) into a
    deterministic zip: sorted names, a fixed date, modes 755 (executables) or 644 — the same files always
    give the same bytes, hence the same sha256, S3 key and default tag."""
    script = container_dir() / "context.sh"
    with tempfile.TemporaryDirectory(prefix="bertlib-image-") as tmp:
        done = subprocess.run(["bash", str(script), tmp], capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(f"container/context.sh failed: {_one_line(done.stderr) or f'exit {done.returncode}'}")
        root = Path(tmp)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in files:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.create_system = 3  # unix: the modes below are read by unzip
                info.external_attr = (0o100755 if os.access(root / name, os.X_OK) else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, (root / name).read_bytes())
    data = buffer.getvalue()
    return Context(data, hashlib.sha256(data).hexdigest(), files)


def dlc_registry(region: str) -> str:
    """The region's Deep Learning Containers registry host, from ``container/dlc_registry.sh`` (its table
    is the one the build uses)."""
    done = subprocess.run(["bash", str(container_dir() / "dlc_registry.sh"), region], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(_one_line(done.stderr).removeprefix("error: ") or f"dlc_registry.sh {region} failed")
    return done.stdout.strip()


# ----------------------------------------------------------------------------------- IAM


def trust_policy(account: str, project: str, partition: str = "aws") -> dict:
    """Who may assume the build role: CodeBuild, for this account's project ``project`` (any region)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codebuild.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": f"arn:{partition}:codebuild:*:{account}:project/{project}"},
                },
            }
        ],
    }


def role_policy(
    *,
    account: str,
    region: str,
    partition: str,
    bucket: str,
    prefix: str,
    repository: str,
    base_account: str,
    project: str,
) -> dict:
    """The build role's permissions, each scoped to what ``build_and_push.sh`` touches: read the context
    zips under ``<prefix>/staged/image/``, log in to ECR, push to ``repository``, pull the base from the
    region's DLC account, write the project's CloudWatch logs."""
    ecr = f"arn:{partition}:ecr:{region}"
    logs = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/{project}"
    pull = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    key_prefix = f"{prefix}/{STAGED}" if prefix else STAGED
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadBuildContext",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": f"arn:{partition}:s3:::{bucket}/{key_prefix}/*",
            },
            {
                "Sid": "BuildContextBucketRegion",
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation"],
                "Resource": f"arn:{partition}:s3:::{bucket}",
            },
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {
                "Sid": "PushImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:DescribeRepositories",
                    *pull,
                    "ecr:InitiateLayerUpload",
                    "ecr:UploadLayerPart",
                    "ecr:CompleteLayerUpload",
                    "ecr:PutImage",
                ],
                "Resource": f"{ecr}:{account}:repository/{repository}",
            },
            {
                "Sid": "PullBaseImage",
                "Effect": "Allow",
                "Action": pull,
                "Resource": f"{ecr}:{base_account}:repository/{BASE_REPOSITORY}",
            },
            {
                "Sid": "BuildLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [logs, f"{logs}:*"],
            },
        ],
    }


# ----------------------------------------------------------------------------------- the build


def project_settings(cfg: ImageBuildConfig, region: str, role_arn: str, source_location: str) -> dict:
    """The CreateProject / UpdateProject request: a privileged Linux build of :data:`BUILDSPEC` on
    ``source_location`` (``bucket/key`` of a context zip; each build overrides it with its own)."""
    return {
        "name": cfg.project,
        "description": "bertlib training image: bash container/build_and_push.sh (bertlib launch image)",
        "source": {"type": "S3", "location": source_location, "buildspec": BUILDSPEC},
        "artifacts": {"type": "NO_ARTIFACTS"},
        "environment": {
            "type": "LINUX_CONTAINER",
            "image": cfg.codebuild_image,
            "computeType": cfg.compute_type,
            "privilegedMode": True,  # Docker in the build
            "environmentVariables": [
                {"name": "AWS_REGION", "value": region, "type": "PLAINTEXT"},
                {"name": "REPOSITORY", "value": cfg.repository, "type": "PLAINTEXT"},
            ],
        },
        "serviceRole": role_arn,
        "timeoutInMinutes": cfg.timeout_minutes,
        "logsConfig": {"cloudWatchLogs": {"status": "ENABLED"}},
    }


def _differs(current: Any, wanted: Any) -> bool:
    """Whether ``current`` (a described project) lacks anything of ``wanted``: dicts are compared on
    ``wanted``'s keys only (AWS adds its own), name/value lists as mappings."""
    if isinstance(wanted, dict):
        return not isinstance(current, dict) or any(_differs(current.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list) and wanted and isinstance(wanted[0], dict) and "name" in wanted[0]:
        return {e.get("name"): e.get("value") for e in current or []} != {e["name"]: e["value"] for e in wanted}
    return current != wanted


def failure_line(build: dict) -> str:
    """One line for a finished, unsuccessful build (a BatchGetBuilds ``builds[]`` entry): its id and
    status, the phase that failed with its contexts' messages, and the CloudWatch logs link."""
    failed = [p for p in build.get("phases", []) if p.get("phaseStatus") not in (None, "SUCCEEDED", "IN_PROGRESS")]
    phase = failed[0] if failed else {}
    message = "; ".join(
        _one_line(f"{c.get('statusCode', '')}: {c.get('message', '')}".strip(": "))
        for c in phase.get("contexts", [])
        if c.get("message") or c.get("statusCode")
    )
    link = (build.get("logs") or {}).get("deepLink") or "no CloudWatch logs link"
    return (
        f"image build {build.get('id')} {build.get('buildStatus')} in phase "
        f"{phase.get('phaseType') or build.get('currentPhase', '?')}: {message or 'no message'} (logs: {link})"
    )


def build(cfg: ImageBuildConfig, session=None, out=print) -> dict:
    """Build and push the image as the module docstring says; ``session`` is a boto3 session (default: one
    in ``cfg.region``). Progress goes to ``out``. Returns ``{"image_uri", "build_id", "status",
    "context": {"s3_uri", "sha256", "files"}, "requests", "placeholders"}`` (status ``DryRun`` /
    ``Exists`` / ``SUCCEEDED``; a dry run names the values it could not know in ``placeholders``).
    Raises :class:`BuildFailed` (one line) when the build or a request fails, ConfigError for bad
    settings."""
    session = session or boto_session(cfg.region)
    region, placeholders = cfg.region or session.region_name, []
    if not region and cfg.dry_run:
        region = DRY_RUN_REGION
        placeholders.append("AWS_DEFAULT_REGION")
        session = boto_session(region)  # its clients need one, even to send nothing
    if not region:
        raise ConfigError("bertlib launch image: no AWS region — set --region, $AWS_REGION or $AWS_DEFAULT_REGION")
    prefix_uri = cfg.s3_prefix or os.environ.get("BERTLIB_S3_PREFIX", "").strip() or None
    if not prefix_uri and cfg.dry_run:
        prefix_uri = DRY_RUN_S3_PREFIX
        placeholders.append("BERTLIB_S3_PREFIX")
    if not prefix_uri or not prefix_uri.startswith("s3://"):
        raise ConfigError(
            f"bertlib launch image: s3_prefix {prefix_uri!r}: set --s3_prefix or $BERTLIB_S3_PREFIX to an "
            "s3://bucket/prefix (the build context is uploaded there)"
        )
    bucket, _, prefix = prefix_uri[5:].rstrip("/").partition("/")
    registry = dlc_registry(region)
    partition = session.get_partition_for_region(region)
    context = build_context()
    key = f"{prefix}/{STAGED}/{context.sha256}/context.zip".lstrip("/")
    tag = cfg.tag or f"tf2.21-{context.sha256[:12]}"
    aws = Requests(session, region, cfg.dry_run)

    identity = aws.call("sts", "get_caller_identity")
    account = identity["Account"] if identity else DRY_RUN_ACCOUNT
    if not identity:
        placeholders.append("account")
    image_uri = f"{account}.{registry.split('.', 1)[1]}/{cfg.repository}:{tag}"
    info = {
        "image_uri": image_uri,
        "build_id": None,
        "status": "DryRun" if cfg.dry_run else None,
        "context": {"s3_uri": f"s3://{bucket}/{key}", "sha256": context.sha256, "files": len(context.files)},
        "requests": aws.sent,
        "placeholders": placeholders,
    }
    out(f"build context: {len(context.files)} files, {len(context.data) / 1024:.0f} KiB -> s3://{bucket}/{key}")

    if aws.call("s3", "head_object", missing=("404", "NoSuchKey"), Bucket=bucket, Key=key) is None:
        aws.call("s3", "put_object", Bucket=bucket, Key=key, Body=context.data, Metadata={"sha256": context.sha256})

    if _ensure_repository(aws, cfg, None if cfg.tag or cfg.force else tag, out):
        out(f"{image_uri} is already in ECR (built from this context); --force builds it again")
        info["status"] = "Exists"
        return info
    where = _Where(account, region, partition, bucket, prefix, registry.split(".", 1)[0])
    role_arn, created_role = (cfg.role_arn, False) if cfg.role_arn else _ensure_role(aws, cfg, where, out)
    location = f"{bucket}/{key}"
    _ensure_project(aws, cfg, project_settings(cfg, region, role_arn, location), created_role, out)

    started = aws.call(
        "codebuild",
        "start_build",
        projectName=cfg.project,
        sourceLocationOverride=location,
        environmentVariablesOverride=[{"name": "IMAGE_TAG", "value": tag, "type": "PLAINTEXT"}],
    )
    if started is None:  # dry run
        return info
    build_id = started["build"]["id"]
    info["build_id"] = build_id
    out(f"CodeBuild build {build_id} started ({cfg.compute_type}); building {image_uri}")
    finished = _wait(aws, build_id, cfg.poll_seconds, out)
    info["status"] = finished["buildStatus"]
    if finished["buildStatus"] != "SUCCEEDED":
        raise BuildFailed(failure_line(finished))
    out(f"pushed {image_uri}")
    return info


@dataclass
class _Where:
    """The account, region and S3 location a build works in, and the region's DLC account."""

    account: str
    region: str
    partition: str
    bucket: str
    prefix: str
    base_account: str


def _made(aws: Requests) -> str:
    return "would create" if aws.dry_run else "created"


def _ensure_repository(aws: Requests, cfg: ImageBuildConfig, tag: str | None, out) -> bool:
    """Create the ECR repository (scan on push) if missing; whether it already holds an image tagged ``tag``
    (None: not asked)."""
    found = aws.call(
        "ecr", "describe_repositories", missing=("RepositoryNotFoundException",), repositoryNames=[cfg.repository]
    )
    if found is None:
        aws.call(
            "ecr", "create_repository", repositoryName=cfg.repository, imageScanningConfiguration={"scanOnPush": True}
        )
        out(f"{_made(aws)} ECR repository {cfg.repository}")
        return False
    if tag is None:
        return False
    images = aws.call(
        "ecr",
        "describe_images",
        missing=("ImageNotFoundException",),
        repositoryName=cfg.repository,
        imageIds=[{"imageTag": tag}],
    )
    return bool(images and images.get("imageDetails"))


def _ensure_role(aws: Requests, cfg: ImageBuildConfig, where: _Where, out) -> tuple[str, bool]:
    """``(ARN, created now)`` of the build role ``cfg.role_name``: created if missing (:func:`trust_policy`),
    its inline policy ``bertlib-image-build-<region>`` (:func:`role_policy`) put on every run."""
    role = aws.call("iam", "get_role", missing=("NoSuchEntity",), RoleName=cfg.role_name)
    created = role is None
    if created:
        role = aws.call(
            "iam",
            "create_role",
            RoleName=cfg.role_name,
            AssumeRolePolicyDocument=json.dumps(trust_policy(where.account, cfg.project, where.partition)),
            Description="CodeBuild builds and pushes the bertlib training image (bertlib launch image)",
        )
        out(f"{_made(aws)} IAM role {cfg.role_name}")
    policy = role_policy(
        account=where.account,
        region=where.region,
        partition=where.partition,
        bucket=where.bucket,
        prefix=where.prefix,
        repository=cfg.repository,
        base_account=where.base_account,
        project=cfg.project,
    )
    aws.call(
        "iam",
        "put_role_policy",
        RoleName=cfg.role_name,
        PolicyName=f"bertlib-image-build-{where.region}",
        PolicyDocument=json.dumps(policy),
    )
    arn = role["Role"]["Arn"] if role else f"arn:{where.partition}:iam::{where.account}:role/{cfg.role_name}"
    return arn, created


def _ensure_project(aws: Requests, cfg: ImageBuildConfig, wanted: dict, new_role: bool, out) -> None:
    """Create the CodeBuild project ``wanted`` (:func:`project_settings`), or update it when a setting
    differs (its source location aside: each build overrides that). A role created moments ago reaches
    CodeBuild after seconds: its refusal to assume it is retried."""
    retry = "sts:AssumeRole" if new_role else None
    described = aws.call("codebuild", "batch_get_projects", names=[cfg.project])
    current = (described or {}).get("projects") or []
    if not current:
        aws.call("codebuild", "create_project", retry_on=retry, **wanted)
        out(f"{_made(aws)} CodeBuild project {cfg.project}")
    elif _differs(current[0], {**wanted, "source": {"buildspec": wanted["source"]["buildspec"]}}):
        aws.call("codebuild", "update_project", retry_on=retry, **wanted)
        out(f"updated CodeBuild project {cfg.project}")


def _wait(aws: Requests, build_id: str, poll_seconds: float, out) -> dict:
    """Poll BatchGetBuilds until the build ends, printing its CloudWatch logs link once known and each
    phase it enters; the last description."""
    start, shown, link = time.monotonic(), None, None
    while True:
        builds = aws.call("codebuild", "batch_get_builds", ids=[build_id])["builds"]
        if not builds:
            raise BuildFailed(f"image build {build_id}: CodeBuild does not know it (BatchGetBuilds)")
        described = builds[0]
        if not link and (described.get("logs") or {}).get("deepLink"):
            link = described["logs"]["deepLink"]
            out(f"  logs: {link}")
        phase = described.get("currentPhase")
        if phase != shown:
            out(f"  {phase} ({time.monotonic() - start:.0f} s)")
            shown = phase
        if described.get("buildStatus") in _DONE:
            return described
        time.sleep(poll_seconds)


def show_dry_run(info: dict, out=print) -> None:
    """Print what a dry run of :func:`build` recorded: which values are placeholders, then its requests,
    one per line: ``N. service Operation {params as JSON}``."""
    unknown = f" ({', '.join(info['placeholders'])} shown as placeholders)" if info["placeholders"] else ""
    out(f"dry run: nothing was sent to AWS; the {len(info['requests'])} requests of a first run{unknown}:")
    for i, r in enumerate(info["requests"], 1):
        out(f"{i:2d}. {r['service']} {r['operation']} {json.dumps(r['params'], default=str)}")
