"""Run a CreateTrainingJob request the way SageMaker runs it: N containers of the training image on this machine.

This is the stand-in for the SageMaker training platform itself (which cannot run here). It takes the
request exactly as ``bertlib launch`` sent it (captured from moto) and reproduces the platform's side of
the container contract, as documented in the SageMaker developer guide ("How Amazon SageMaker Provides
Training Information", "Running your own training container", "Use checkpoints") and as the SDK's own
drivers read it (``sagemaker/train/container_drivers``):

- hosts ``algo-1`` … ``algo-N`` (``ResourceConfig.InstanceCount``), each its own container with that
  hostname, on a Docker network this runner creates ``--internal`` (no egress) and removes afterwards;
- ``/opt/ml/input/config/{resourceconfig,hyperparameters,inputdataconfig,checkpointconfig}.json`` on
  every host; ``network_interface_name`` is ``eth0`` (what SageMaker reports on its instances);
- every channel on every host (``FullyReplicated``, File mode) under ``/opt/ml/input/data/<channel>``:
  S3 channels downloaded from (moto) S3 with the key prefix removed (a single object keeps its name), an
  FSx for Lustre ``DirectoryPath`` ``/<MountName>/<path>`` bind-mounted read-only from ``fsx_root/<path>``;
  an S3 prefix with no objects fails the job before any container starts, as SageMaker does;
- ``CheckpointConfig``: the S3 URI is restored into ``LocalPath`` on every host before the containers
  start, and ``LocalPath`` is uploaded back while the job runs (every second) and after each container has
  exited — not after a SIGKILL: the upload stops when a container has to be killed, and what was not yet
  uploaded is lost, as on SageMaker;
- a stop (``stop_when``, StopTrainingJob or a spot interruption, or ``StoppingCondition.MaxRuntimeInSeconds``)
  as SageMaker stops a job: SIGTERM to every container (``docker kill -s TERM``: their PID 1), SIGKILL
  ``stop_grace`` (120) seconds later to any still running; the job is ``Stopped``, and when algo-1 exited by
  itself its ``/opt/ml/model`` is uploaded as for a completed job (the model a stop or MaxRuntime keeps);
- the request's ``TrainingImage`` (a local tag here), ``ContainerEntrypoint`` / ``ContainerArguments`` and ``Environment`` (plus
  ``TRAINING_JOB_NAME``), so the SDK's ``sm_train.sh`` and its MPI driver run unchanged (sshd, the
  ``ready``/``done`` files, ``mpirun`` over ssh);
- the job is ``Completed`` when every container exits 0 and ``Failed`` as soon as one exits non-zero
  (the others are stopped), with ``/opt/ml/output/failure`` as the failure reason; afterwards algo-1's
  ``/opt/ml/model`` → ``<S3OutputPath>/<job>/output/model.tar.gz`` and ``/opt/ml/output/data`` →
  ``output.tar.gz``;
- the request's ``MetricDefinitions`` regexes are applied to the log, as CloudWatch does.

Differences from SageMaker (they do not touch the contract above): no GPUs, NCCL or EFA; containers
share this machine's 2 cores; the log is read from Docker at the end instead of streamed to CloudWatch.
Every wait is bounded (``timeout``); on timeout all containers are killed and the job is ``Failed``.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CHANNEL_ROOT = "/opt/ml/input/data"


@dataclass
class JobResult:
    name: str
    status: str  # Completed | Failed | Stopped
    failure_reason: str | None
    exit_codes: dict[str, int | None]
    logs: dict[str, str]  # host → its container's stdout+stderr
    model_artifacts: str | None  # s3://.../output/model.tar.gz (uploaded after a completed job)
    output_data: str | None  # s3://.../output/output.tar.gz
    metrics: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    killed: list[str] = field(default_factory=list)  # hosts the runner had to SIGKILL (a stop or a failure)
    host_dirs: dict[str, Path] = field(default_factory=dict)  # host → its /opt/ml

    @property
    def log(self) -> str:
        return self.logs.get("algo-1", "")


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


@dataclass
class JobView:
    """What a ``stop_when`` callback sees of a running job."""

    containers: dict[str, str]  # host → container name
    checkpoint_dirs: dict[str, Path]  # host → the folder mounted at CheckpointConfig.LocalPath

    def kill_process(self, host: str, pattern: str) -> int:
        """SIGKILL the first process of ``host`` whose command line contains ``pattern``; its host PID."""
        top = _docker("top", self.containers[host], "-eo", "pid,args").stdout.splitlines()[1:]
        pids = [int(line.split(None, 1)[0]) for line in top if pattern in line and "mpirun" not in line]
        if not pids:
            raise RuntimeError(f"no process matching {pattern!r} on {host}:\n" + "\n".join(top))
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]


class ChannelError(RuntimeError):
    """The platform could not provide a channel (the job fails before its containers start)."""


class SageMakerRunner:
    """Runs captured CreateTrainingJob requests with Docker (see the module docstring)."""

    def __init__(self, s3, work_dir: Path, fsx_root: Path | None = None, timeout: float = 900, stop_grace: float = 120):
        self.s3, self.work_dir, self.fsx_root, self.timeout = s3, Path(work_dir), fsx_root, timeout
        self.stop_grace = stop_grace

    # ------------------------------------------------------------------ S3 helpers

    def _download_prefix(self, uri: str, dest: Path) -> int:
        bucket, prefix = _split(uri)
        count = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, key, str(target))
                count += 1
        return count

    def _upload_dir(self, src: Path, uri: str, seen: dict | None = None) -> None:
        """Upload the files of ``src`` under ``uri``; with ``seen`` only new or changed ones."""
        bucket, prefix = _split(uri.rstrip("/"))
        # the job writes while this runs (temp files renamed or removed): os.walk skips directories
        # that vanish, and a file that vanishes before its upload is skipped, as SageMaker's agent does
        files = sorted(Path(d) / f for d, _, names in os.walk(src) for f in names)
        for path in files:
            try:
                st = path.stat()
                stamp = (st.st_size, st.st_mtime_ns)
                if seen is not None and seen.get(path) == stamp:
                    continue
                self.s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(src)}")
            except FileNotFoundError:  # removed meanwhile (a temp file, an older checkpoint)
                continue
            if seen is not None:
                seen[path] = stamp

    def _upload_tar(self, src: Path, uri: str) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path in sorted(src.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
        bucket, key = _split(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())

    # ------------------------------------------------------------------ the job

    def _prepare_host(self, request: dict, host: str, hosts: list[str], root: Path) -> tuple[Path, list[str]]:
        """Lay out ``/opt/ml`` of ``host`` under ``root/host``; return it and the extra ``-v`` mounts."""
        opt = root / host
        config = opt / "input" / "config"
        for d in (config, opt / "input" / "data", opt / "model", opt / "output" / "data"):
            d.mkdir(parents=True, exist_ok=True)
        instance_type = request["ResourceConfig"]["InstanceType"]
        (config / "resourceconfig.json").write_text(
            json.dumps(
                {
                    "current_host": host,
                    "current_instance_type": instance_type,
                    "current_group_name": "homogeneousCluster",
                    "hosts": hosts,
                    "network_interface_name": "eth0",
                    "instance_groups": [
                        {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": hosts}
                    ],
                }
            )
        )
        (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
        (config / "inputdataconfig.json").write_text(
            json.dumps(
                {
                    c["ChannelName"]: {
                        "TrainingInputMode": "File",
                        "S3DistributionType": "FullyReplicated",
                        "RecordWrapperType": "None",
                    }
                    for c in request.get("InputDataConfig", [])
                }
            )
        )
        mounts: list[str] = []
        for c in request.get("InputDataConfig", []):
            dest = opt / "input" / "data" / c["ChannelName"]
            source = c["DataSource"]
            if "S3DataSource" in source:
                uri = source["S3DataSource"]["S3Uri"]
                dest.mkdir(parents=True, exist_ok=True)
                if self._download_prefix(uri, dest) == 0:
                    raise ChannelError(
                        f'ClientError: No S3 objects found under S3 URL "{uri}" given in input '
                        f"data source (channel {c['ChannelName']})"
                    )
            else:
                fsx = source["FileSystemDataSource"]
                path = fsx["DirectoryPath"]
                local = (self.fsx_root / path.strip("/").split("/", 1)[1]) if self.fsx_root else None
                if local is None or not local.is_dir():
                    raise ChannelError(f"ClientError: FSx directory {path} of {fsx['FileSystemId']} not found")
                mode = "ro" if fsx.get("FileSystemAccessMode", "ro") == "ro" else "rw"
                mounts += ["-v", f"{local}:{CHANNEL_ROOT}/{c['ChannelName']}:{mode}"]
        checkpoint = request.get("CheckpointConfig")
        if checkpoint:
            local_ckpt = self._checkpoint_dir(root, host)
            local_ckpt.mkdir(parents=True, exist_ok=True)
            self._download_prefix(checkpoint["S3Uri"].rstrip("/") + "/", local_ckpt)
            mounts += ["-v", f"{local_ckpt}:{checkpoint.get('LocalPath', '/opt/ml/checkpoints')}"]
            (config / "checkpointconfig.json").write_text(json.dumps(checkpoint))
        return opt, mounts

    @staticmethod
    def _checkpoint_dir(root: Path, host: str) -> Path:
        return root / f"{host}-checkpoints"

    def run(
        self, request: dict, stop_when: Callable[[JobView], bool] | None = None, timeout: float | None = None
    ) -> JobResult:
        """Run ``request``. ``stop_when(JobView)`` is polled while the job runs; when it returns True the job
        is stopped as SageMaker stops it (SIGTERM to every container, SIGKILL ``stop_grace`` s later) and ends
        ``Stopped``."""
        name = request["TrainingJobName"]
        n = request["ResourceConfig"]["InstanceCount"]
        hosts = [f"algo-{i + 1}" for i in range(n)]
        tag = uuid.uuid4().hex[:8]
        root = self.work_dir / f"{name}-{tag}"
        started = time.time()
        logs: dict[str, str] = {}
        host_dirs: dict[str, Path] = {}
        try:
            mounts = {}
            for host in hosts:
                host_dirs[host], mounts[host] = self._prepare_host(request, host, hosts, root)
        except ChannelError as e:
            return JobResult(
                name,
                "Failed",
                str(e),
                {h: None for h in hosts},
                {},
                None,
                None,
                seconds=time.time() - started,
                host_dirs=host_dirs,
            )

        network = f"bertlib-sm-{tag}"
        containers = {host: f"{network}-{host}" for host in hosts}
        view = JobView(containers, {host: self._checkpoint_dir(root, host) for host in hosts})
        checkpoint = request.get("CheckpointConfig")
        sync_seen: dict = {}
        stop_sync = threading.Event()

        def sync_checkpoints(only: list[str] | None = None):
            for host in hosts if only is None else only:
                self._upload_dir(self._checkpoint_dir(root, host), checkpoint["S3Uri"], sync_seen)

        def sync_loop():
            while not stop_sync.wait(1.0):
                sync_checkpoints()

        algo = request["AlgorithmSpecification"]
        entrypoint = algo.get("ContainerEntrypoint") or []
        env = {
            **request.get("Environment", {}),
            "TRAINING_JOB_NAME": name,
            "TRAINING_JOB_ARN": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
        }
        exit_codes: dict[str, int | None] = {h: None for h in hosts}
        killed: list[str] = []
        status, reason = "Completed", None
        syncer = threading.Thread(target=sync_loop, daemon=True) if checkpoint else None
        _docker("network", "create", "--internal", network)
        try:
            for host in hosts:
                args = [
                    "run",
                    "-d",
                    "--name",
                    containers[host],
                    "--hostname",
                    host,
                    "--network",
                    network,
                    "--network-alias",
                    host,
                    "--shm-size",
                    "1g",
                    "-v",
                    f"{host_dirs[host]}:/opt/ml",
                    *mounts[host],
                ]
                for key, value in env.items():
                    args += ["-e", f"{key}={value}"]
                if entrypoint:
                    args += ["--entrypoint", entrypoint[0]]
                args += [algo["TrainingImage"], *entrypoint[1:], *(algo.get("ContainerArguments") or [])]
                _docker(*args)
            if syncer:
                syncer.start()
            deadline = started + (timeout or self.timeout)
            max_run = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")

            def poll_exits():
                for host in hosts:
                    if exit_codes[host] is None:
                        state = _docker(
                            "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", containers[host]
                        ).stdout.split()
                        if state[0] == "false":
                            exit_codes[host] = int(state[1])

            def kill_running():
                """SIGKILL what still runs; the checkpoint upload ends with it (nothing after the kill)."""
                stop_sync.set()
                if syncer and syncer.is_alive():
                    syncer.join(timeout=60)
                for host in hosts:
                    if exit_codes[host] is None:
                        _docker("kill", containers[host], check=False)
                        killed.append(host)

            while True:
                poll_exits()
                failed = [h for h, code in exit_codes.items() if code not in (None, 0)]
                if failed or all(code is not None for code in exit_codes.values()):
                    if failed:
                        status = "Failed"
                    break
                why = None
                if stop_when is not None and stop_when(view):
                    why = "StopTrainingJob / spot interruption"
                elif max_run and time.time() - started > max_run:
                    why = f"MaxRuntimeInSeconds={max_run}"
                if why:  # as SageMaker: SIGTERM to every container, SIGKILL stop_grace seconds later
                    status = "Stopped"
                    for host in hosts:
                        _docker("kill", "-s", "TERM", containers[host], check=False)
                    grace_end = time.time() + self.stop_grace
                    while time.time() < grace_end and any(code is None for code in exit_codes.values()):
                        time.sleep(0.5)
                        poll_exits()
                    reason = f"stopped ({why}): SIGTERM to every container" + (
                        ""
                        if all(code is not None for code in exit_codes.values())
                        else f", SIGKILL after {self.stop_grace:.0f} s"
                    )
                    break
                if time.time() > deadline:
                    status, reason = "Failed", f"runner timeout after {timeout or self.timeout:.0f} s"
                    break
                time.sleep(0.05 if stop_when is not None else 0.5)
            kill_running()  # the platform stops the remaining hosts
            for host in hosts:
                out = _docker("logs", containers[host], check=False)
                logs[host] = out.stdout + out.stderr
        finally:
            stop_sync.set()
            if syncer and syncer.is_alive():
                syncer.join(timeout=30)
            for host in hosts:
                _docker("rm", "-f", containers[host], check=False)
            _docker("network", "rm", network, check=False)

        if checkpoint:  # the last upload, of the hosts that exited by themselves
            sync_checkpoints([h for h in hosts if h not in killed])
        if status == "Failed" and reason is None:
            failures = [(host_dirs[h] / "output" / "failure") for h in hosts]
            texts = [f.read_text().strip() for f in failures if f.is_file() and f.read_text().strip()]
            reason = texts[0] if texts else f"exit codes {exit_codes}"
        output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{name}/output"
        model_uri = output_uri = None
        if status != "Stopped" or "algo-1" not in killed:  # a stopped job that exited keeps its model
            output_uri = f"{output}/output.tar.gz"
            self._upload_tar(host_dirs["algo-1"] / "output" / "data", output_uri)
            if status in ("Completed", "Stopped"):
                model_uri = f"{output}/model.tar.gz"
                self._upload_tar(host_dirs["algo-1"] / "model", model_uri)
        metrics = []
        for definition in algo.get("MetricDefinitions", []):
            regex = re.compile(definition["Regex"])
            for line in logs.get("algo-1", "").splitlines():
                m = regex.search(line)
                if m:
                    metrics.append((definition["Name"], float(m.group(1))))
        return JobResult(
            name,
            status,
            reason,
            exit_codes,
            logs,
            model_uri,
            output_uri,
            metrics,
            seconds=time.time() - started,
            host_dirs=host_dirs,
            killed=killed,
        )
