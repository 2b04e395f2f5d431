"""Watch a SageMaker training job that exists: its status, its log, and one progress display.

Used to attach to a job that was started earlier (a re-run notebook cell, ``bertlib status NAME``,
``bertlib launch`` again) and to follow a new one. Everything goes through boto3's ``sagemaker`` and
``logs`` clients, the way the SDK follows a job (``sagemaker.core.utils.logs``: the job's streams
``<job name>/algo-N-...`` in the log group ``/aws/sagemaker/TrainingJobs``, read with
``DescribeLogStreams`` + ``GetLogEvents`` and each stream's ``nextForwardToken``).

The progress display is parsed from the job's metric lines (``[bertlib] phase=.. step=N loss=..
seq_per_sec=.. elapsed_s=..``, :mod:`bertlib.train.metrics`) with the same regexes the job gives
SageMaker as its MetricDefinitions (:func:`bertlib.launch.sagemaker.metric_definitions`): step /
total, loss, throughput, ETA (from the job's own step rate) and the cost so far (on-demand price of
:mod:`bertlib.core.instances` × instance count × time since the job's TrainingStartTime).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from bertlib.core.errors import ConfigError
from bertlib.core.instances import INSTANCES
from bertlib.core.progress import MeterDisplay
from bertlib.launch.aws import boto_session
from bertlib.launch.sagemaker import metric_definitions

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
#: seconds between two DescribeTrainingJob / log polls while attached (``$BERTLIB_POLL_SECONDS``)
DEFAULT_POLL_SECONDS = 10.0


def poll_seconds() -> float:
    raw = os.environ.get("BERTLIB_POLL_SECONDS", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_POLL_SECONDS
    except ValueError:
        raise ConfigError(f"$BERTLIB_POLL_SECONDS {raw!r}: not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"$BERTLIB_POLL_SECONDS {raw!r}: must be > 0")
    return value


def clients(region: str | None = None):
    """``(sagemaker client, logs client)`` of the process's boto3 session in ``region``."""
    session = boto_session(region)
    return session.client("sagemaker"), session.client("logs")


def describe(sm_client, name: str) -> dict | None:
    """DescribeTrainingJob of ``name``; None when there is no such job."""
    import botocore.exceptions

    try:
        return sm_client.describe_training_job(TrainingJobName=name)
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        message = str(error.get("Message", "")).lower()
        # AWS: ValidationException "Requested resource not found."; moto: "Could not find training job ..."
        if error.get("Code") in ("ValidationException", "ValidationError", "ResourceNotFound") and any(
            words in message for words in ("not found", "could not find", "does not exist")
        ):
            return None
        raise


# ----------------------------------------------------------------------------- the log


class LogFollower:
    """New lines of a job's CloudWatch log streams since the last :meth:`poll` (all hosts' streams, each
    read in order from its head with its ``nextForwardToken``, as the SDK's ``LogStreamHandler``)."""

    def __init__(self, logs_client, job_name: str, log_group: str = LOG_GROUP):
        self.client, self.job_name, self.log_group = logs_client, job_name, log_group
        self.tokens: dict[str, str | None] = {}

    def _streams(self) -> list[str]:
        import botocore.exceptions

        names, token = [], None
        try:
            while True:
                kwargs = {"nextToken": token} if token else {}
                page = self.client.describe_log_streams(
                    logGroupName=self.log_group, logStreamNamePrefix=self.job_name + "/", **kwargs
                )
                names += [s["logStreamName"] for s in page.get("logStreams", [])]
                token = page.get("nextToken")
                if not token:
                    return sorted(names)
        except botocore.exceptions.ClientError as e:  # no log group before the first container logs
            if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []
            raise

    def poll(self) -> list[str]:
        events = []
        for stream in self._streams():
            while True:
                kwargs = {"nextToken": self.tokens[stream]} if self.tokens.get(stream) else {}
                page = self.client.get_log_events(
                    logGroupName=self.log_group, logStreamName=stream, startFromHead=True, **kwargs
                )
                self.tokens[stream] = page["nextForwardToken"]
                if not page["events"]:
                    break
                events += [(e["timestamp"], stream, e["message"]) for e in page["events"]]
        events.sort(key=lambda e: e[0])
        return [message for _, _, message in events]


# ----------------------------------------------------------------------------- metric lines


def metric_parser(job: str = "pretrain") -> Callable[[str], dict[str, float]]:
    """``line → {metric: value}`` with the regexes of the job's MetricDefinitions (the values SageMaker
    itself would read from that line; ``{}`` for a line without any)."""
    compiled = [(m["name"], re.compile(m["regex"])) for m in metric_definitions(job)]

    def parse(line: str) -> dict[str, float]:
        found = {}
        for name, regex in compiled:
            match = regex.search(line)
            if match:
                try:
                    found[name] = float(match.group(1))
                except ValueError:
                    continue
        return found

    return parse


def usd_per_hour(instance_type: str | None, instance_count: int) -> float | None:
    """On-demand USD per hour of ``instance_count`` × ``instance_type`` (None: not in the table)."""
    known = INSTANCES.get(instance_type or "")
    return None if known is None else known.usd_per_hour * instance_count


@dataclass
class JobProgress:
    """What the display shows, from the job's metric lines and its description."""

    name: str
    total: int | None = None
    status: str = "?"
    step: int = 0
    loss: float | None = None
    seq_per_sec: float | None = None
    elapsed_s: float = 0.0
    rate: float | None = None  # optimizer steps per second of the job, from its own metric lines
    usd_per_hour: float | None = None
    billed_s: float = 0.0
    _first: tuple[float, float] | None = field(default=None, repr=False)  # (step, elapsed_s) first seen

    def add(self, metrics: dict[str, float]) -> bool:
        """Take one metric line's values; True if it was a step line."""
        if "step" not in metrics:
            return False
        self.step = int(metrics["step"])
        self.loss = metrics.get("loss", self.loss)
        self.seq_per_sec = metrics.get("seq_per_sec", self.seq_per_sec)
        if "elapsed_s" in metrics:
            self.elapsed_s = metrics["elapsed_s"]
            if self._first is None:  # one line: the job started at step 0 (a resumed job: corrected by the next)
                self._first = (self.step, self.elapsed_s)
                self.rate = self.step / self.elapsed_s if self.elapsed_s > 0 else None
            elif self.elapsed_s > self._first[1]:
                self.rate = (self.step - self._first[0]) / (self.elapsed_s - self._first[1])
        return True

    def described(self, desc: dict, now: datetime | None = None) -> None:
        """Status and billed time from DescribeTrainingJob (``BillableTimeInSeconds`` once it is known,
        else the time since ``TrainingStartTime``)."""
        self.status = desc.get("TrainingJobStatus", self.status)
        start = desc.get("TrainingStartTime")
        if desc.get("BillableTimeInSeconds"):
            self.billed_s = float(desc["BillableTimeInSeconds"])
        elif start is not None:
            end = desc.get("TrainingEndTime") if self.status in TERMINAL else None
            end = end or now or datetime.now(timezone.utc)
            self.billed_s = max(0.0, (end - start).total_seconds())

    @property
    def cost_usd(self) -> float | None:
        return None if self.usd_per_hour is None else self.usd_per_hour * self.billed_s / 3600.0

    @property
    def eta_s(self) -> float | None:
        if self.total is None or not self.rate:
            return None
        return max(0.0, (self.total - self.step) / self.rate)

    def text(self) -> str:
        """One line: ``NAME [status]: 40%|████      | 400/1000 [05:00<07:30, 1.33 step/s] loss=7.12, 512
        seq/s, $12.34 so far``."""
        from tqdm import tqdm

        post = []
        if self.loss is not None:
            post.append(f"loss={self.loss:.4g}")
        if self.seq_per_sec is not None:
            post.append(f"{self.seq_per_sec:.4g} seq/s")
        cost = self.cost_usd
        post.append("cost so far: n/a" if cost is None else f"${cost:,.2f} so far")
        meter = tqdm.format_meter(
            self.step,
            self.total,
            self.elapsed_s,
            prefix=f"{self.name} [{self.status}]",
            unit="step",
            rate=self.rate,
            postfix=", ".join(post),
        )
        return meter


def attach(
    name: str,
    *,
    sm_client,
    logs_client,
    job: str = "pretrain",
    total_steps: int | None = None,
    instance_type: str | None = None,
    instance_count: int = 1,
    logs: bool = True,
    poll_s: float | None = None,
    display: MeterDisplay | None = None,
    on_status: Callable[[dict], None] | None = None,
) -> dict:
    """Follow job ``name`` until it ends: its log lines printed (``logs``) below one progress display
    updated in place. ``on_status(describe)`` is called whenever the status changes. Returns the last
    DescribeTrainingJob response."""
    poll_s = poll_seconds() if poll_s is None else poll_s
    desc = describe(sm_client, name)
    for _ in range(5):  # a job created a moment ago may not be visible yet
        if desc is not None:
            break
        time.sleep(poll_s)
        desc = describe(sm_client, name)
    if desc is None:
        raise ConfigError(f"SageMaker training job {name!r}: not found (DescribeTrainingJob)")
    rc = desc.get("ResourceConfig", {})
    progress = JobProgress(
        name,
        total=total_steps,
        usd_per_hour=usd_per_hour(instance_type or rc.get("InstanceType"), rc.get("InstanceCount", instance_count)),
    )
    parse = metric_parser(job)
    follower = LogFollower(logs_client, name)
    display = display or MeterDisplay()
    status = None
    try:
        while True:
            progress.described(desc)
            if desc["TrainingJobStatus"] != status:
                status = desc["TrainingJobStatus"]
                if on_status is not None:
                    on_status(desc)
            for line in follower.poll():
                progress.add(parse(line))
                if logs:
                    display.write(line.rstrip("\n"))
            display.show(progress.text(), key=(progress.step, progress.status))
            if status in TERMINAL:
                return desc
            time.sleep(poll_s)
            desc = describe(sm_client, name) or desc
    finally:
        display.close()
