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
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
#: results handed from one case to the next (file order)
STATE: dict = {}


def no_aws_env(base: dict, home: Path) -> dict:
    """``base`` without any AWS credential, profile or endpoint (and a HOME without ~/.aws)."""
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "SAGEMAKER_", "BERTLIB_"))}
    env.update(HOME=str(home), AWS_CONFIG_FILE=str(home / "none"), AWS_SHARED_CREDENTIALS_FILE=str(home / "none"))
    return env


@pytest.fixture()
def no_aws_api(monkeypatch, tmp_path):
    """This process without any AWS credential, profile or endpoint (for the cases launched in-process)."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "SAGEMAKER_", "BERTLIB_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


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
    STATE["export"] = export


def test_h_local_mode_squad_from_the_phase1_export(image, squad_fixture, no_aws_api, tmp_path):
    """SQuAD on 1 local-mode host × 2 ranks through the notebooks' launch path, from case (g)'s export
    (the ``init`` channel) and a local SQuAD file (its folder mounted, the file keeping its name)."""
    assert "export" in STATE, "case (g) did not complete"
    values = {
        "experiment": "sm-local",
        "runs_root": str(tmp_path / "runs"),
        "backend": "sagemaker",
        "instance_type": "local",
        "instance_count": 1,
        "processes_per_host": 2,
        "image_uri": image,
        "model_size": "tiny",
        "load_from": "checkpoint",
        "checkpoint_path": str(STATE["export"]),
        "run_dir": "auto",
        "per_gpu_batch_size": 4,
        "max_seq_length": 128,
        "doc_stride": 64,
        "max_query_length": 32,
        "optimizer": "adamw",
        "precision": "fp32",
        "skip_xla": True,
        "log_frequency": 2,
        "seed": 42,
        "environment": THREADS,
        "squad_versions": ["squadv1"],
        "squadv1": {
            "train_file": str(squad_fixture),
            "predict_file": str(squad_fixture),
            "total_steps": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 1,
        },
    }
    from bertlib import notebook as nb

    p = nb.parameters("squad", values)
    entry = nb.launch(p)["squadv1"]
    run_dir = tmp_path / "runs" / "sm-local" / "squadv1"
    log = (run_dir / "sagemaker-local.log").read_text()
    assert entry["status"] == "Completed", log[-3000:]
    assert "[bertlib] horovod: 2 ranks on 1 host(s), controller mpi" in log
    assert "initialized weights from /opt/ml/input/data/init" in log, log[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and 0 <= summary["exact_match"] <= summary["f1"] <= 100
    assert entry["f1"] == summary["f1"] and entry["export_dir"] == str(run_dir / "export")


def test_i_local_mode_prepare_data_on_two_hosts(image, wiki_slice, bert_vocab, no_aws_api, tmp_path):
    """``prepare-data`` on 2 local-mode hosts (one rank each) writing through one mounted ``output_dir``:
    the dataset is the one a local run writes, byte for byte (the manifests but for where the source was read)."""
    from bertlib.data.prepare import prepare
    from bertlib.launch import sagemaker as sm
    from bertlib.params import parameters

    values = {
        "experiment": "sm-local",
        "runs_root": str(tmp_path / "runs"),
        "backend": "sagemaker",
        "instance_type": "local",
        "instance_count": 2,
        "image_uri": image,
        "squad_smoke": False,
        "sources": [str(wiki_slice)],
        "source_format": "wikipedia",
        "vocab_file": str(bert_vocab),
        "max_documents": 30,
        "output_dir": str(tmp_path / "dataset"),
        "num_shards": 3,
        "validation_shards": 1,
        "validation_fraction": 0.05,
        "num_workers": 1,
        "dupe_factor": 2,
        "seed": 11,
        "pack_sequences": True,
        "max_pairs_per_row": 2,
        "phases": [
            {"name": "phase1", "max_seq_length": 64, "max_predictions_per_seq": 11},
            {"name": "phase2", "max_seq_length": 128, "max_predictions_per_seq": 21},
        ],
    }
    p = parameters("data", values)
    info = sm.launch("prepare-data", p.cfg)
    log = (tmp_path / "dataset" / "sagemaker-local.log").read_text()
    assert info["status"] == "Completed", log[-3000:]
    assert info["datasets"] == {ph: str(tmp_path / "dataset" / ph) for ph in ("phase1", "phase2")}
    for index in (0, 1):
        assert f"host={index} hosts=2 shards_of_host=4 pending_shards=0 " in log, log[-3000:]

    local = prepare(p.cfg.job.model_copy(update={"output_dir": str(tmp_path / "local")}), progress=False)
    assert local["written_shards"] == 8
    for phase in ("phase1", "phase2"):
        got = {q.relative_to(tmp_path / "dataset"): q for q in (tmp_path / "dataset" / phase).rglob("*") if q.is_file()}
        want = {q.relative_to(tmp_path / "local"): q for q in (tmp_path / "local" / phase).rglob("*") if q.is_file()}
        got = {k: v for k, v in got.items() if not any(part.startswith(".") for part in k.parts)}
        want = {k: v for k, v in want.items() if not any(part.startswith(".") for part in k.parts)}
        assert sorted(got) == sorted(want)
        for name, path in want.items():
            if name.name == "manifest.json":
                g, w = json.loads(got[name].read_text()), json.loads(path.read_text())
                assert g["settings"].pop("sources") == [f"/opt/ml/input/data/source0/{wiki_slice.name}"]
                assert w["settings"].pop("sources") == [str(wiki_slice)]
                assert g == w, name
            else:
                assert got[name].read_bytes() == path.read_bytes(), name


def test_j_a_failing_local_mode_job_raises_with_its_reason(image, no_aws_api, tmp_path):
    """A job whose ranks fail (an empty dataset folder) ends the launch with LaunchError: the failure
    reason, the rank's one error line, the whole log kept; no container left."""
    from bertlib.core.config import build_launched
    from bertlib.core.errors import LaunchError
    from bertlib.launch import sagemaker as sm

    (tmp_path / "empty").mkdir()
    launched = build_launched(
        "pretrain",
        {
            "backend": "sagemaker",
            "instance_type": "local",
            "image_uri": image,
            "data_dir": str(tmp_path / "empty"),
            "run_dir": str(tmp_path / "run"),
            "model_size": "tiny",
            "per_gpu_batch_size": 8,
            "max_seq_length": 64,
            "max_predictions_per_seq": 10,
            "learning_rate": 1e-3,
            "total_steps": 4,
            "environment": THREADS,
        },
    )
    with pytest.raises(LaunchError) as e:
        sm.launch("pretrain", launched)
    message = str(e.value)
    first = message.splitlines()[0]
    assert re.fullmatch(
        r"pretrain in the SDK's local mode: job bertlib-pretrain-phase1-\d+ Failed: error: "
        r"/opt/ml/input/data/train/manifest\.json: not found \(not a prepared dataset; .*\) "
        r"\(whole log: .*/run/sagemaker-local\.log\); last lines:",
        first,
    ), first
    assert (tmp_path / "run" / "sagemaker-local.log").read_text().count("error: /opt/ml/input/data/train") >= 1
    left = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project.working_dir"}}'],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not [d for d in left if d.startswith(str(tmp_path))], left
