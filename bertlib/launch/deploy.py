"""A SageMaker real-time endpoint for a finetuned SQuAD model: AWS's Hugging Face inference image,
``HF_TASK=question-answering``, no inference code of ours (``bertlib deploy``, notebooks/04_squad).

The Hugging Face inference toolkit loads ``/opt/ml/model`` with ``transformers``' pipeline, so
``config.json`` must be at the root of the model archive. A SQuAD job's ``model.tar.gz`` holds the
bertlib export with the Hugging Face export in ``hf/`` (``config.json`` with ``"architectures":
["BertForQuestionAnswering"]``, ``model.safetensors``, the tokenizer files); :func:`deploy`
checks that subtree (:func:`check_hf_export`), repackages it at the root of a new archive
(:func:`package_hf`), uploads it to ``<s3_prefix>/deploy/<endpoint>/model.tar.gz`` and sends
CreateModel → CreateEndpointConfig → CreateEndpoint through the SDK 3 resources
(:func:`bertlib.launch.sagemaker_sdk.create_endpoint`). :func:`ask` sends one question
(InvokeEndpoint, ``{"inputs": {"question", "context"}}``) and reads the pipeline's ``{"answer",
"score", "start", "end"}``; :func:`delete` tears the three resources down. A dry run returns every
request without sending any.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bertlib.core.errors import ConfigError
from bertlib.core.files import temp_path
from bertlib.launch import sagemaker_sdk as sdk
from bertlib.launch.aws import boto_session
from bertlib.launch.results import fetch_run
from bertlib.launch.sagemaker import DRY_RUN_PLACEHOLDERS
from bertlib.train.hf_export import HF_FILES, HF_SUBDIR

HF_QA_ARCHITECTURE = "BertForQuestionAnswering"
HF_TASK = "question-answering"
#: the question a deploy asks when none is given
SAMPLE = {
    "question": "When did the war end?",
    "context": "The war ended in 1945, six years after it had begun in Europe.",
}


class DeployConfig(BaseModel):
    """``bertlib deploy``: create, ask or delete the SageMaker endpoint of a finetuned SQuAD model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    action: Literal["create", "ask", "delete"] = Field(
        "create", description="create the endpoint, ask it, or delete it"
    )
    experiment: str = Field("local", description="the run registry: <runs_root>/<experiment>/registry.json")
    runs_root: str = Field("runs", description="folder of the experiments' registries")
    squad_version: Literal["squadv1", "squadv2"] = Field("squadv1", description="which SQuAD run of the registry")
    model_data: str | None = Field(
        None, description="a SQuAD job's model.tar.gz (s3://) or export dir, instead of the registry's"
    )
    endpoint_name: str | None = Field(
        None, description="endpoint, endpoint config and model name; default bertlib-<squad_version>-qa"
    )
    instance_type: str = Field("ml.m5.xlarge", description="endpoint instance type (CPU or GPU image chosen to match)")
    instance_count: int = Field(1, ge=1, description="endpoint instances")
    region: str | None = Field(None, description="AWS region; default: $AWS_REGION, $AWS_DEFAULT_REGION")
    role: str | None = Field(None, description="execution role ARN; default: $BERTLIB_SAGEMAKER_ROLE / $SAGEMAKER_ROLE")
    s3_prefix: str | None = Field(None, description="where the repackaged model goes; default: $BERTLIB_S3_PREFIX")
    transformers_version: str = Field("4.51.3", description="Hugging Face inference image: transformers version")
    pytorch_version: str = Field("2.6.0", description="Hugging Face inference image: PyTorch version")
    py_version: str = Field("py312", description="Hugging Face inference image: Python version")
    question: str | None = Field(None, description="the question asked after create / by ask (default: a sample)")
    context: str | None = Field(None, description="the context of the question")
    wait: bool = Field(True, description="create: wait until the endpoint is InService, then ask the question")
    dry_run: bool = Field(
        False, description="print every request; send nothing", json_schema_extra={"cli": {"flag": True}}
    )


def endpoint_name(cfg: DeployConfig) -> str:
    name = cfg.endpoint_name or f"bertlib-{cfg.squad_version}-qa"
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
        raise ConfigError(f"endpoint_name {name!r}: use letters, digits and '-' (at most 63 characters)")
    return name


def _setting(value: str | None, names: tuple[str, ...], what: str, dry_run: bool) -> str:
    """``value``, else the first environment variable of ``names`` set, else (dry run) a placeholder."""
    for name in names:
        value = value or os.environ.get(name, "").strip() or None
    if value is None and dry_run:
        return DRY_RUN_PLACEHOLDERS[names[0]]
    if value is None:
        raise ConfigError(f"{what}: not set (--{what} or ${' / $'.join(names)})")
    return value


def settings(cfg: DeployConfig) -> dict[str, str]:
    """Region, role and S3 prefix: the config's, else the environment's, else (dry run) placeholders."""
    return {
        "region": _setting(cfg.region, ("AWS_DEFAULT_REGION", "AWS_REGION"), "region", cfg.dry_run),
        "role": _setting(cfg.role, ("BERTLIB_SAGEMAKER_ROLE", "SAGEMAKER_ROLE"), "role", cfg.dry_run),
        "s3_prefix": _setting(cfg.s3_prefix, ("BERTLIB_S3_PREFIX",), "s3_prefix", cfg.dry_run).rstrip("/"),
    }


def check_hf_export(export_dir: str | os.PathLike) -> Path:
    """``export_dir/hf`` if it is the Hugging Face export of a question-answering model; else one line."""
    hf = Path(export_dir) / HF_SUBDIR
    if not hf.is_dir():
        raise ConfigError(
            f"{export_dir}: no hf/ in this SQuAD export (the Hugging Face export that `bertlib export --to hf` "
            "writes and SQuAD jobs put into model.tar.gz)"
        )
    missing = [f for f in HF_FILES if not (hf / f).is_file()]
    if missing:
        raise ConfigError(f"{hf}: not a complete Hugging Face export (missing {', '.join(missing)})")
    try:
        config = json.loads((hf / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{hf / 'config.json'}: not valid JSON ({e})") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or HF_QA_ARCHITECTURE not in architectures:
        raise ConfigError(
            f"{hf / 'config.json'}: architectures {architectures!r}: not a question-answering model "
            f"({HF_QA_ARCHITECTURE} expected: deploy the export of a SQuAD run)"
        )
    return hf


def package_hf(hf: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``out`` = a ``.tar.gz`` of every file under ``hf`` at the archive root (written through a temp name)."""
    hf, out = Path(hf), Path(out)
    tmp = temp_path(out)
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(p for p in hf.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(hf).as_posix())
    os.replace(tmp, out)
    return out


def endpoint_requests(
    name: str, image: str, model_data_url: str, role: str, instance_type: str, instance_count: int
) -> dict[str, dict]:
    """The CreateModel, CreateEndpointConfig and CreateEndpoint requests (boto3 names)."""
    return {
        "CreateModel": {
            "ModelName": name,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data_url, "Environment": {"HF_TASK": HF_TASK}},
            "ExecutionRoleArn": role,
        },
        "CreateEndpointConfig": {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialInstanceCount": instance_count,
                    "InstanceType": instance_type,
                }
            ],
        },
        "CreateEndpoint": {"EndpointName": name, "EndpointConfigName": name},
    }


def question_body(question: str | None, context: str | None) -> str:
    """The InvokeEndpoint body of the HF question-answering pipeline (the sample when neither is given)."""
    if (question is None) != (context is None):
        raise ConfigError("question and context go together: set both (or neither)")
    if question is None:
        question, context = SAMPLE["question"], SAMPLE["context"]
    for key, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key}: expected a non-empty string (got {value!r})")
    return json.dumps({"inputs": {"question": question, "context": context}})


def read_answer(body: str, name: str) -> dict[str, Any]:
    """The pipeline's answer ``{"answer", "score", "start", "end"}`` from a response body."""
    try:
        out = json.loads(body)
    except json.JSONDecodeError:
        out = None
    if isinstance(out, list) and len(out) == 1:
        out = out[0]
    if not isinstance(out, dict) or not {"answer", "score", "start", "end"} <= set(out):
        raise ConfigError(f"endpoint {name}: not a question-answering response ({body[:200]!r})")
    return {k: out[k] for k in ("answer", "score", "start", "end")}


def _invoke_request(name: str, body: str) -> dict:
    return {"EndpointName": name, "Body": body, "ContentType": "application/json", "Accept": "application/json"}


def deploy(cfg: DeployConfig, source: str | os.PathLike | None) -> dict[str, Any]:
    """Create the endpoint for the SQuAD export at ``source`` (a job's ``s3://…/model.tar.gz`` or an export
    dir) and ask it the question. Returns ``{"endpoint_name", "model_data", "image", "requests",
    "status", "answer"}`` (a dry run: the requests it would send, nothing checked in S3)."""
    name = endpoint_name(cfg)
    env = settings(cfg)
    body = question_body(cfg.question, cfg.context)
    image = sdk.hf_inference_image(
        env["region"], cfg.transformers_version, cfg.pytorch_version, cfg.py_version, cfg.instance_type
    )
    model_data = f"{env['s3_prefix']}/deploy/{name}/model.tar.gz"
    requests = endpoint_requests(name, image, model_data, env["role"], cfg.instance_type, cfg.instance_count)
    info: dict[str, Any] = {"endpoint_name": name, "region": env["region"], "model_data": model_data, "image": image}
    if source is None:
        raise ConfigError("deploy: no SQuAD model given (model_data, or a SQuAD run in the registry)")
    if cfg.dry_run:
        if not str(source).startswith("s3://"):
            check_hf_export(source)  # a local export is checked; S3 is not read in a dry run
        upload = {"PutObject": {"Bucket": model_data[5:].split("/", 1)[0], "Key": model_data[5:].split("/", 1)[1]}}
        return {
            **info,
            "requests": {**upload, **requests, "InvokeEndpoint": _invoke_request(name, body)},
            "status": None,
            "answer": None,
        }
    hf = check_hf_export(fetch_run(source))
    session = boto_session(env["region"])
    bucket, _, key = model_data[5:].partition("/")
    with tempfile.TemporaryDirectory(prefix="bertlib-deploy-") as tmp:
        archive = package_hf(hf, Path(tmp) / "model.tar.gz")
        session.client("s3").upload_file(str(archive), bucket, key)
    sent, status = sdk.create_endpoint(session, requests, wait=cfg.wait)
    info.update(requests=sent, status=status, answer=None)
    if status == "InService":
        info.update(ask(cfg))
    return info


def ask(cfg: DeployConfig) -> dict[str, Any]:
    """Ask the endpoint ``cfg.question`` about ``cfg.context`` → ``{"invoke_request", "response",
    "answer"}`` (a dry run: the request only)."""
    name = endpoint_name(cfg)
    body = question_body(cfg.question, cfg.context)
    if cfg.dry_run:
        return {"invoke_request": _invoke_request(name, body), "response": None, "answer": None}
    session = boto_session(settings(cfg)["region"])
    sent, response, _ = sdk.invoke_endpoint(session, name, body)
    return {"invoke_request": sent, "response": response, "answer": read_answer(response, name)}


def delete(cfg: DeployConfig) -> dict[str, Any]:
    """Delete the endpoint, its config and its model → ``{"endpoint_name", "deleted"}`` (a dry run: the
    requests)."""
    name = endpoint_name(cfg)
    if cfg.dry_run:
        requests = {
            "DeleteEndpoint": {"EndpointName": name},
            "DeleteEndpointConfig": {"EndpointConfigName": name},
            "DeleteModel": {"ModelName": name},
        }
        return {"endpoint_name": name, "requests": requests, "deleted": []}
    deleted = sdk.delete_endpoint(boto_session(settings(cfg)["region"]), name)
    return {"endpoint_name": name, "deleted": deleted}


def status(cfg: DeployConfig) -> str | None:
    """The endpoint's status (None: there is none)."""
    return sdk.endpoint_status(boto_session(settings(cfg)["region"]), endpoint_name(cfg))
