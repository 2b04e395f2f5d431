"""Launches that never pay twice: a SageMaker job is recorded the moment it is created, and launching the
same job again attaches to it or reuses it instead of starting another.

"The same job" is the same registry step (``phase1``, ``squadv1``, ...: one notebook step of one
experiment) with the same effective config: the job's config and its launch settings as validated
(``auto`` / ``${VAR}`` values resolved), hashed into the entry's ``identity``; ``dry_run``, ``wait``
and ``new_job`` do not count. Launching step S with config C when the registry's S entry is job J:

==============================  ========================================================================
J's status (DescribeTrainingJob)  what happens
==============================  ========================================================================
InProgress / Stopping           attach: J's log and one progress display until it ends (``wait: false``:
                                return at once); no second CreateTrainingJob
Completed                       reuse: J's results are read, nothing starts — unless ``new_job: true``
Failed / Stopped                a new job starts (it resumes from ``checkpoint_s3_uri`` if J wrote
                                checkpoints there: the image's entry point resumes from them)
J made with another config      a new job starts (J is left alone; a running J is named so it can be stopped)
==============================  ========================================================================

The registry entry is written from the CreateTrainingJob request just before it is sent (``status``
Creating, then InProgress once SageMaker answers), so a kernel that dies after that point leaves the
job's name behind; an entry whose job does not exist (the request never arrived) starts a new one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bertlib.core.config import LaunchedJob
from bertlib.launch import monitor, sagemaker
from bertlib.registry import Registry

#: launch settings that say how to launch, not what the job is
NOT_IDENTITY = frozenset({"dry_run", "wait", "new_job"})
RUNNING = ("InProgress", "Stopping")


def identity(job: str, launched: LaunchedJob) -> str:
    """The hash of what makes a job this job: the job kind, its config and its launch settings (not
    :data:`NOT_IDENTITY`)."""
    content = {
        "job": job,
        "config": launched.job.model_dump(mode="json"),
        "launch": launched.launch.model_dump(mode="json", exclude=set(NOT_IDENTITY)),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def info_of(desc: dict) -> dict:
    """:func:`bertlib.launch.sagemaker.launch`'s result keys for an existing job (DescribeTrainingJob)."""
    name = desc["TrainingJobName"]
    output = desc["OutputDataConfig"]["S3OutputPath"]
    return {
        "job_name": name,
        "status": desc["TrainingJobStatus"],
        "failure_reason": desc.get("FailureReason"),
        "model_artifacts": sagemaker.model_artifacts_uri(output, name),
        "output_data": sagemaker.output_data_uri(output, name),
        "checkpoint_s3_uri": (desc.get("CheckpointConfig") or {}).get("S3Uri"),
        "request": None,
        "placeholders": [],
    }


def _clients(launched: LaunchedJob, session):
    if session is not None:
        boto = session.boto_session
        return boto.client("sagemaker"), boto.client("logs")
    return monitor.clients(launched.launch.region)


def _in_flight(launched: LaunchedJob, job: str, ident: str, info: dict, status: str) -> dict:
    cfg = launched.launch
    return {
        "backend": "sagemaker",
        "dry_run": False,
        "job": job,
        "job_name": info["job_name"],
        "status": status,
        "identity": ident,
        "instance_type": cfg.instance_type,
        "instance_count": cfg.instance_count,
        "total_steps": getattr(launched.job, "total_steps", None),
        "run_dir": info["output_data"],
        "export_dir": info["model_artifacts"],
        "checkpoint_s3_uri": info["checkpoint_s3_uri"],
    }


def say(text: str) -> None:
    print(text, flush=True)


def follow(
    name: str,
    registry: Registry | None,
    step: str | None,
    *,
    sm_client,
    logs_client,
    job: str = "pretrain",
    total_steps: int | None = None,
    instance_type: str | None = None,
    instance_count: int = 1,
    logs: bool = True,
) -> dict:
    """Attach to job ``name`` until it ends (:func:`bertlib.launch.monitor.attach`), keeping the status
    of registry entry ``step`` current; returns the final DescribeTrainingJob."""

    def on_status(desc: dict) -> None:
        entry = registry.get(step) if registry is not None and step else None
        if entry is not None and entry.get("job_name") == name:
            registry.update(step, status=desc["TrainingJobStatus"])

    return monitor.attach(
        name,
        sm_client=sm_client,
        logs_client=logs_client,
        job=job,
        total_steps=total_steps,
        instance_type=instance_type,
        instance_count=instance_count,
        logs=logs,
        on_status=on_status,
    )


def launch_once(
    job: str, step: str, launched: LaunchedJob, registry: Registry, *, session=None, logs: bool = True
) -> dict:
    """Run ``launched`` on SageMaker as registry step ``step`` — or attach to / reuse the job already
    recorded there for the same config (module docstring). Returns :func:`bertlib.launch.sagemaker.launch`'s
    keys plus ``action`` (started | attached | reused | dry-run) and ``identity``. A dry run and the SDK's
    local mode go straight to :func:`bertlib.launch.sagemaker.launch` (a dry run creates nothing; local
    mode runs in the foreground)."""
    cfg = launched.launch
    if cfg.dry_run or cfg.local_mode:
        info = sagemaker.launch(job, launched, dry_run=cfg.dry_run, session=session, wait=False, logs=logs)
        return {**info, "action": "dry-run" if cfg.dry_run else "started", "identity": identity(job, launched)}
    ident = identity(job, launched)
    sm_client, logs_client = _clients(launched, session)
    entry = registry.get(step) or {}
    desc = None
    if entry.get("backend") == "sagemaker" and not entry.get("dry_run") and entry.get("job_name"):
        desc = monitor.describe(sm_client, entry["job_name"])
        if desc is None:
            say(f"{step}: the registry's job {entry['job_name']} does not exist (never created); starting one")
        elif entry.get("identity") != ident:
            running = desc["TrainingJobStatus"] in RUNNING
            say(
                f"{step}: the registry's job {entry['job_name']} ({desc['TrainingJobStatus']}) has another config; "
                "starting a new job for this one"
                + (
                    f" (stop the other with: aws sagemaker stop-training-job --training-job-name {entry['job_name']})"
                    if running
                    else ""
                )
            )
            desc = None
        elif cfg.new_job:
            say(
                f"{step}: new_job: true — starting a new job (the registry's was {entry['job_name']}, "
                f"{desc['TrainingJobStatus']})"
            )
            desc = None
    action = "started"
    if desc is not None:
        status = desc["TrainingJobStatus"]
        if status == "Completed":
            say(f"{step}: reusing completed job {desc['TrainingJobName']} (new_job: true starts another)")
            registry.update(step, status=status)
            return _result(desc, job, launched, "reused", ident)
        if status in RUNNING:
            action = "attached"
            say(f"{step}: job {desc['TrainingJobName']} is {status}: attaching to it instead of starting another")
        else:
            reason = f": {desc['FailureReason']}" if desc.get("FailureReason") else ""
            say(
                f"{step}: job {desc['TrainingJobName']} ended {status}{reason}; starting a new one"
                + (
                    f" (it resumes from the checkpoints in {cfg.checkpoint_s3_uri}, if the old one wrote any)"
                    if cfg.checkpoint_s3_uri
                    else ""
                )
            )
            desc = None
    request = None
    if desc is None:
        info = _start(job, step, launched, registry, ident, session, logs, sm_client)
        request = info["request"]
        desc = monitor.describe(sm_client, info["job_name"]) or {  # not visible yet: what the request says
            "TrainingJobName": info["job_name"],
            "TrainingJobStatus": info["status"] or "InProgress",
            "OutputDataConfig": request["OutputDataConfig"],
            "CheckpointConfig": request.get("CheckpointConfig"),
        }
        status = desc["TrainingJobStatus"]
        registry.update(step, status=status)
        say(f"{step}: started SageMaker training job {info['job_name']} ({status}); recorded in {registry.path}")
    if cfg.wait:
        desc = follow(
            desc["TrainingJobName"],
            registry,
            step,
            sm_client=sm_client,
            logs_client=logs_client,
            job=job,
            total_steps=getattr(launched.job, "total_steps", None),
            instance_type=cfg.instance_type,
            instance_count=cfg.instance_count,
            logs=logs,
        )
    else:
        say(
            f"{step}: wait: false — returning while job {desc['TrainingJobName']} runs; re-run this cell or "
            f"`bertlib status {step}` to attach"
        )
    return {**_result(desc, job, launched, action, ident), "request": request}


def _result(desc: dict, job: str, launched: LaunchedJob, action: str, ident: str) -> dict:
    info = {**info_of(desc), "action": action, "identity": ident}
    if job == "prepare-data":  # the phases' datasets, as sagemaker.launch names them
        info["datasets"] = {p.name: f"{info['checkpoint_s3_uri'].rstrip('/')}/{p.name}" for p in launched.job.phases}
    return info


def _start(
    job: str, step: str, launched: LaunchedJob, registry: Registry, ident: str, session, logs: bool, sm_client
) -> dict:
    """Create the job; the registry entry is written from the request just before it is sent. When the
    request fails and no job of that name exists, the step's previous entry is put back."""
    previous, sent = registry.get(step), []

    def record(request: dict) -> None:
        name = request["TrainingJobName"]
        sent.append(name)
        output = request["OutputDataConfig"]["S3OutputPath"]
        pending = {
            "job_name": name,
            "output_data": sagemaker.output_data_uri(output, name),
            "model_artifacts": sagemaker.model_artifacts_uri(output, name),
            "checkpoint_s3_uri": (request.get("CheckpointConfig") or {}).get("S3Uri"),
        }
        registry.record(step, **_in_flight(launched, job, ident, pending, "Creating"))

    try:
        return sagemaker.launch(job, launched, dry_run=False, session=session, wait=False, logs=logs, on_request=record)
    except Exception:
        if sent:
            try:
                created = monitor.describe(sm_client, sent[-1]) is not None
            except Exception:  # cannot tell: the entry keeps the name, the next launch looks again
                created = True
            if not created:
                registry.restore(step, previous)
        raise


def result_line(step: str, info: dict) -> str:
    what = {"attached": "attached", "reused": "reused", "started": "started", "dry-run": "dry run"}[info["action"]]
    return f"{step}: SageMaker job {info['job_name']} {info['status']} ({what})"


def entry_status(entry: dict, sm_client) -> dict[str, Any] | None:
    """DescribeTrainingJob of a registry entry's job (None: not a SageMaker job, a dry run, or gone)."""
    if entry.get("backend") != "sagemaker" or entry.get("dry_run") or not entry.get("job_name"):
        return None
    return monitor.describe(sm_client, entry["job_name"])
