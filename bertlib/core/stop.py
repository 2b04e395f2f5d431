"""Stops that lose nothing: how a training process learns that its job is being stopped.

SageMaker stops a job (StopTrainingJob, a spot interruption, MaxRuntimeInSeconds) with SIGTERM to each
container's PID 1 and SIGKILL 120 s later. In the bertlib image PID 1 is :mod:`bertlib.launch.sm_init`,
which passes the SIGTERM on to the training processes of its own host: those registered in the
*ranks folder* (a file named by the process id). A training process registers while it trains
(:class:`StopSignal`, used by :meth:`bertlib.train.loop.Trainer.fit`); a SIGTERM then only sets a flag,
which the ranks agree on at the next step boundary (see the loop). A stop that comes before a rank has
registered is not lost either: the init leaves a ``stop`` marker in the folder, and a rank that
registers after it counts as stopped at once.

The ranks folder is ``$BERTLIB_RANKS_DIR`` when set (tests, local runs that want it); else, in a
SageMaker container (``/opt/ml/input/config`` exists), ``/tmp/bertlib-ranks`` — ranks started by mpirun
over ssh on another host do not inherit the init's environment, so the default must be fixed. Outside
both, a process registers nowhere and a SIGTERM still sets its flag.

A leaf module (standard library only): the init imports it without TensorFlow.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

SAGEMAKER_CONFIG = Path("/opt/ml/input/config")
DEFAULT_RANKS_DIR = Path("/tmp/bertlib-ranks")
STOP_MARKER = "stop"


def ranks_dir(env: dict | None = None) -> Path | None:
    """The folder where training processes register (see the module docstring), or None."""
    env = os.environ if env is None else env
    if env.get("BERTLIB_RANKS_DIR"):
        return Path(env["BERTLIB_RANKS_DIR"])
    return DEFAULT_RANKS_DIR if SAGEMAKER_CONFIG.is_dir() else None


def registered_pids(folder: Path) -> list[int]:
    """The process ids registered in ``folder`` (file names that are whole numbers)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def signal_ranks(folder: Path, signum: int = signal.SIGTERM) -> list[int]:
    """Leave the ``stop`` marker in ``folder`` and send ``signum`` to every registered process; returns
    the pids signalled (a registered process that is gone already is skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STOP_MARKER).touch()
    sent = []
    for pid in registered_pids(folder):
        try:
            os.kill(pid, signum)
            sent.append(pid)
        except ProcessLookupError:
            (folder / str(pid)).unlink(missing_ok=True)
    return sent


class StopSignal:
    """While entered: SIGTERM sets :attr:`requested` instead of ending the process, and the process is
    registered in the ranks folder (a file named by its pid holding ``label``, e.g. ``rank 1``). Leaving restores the previous handler and unregisters.

    Outside the main thread (where Python cannot install handlers) it only reads the ``stop`` marker.
    """

    def __init__(self, folder: Path | None = None, label: str = ""):
        self.folder = ranks_dir() if folder is None else folder
        self.label = label
        self.signum: int | None = None
        self._previous = None
        self._entry: Path | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signum = signum

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._entry = self.folder / str(os.getpid())
            self._entry.write_text(self.label)
            if (self.folder / STOP_MARKER).exists():  # the stop came before this process registered
                self.signum = signal.SIGTERM
        return self

    def __exit__(self, *exc) -> None:
        if self._entry is not None:
            self._entry.unlink(missing_ok=True)
            self._entry = None
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
