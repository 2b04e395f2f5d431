"""``bertlib pretrain`` end to end: outputs + overfitting, SIGKILL/resume, and bad-input errors."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from train_helpers import QUIET, base_config, write_dataset

from bertlib.core.errors import ConfigError
from bertlib.launch.local import under_horovodrun
from bertlib.train.metrics import METRIC_KEYS

# trains models (in-process or in subprocesses): `make test-fast` leaves this module out
pytestmark = pytest.mark.slow


def write_config(path, **values):
    path.write_text(yaml.safe_dump(values))
    return path


def test_tiny_model_overfits_and_writes_the_run_directory(tmp_path, capsys):
    from bertlib.train.pretrain import main

    data = write_dataset(tmp_path / "data", n=8, num_files=1)
    run = tmp_path / "run"
    cfg = write_config(
        tmp_path / "c.yaml",
        **base_config(data, run, per_gpu_batch_size=8, total_steps=60, learning_rate=2e-2, log_frequency=10),
    )
    assert main(["--config", str(cfg)]) == 0  # XLA-compiled (skip_xla: false)

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == [10, 20, 30, 40, 50, 60]
    assert all(set(METRIC_KEYS) <= d.keys() for d in lines)
    first, last = lines[0]["mlm_loss"], lines[-1]["mlm_loss"]
    assert last < 0.3 * first, (first, last)  # memorizing 8 records (chance: ln 64 = 4.16)
    assert lines[-1]["mlm_acc"] > 0.75

    # stdout lines carry the same numbers in the form SageMaker's metric regexes parse
    out = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[bertlib] phase=phase1 step=")]
    assert len(out) == len(lines)
    for line, d in zip(out, lines):
        for key in METRIC_KEYS:
            value = float(re.search(rf"\b{key}=([-+0-9.eEinfa]+)", line).group(1))
            assert value == pytest.approx(d[key], rel=1e-5)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["job"] == "pretrain" and summary["phase"] == "phase1" and summary["steps"] == 60
    assert summary["final"]["mlm_loss"] == lines[-1]["mlm_loss"] and summary["seq_per_sec"] > 0
    assert yaml.safe_load((run / "config.yaml").read_text())["total_steps"] == 60
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert {"bert_config.json", "vocab.txt", "bert_model.ckpt.index"} <= {p.name for p in (run / "export").iterdir()}
    assert (run / "checkpoints" / "ckpt-60.index").exists()

    # phase 2 style: weights from the export, fresh optimizer and step → starts where phase 1 ended
    run2 = tmp_path / "run2"
    cfg2 = write_config(
        tmp_path / "c2.yaml",
        **base_config(
            data,
            run2,
            per_gpu_batch_size=8,
            total_steps=2,
            learning_rate=1e-4,
            skip_xla=True,
            load_from="checkpoint",
            checkpoint_path=str(run / "export"),
            phase="phase2",
        ),
    )
    assert main(["--config", str(cfg2)]) == 0
    assert f"initialized weights from {run / 'export'}" in capsys.readouterr().out
    lines2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines2] == [1, 2]
    assert lines2[0]["mlm_loss"] < 0.5 * first  # not a random model
    assert lines2[0]["learning_rate"] == pytest.approx(1e-4)  # schedule restarted at step 0 (warmup 0)

    other = write_dataset(tmp_path / "data80", n=8, num_files=1, vocab=80)
    with pytest.raises(ConfigError, match="vocab_size 64 but .*data80/manifest.json has a vocab of 80"):
        main(["--config", str(cfg2), "--data_dir", str(other), "--run_dir", str(tmp_path / "run80")])

    # the checkpoints remember their data's vocab: resuming phase 1, or initializing from its training
    # checkpoints, on data tokenized with another casing is refused before any TF graph is built
    cased = write_dataset(tmp_path / "cased", n=8, num_files=1)
    manifest = json.loads((cased / "manifest.json").read_text())
    manifest["vocab"]["lowercase"] = False
    (cased / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ConfigError,
        match=rf"cased/manifest.json: data was tokenized with lowercase=False but "
        rf"the checkpoints in {run / 'checkpoints'} expects",
    ):
        main(["--config", str(cfg), "--data_dir", str(cased), "--total_steps", "70"])
    with pytest.raises(ConfigError, match=rf"the checkpoints in {run / 'checkpoints'} expects lowercase=True"):
        main(
            [
                "--config",
                str(cfg2),
                "--data_dir",
                str(cased),
                "--checkpoint_path",
                str(run / "checkpoints"),
                "--run_dir",
                str(tmp_path / "run3"),
            ]
        )


def read_export(run_dir) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "export" / "bert_model.ckpt"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def pretrain_cmd(cfg_path) -> list[str]:
    return under_horovodrun([sys.executable, "-m", "bertlib.train.pretrain", "--config", str(cfg_path)], 2)


#: the run the stop test interrupts: dropout, shuffling and accumulation on, held-out evaluations every
#: 4 steps, checkpoints every 5 (so a stop after step 6 falls between two); steps to spare after the
#: stop and the kill, however far the ranks run ahead of the test reading their output
STOP_RUN = dict(
    total_steps=24,
    checkpoint_frequency=5,
    keep_checkpoints=2,
    skip_xla=True,
    shuffle_buffer=16,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    per_gpu_batch_size=2,
    gradient_accumulation_steps=2,
    validation_frequency=4,
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, subprocess_env):
    """(data dir, run dir) of STOP_RUN run on 2 ranks without a stop: what a stopped, killed and
    resumed run must end equal to."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = write_dataset(root / "data", n=48, num_files=2, validation=6)
    env = dict(subprocess_env, **QUIET)
    full = root / "full"
    cfg = write_config(root / "full.yaml", **base_config(data, full, **STOP_RUN))
    done = subprocess.run(pretrain_cmd(cfg), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return data, full


TF_PROBE = (
    "import sys; from bertlib.core.errors import run_guarded; from bertlib.train.pretrain import main; "
    "rc = run_guarded(main, sys.argv[1:]); "
    "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(rc)"
)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--bogus_key", "1"], "unknown key 'bogus_key'"),
        (["--per_gpu_batch_size", "many"], "per_gpu_batch_size"),
        (["--global_batch_size_check", "10"], "global batch"),
        (["--data_dir", "/nonexistent/phase1"], "/nonexistent/phase1: data_dir not found"),
        (["--max_seq_length", "32"], "max_seq_length=16 but the run expects 32"),
        # launch settings belong to `bertlib launch`, not to the entry point
        (["--num_processes", "2"], "unknown key 'num_processes'"),
        (["--instance_type", "ml.p4d.24xlarge"], "unknown key 'instance_type'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_tensorflow(tmp_path, subprocess_env, overrides, message):
    data = write_dataset(tmp_path / "data", n=8, num_files=1)
    cfg = write_config(tmp_path / "c.yaml", **base_config(data, tmp_path / "run"))
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", TF_PROBE, "--config", str(cfg), *overrides],
        env=dict(subprocess_env, **QUIET),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert res.stdout.strip() == "no tensorflow"  # nothing of TF was loaded, let alone a graph built
    assert not (tmp_path / "run").exists()
    print(f"{overrides}: {time.perf_counter() - t0:.2f}s")


def test_console_script_dispatches_to_pretrain(tmp_path, subprocess_env):
    res = subprocess.run(
        [sys.executable, "-m", "bertlib", "pretrain", "--config", str(tmp_path / "missing.yaml")],
        env=dict(subprocess_env, **QUIET),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path / 'missing.yaml'}: config file not found"


def follow(proc: subprocess.Popen, at_step: int, act) -> str:
    """Read ``proc``'s output; call ``act()`` once, right after the log line of step ``at_step``; wait for
    the exit; return the output read."""
    out, acted = [], False
    try:
        for line in proc.stdout:
            out.append(line)
            if not acted and f" step={at_step} " in line:
                acted = True
                act()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert acted, "".join(out)[-3000:]
    return "".join(out)


def test_stop_then_kill_then_resume_loses_nothing_and_ends_as_uninterrupted(tmp_path, subprocess_env, uninterrupted):
    """One 2-rank job, with dropout, shuffling, accumulation and held-out evaluations every 4 steps on,
    meets both ways a SageMaker job is interrupted, then ends with exactly the weights of an
    uninterrupted run (so every random stream and input position resumed):

    1. SageMaker's stop (SIGTERM, SIGKILL 120 s later) reaching only rank 1, between periodic
       checkpoints: both ranks stop after the same step N (the flag travels in the step's allreduce),
       write the checkpoint of step N and exit 0 with the export of step N.
    2. The relaunched job resumes at step N (no step lost) and is killed outright (SIGKILL to horovodrun
       and both ranks, as a spot interruption) right after the next periodic checkpoint.
    3. The relaunched job resumes from that checkpoint, re-runs the lost steps and finishes.

    (One plain process resuming exactly: tests/train/test_loop.py, in-process.)"""
    data, full = uninterrupted
    ranks = tmp_path / "ranks"
    env = dict(subprocess_env, **QUIET, BERTLIB_RANKS_DIR=str(ranks))
    total = STOP_RUN["total_steps"]
    run = tmp_path / "job"
    cfg = write_config(tmp_path / "job.yaml", **base_config(data, run, **STOP_RUN))

    def launch():
        return subprocess.Popen(
            pretrain_cmd(cfg),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    # 1. SIGTERM to rank 1 once training is under way (ckpt-5 written)
    proc = launch()
    signalled = []

    def sigterm_rank_1():
        registered = {p.read_text(): int(p.name) for p in ranks.iterdir() if p.name.isdigit()}
        assert set(registered) == {"rank 0", "rank 1"}, registered
        signalled.append(registered["rank 1"])
        os.kill(registered["rank 1"], signal.SIGTERM)

    log = follow(proc, 6, sigterm_rank_1)
    assert signalled and proc.returncode == 0, log[-3000:]
    stopped = re.search(r"stopped by SIGTERM after step (\d+); checkpoint written to (\S+); resume by relaunching", log)
    assert stopped, log[-3000:]
    n = int(stopped.group(1))
    assert 6 <= n < 20
    state = (run / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{n}"' in state  # rank 0 saved step N, although only rank 1 was signalled
    for rank in (0, 1):  # and both ranks saved their input state of the same step
        assert (run / "checkpoints" / "input" / "world-2" / f"rank-{rank}" / f"ckpt-{n}.index").is_file()
    assert not list(ranks.glob("[0-9]*")), "the ranks unregister when they end"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_at_step"] == n and summary["steps_run"] == n
    assert f"exported the model of step {n} to {run / 'export'}" in log
    shutil.rmtree(run / "export")  # the export checked at the end must be the finished job's

    # 2. relaunched: resumes at step N; SIGKILL of the whole job right after the line of the step that
    # follows the next periodic checkpoint
    kill_after = (n // 5 + 1) * 5 + 1
    proc = launch()
    log = follow(proc, kill_after, lambda: os.killpg(proc.pid, signal.SIGKILL))
    assert proc.returncode == -signal.SIGKILL
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{n}'} at step {n}" in log
    assert f"input restored at data position {2 * n}" in log
    assert not (run / "export").exists()
    state = (run / "checkpoints" / "checkpoint").read_text()
    killed_at = int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state).group(1))
    assert kill_after - 1 <= killed_at < total

    # 3. relaunched: resumes from the last checkpoint and finishes
    again = subprocess.run(pretrain_cmd(cfg), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{killed_at}'} at step {killed_at}" in again.stdout
    # every rank continued from its saved input iterator: none re-read the consumed records
    assert f"input restored at data position {2 * killed_at}" in again.stdout
    assert "skipping" not in again.stdout
    states = (run / "checkpoints" / "input" / "world-2").glob("rank-*/ckpt-*.index")
    assert len(list(states)) == 2 * 2  # each rank's newest keep_checkpoints = 2
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[: n + 1] == list(range(1, n + 1)) + [n + 1]  # the stopped job's steps, the relaunch's first
    assert steps[-(total - killed_at) :] == list(range(killed_at + 1, total + 1))  # the last job's
    print(
        f"SIGTERM after step 6: stopped after step {n}, 0 steps lost; SIGKILL after step {kill_after}: resumed at {killed_at}"
    )

    a, b = read_export(full), read_export(run)
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) == 0.0
