"""bertlib's PID 1 of a SageMaker container (``bertlib.launch.sm_init``), run as the image runs it, around
small commands that behave as the SDK's driver does: its failure line, and a stop passed on to the ranks.
(The image tests run it around the real driver, mpirun and training.)"""

import os
import signal
import subprocess
import sys
import textwrap

from bertlib.launch.sm_init import FailureLines


def init(args, tmp_path, env=None, **kw):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from bertlib.launch import sm_init; sys.exit(sm_init.run(sys.argv[1:], "
            f"failure_file=__import__('pathlib').Path({str(tmp_path / 'failure')!r})))",
            *args,
        ],
        env={**os.environ, "BERTLIB_RANKS_DIR": str(tmp_path / "ranks"), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_a_failed_command_leaves_the_first_rank_error_line_over_the_sdks(tmp_path):
    """As the SDK's driver: mpirun's tagged lines pass through, then it writes its CalledProcessError into
    the failure file and exits 1; the init replaces that by the first rank's ``error:`` line."""
    failure = tmp_path / "failure"
    script = textwrap.dedent(
        f"""
        echo '[1,1]<stdout>:[bertlib] loading'
        echo '[1,1]<stderr>:error: key '"'"'total_steps'"'"': ten is not an integer[1,0]<stderr>:error: other'
        echo '[1,0]<stderr>:error: key total_steps (rank 0)'
        echo 'Traceback: subprocess.CalledProcessError: mpirun ...' > {failure}
        exit 3
        """
    )
    proc = init(["bash", "-c", script], tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "[1,1]<stdout>:[bertlib] loading" in out  # the output passes through
    assert failure.read_text() == "rank 1: key 'total_steps': ten is not an integer\n"


def test_a_succeeding_command_leaves_no_failure_file(tmp_path):
    proc = init(["bash", "-c", "echo '[1,0]<stderr>:error: a warning-like line'; exit 0"], tmp_path)
    proc.communicate(timeout=60)
    assert proc.returncode == 0 and not (tmp_path / "failure").exists()


def test_a_rank_killed_by_a_signal_is_named_with_its_host():
    lines = FailureLines()
    lines.feed("[1,0]<stdout>:[bertlib] phase=phase1 step=5 loss=7.1")
    # the AWS image's mpirun is a wrapper around mpirun.real, which signs the line
    lines.feed("mpirun.real noticed that process rank 1 with PID 45 on node algo-2 exited on signal 9 (Killed).")
    assert lines.reason.startswith("rank 1 on algo-2 was killed by signal 9 (Killed) before it could say why")
    lines.feed("[1,0]<stderr>:error: later")
    assert lines.reason == "rank 0: later"  # a rank's own line, when there is one, says more
    long = FailureLines()
    long.feed("[1,0]<stderr>:error: " + "x" * 3000)
    assert len(long.reason.encode()) == 1024  # FailureReason's limit


RANK = """
import sys, time
from bertlib.core.stop import StopSignal
with StopSignal(label="rank 0") as stop:
    print("registered", flush=True)
    while not stop.requested:
        time.sleep(0.01)
    print("stopping after", stop.name, flush=True)
"""


def test_sigterm_to_the_init_reaches_the_registered_rank_which_exits_cleanly(tmp_path):
    proc = init([sys.executable, "-c", RANK], tmp_path)
    lines = []
    for line in proc.stdout:  # bounded by the communicate timeout below
        lines.append(line)
        if line.startswith("registered"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "SIGTERM: asked 1 training process(es) on this host to stop after their current step" in out
    assert "stopping after SIGTERM" in out
    assert (tmp_path / "ranks" / "stop").is_file() and not list((tmp_path / "ranks").glob("[0-9]*"))


def test_a_rank_that_registers_after_the_stop_is_stopped_at_once(tmp_path):
    from bertlib.core.stop import StopSignal, signal_ranks

    assert signal_ranks(tmp_path) == []
    with StopSignal(tmp_path) as stop:
        assert stop.requested and stop.name == "SIGTERM"


def test_a_failed_jobs_reason_is_one_line_in_the_cli_and_the_notebook():
    from bertlib.core.errors import JobFailed, failure_line

    line = failure_line("bertlib-phase1-x", "Failed", "rank 1: /opt/ml/input/data/train: data_dir not found\n")
    assert (
        line == "SageMaker training job bertlib-phase1-x Failed: rank 1: /opt/ml/input/data/train: data_dir not found"
    )
    sdk = "Traceback (most recent call last):\n  File x\nsubprocess.CalledProcessError: Command '['mpirun']'"
    assert "\n" not in failure_line("j", "Failed", sdk) and failure_line("j", "Failed", None).endswith(
        "no failure reason given"
    )
    assert JobFailed(line)._render_traceback_() == [f"JobFailed: {line}"]
