"""Run ``bertlib pretrain`` / ``bertlib squad`` on this machine, under ``horovodrun`` for N > 1.

The job's resolved config (:attr:`LaunchedJob.job <bertlib.core.config.LaunchedJob>`, no launch
settings) is written to ``RUN_DIR/launch_config.yaml`` and the entry point is started as
``python -m bertlib.train.<job> --config RUN_DIR/launch_config.yaml`` — one plain process, or
``horovodrun -np N -H localhost:N --gloo`` for N processes (:mod:`bertlib.launch.horovodrun`). Output
is streamed line by line (into the notebook or terminal, with a progress bar driven by the ``step=``
of the log lines); a failure raises :class:`LaunchError` carrying the last lines.

With ``sagemaker_env=True`` the processes also get the SageMaker container contract (``SM_MODEL_DIR``,
``SM_OUTPUT_DATA_DIR``, ``SM_CHANNEL_TRAIN``, ``BERTLIB_CHECKPOINT_DIR``) pointed into the run
directory, so the entry points take exactly the code path they take in a training job while
writing the same local layout (``export/``, ``checkpoints/``, metrics at the top).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from bertlib.core.config import LaunchedJob, to_yaml
from bertlib.core.errors import ConfigError, LaunchError
from bertlib.core.files import write_text
from bertlib.core.progress import progress_bar

JOBS = {"pretrain": "bertlib.train.pretrain", "squad": "bertlib.squad.finetune", "canary": "bertlib.launch.canary"}
_STEP = re.compile(r"\[bertlib\] phase=\S+ step=(\d+)")
#: TensorFlow's start-up notices that TF_CPP_MIN_LOG_LEVEL does not silence (absl, oneDNN): not shown
#: in the stream (they stay in the tail of a failure message)
_NOISE = re.compile(r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on")


def require_horovod() -> None:
    """Horovod is installed in this Python (N > 1 processes run under its launcher), else a ConfigError
    naming the fix."""
    if importlib.util.find_spec("horovod") is None:
        raise ConfigError(
            "num_processes > 1 needs Horovod: run `make setup` (container/install_horovod.sh) or set num_processes: 1"
        )


def under_horovodrun(argv: list[str], num_processes: int) -> list[str]:
    """``argv`` as ``num_processes`` Horovod ranks on localhost: ``horovodrun -np N -H localhost:N --gloo``
    through :mod:`bertlib.launch.horovodrun` (the launcher without its per-launch build check)."""
    require_horovod()
    hosts = ["-np", str(num_processes), "-H", f"localhost:{num_processes}", "--gloo"]
    return [sys.executable, "-m", "bertlib.launch.horovodrun", *hosts, *argv]


def command(job: str, config_file: Path, num_processes: int) -> list[str]:
    """The argv that starts ``job`` with ``num_processes`` ranks on localhost."""
    entry = [sys.executable, "-u", "-m", JOBS[job], "--config", str(config_file)]
    return entry if num_processes == 1 else under_horovodrun(entry, num_processes)


def environment(
    launched: LaunchedJob, run_dir: Path, job: str, env: dict | None = None, sagemaker_env: bool = False
) -> dict:
    """The child environment: TF threads per process (the launch's ``threads_per_process``, read by TF
    when it starts), this package first on PYTHONPATH, SM_* vars."""
    out = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    out["PYTHONPATH"] = os.pathsep.join([package_root] + ([out["PYTHONPATH"]] if out.get("PYTHONPATH") else []))
    out["PYTHONUNBUFFERED"] = "1"
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if launched.launch.threads_per_process:
        n = str(launched.launch.threads_per_process)
        out.update(TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n, OMP_NUM_THREADS=n)
    if sagemaker_env:
        out.update(
            SM_MODEL_DIR=str(run_dir / "export"),
            SM_OUTPUT_DATA_DIR=str(run_dir),
            BERTLIB_CHECKPOINT_DIR=str(run_dir / "checkpoints"),
        )
        if job == "pretrain":
            out["SM_CHANNEL_TRAIN"] = str(Path(launched.job.data_dir).resolve())
    out.update(env or {})
    return out


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the whole process group (horovodrun and its workers), then kill what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    job: str,
    launched: LaunchedJob,
    num_processes: int | None = None,
    env: dict | None = None,
    stream: bool = True,
    sagemaker_env: bool = False,
    progress: bool | None = None,
    tail_lines: int = 40,
) -> Path:
    """Run ``job`` ("pretrain" | "squad") locally as ``launched`` says; return the run directory.

    Args:
      num_processes: Horovod ranks (default the launch's ``num_processes``); 1 runs one plain process.
      env: extra environment variables for the processes.
      stream: print the processes' output line by line as it arrives.
      sagemaker_env: give the processes the SageMaker container contract (see module docstring).
      progress: a tqdm bar from the ``step=`` of the log lines (default: when streaming).
    """
    if job not in JOBS:
        raise ConfigError(f"job {job!r}: expected one of {', '.join(JOBS)}")
    if num_processes and num_processes != launched.launch.num_processes:  # revalidated: the global batch may change
        launched = launched.updated({"num_processes": num_processes}, f"num_processes={num_processes}")
    n, cfg = launched.launch.num_processes, launched.job
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "launch_config.yaml"
    write_text(config_file, to_yaml(cfg))
    argv = command(job, config_file, n)
    child_env = environment(launched, run_dir, job, env, sagemaker_env)

    bar = None
    if stream and (progress if progress is not None else True):
        bar = progress_bar(cfg.total_steps, f"{job} ×{n}")
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(
        argv,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if stream and not _NOISE.search(line):
                if bar is not None:
                    bar.write(line, file=sys.stdout)
                    m = _STEP.search(line)
                    if m and int(m.group(1)) > bar.n:
                        bar.update(int(m.group(1)) - bar.n)
                else:
                    print(line, flush=True)
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        if bar is not None:
            bar.close()
        proc.stdout.close()
    if code != 0:
        shown = "\n".join(tail)
        raise LaunchError(f"{job} exited with code {code} ({' '.join(argv[:6])} ...); last output:\n{shown}")
    return run_dir
