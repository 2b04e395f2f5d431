"""PID 1 of a SageMaker job in the bertlib image: runs the SDK's command as its child, passes a stop on to
the training processes, and leaves the failing rank's one-line error as the job's FailureReason.

Started by the image's ``BASH_ENV`` hook (``container/bash_env.sh``): the SDK v3 starts every container as
``/bin/bash -c "chmod +x .../sm_train.sh && .../sm_train.sh"``; that bash sources ``BASH_ENV`` first, and
the hook ``exec``\\ s ``python3 -m bertlib.launch.sm_init /bin/bash -c "<the same command>"``. Standard
library only (with :mod:`bertlib.core.stop`): it runs from the image's installed bertlib, before the code
channel is on any path.

Stops. SageMaker stops a job (StopTrainingJob, spot interruption, MaxRuntimeInSeconds) with SIGTERM to
PID 1 of every container and SIGKILL 120 s later. Left alone, that SIGTERM goes nowhere: the bash PID 1
has no trap (``sm_train.sh`` traps only ERR), and the kernel drops a signal that PID 1 does not handle;
nor would passing it to ``mpirun`` help, which answers SIGTERM by killing the ranks (SIGTERM, then SIGKILL
moments later). So on SIGTERM (or SIGINT) this init signals the training processes of *its own host* —
those registered in the ranks folder (:mod:`bertlib.core.stop`), whichever launcher started them (local
ranks are mpirun's children, a remote host's ranks children of its sshd/orted): every host gets the
platform's SIGTERM, so every rank is reached. The ranks agree on a step, checkpoint it and exit 0; mpirun
and the SDK's driver then end normally and the platform syncs the checkpoint folder.

Failures. The SDK's MPI driver writes ``/opt/ml/output/failure`` (FailureReason: its first 1024 bytes)
after ``mpirun`` fails, from its ``CalledProcessError`` — the whole mpirun command, not why. This init reads
every line of the job's output as it passes it on (the driver prints mpirun's ``--tag-output`` lines, so
every rank of every host is there) and keeps the first rank's ``error:`` line (``[1,R]<stderr>:error: ...``,
written by :func:`bertlib.core.errors.print_error`), else mpirun's line naming a rank that died on a signal
(``mpirun[.real] noticed that process rank R with PID P on node H exited on signal N``).
When the command fails, that line replaces the file (temp name, then rename: the init is the last
process of algo-1, so it comes after the SDK's write).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bertlib.core.stop import ranks_dir, signal_ranks

FAILURE_FILE = Path("/opt/ml/output/failure")
FAILURE_LIMIT = 1024  # FailureReason's length
#: after the command exits, output still in the pipe is read until it has been quiet this long (seconds):
#: the sshd the SDK's driver starts keeps the pipe open, so its end of file never comes
DRAIN_QUIET_S = 0.5
DRAIN_MAX_S = 10.0

_TAG = re.compile(r"\[\d+,(\d+)\]<std(?:err|out)>:")
_RANK_DIED = re.compile(
    r"noticed that process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+)(?: \(([^)]*)\))?"
)


class FailureLines:
    """The job's first rank ``error:`` line and the first rank that died on a signal, from its output."""

    def __init__(self):
        self.error: str | None = None
        self.died: str | None = None

    def feed(self, line: str) -> None:
        if self.error is None:
            tags = list(_TAG.finditer(line))  # two ranks' output can meet on one line: cut at the tags
            if not tags and line.startswith("error: "):  # a process that mpirun did not start
                self.error = line[len("error: ") :].strip()
            for tag, after in zip(tags, tags[1:] + [None]):
                text = line[tag.end() : after.start() if after else len(line)]
                if text.startswith("error: "):
                    self.error = f"rank {tag.group(1)}: {text[len('error: ') :].strip()}"
                    break
        if self.died is None:
            m = _RANK_DIED.search(line)
            if m:
                rank, host, sig, name = m.groups()
                self.died = (
                    f"rank {rank} on {host} was killed by signal {sig}{f' ({name})' if name else ''} before it could "
                    "say why (out of memory? see that host's log); relaunch the job to resume from its last checkpoint"
                )

    @property
    def reason(self) -> str | None:
        text = self.error or self.died
        return text.encode()[:FAILURE_LIMIT].decode(errors="ignore") if text else None


def write_failure(reason: str, path: Path = FAILURE_FILE) -> None:
    """Replace ``path`` by ``reason`` (one line), through a temp name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(reason + "\n")
    os.replace(tmp, path)


def _say(text: str) -> None:
    sys.stdout.write(f"[bertlib] {text}\n")
    sys.stdout.flush()


def run(command: list[str], failure_file: Path = FAILURE_FILE) -> int:
    """Run ``command`` as described in the module docstring; returns its exit code (128 + N on signal N)."""
    folder = ranks_dir()
    stops: list[str] = []

    def on_stop(signum, frame):  # noqa: ARG001 - signal handler signature
        name = signal.Signals(signum).name
        sent = signal_ranks(folder) if folder is not None else []
        stops.append(name)
        _say(
            f"{name}: asked {len(sent)} training process(es) on this host to stop after their current step "
            "and write a checkpoint"
        )

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    env = dict(os.environ, BERTLIB_SM_INIT=str(os.getpid()))
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = FailureLines()
    last_read = [time.monotonic()]

    def relay():
        out = sys.stdout.buffer
        for raw in iter(child.stdout.readline, b""):
            out.write(raw)
            out.flush()
            last_read[0] = time.monotonic()
            lines.feed(raw.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    code = None
    while code is None:  # PID 1 reaps every orphan; the command's own status ends the loop
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code is not None and code < 0 else (code or 0)
    deadline = time.monotonic() + DRAIN_MAX_S
    while reader.is_alive() and time.monotonic() < deadline:
        reader.join(timeout=DRAIN_QUIET_S)
        if time.monotonic() - last_read[0] > DRAIN_QUIET_S:
            break
    if code != 0 and lines.reason:
        write_failure(lines.reason, failure_file)
        _say(f"failure reason: {lines.reason}")
    return code


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("error: usage: python -m bertlib.launch.sm_init COMMAND [ARG ...]\n")
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
