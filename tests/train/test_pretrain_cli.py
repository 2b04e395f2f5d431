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


def pretrain_cmd(cfg_path, processes: int, env: dict):
    if processes == 1:
        return [sys.executable, "-m", "bertlib.train.pretrain", "--config", str(cfg_path)]
    horovodrun = shutil.which("horovodrun", path=env["PATH"])
    assert horovodrun, "horovodrun not installed (make setup builds Horovod)"
    return [
        horovodrun,
        "-np",
        str(processes),
        "-H",
        f"localhost:{processes}",
        sys.executable,
        "-m",
        "bertlib.train.pretrain",
        "--config",
        str(cfg_path),
    ]


#: the run the stop tests interrupt: dropout, shuffling and accumulation on, held-out evaluations every
#: 4 steps, checkpoints every 5 (so a stop at step 6 falls between two)
STOP_RUN = dict(
    total_steps=16,
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
    """``uninterrupted(processes)`` → (data dir, run dir) of STOP_RUN run without a stop on that many
    processes: what an interrupted and resumed run must end equal to (each run once per module)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = write_dataset(root / "data", n=48, num_files=2, validation=6)
    env = dict(subprocess_env, **QUIET)
    runs = {}

    def get(processes: int):
        if processes not in runs:
            full = root / f"full-{processes}"
            cfg = write_config(root / f"full-{processes}.yaml", **base_config(data, full, **STOP_RUN))
            done = subprocess.run(
                pretrain_cmd(cfg, processes, env), env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
            runs[processes] = full
        return data, runs[processes]

    return get


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_after_a_checkpoint_then_restart_gives_the_uninterrupted_weights(
    tmp_path, subprocess_env, uninterrupted, processes
):
    """SIGKILL of the whole job (with 2 ranks: horovodrun and both workers, as a spot interruption)
    right after a checkpoint; the restarted job must end with exactly the weights of an uninterrupted
    run — with dropout, shuffling and gradient accumulation on, so every random stream must resume, and
    with held-out evaluations every 4 steps, which must not disturb any of them."""
    data, full = uninterrupted(processes)
    env = dict(subprocess_env, **QUIET)
    common = STOP_RUN
    total = common["total_steps"]

    run = tmp_path / "killed"
    cfg = write_config(tmp_path / "killed.yaml", **base_config(data, run, **common))
    proc = subprocess.Popen(
        pretrain_cmd(cfg, processes, env),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:  # kill right after the step-6 line (ckpt-5 written)
            if " step=6 " in line:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank at once
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "export").exists()
    state = (run / "checkpoints" / "checkpoint").read_text()
    killed_at = int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state).group(1))
    assert 5 <= killed_at < total

    again = subprocess.run(pretrain_cmd(cfg, processes, env), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{killed_at}'} at step {killed_at}" in again.stdout
    # every rank continued from its saved input iterator: none re-read the consumed records
    assert f"input restored at data position {2 * killed_at}" in again.stdout
    assert "skipping" not in again.stdout
    states = (run / "checkpoints" / "input" / f"world-{processes}").glob("rank-*/ckpt-*.index")
    assert len(list(states)) == 2 * processes  # each rank's newest keep_checkpoints = 2
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == total and steps.count(killed_at + 1) == 1 + (killed_at < 6)

    a, b = read_export(full), read_export(run)
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) == 0.0


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


def test_sigterm_to_one_rank_stops_both_after_the_same_step_and_loses_nothing(tmp_path, subprocess_env, uninterrupted):
    """SageMaker's stop (SIGTERM, SIGKILL 120 s later) reaching only rank 1 of 2, between periodic
    checkpoints: both ranks stop after the same step N (the flag travels in the step's allreduce), write
    the checkpoint of step N and exit 0 with the export of step N; the relaunched job resumes at step N
    (no step lost) and ends with exactly the weights of an uninterrupted run."""
    data, full = uninterrupted(2)
    ranks = tmp_path / "ranks"
    env = dict(subprocess_env, **QUIET, BERTLIB_RANKS_DIR=str(ranks))
    common = STOP_RUN

    run = tmp_path / "stopped"
    cfg = write_config(tmp_path / "stopped.yaml", **base_config(data, run, **common))
    proc = subprocess.Popen(
        pretrain_cmd(cfg, 2, env), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out, signalled = [], None
    try:
        for line in proc.stdout:
            out.append(line)
            if signalled is None and " step=6 " in line:  # training is under way: ckpt-5 written
                registered = {p.read_text(): int(p.name) for p in ranks.iterdir() if p.name.isdigit()}
                assert set(registered) == {"rank 0", "rank 1"}, registered
                signalled = registered["rank 1"]
                os.kill(signalled, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(out)
    assert signalled and proc.returncode == 0, log[-3000:]
    stopped = re.search(r"stopped by SIGTERM after step (\d+); checkpoint written to (\S+); resume by relaunching", log)
    assert stopped, log[-3000:]
    n = int(stopped.group(1))
    assert 6 <= n < common["total_steps"]
    state = (run / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{n}"' in state  # rank 0 saved step N, although only rank 1 was signalled
    for rank in (0, 1):  # and both ranks saved their input state of the same step
        assert (run / "checkpoints" / "input" / "world-2" / f"rank-{rank}" / f"ckpt-{n}.index").is_file()
    assert not list(ranks.glob("[0-9]*")), "the ranks unregister when they end"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_at_step"] == n and summary["steps_run"] == n
    assert f"exported the model of step {n} to {run / 'export'}" in log
    print(f"stop: SIGTERM after step 6 -> stopped after step {n}; lost 0 steps (SIGKILL: {n - n // 5 * 5})")

    again = subprocess.run(pretrain_cmd(cfg, 2, env), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{n}'} at step {n}" in again.stdout
    assert f"input restored at data position {2 * n}" in again.stdout
    a, b = read_export(full), read_export(run)
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) == 0.0
