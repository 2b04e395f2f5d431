"""The errors a user sees, and how an entry point shows them: one line, exit code 2.

It imports nothing from bertlib but :mod:`bertlib.core.lean_imports` (a leaf), so that every layer can
raise these without importing the layers above it. Every message is one line naming the file or key and the problem.
"""

from __future__ import annotations

import sys

from bertlib.core import lean_imports


class ConfigError(ValueError):
    """Bad user input; ``str(err)`` is one line that names the file and the problem."""


class ParamsError(ConfigError):
    """Invalid notebook parameters. Jupyter shows only the one-line message, not a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: replaces the traceback display
        return [f"ParamsError: {self}"]


class DataError(ConfigError):
    """A prepared dataset that cannot be used; ``str(err)`` is one line naming the file."""


class SquadDataError(ConfigError):
    """A SQuAD file that cannot be used; the message names the file and the problem."""


class AssetError(RuntimeError):
    """A download or checksum failure; the message names the source and the problem."""


class LaunchError(RuntimeError):
    """The training processes exited with an error; the message ends with their last output lines."""


class JobFailed(LaunchError):
    """A SageMaker training job ended Failed; ``str(err)`` is one line: the job and its FailureReason."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: the one line, no traceback
        return [f"JobFailed: {self}"]


def failure_line(job_name: str, status: str, reason: str | None) -> str:
    """One line for a job that ended ``status``: its name and its FailureReason (DescribeTrainingJob's, at
    most 1024 characters: in the bertlib image the failing rank's ``error:`` line), whitespace collapsed."""
    text = " ".join((reason or "no failure reason given").split())
    return f"SageMaker training job {job_name} {status}: {text}"


def print_error(message: str) -> None:
    """Write ``error: <message>`` to stderr as one write, so that ranks whose output ``mpirun`` interleaves keep
    whole lines (``print`` writes the text and the newline separately)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def run_guarded(fn, argv: list[str]) -> int:
    """Call ``fn(argv)`` (a command: Keras imported without the extras it does not need, see
    :mod:`bertlib.core.lean_imports`); turn user-input errors into one line on stderr and exit code 2."""
    lean_imports.install()
    try:
        return int(fn(argv) or 0)
    except (ConfigError, FileNotFoundError) as e:
        print_error(str(e))
        return 2
