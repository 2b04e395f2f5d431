"""The SageMaker SDK's own local mode, as a SageMaker user tries a job first: ``instance_type: local``.

``bertlib launch`` runs phase 1 through ``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)`` on 2
local-mode hosts (containers of the built image started by Docker Compose, the SDK's ``sm_train.sh``
and MPI driver unchanged, ``mpirun`` over ssh between them), with a local dataset folder as the
``train`` channel, no AWS account and no AWS endpoint: the launch's session sends nothing
(:func:`bertlib.launch.sagemaker_sdk.make_local_session`). The SDK's compose file puts the containers
on a bridge network ``sagemaker-local`` that it creates without ``internal`` (it has a route out); the
job reaches nothing outside it: its inputs are mounted folders and it downloads nothing.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def no_aws_env(base: dict, home: Path) -> dict:
    """``base`` without any AWS credential, profile or endpoint (and a HOME without ~/.aws)."""
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "SAGEMAKER_", "BERTLIB_"))}
    env.update(HOME=str(home), AWS_CONFIG_FILE=str(home / "none"), AWS_SHARED_CREDENTIALS_FILE=str(home / "none"))
    return env


def test_g_local_mode_phase1_two_hosts(image, prepared_dataset, subprocess_env, tmp_path):
    run_dir = tmp_path / "runs" / "phase1"
    values = {
        "experiment": "sm-local",
        "runs_root": str(tmp_path / "runs"),
        "backend": "sagemaker",
        "instance_type": "local",
        "instance_count": 2,
        "processes_per_host": 1,
        "image_uri": image,
        "phase": "phase1",
        "model_size": "tiny",
        "data_dir": f"file://{prepared_dataset / 'phase1'}",
        "run_dir": str(run_dir),
        "per_gpu_batch_size": 8,
        "global_batch_size_check": 16,
        "max_seq_length": 64,
        "max_predictions_per_seq": 10,
        "optimizer": "lamb",
        "learning_rate": 0.005,
        "end_learning_rate": 0.0003,
        "warmup_steps": 5,
        "total_steps": 40,
        "log_frequency": 5,
        "checkpoint_frequency": 10,
        "precision": "fp32",
        "skip_xla": True,
        "seed": 42,
        "environment": THREADS,
    }
    params = tmp_path / "phase1.yaml"
    params.write_text(yaml.safe_dump(values))
    (tmp_path / "home").mkdir()
    cli = subprocess.run(
        [sys.executable, "-m", "bertlib.cli", "launch", "pretrain", "--config", str(params)],
        capture_output=True,
        text=True,
        timeout=900,
        env=no_aws_env(subprocess_env, tmp_path / "home"),
        cwd=tmp_path,
    )
    tail = (cli.stdout + cli.stderr)[-4000:]
    assert cli.returncode == 0, tail
    info = json.loads(cli.stdout[cli.stdout.index('{\n "phase1"') :])["phase1"]
    assert info["status"] == "Completed", tail
    assert info["model_artifacts"] == str(run_dir / "export") and info["output_data"] == str(run_dir)

    # the job's whole log, kept in the run directory: the SDK's driver ran mpirun across both
    # containers on eth0 (the SDK itself writes ethwe, which bertlib rewrites), one rank per host
    log = (run_dir / "sagemaker-local.log").read_text()
    assert '"network_interface_name": "eth0"' in log and "ethwe" not in log, log[-3000:]
    command = next(line for line in log.splitlines() if "Executing command: mpirun" in line)
    assert "--host algo-1:2,algo-2:2 -np 2" in command and "ppr:1:node" in command, command
    assert "-mca btl_tcp_if_include eth0 -mca oob_tcp_if_include eth0" in command, command
    assert "[bertlib] horovod: 2 ranks on 2 host(s), controller mpi" in log
    steps = [int(s) for s in re.findall(r"\[1,0\]<stdout>:\[bertlib\] phase=phase1 step=(\d+)", log)]
    assert steps == list(range(5, 41, 5)), log[-3000:]
    assert re.search(r"\[1,1\]<std(out|err)>:", log), "no line of rank 1 (algo-2) in the log"

    # the results where a local run's are: export, metrics and summary in run_dir
    export = run_dir / "export"
    assert (export / "bert_config.json").is_file() and (export / "vocab.txt").is_file()
    assert any(p.name.endswith(".index") for p in export.iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    assert all(r["loss"] > 0 for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["global_batch_size"] == 16

    # nothing of the job is left: no container of its compose project, no SDK folder beside run_dir
    left = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project.working_dir"}}'],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not [d for d in left if d.startswith(str(run_dir.parent))], left
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["phase1"]
