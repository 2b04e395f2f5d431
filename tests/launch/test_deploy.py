"""``bertlib deploy``: the endpoint requests of a dry run, the same requests sent by the SageMaker SDK 3
to moto (127.0.0.1), the repackaged model archive, a question through InvokeEndpoint, the teardown,
and bad input as one line.

The Hugging Face export of a SQuAD model (``hf/`` in a SQuAD job's model.tar.gz) is the real one a job
writes (``write_hf_export`` of a tiny ``BertQA`` with random weights; nothing is trained: what is checked
here is the requests and the archive, not the answers).
"""

import io
import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml

from bertlib import deploy_cli
from bertlib import notebook as nb
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.core.vocab import vocab_info
from bertlib.launch import deploy
from bertlib.model import BertConfig, BertPretrainer, BertQA
from bertlib.model.checkpoints import export_model
from bertlib.params import load_params
from bertlib.registry import Registry
from bertlib.squad.answer import Answer
from bertlib.train.hf_export import HF_SUBDIR, write_hf_export

ROLE = "arn:aws:iam::123456789012:role/bertlib-endpoint"
# AWS's Hugging Face PyTorch inference images for transformers 4.51.3 / PyTorch 2.6.0 / py312 in us-east-1,
# as AWS lists them (aws/deep-learning-containers available_images.md), written out here by hand
CPU_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
    "2.6.0-transformers4.51.3-cpu-py312-ubuntu22.04"
)
GPU_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
    "2.6.0-transformers4.51.3-gpu-py312-cu124-ubuntu22.04"
)


TINY = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24)


@pytest.fixture(scope="module")
def job_exports(tmp_path_factory, bert_vocab) -> dict:
    """What a SQuAD job (BertForQuestionAnswering) and a phase 2 job (BertForPreTraining) write to
    SM_MODEL_DIR: the bertlib export and its hf/."""
    root, info = tmp_path_factory.mktemp("job-exports"), vocab_info(bert_vocab, True)
    exports = {}
    for architecture, model_class in (("BertForQuestionAnswering", BertQA), ("BertForPreTraining", BertPretrainer)):
        model, out = model_class(TINY), root / architecture
        export_model(model, TINY, bert_vocab, out, vocab_info=info)
        write_hf_export(model, TINY, bert_vocab, info, out / HF_SUBDIR)
        exports[architecture] = out
    return exports


@pytest.fixture
def hf_export(job_exports):
    """``hf_export(dir, architectures, skip)``: a copy of a job's export at ``dir``, without the files of ``skip``."""

    def make(export_dir, architectures=("BertForQuestionAnswering",), skip=()):
        shutil.copytree(job_exports[architectures[0]], export_dir)
        for name in skip:
            (export_dir / HF_SUBDIR / name).unlink()
        return export_dir

    return make


def model_tar_gz(export_dir) -> bytes:
    """A SQuAD job's model.tar.gz: SM_MODEL_DIR's files at the root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(export_dir.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=p.relative_to(export_dir).as_posix())
    return buf.getvalue()


def _cli(argv, capsys):
    code = run_guarded(deploy_cli.main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


def test_dry_run_shows_the_requests(tmp_path, monkeypatch, capsys, hf_export):
    """No account settings, no credentials: the requests with placeholders, the SDK's HF inference image."""
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION", "BERTLIB_SAGEMAKER_ROLE", "SAGEMAKER_ROLE", "BERTLIB_S3_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    export = hf_export(tmp_path / "export")
    code, out, err = _cli(["--model_data", export, "--dry_run", "--runs_root", tmp_path / "runs"], capsys)
    assert code == 0, err
    info = json.loads(out)
    r = info["requests"]
    assert list(r) == ["PutObject", "CreateModel", "CreateEndpointConfig", "CreateEndpoint", "InvokeEndpoint"]
    url = "s3://set-bertlib-s3-prefix/bertlib/deploy/bertlib-squadv1-qa/model.tar.gz"
    assert r["PutObject"] == {
        "Bucket": "set-bertlib-s3-prefix",
        "Key": "bertlib/deploy/bertlib-squadv1-qa/model.tar.gz",
    }
    assert r["CreateModel"] == {
        "ModelName": "bertlib-squadv1-qa",
        "PrimaryContainer": {"Image": CPU_IMAGE, "ModelDataUrl": url, "Environment": {"HF_TASK": "question-answering"}},
        "ExecutionRoleArn": "arn:aws:iam::000000000000:role/SET-BERTLIB_SAGEMAKER_ROLE",
    }
    assert r["CreateEndpointConfig"]["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "bertlib-squadv1-qa",
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.xlarge",
        }
    ]
    assert r["CreateEndpoint"] == {"EndpointName": "bertlib-squadv1-qa", "EndpointConfigName": "bertlib-squadv1-qa"}
    assert json.loads(r["InvokeEndpoint"]["Body"]) == {"inputs": deploy.SAMPLE}
    assert info["status"] is None and info["answer"] is None
    # a GPU instance gets the GPU build of the image; the teardown's requests
    code, out, _ = _cli(["--model_data", export, "--dry_run", "--instance_type", "ml.g5.xlarge"], capsys)
    assert json.loads(out)["requests"]["CreateModel"]["PrimaryContainer"]["Image"] == GPU_IMAGE
    code, out, _ = _cli(["--action", "delete", "--endpoint_name", "my-qa", "--dry_run"], capsys)
    assert json.loads(out)["requests"] == {
        "DeleteEndpoint": {"EndpointName": "my-qa"},
        "DeleteEndpointConfig": {"EndpointConfigName": "my-qa"},
        "DeleteModel": {"ModelName": "my-qa"},
    }


def _aws_like_describe(parsed, **_):
    """moto 5.2.5 answers DescribeModel / DescribeEndpointConfig with ``"VpcConfig": {}`` /
    ``"DataCaptureConfig": {}`` for settings never given, which the SDK's resources refuse (their
    required fields are missing); AWS leaves such keys out, and so does this hook."""
    for key in [k for k, v in parsed.items() if v == {}]:
        del parsed[key]


def _session_on_moto(region):
    session = boto3.Session(region_name=region)
    session.events.register("after-call.sagemaker", _aws_like_describe)
    return session


def test_create_ask_delete_against_moto(aws_env, tmp_path, monkeypatch, capsys, hf_export):
    """A SageMaker SQuAD job's model.tar.gz in S3, found through the registry → the endpoint's three
    create requests as the dry run showed them, the hf/ files at the root of the deployed archive, the
    question as the HF pipeline's JSON, the answer read back, then everything deleted."""
    monkeypatch.setattr(deploy, "boto_session", _session_on_moto)
    monkeypatch.setenv("BERTLIB_CACHE", str(tmp_path / "cache"))
    bucket = aws_env["bucket"]
    export = hf_export(tmp_path / "job-export")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="jobs/sq1/output/model.tar.gz", Body=model_tar_gz(export))
    registry = Registry.for_experiment("aws", tmp_path / "runs")
    registry.record(
        "squadv1", backend="sagemaker", dry_run=False, export_dir=f"s3://{bucket}/jobs/sq1/output/model.tar.gz"
    )
    # moto's canned InvokeEndpoint result: what the HF question-answering pipeline returns
    canned = {"score": 0.87, "start": 17, "end": 21, "answer": "1945"}
    mine = {"score": 0.5, "start": 0, "end": 6, "answer": "Nobody"}
    urllib.request.urlopen(
        urllib.request.Request(
            aws_env["endpoint"] + "/moto-api/static/sagemaker/endpoint-results",
            data=json.dumps(
                {"results": [{"Body": json.dumps(a), "ContentType": "application/json"} for a in (canned, mine)]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
    ).read()
    common = [
        "--experiment",
        "aws",
        "--runs_root",
        tmp_path / "runs",
        "--role",
        ROLE,
        "--s3_prefix",
        f"s3://{bucket}/bertlib",
    ]
    code, out, err = _cli([*common, "--dry_run"], capsys)
    assert code == 0, err
    shown = json.loads(out)["requests"]

    code, out, err = _cli(common, capsys)
    assert code == 0, err
    info = json.loads(out)
    for op in deploy_cli.deploy.sdk.ENDPOINT_OPERATIONS:
        assert info["requests"][op] == shown[op], op  # the SDK sent what the dry run showed
    assert info["status"] == "InService"
    assert json.loads(info["invoke_request"]["Body"]) == {"inputs": deploy.SAMPLE}
    assert info["invoke_request"]["EndpointName"] == "bertlib-squadv1-qa"
    assert info["answer"] == canned

    sm = boto3.client("sagemaker")
    model = sm.describe_model(ModelName="bertlib-squadv1-qa")
    assert model["PrimaryContainer"]["Image"] == CPU_IMAGE and model["ExecutionRoleArn"] == ROLE
    assert sm.describe_endpoint(EndpointName="bertlib-squadv1-qa")["EndpointStatus"] == "InService"
    key = "bertlib/deploy/bertlib-squadv1-qa/model.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members == {name: (export / "hf" / name).read_bytes() for name in deploy.HF_FILES}  # hf/ at the root
    entry = registry.get("squadv1_endpoint")
    assert entry["status"] == "InService" and entry["endpoint_name"] == "bertlib-squadv1-qa" and not entry["dry_run"]

    # ask again with the user's question: the request body is the pipeline's input
    code, out, err = _cli([*common, "--action", "ask", "--question", "Who won?", "--context", "Nobody won."], capsys)
    assert code == 0, err
    asked = json.loads(out)
    assert json.loads(asked["invoke_request"]["Body"]) == {"inputs": {"question": "Who won?", "context": "Nobody won."}}
    assert asked["invoke_request"]["ContentType"] == "application/json" and asked["answer"] == mine
    # no canned answer left: moto's static body, which no question-answering pipeline would send
    code, out, err = _cli([*common, "--action", "ask", "--question", "Who?", "--context", "Else."], capsys)
    assert code == 2 and err == ["error: endpoint bertlib-squadv1-qa: not a question-answering response ('body')"]

    code, out, err = _cli([*common, "--action", "delete"], capsys)
    assert code == 0, err
    assert json.loads(out)["deleted"] == ["endpoint", "endpoint config", "model"]
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert registry.get("squadv1_endpoint")["status"] == "Deleted"
    code, out, err = _cli([*common, "--action", "delete"], capsys)  # nothing left: nothing deleted, no error
    assert code == 0 and json.loads(out)["deleted"] == []


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-entry", "registry.json: no 'squadv1' entry (run notebooks/04_squad first)"),
        ("dry-run-entry", "the 'squadv1' entry is from a dry run; deploy needs a real SQuAD run"),
        ("no-hf", "no hf/ in this SQuAD export"),
        ("not-qa", "architectures ['BertForPreTraining']: not a question-answering model (BertForQuestionAnswering"),
        ("incomplete", "not a complete Hugging Face export (missing model.safetensors)"),
        ("question-only", "question and context go together: set both (or neither)"),
    ],
)
def test_bad_input_is_one_line(case, message, tmp_path, monkeypatch, capsys, hf_export):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    runs = tmp_path / "runs"
    registry = Registry.for_experiment("x", runs)
    export = tmp_path / "export"
    extra = []
    if case == "dry-run-entry":
        registry.record("squadv1", backend="sagemaker", dry_run=True, export_dir="s3://b/k/model.tar.gz")
    elif case == "no-hf":
        export.mkdir()
    elif case == "not-qa":
        hf_export(export, architectures=("BertForPreTraining",))
    elif case == "incomplete":
        hf_export(export, skip=("model.safetensors",))
    elif case == "question-only":
        hf_export(export)
        extra = ["--question", "Who?"]
    if case not in ("no-entry", "dry-run-entry"):
        registry.record("squadv1", backend="local", export_dir=str(export))
    argv = ["--experiment", "x", "--runs_root", runs, "--role", ROLE, "--s3_prefix", "s3://b/p", *extra]
    code, out, err = _cli(argv, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert out == ""


def test_check_hf_export_accepts_a_qa_export(tmp_path, hf_export):
    assert deploy.check_hf_export(hf_export(tmp_path / "e")) == tmp_path / "e" / "hf"
    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "e" / "hf" / "config.json").write_text("{")
        deploy.check_hf_export(tmp_path / "e")


def _queue_answers(endpoint, answers):
    """moto's canned InvokeEndpoint results, in order: what the HF question-answering pipeline returns."""
    body = {"results": [{"Body": json.dumps(a), "ContentType": "application/json"} for a in answers]}
    request = urllib.request.Request(
        endpoint + "/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def test_notebook_endpoint_section_and_try_it_through_it(aws_env, tmp_path, monkeypatch, capsys, hf_export):
    """04_squad's last section (nb.endpoint) on params/sagemaker/squad.yaml: -p deploy True creates the
    endpoint and shows one question's request/response; "Try it" then asks the endpoint (dev questions +
    yours); -p delete_endpoint True tears it down; a dry run shows the requests only."""
    monkeypatch.setattr(deploy, "boto_session", _session_on_moto)
    monkeypatch.setenv("BERTLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("BERTLIB_S3_PREFIX", f"s3://{aws_env['bucket']}/bertlib")
    bucket = aws_env["bucket"]
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="jobs/nb/output/model.tar.gz", Body=model_tar_gz(hf_export(tmp_path / "export")))
    dev = tmp_path / "dev.json"
    context = "The war ended in 1945, after six years."
    dev.write_text(
        json.dumps(
            {
                "version": "1.1",
                "data": [
                    {
                        "title": "t",
                        "paragraphs": [
                            {
                                "context": context,
                                "qas": [
                                    {"id": "a1", "question": "When?", "answers": [{"text": "1945", "answer_start": 17}]}
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    values = {
        **yaml.safe_load((Path(__file__).parents[2] / "params/sagemaker/squad.yaml").read_text()),
        "experiment": "nb",
        "runs_root": str(tmp_path / "runs"),
        "squad_versions": ["squadv1"],
        "question": "How long was the war?",
        "context": context,
        "try_questions": 1,
    }
    p = load_params("squad", {**values, "deploy": True}, resolve=False)
    p.registry.record(
        "squadv1",
        backend="sagemaker",
        dry_run=False,
        export_dir=f"s3://{bucket}/jobs/nb/output/model.tar.gz",
        predict_file=str(dev),
    )
    assert context[29:38] == "six years" and context[17:21] == "1945"
    first = {"score": 0.6, "start": 29, "end": 38, "answer": "six years"}
    dev_answer = {"score": 0.9, "start": 17, "end": 21, "answer": "1945"}
    _queue_answers(aws_env["endpoint"], [first, dev_answer])  # moto answers a request it has seen as before
    done = nb.endpoint(p)
    out = capsys.readouterr().out
    assert "endpoint bertlib-squadv1-qa (status InService)" in out and "CreateEndpointConfig request:" in out
    assert json.loads(done["create"]["invoke_request"]["Body"])["inputs"]["question"] == "How long was the war?"
    assert f"response (bertlib-squadv1-qa):\n{json.dumps(first)}" in out
    assert p.registry.get("squadv1_endpoint")["status"] == "InService"

    shown = nb.try_it(p)  # the endpoint is up: it answers
    assert "answered by endpoint bertlib-squadv1-qa" in capsys.readouterr().out
    assert shown["squadv1"] == [
        Answer("When?", "1945", 17, 21, 0.9),
        Answer("How long was the war?", "six years", 29, 38, 0.6),
    ]

    p = load_params("squad", {**values, "delete_endpoint": True}, resolve=False)
    nb.endpoint(p)
    assert "endpoint bertlib-squadv1-qa: deleted endpoint, endpoint config, model" in capsys.readouterr().out
    assert p.registry.get("squadv1_endpoint")["status"] == "Deleted"

    p = load_params("squad", {**values, "deploy": True, "delete_endpoint": True, "dry_run": True}, resolve=False)
    done = nb.endpoint(p)
    out = capsys.readouterr().out
    assert "(dry run — nothing was sent to AWS)" in out and "the teardown's requests" in out
    assert set(done) == {"create", "delete"} and boto3.client("sagemaker").list_endpoints()["Endpoints"] == []
    assert p.registry.get("squadv1_endpoint")["dry_run"] is True
