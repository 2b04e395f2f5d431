"""The SageMaker path, run for real: jobs launched by bertlib, run in the built image as SageMaker runs them.

Each job is launched with the real SDK against moto (the request captured as it was sent), then run by
:mod:`runner` in containers of the training image (``make image``): the SDK's own ``sm_train.sh`` and
MPI driver start ``mpirun`` over ssh between the hosts, Horovod runs over MPI. The cases build on each
other in file order: (a) phase 1 on 2 hosts → (b) phase 2 from its ``model.tar.gz`` → (c) SQuAD from
phase 2's; (d) a spot interruption of (a)'s job resumes to (a)'s exact weights; (e) failures end the job
quickly with one clear line; (f) ``prepare-data`` on 2 instances writes the bytes one machine writes.
"""

import copy
import functools
import http.server
import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import boto3
import numpy as np
import pytest
import tiny_jobs
import yaml
from tiny_jobs import BUCKET, THREADS, upload_dataset

from bertlib.core.files import sha256_file
from bertlib.launch import sagemaker as sm
from bertlib.notebook import _record_sagemaker, qa_model
from bertlib.params import parameters
from bertlib.squad.answer import answer_questions, dev_questions
from bertlib.train.hf_export import HF_FILES

PREFIX = f"s3://{BUCKET}/image-tests"
EXPERIMENT = "sm-image"
#: results handed from one case to the next (file order: a, b, c, d, e)
STATE: dict = {}
FAILURE_REASONS: dict = {}  # case (e)'s, printed at its end


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture()
def datasets(account, prepared_dataset):
    """The prepared phase 1 / phase 2 datasets uploaded to (moto) S3, as the README says to."""
    return upload_dataset(prepared_dataset, "image-tests")


def phase1_values(runs_root, **overrides) -> dict:
    """The tiny 2-host × 1-rank CPU phase 1 (:func:`tiny_jobs.phase1_values`) of these cases."""
    return tiny_jobs.phase1_values(EXPERIMENT, runs_root, "image-tests", **overrides)


def show(result) -> str:
    """What a failed assertion prints: status, reason and the end of algo-1's log."""
    return f"{result.status}: {result.failure_reason}\n" + "\n".join(result.log.splitlines()[-60:])


def s3_tar(uri: str) -> dict[str, bytes]:
    bucket, key = uri[5:].split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def export_weights(model_uri: str, tmp: Path) -> dict[str, np.ndarray]:
    """Every variable of the bertlib export inside a model.tar.gz."""
    import tensorflow as tf

    tmp.mkdir(parents=True, exist_ok=True)
    for name, data in s3_tar(model_uri).items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    index = next(tmp.rglob("*.index"))
    reader = tf.train.load_checkpoint(str(index)[: -len(".index")])
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    }


def mpirun_command(log: str) -> str:
    line = next(line for line in log.splitlines() if "Executing command: mpirun" in line)
    return line.split("Executing command: ", 1)[1]


def test_a_phase1_two_hosts_over_mpi(account, datasets, sm_session, runner, runs_root):
    p = parameters("phase1", phase1_values(runs_root))
    info = sm.launch("pretrain", p.cfg, session=sm_session)
    request = info["request"]
    result = runner.run(request)
    assert result.status == "Completed", show(result)
    assert result.exit_codes == {"algo-1": 0, "algo-2": 0}

    # the SDK's driver started mpirun over both hosts; Horovod runs over MPI, one rank per host
    command = mpirun_command(result.log)
    assert "--host algo-1:2,algo-2:2 -np 2" in command and "ppr:1:node" in command
    for name in ("BERTLIB_JOB", "BERTLIB_CHECKPOINT_DIR", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", *THREADS):
        assert f"-x {name} " in command, name
    assert "[bertlib] horovod: 2 ranks on 2 host(s), controller mpi" in result.log

    # model.tar.gz (the export) and output.tar.gz (metrics.jsonl, summary.json) on S3
    model = s3_tar(result.model_artifacts)
    assert {"bert_config.json", "vocab.txt"} <= set(model) and any(n.endswith(".index") for n in model)
    output = s3_tar(result.output_data)
    records = [json.loads(line) for line in output["metrics.jsonl"].decode().splitlines()]
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    summary = json.loads(output["summary.json"])
    assert summary["steps"] == 40 and summary["global_batch_size"] == 16

    # the job's metric regexes recover what metrics.jsonl holds, from the streamed log lines
    for key in ("loss", "mlm_acc", "learning_rate"):
        seen = [value for name, value in result.metrics if name == key]
        assert len(seen) == len(records), (key, seen)
        for got, record in zip(seen, records):
            assert math.isclose(got, record[key], rel_tol=1e-5), (key, got, record[key])

    entry = _record_sagemaker(p, "phase1", p.cfg, info)  # what notebooks/02_phase1 records
    assert entry["export_dir"] == result.model_artifacts and entry["steps"] == 40
    STATE["phase1"] = {"request": request, "result": result, "values": phase1_values(runs_root)}


def test_b_phase2_launched_by_the_cli_loads_phase1(account, datasets, runner, runs_root, tmp_path):
    assert "phase1" in STATE, "case (a) did not complete"
    values = phase1_values(
        runs_root,
        phase="phase2",
        data_dir=f"{PREFIX}/data/phase2",
        checkpoint_s3_uri=f"{PREFIX}/checkpoints/phase2",
        load_from="checkpoint",
        checkpoint_path="auto",
        max_seq_length=128,
        max_predictions_per_seq=20,
        total_steps=10,
        warmup_steps=2,
        checkpoint_frequency=100,
    )
    params = tmp_path / "phase2.yaml"
    params.write_text(yaml.safe_dump(values))
    cli = subprocess.run(
        [sys.executable, "-m", "bertlib.cli", "launch", "pretrain", "--config", str(params)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    info = json.loads(cli.stdout[cli.stdout.index('{\n "phase2"') :])["phase2"]
    request = info["request"]
    phase1_model = STATE["phase1"]["result"].model_artifacts
    init = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "init")
    assert init["DataSource"]["S3DataSource"]["S3Uri"] == phase1_model

    result = runner.run(request)
    assert result.status == "Completed", show(result)
    assert "initialized weights from /tmp/bertlib-init/model" in result.log
    summary = json.loads(s3_tar(result.output_data)["summary.json"])
    assert summary["steps"] == 10
    # model.tar.gz: the bertlib export and, in hf/, the Hugging Face one (BertForPreTraining)
    model = s3_tar(result.model_artifacts)
    assert {"bert_config.json", "vocab.txt"} <= set(model) and {f"hf/{n}" for n in HF_FILES} <= set(model)
    assert json.loads(model["hf/config.json"])["architectures"] == ["BertForPreTraining"]
    assert not any(n.startswith("hf/") for n in s3_tar(STATE["phase1"]["result"].model_artifacts))  # phase 1: off
    p = parameters("phase2", values)
    _record_sagemaker(p, "phase2", p.cfg, info)
    STATE["phase2"] = {"result": result}


@pytest.fixture()
def squad_url(squad_fixture):
    """The SQuAD file served on 127.0.0.1 (the job itself can reach nothing: it gets the staged copy)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(squad_fixture.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{squad_fixture.name}"
    server.shutdown()
    server.server_close()


def test_c_squad_from_phase2_with_staged_files(account, runner, runs_root, squad_url, squad_fixture, sm_session):
    assert "phase2" in STATE, "case (b) did not complete"
    digest = sha256_file(squad_fixture)
    values = {
        "experiment": EXPERIMENT,
        "runs_root": str(runs_root),
        "backend": "sagemaker",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 1,
        "processes_per_host": 2,
        "model_size": "tiny",
        "load_from": "checkpoint",
        "checkpoint_path": "auto",
        "checkpoint_s3_uri": f"{PREFIX}/checkpoints/squad",
        "output_s3_uri": f"{PREFIX}/output",
        "run_dir": "auto",
        "per_gpu_batch_size": 4,
        "max_seq_length": 128,
        "doc_stride": 64,
        "max_query_length": 32,
        "optimizer": "adamw",
        "precision": "fp32",
        "skip_xla": True,
        "log_frequency": 2,
        "checkpoint_frequency": 1000,
        "seed": 42,
        "environment": THREADS,
        "squad_versions": ["squadv1"],
        "squadv1": {
            "train_file": squad_url,
            "predict_file": squad_url,
            "train_file_sha256": digest,
            "predict_file_sha256": digest,
            "total_steps": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 1,
        },
    }
    p = parameters("squad", values)
    cfg = p.configs["squadv1"]
    assert cfg.job.checkpoint_path == STATE["phase2"]["result"].model_artifacts  # "auto": phase 2's export
    info = sm.launch("squad", cfg, session=sm_session)
    request = info["request"]

    # staged: the job reads an S3 copy (sha256-named) through a channel, not the URL
    staged = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    name = squad_fixture.name
    assert staged["squad_train"] == staged["squad_predict"] == f"{PREFIX}/output/staged/squad/{digest}/{name}"
    bucket, key = staged["squad_train"][5:].split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == squad_fixture.read_bytes()
    assert request["HyperParameters"]["train_file"] == f"/opt/ml/input/data/squad_train/{name}"
    assert request["HyperParameters"]["train_file_sha256"] == digest

    result = runner.run(request)
    assert result.status == "Completed", show(result)
    assert "[bertlib] horovod: 2 ranks on 1 host(s), controller mpi" in result.log
    summary = json.loads(s3_tar(result.output_data)["summary.json"])
    logged = dict(result.metrics)  # the eval line, through the job's metric regexes
    assert math.isclose(logged["f1"], summary["f1"], rel_tol=1e-5)
    assert math.isclose(logged["exact_match"], summary["exact_match"], rel_tol=1e-5)
    assert 0 <= summary["exact_match"] <= summary["f1"] <= 100
    # model.tar.gz: the finetuned model, bertlib's export and the Hugging Face one (BertForQuestionAnswering)
    model = s3_tar(result.model_artifacts)
    assert {"bert_config.json", "vocab.txt"} <= set(model) and {f"hf/{n}" for n in HF_FILES} <= set(model)
    assert json.loads(model["hf/config.json"])["architectures"] == ["BertForQuestionAnswering"]

    # read back as notebooks/04_squad and 05_report do
    entry = _record_sagemaker(p, "squadv1", cfg, info)
    assert entry["f1"] == summary["f1"] and entry["status"] == "Completed"
    # "Try it" on the job's artifact: the finetuned QA export in model.tar.gz answers every question as
    # the job's own predictions.json (in output.tar.gz) says
    assert {"bert_config.json", "squad_answer.json", "vocab.txt"} <= set(s3_tar(entry["export_dir"]))
    predictions = json.loads(s3_tar(result.output_data)["predictions.json"])
    questions = dev_questions(json.loads(squad_fixture.read_text()), 1000)
    answers = answer_questions(qa_model(entry), questions)
    assert {q["id"]: a.text for q, a in zip(questions, answers)} == predictions
    from bertlib import report

    report_cfg = report.ReportConfig(experiment=EXPERIMENT, runs_root=str(runs_root))
    runs = report.collect_runs(report_cfg)
    assert set(runs) == {"phase1", "phase2", "squadv1"}
    written = report.write_report(runs, runs_root / "report")
    table = written["table"]
    row = table.iloc[-1]
    # both v1.1 scores of the job: the official one, and the reference's scoring beside its 87.68
    assert row["SQuAD v1.1 F1 (official)"] == report.format_score(summary["f1"])
    assert row["SQuAD v1.1 F1"] == report.format_score(summary["reference_scoring"]["f1"])
    assert (runs_root / "report" / "results_table.png").stat().st_size > 0


def test_d_spot_interruption_resumes_to_the_same_weights(account, datasets, sm_session, runner, runs_root, tmp_path):
    """Stopped as SageMaker stops a job (SIGTERM to every container, SIGKILL 120 s later), after the periodic
    checkpoint of step 10: the ranks agree on a step N, checkpoint it and exit in time, the model of step N is
    exported (what a StopTrainingJob or MaxRuntime keeps); the restarted job resumes at step N (no step lost)
    and ends with exactly (a)'s weights."""
    assert "phase1" in STATE, "case (a) did not complete"
    values = {
        **STATE["phase1"]["values"],
        "checkpoint_s3_uri": f"{PREFIX}/checkpoints/phase1-spot",
        "use_spot": True,
        "max_wait_seconds": 7200,
    }
    p = parameters("phase1", values)
    request = sm.launch("pretrain", p.cfg, session=sm_session)["request"]
    assert request["EnableManagedSpotTraining"] is True

    first = runner.run(request, stop_when=lambda job: (job.checkpoint_dirs["algo-1"] / "checkpoint").is_file())
    assert first.status == "Stopped" and first.killed == [], show(first)
    assert first.exit_codes == {"algo-1": 0, "algo-2": 0}, show(first)
    stopped = re.search(r"stopped by SIGTERM after step (\d+); checkpoint written to /opt/ml/checkpoints;", first.log)
    assert stopped, show(first)
    n = int(stopped.group(1))
    assert 10 <= n < 40, show(first)
    for host in ("algo-1", "algo-2"):  # every host's init passed the SIGTERM on to its rank
        assert "SIGTERM: asked 1 training process(es) on this host to stop" in first.logs[host], first.logs[host][
            -3000:
        ]
    bucket, prefix = request["CheckpointConfig"]["S3Uri"][5:].split("/", 1)
    synced = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert any(k.endswith(f"/ckpt-{n}.index") and "/input/" not in k for k in synced), synced
    for rank in (0, 1):  # both ranks (one per host) saved their input state of step N
        assert any(k.endswith(f"/input/world-2/rank-{rank}/ckpt-{n}.index") for k in synced), synced
    assert json.loads(s3_tar(first.output_data)["summary.json"])["stopped_at_step"] == n
    stopped_model = export_weights(first.model_artifacts, tmp_path / "stopped")
    print(f"stop: lost steps with SIGTERM handled 0 (stopped after step {n}); a SIGKILL would lose {n - n // 10 * 10}")

    second = runner.run(request)  # SageMaker restarts the job: /opt/ml/checkpoints restored from S3
    assert second.status == "Completed", show(second)
    resumed = re.search(r"resumed from .* at step (\d+)", second.log)
    assert resumed and int(resumed.group(1)) == n, show(second)

    uninterrupted = export_weights(STATE["phase1"]["result"].model_artifacts, tmp_path / "a")
    after_resume = export_weights(second.model_artifacts, tmp_path / "d")
    assert set(after_resume) == set(uninterrupted) == set(stopped_model) and len(uninterrupted) > 10
    for name, value in uninterrupted.items():
        assert np.array_equal(after_resume[name], value), name
    assert any(not np.array_equal(stopped_model[name], value) for name, value in uninterrupted.items())


def failing_request(name: str) -> dict:
    """Case (a)'s request as a new job, with checkpoints of its own (none to resume from)."""
    request = copy.deepcopy(STATE["phase1"]["request"])
    request["TrainingJobName"] = f"{request['TrainingJobName'][:40]}-{name}"
    request["CheckpointConfig"]["S3Uri"] = f"{PREFIX}/checkpoints/{name}"
    return request


def rank_error_lines(log: str) -> list[str]:
    """The ``error:`` messages of the ranks, one per rank message: cut at mpirun's ``[1,N]<stderr>:`` tags, not
    only at newlines, since two ranks' output can meet on one line of the job log."""
    chunks = re.split(r"(?=\[\d+,\d+\]<std(?:err|out)>:)", log)
    return [c.splitlines()[0] for c in chunks if re.match(r"\[\d+,\d+\]<stderr>:error: ", c)]


def test_e_failures_end_the_job_quickly_with_one_clear_line(account, runner):
    assert "phase1" in STATE, "case (a) did not complete"

    # a channel the job needs is missing: every rank stops before TensorFlow starts, naming the folder
    request = failing_request("nochannel")
    request["InputDataConfig"] = [c for c in request["InputDataConfig"] if c["ChannelName"] != "train"]
    result = runner.run(request, timeout=300)
    assert result.status == "Failed" and result.exit_codes["algo-1"] != 0, show(result)
    lines = rank_error_lines(result.log)
    assert len(lines) == 2 and all("error: /opt/ml/input/data/train: data_dir not found" in l for l in lines), show(
        result
    )
    # the FailureReason (algo-1's /opt/ml/output/failure) is one rank's line, not the SDK's mpirun command
    assert re.fullmatch(r"rank [01]: /opt/ml/input/data/train: data_dir not found.*", result.failure_reason), show(
        result
    )
    FAILURE_REASONS["missing channel"] = result.failure_reason

    # an S3 channel with no objects fails on the platform side, before any container starts
    request = failing_request("emptys3")
    for c in request["InputDataConfig"]:
        if c["ChannelName"] == "train":
            c["DataSource"]["S3DataSource"]["S3Uri"] = f"{PREFIX}/no-such-dataset/"
    result = runner.run(request, timeout=60)
    assert result.status == "Failed" and "No S3 objects found" in result.failure_reason

    # an ill-typed hyperparameter: one line per rank naming the key, exit 2
    request = failing_request("badhp")
    request["HyperParameters"]["total_steps"] = "ten"
    result = runner.run(request, timeout=300)
    assert result.status == "Failed", show(result)
    lines = rank_error_lines(result.log)
    assert len(lines) == 2 and all("key 'total_steps'" in l and "'ten'" in l for l in lines), show(result)
    assert re.fullmatch(r"rank [01]: .*key 'total_steps'.*'ten'.*", result.failure_reason), show(result)
    FAILURE_REASONS["bad hyperparameter"] = result.failure_reason

    # a rank that dies mid-step: mpirun aborts the others, the job fails (no hang)
    request = failing_request("rankdies")
    killed: list[int] = []

    def kill_rank_on_algo2(job) -> bool:
        if not killed and (job.checkpoint_dirs["algo-1"] / "checkpoint").is_file():  # training is under way
            killed.append(job.kill_process("algo-2", "sm_entry.py"))
        return False

    result = runner.run(request, stop_when=kill_rank_on_algo2, timeout=300)
    assert killed and killed[0] > 0, show(result)
    assert result.status == "Failed", show(result)
    assert re.search(r"rank 1 .*on node algo-2 exited on signal 9", result.log), show(result)
    assert result.failure_reason.startswith("rank 1 on algo-2 was killed by signal 9 (Killed)"), show(result)
    FAILURE_REASONS["rank dies on algo-2"] = result.failure_reason
    print("FailureReason texts:\n" + "\n".join(f"  {k}: {v}" for k, v in FAILURE_REASONS.items()))


def dataset_files(folder: Path) -> dict[str, bytes]:
    """The files of a prepared dataset (shards, manifests, vocab), without the done-markers and locks."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def test_f_prepare_data_on_two_hosts_writes_one_machines_bytes(
    account, sm_session, runner, runs_root, wiki_slice, bert_vocab, tmp_path
):
    """``prepare-data`` as a SageMaker job on 2 instances (one MPI rank each, each writing its share of
    the shards into its checkpoint folder, synced to one S3 prefix; host 0 writes the manifests after
    an allgather of the markers): the dataset in S3 is the one a local run writes, byte for byte."""
    from bertlib.data.prepare import prepare

    values = {
        "experiment": EXPERIMENT,
        "runs_root": str(runs_root),
        "backend": "sagemaker",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 2,
        "s3_data_uri": f"{PREFIX}/prepared",
        "output_s3_uri": f"{PREFIX}/output",
        "max_run_seconds": 3600,
        "squad_smoke": False,
        "sources": [str(wiki_slice)],
        "source_format": "wikipedia",
        "vocab_file": str(bert_vocab),
        "max_documents": 30,
        "output_dir": "auto",
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
    info = sm.launch("prepare-data", p.cfg, session=sm_session)
    result = runner.run(info["request"])
    assert result.status == "Completed", show(result)
    assert result.exit_codes == {"algo-1": 0, "algo-2": 0}
    assert "--host algo-1:2,algo-2:2 -np 2" in mpirun_command(result.log)
    # each host wrote its own share: 8 shards (2 phases × (3 train + 1 validation)), 4 each
    # (mpirun on algo-1 prints every rank's output, tagged [job,rank])
    for index in (0, 1):
        line = next(x for x in result.log.splitlines() if f"[bertlib] host={index} " in x)
        assert line.startswith(f"[1,{index}]<stdout>:"), line
        assert f"host={index} hosts=2 shards_of_host=4 pending_shards=0 " in line, line
        assert ("manifests=written" if index == 0 else "manifests=by_host_0") in line
    # the job's metric regexes read the rates line of algo-1's log
    assert {name for name, value in result.metrics if value > 0} == {
        "extract_documents_per_s",
        "tokenize_tokens_per_s",
        "instances_pairs_per_s",
        "shards_pairs_per_s",
    }

    in_s3 = tmp_path / "s3"
    runner._download_prefix(f"{PREFIX}/prepared/", in_s3)
    local = prepare(p.cfg.job.model_copy(update={"output_dir": str(tmp_path / "local")}), progress=False)
    assert local["written_shards"] == 8
    got, want = dataset_files(in_s3), dataset_files(tmp_path / "local")
    assert sorted(got) == sorted(want) and len(got) == 2 * (4 + 2)
    for name in want:
        if name.endswith("manifest.json"):
            # the one difference: the settings name the source where each run read it
            g, w = json.loads(got[name]), json.loads(want[name])
            assert g["settings"].pop("sources") == ["/opt/ml/input/data/source0/" + wiki_slice.name]
            assert w["settings"].pop("sources") == [str(wiki_slice)]
            assert g == w, name
        else:
            assert got[name] == want[name], name
    # what notebooks/01_data_prep fetches after the job: the manifests and vocab of each phase
    from bertlib.launch.results import fetch_manifests

    fetched = fetch_manifests(info["datasets"], tmp_path / "manifests")
    assert (fetched / "phase2" / "vocab.txt").read_bytes() == bert_vocab.read_bytes()
    assert (
        json.loads((fetched / "phase1" / "manifest.json").read_bytes())["counts"]
        == json.loads(want["phase1/manifest.json"])["counts"]
    )


def test_g_two_hosts_by_two_ranks_are_placed_and_reduce_as_one_process(
    account, datasets, sm_session, runner, runs_root
):
    """2 instances × processes_per_host 2 (``--map-by ppr:2:node``): ranks 0–3 come up with local ranks 0–1
    on each host, and the exact allreduce every rank does at start (int64 sum of rank-dependent values)
    equals what one process computes from all four contributions. Two training steps: the job also runs."""
    from bertlib.train.distributed import placement_contribution, placement_digest

    values = phase1_values(
        runs_root,
        processes_per_host=2,
        total_steps=2,
        warmup_steps=1,
        log_frequency=1,
        checkpoint_frequency=100,
        checkpoint_s3_uri=f"{PREFIX}/checkpoints/placement",
    )
    p = parameters("phase1", values)
    result = runner.run(sm.launch("pretrain", p.cfg, session=sm_session)["request"])
    assert result.status == "Completed", show(result)
    command = mpirun_command(result.log)
    assert "--host algo-1:4,algo-2:4 -np 4" in command and "--map-by ppr:2:node" in command, command
    assert "[bertlib] horovod: 4 ranks on 2 host(s), controller mpi" in result.log
    placed = re.findall(
        r"\[1,(\d)\]<stdout>:\[bertlib\] placement: rank (\d)/4 local_rank (\d)/2 host (\S+) allreduce_check=(\w+)",
        result.log,
    )
    assert sorted((int(r), int(local), host) for tag, r, local, host, _ in placed if tag == r) == [
        (0, 0, "algo-1"),
        (1, 1, "algo-1"),
        (2, 0, "algo-2"),
        (3, 1, "algo-2"),
    ], show(result)
    one_process = placement_digest(sum(placement_contribution(r) for r in range(4)))
    assert {digest for *_, digest in placed} == {one_process}, (placed, one_process)
    assert placement_digest(sum(placement_contribution(r) for r in range(3))) != one_process  # a rank left out shows
    summary = json.loads(s3_tar(result.output_data)["summary.json"])
    assert summary["processes"] == 4 and summary["global_batch_size"] == 32 and summary["steps"] == 2
