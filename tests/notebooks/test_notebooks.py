"""The notebooks: jupytext pairs agree, papermill-ready structure, bad parameters stop at the first
cell, the SageMaker dry run needs no credentials, and the whole chain runs on CI-sized params."""

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest
import yaml
from papermill.exceptions import PapermillExecutionError

from bertlib.squad.reading import load_squad_json

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["01_data_prep", "02_phase1", "03_phase2", "04_squad", "05_report"]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def outputs(nb, kind=None):
    out = [o for c in code_cells(nb) for o in c.get("outputs", [])]
    return [o for o in out if kind is None or kind in o.get("data", {})]


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(
            o.get("text", "")
            if o.output_type == "stream"
            else o.get("data", {}).get("text/html", "") + o.get("data", {}).get("text/plain", "")
        )
    return "\n".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_jupytext_pair_agrees(name):
    """The .ipynb holds exactly the cells (sources, tags) and kernelspec of the py:percent source."""
    from_py = jupytext.read(REPO / "notebooks" / f"{name}.py")
    from_ipynb = jupytext.read(REPO / "notebooks" / f"{name}.ipynb")
    assert jupytext.writes(from_ipynb, "py:percent") == jupytext.writes(from_py, "py:percent")
    assert all(not c.get("outputs") for c in code_cells(from_ipynb)), "commit notebooks without outputs"


def test_jupytext_toml_pairs_ipynb_with_percent():
    import tomllib

    assert tomllib.loads((REPO / "jupytext.toml").read_text())["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_structure(name):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.kernelspec.language == "python"
    cells = code_cells(nb)
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [0], "exactly one parameters cell, the first code cell"
    assert "parameters(" in cells[1].source, "the cell after the parameters validates them"
    assert nb.cells[0].cell_type == "markdown" and "**What" in nb.cells[0].source


def _run(name, tmp_path, parameters=None, parameters_file=None):
    params = {"params_file": str(parameters_file)} if parameters_file else {}  # papermill -p params_file FILE
    params.update(parameters or {})
    out = tmp_path / f"{name}.out.ipynb"
    try:
        pm.execute_notebook(
            REPO / "notebooks" / f"{name}.ipynb",
            out,
            parameters=params,
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
        )
        err = None
    except PapermillExecutionError as e:
        err = e
    return nbformat.read(out, as_version=4), err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"total_stepz": 5}, "phase1 parameters: unknown key 'total_stepz'"),
        (
            {"total_steps": "many"},
            "phase1 parameters: key 'total_steps': Input should be a valid integer, "
            "unable to parse string as an integer (got 'many')",
        ),
    ],
)
@pytest.mark.slow
def test_bad_params_stop_at_the_first_cell(change, message, tmp_path):
    nb, err = _run("02_phase1", tmp_path, parameters=change, parameters_file=REPO / "params/local/phase1.yaml")
    assert err is not None and err.ename == "ParamsError" and err.evalue == message
    cells = code_cells(nb)
    assert cells[1].metadata.get("tags") == ["injected-parameters"]
    failed = [i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert failed == [2], "the validation cell right after the parameters fails"
    (error,) = [o for o in cells[2].outputs if o.output_type == "error"]
    assert error.traceback == [f"ParamsError: {message}"]  # one line, no traceback
    assert all(c.execution_count is None for c in cells[3:]), "nothing after it ran"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sagemaker_dry_run_without_credentials(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # a bare machine: no account settings either — the request shows placeholders that say what to set
    for var in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "BERTLIB_SAGEMAKER_ROLE",
        "BERTLIB_IMAGE_URI",
        "BERTLIB_S3_PREFIX",
        "BERTLIB_SUBNETS",
        "BERTLIB_SECURITY_GROUP_IDS",
        "BERTLIB_FSX_ID",
        "SAGEMAKER_ROLE",
        "SAGEMAKER_IMAGE_NAME",
        "SAGEMAKER_SUBNET_IDS",  # and the reference's names
        "SAGEMAKER_SECURITY_GROUP_IDS",
        "SAGEMAKER_FSX_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    nb, err = _run(
        "02_phase1", tmp_path, parameters={"dry_run": True}, parameters_file=REPO / "params/sagemaker/phase1.yaml"
    )
    assert err is None, err
    text = text_of(nb)
    assert "estimated wall time" in text and "8 × ml.p3dn.24xlarge (64 devices)" in text
    assert "dry run — nothing was sent to AWS" in text
    assert "dry run: BERTLIB_SAGEMAKER_ROLE, BERTLIB_IMAGE_URI, AWS_DEFAULT_REGION not set" in text
    # no image set: the image cell shows the CodeBuild build's requests (bertlib launch image --dry-run)
    assert "requests of a first run (AWS_DEFAULT_REGION, BERTLIB_S3_PREFIX, account shown as placeholders)" in text
    assert "codebuild StartBuild" in text
    # the canary's request (its cell runs before the launch), then phase 1's
    shown = [json.loads(part.split("\n}\n", 1)[0] + "\n}") for part in text.split("CreateTrainingJob request:\n")[1:]]
    assert [r["TrainingJobName"].split("-phase1-")[0] for r in shown] == ["bertlib-canary", "bertlib-pretrain"]
    canary_request, request = shown
    assert canary_request["HyperParameters"]["canary_steps"] == "6"
    assert canary_request["ResourceConfig"] == {**request["ResourceConfig"]}
    assert request["ResourceConfig"]["InstanceType"] == "ml.p3dn.24xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 8
    assert request["HyperParameters"]["total_steps"] == "14064"
    assert request["HyperParameters"]["per_gpu_batch_size"] == "128"
    assert request["RoleArn"] == "arn:aws:iam::000000000000:role/SET-BERTLIB_SAGEMAKER_ROLE"
    train = [c for c in request["InputDataConfig"] if c["ChannelName"] == "train"][0]
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == "s3://set-bertlib-s3-prefix/bertlib/data/phase1"
    reg = json.loads((tmp_path / "runs/reference/registry.json").read_text())
    assert reg["steps"]["phase1"]["dry_run"] is True
    assert "nothing to plot" in text


@pytest.mark.slow
def test_data_prep_on_sagemaker_dry_run(tmp_path, monkeypatch):
    """01_data_prep on params/sagemaker/data.yaml: the request of a 4-instance prepare-data job writing
    the datasets where params/sagemaker/phase1.yaml reads them; nothing sent, nothing prepared here."""
    for var in (
        "BERTLIB_SAGEMAKER_ROLE",
        "BERTLIB_IMAGE_URI",
        "BERTLIB_S3_PREFIX",
        "SAGEMAKER_ROLE",
        "SAGEMAKER_IMAGE_NAME",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    nb, err = _run(
        "01_data_prep", tmp_path, parameters={"dry_run": True}, parameters_file=REPO / "params/sagemaker/data.yaml"
    )
    assert err is None, err
    text = text_of(nb)
    assert "data: SageMaker job bertlib-prepare-data" in text and "on 4 × ml.m5.24xlarge (dry run" in text
    assert "phase1: s3://set-bertlib-s3-prefix/bertlib/data/phase1" in text
    request = json.loads(text.split("CreateTrainingJob request:\n", 1)[1].split("\n}\n", 1)[0] + "\n}")
    assert request["CheckpointConfig"]["S3Uri"] == "s3://set-bertlib-s3-prefix/bertlib/data"
    assert request["HyperParameters"]["output_dir"] == "/opt/ml/checkpoints"
    assert "dry run — no job ran, no dataset to show" in text
    assert not list(tmp_path.glob("runs/reference/data/*/manifest.json"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The five notebooks on tests/notebooks/params (20 articles, a few steps, one process)."""
    from bertlib.demo import run_chain

    work = tmp_path_factory.mktemp("chain")
    try:
        result = run_chain(work, REPO / "tests/notebooks/params", "ci", html=True, log_output=False)
    except PapermillExecutionError as e:
        pytest.fail(f"notebook chain failed: {e.ename}: {e.evalue}")
    return work, result


@pytest.mark.slow
def test_chain_runs_without_errors(chain):
    _, result = chain
    assert list(result["notebooks"]) == NOTEBOOKS
    for name, path in result["notebooks"].items():
        nb = nbformat.read(path, as_version=4)
        assert not [o for o in outputs(nb) if o.output_type == "error"], name
        assert all(c.execution_count is not None for c in code_cells(nb)), name
        html = result["html"][name].read_text()
        assert "<html" in html and "jp-Notebook" in html


@pytest.mark.slow
def test_chain_progress_is_one_line_updated_in_place(chain):
    """The launch cell shows one progress display, left at its final state (papermill applies the
    in-place updates), and the run's log lines as plain text — no bar redrawn after every line, and
    no TensorFlow start-up notices."""
    _, result = chain
    nb = nbformat.read(result["notebooks"]["02_phase1"], as_version=4)
    (launch,) = [c for c in code_cells(nb) if "nb.launch(p)" in c.source]
    bars = [o for o in launch.outputs if "pretrain ×1" in (o.get("text", "") + o.get("data", {}).get("text/plain", ""))]
    assert len(bars) == 1 and bars[0].output_type in ("display_data", "update_display_data")
    assert "100%" in bars[0]["data"]["text/plain"] and "4/4" in bars[0]["data"]["text/plain"]
    log = "".join(o.get("text", "") for o in launch.outputs if o.output_type == "stream")
    assert log.count("[bertlib] phase=phase1 step=") == 4
    assert "oneDNN custom operations" not in log and "absl::InitializeLog" not in log


@pytest.mark.slow
def test_chain_plots_are_images(chain):
    _, result = chain
    counts = {
        name: len(outputs(nbformat.read(p, as_version=4), "image/png")) for name, p in result["notebooks"].items()
    }
    # data: length histogram; phase1: curves; phase2: curves + both phases; squad: one per version;
    # report: both phases + 4 runs
    assert counts == {"01_data_prep": 1, "02_phase1": 1, "03_phase2": 2, "04_squad": 2, "05_report": 5}
    assert result["html"]["05_report"].read_text().count('src="data:image/png;base64,') == 5


@pytest.mark.slow
def test_chain_scores_and_table(chain):
    work, result = chain
    squad = text_of(nbformat.read(result["notebooks"]["04_squad"], as_version=4))
    for version in ("squadv1", "squadv2"):
        summary = json.loads((work / "runs/ci" / version / "summary.json").read_text())
        em = summary.get("exact_match", summary.get("exact"))
        assert f"{version}: EM {em:.2f}  F1 {summary['f1']:.2f} (official)" in squad
    ref = json.loads((work / "runs/ci/squadv1/summary.json").read_text())["reference_scoring"]
    assert f"as the reference scored it: EM {ref['exact']:.2f}  F1 {ref['f1']:.2f}" in squad
    report = nbformat.read(result["notebooks"]["05_report"], as_version=4)
    (table,) = [o["data"]["text/html"] for o in outputs(report, "text/html")]
    assert "BERT-base (reference)" in table and "BERT-tiny (this run, local)" in table
    assert "5 hrs 33 mins" in table and "87.68" in table
    md = (work / "runs/ci/report/report.md").read_text()
    assert md.count("\n| BERT-") == 2 and "† measured on the synthetic smoke set" in md
    assert "SQuAD v1.1 F1 (official)" in md and f"{ref['f1']:.2f} †" in md  # the reference's scoring, beside 87.68
    for f in ("results_table.png", "pretraining_loss.png", "phase1.png", "phase2.png", "squadv1.png", "squadv2.png"):
        assert (work / "runs/ci/report" / f).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_chain_registry_links_the_notebooks(chain):
    work, _ = chain
    steps = json.loads((work / "runs/ci/registry.json").read_text())["steps"]
    assert set(steps) == {"data", "phase1", "phase2", "squadv1", "squadv2"}
    phase2_cfg = yaml.safe_load((work / "runs/ci/phase2/launch_config.yaml").read_text())
    assert phase2_cfg["checkpoint_path"] == steps["phase1"]["export_dir"]
    assert phase2_cfg["data_dir"] == steps["data"]["datasets"]["phase2"]
    squad_cfg = yaml.safe_load((work / "runs/ci/squadv1/launch_config.yaml").read_text())
    assert squad_cfg["checkpoint_path"] == steps["phase2"]["export_dir"]
    assert squad_cfg["train_file"] == steps["data"]["squad_smoke"]["squadv1"]["train_file"]
    assert os.path.isdir(work / steps["phase1"]["export_dir"])


@pytest.mark.slow
def test_chain_rerun_reuses_prepared_data(chain, tmp_path):
    """A second data-prep notebook, in a copy of the chain's folder (the rerun re-makes the run folders
    that the other chain tests read, in any order), writes no shard."""
    from bertlib.demo import run_chain

    work = tmp_path / "chain"
    shutil.copytree(chain[0], work, symlinks=True)
    before = json.loads((work / "runs/ci/registry.json").read_text())["steps"]["data"]
    again = run_chain(work, REPO / "tests/notebooks/params", "ci", html=False, log_output=False, stop="01_data_prep")
    assert list(again["notebooks"]) == ["01_data_prep"]
    data = json.loads((work / "runs/ci/registry.json").read_text())["steps"]["data"]
    shards = before["written_shards"] + before["skipped_shards"]
    assert (data["written_shards"], data["skipped_shards"]) == (0, shards)
    assert f"0 shards written, {shards} reused" in text_of(
        nbformat.read(again["notebooks"]["01_data_prep"], as_version=4)
    )


class _Rows(HTMLParser):
    """Rows of the "Try it" table: each row's cell texts (entities resolved) and its <mark> texts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self._mark = [], False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append({"cells": [], "marks": []})
        elif tag == "td":
            self.rows[-1]["cells"].append("")
        elif tag == "mark":
            self._mark = True
            self.rows[-1]["marks"].append("")

    def handle_endtag(self, tag):
        self._mark = self._mark and tag != "mark"

    def handle_data(self, data):
        if self.rows and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1] += data
            if self._mark:
                self.rows[-1]["marks"][-1] += data


@pytest.mark.slow
def test_chain_try_it_answers_as_the_runs_predicted(chain):
    """04_squad's "Try it": per version a table of the first dev questions (tests/notebooks/params/squad.yaml:
    2) with the run's own predictions.json answer marked in its context, the gold answers, then the
    question/context of the params file (escaped); the same table in the rendered HTML."""
    work, result = chain
    nb = nbformat.read(result["notebooks"]["04_squad"], as_version=4)
    (cell,) = [c for c in code_cells(nb) if "nb.try_it(p)" in c.source]
    tables = [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]
    assert len(tables) == 2
    steps = json.loads((work / "runs/ci/registry.json").read_text())["steps"]
    rendered = result["html"]["04_squad"].read_text()
    for version, table in zip(("squadv1", "squadv2"), tables):
        predictions = json.loads((work / "runs/ci" / version / "predictions.json").read_text())
        dev, _, _ = load_squad_json(str(work / steps[version]["predict_file"]))
        paras = [(p["context"], qa) for a in dev["data"] for p in a["paragraphs"] for qa in p["qas"]][:2]
        parser = _Rows()
        parser.feed(table)
        header, *rows = parser.rows
        assert len(rows) == 3
        for row, (context, qa) in zip(rows, paras):
            question, shown_context, answer, gold = row["cells"]
            predicted = predictions[qa["id"]]
            assert question == qa["question"] and shown_context == context
            assert row["marks"] == ([predicted] if predicted else [])
            assert answer.startswith(predicted or "no answer") and "p = " in answer
            assert gold == (" | ".join(dict.fromkeys(a["text"] for a in qa["answers"])) or "no answer")
        mine = rows[2]
        assert mine["cells"][:2] == ["In what year did the war end?", "The war <ended> in 1945 & peace came."]
        assert mine["cells"][3] == "—" and len(mine["marks"]) <= 1
        assert "&lt;ended&gt;" in table and "<ended>" not in table
    # the rendered report (nbconvert re-serializes the HTML) shows the same two tables, cell for cell
    shown = []
    for part in rendered.split('<table class="bertlib-try-it">')[1:]:
        parser = _Rows()
        parser.feed("<table>" + part.split("</table>", 1)[0] + "</table>")
        shown.append(parser.rows)
    for table in tables:
        parser = _Rows()
        parser.feed(table)
        assert parser.rows == shown.pop(0)
    assert shown == []
