"""params/**: every file validates through bertlib.params; a notebook run without a params file is the
local demo (its cell names params/local); SageMaker = DESIGN.md."""

import ast
from pathlib import Path

import pytest
import yaml

from bertlib import params as nb
from bertlib.core.config import launched_fields
from bertlib.registry import Registry

REPO = Path(__file__).resolve().parents[2]
STEP_OF = {"data.yaml": "data", "phase1.yaml": "phase1", "phase2.yaml": "phase2", "squad.yaml": "squad"}
NOTEBOOK_OF = {
    "data.yaml": "01_data_prep",
    "phase1.yaml": "02_phase1",
    "phase2.yaml": "03_phase2",
    "squad.yaml": "04_squad",
    "report.yaml": "05_report",
}
PARAM_FILES = sorted((REPO / "params").glob("*/*.yaml")) + sorted((REPO / "tests/notebooks/params").glob("*.yaml"))


def parameter_cell(notebook: str) -> dict:
    """The defaults of a notebook's ``parameters`` cell (py:percent source), evaluated literally."""
    src = (REPO / "notebooks" / f"{notebook}.py").read_text()
    cell = src.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    out = {}
    for node in ast.parse(cell).body:
        (target,) = node.targets
        out[target.id] = ast.literal_eval(node.value)
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A cwd with registries for every experiment, as the earlier notebooks would leave them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERTLIB_S3_PREFIX", "s3://example-bucket/bertlib")
    monkeypatch.setenv("BERTLIB_SAGEMAKER_ROLE", "arn:aws:iam::123456789012:role/bertlib-test")
    monkeypatch.setenv("BERTLIB_IMAGE_URI", "123456789012.dkr.ecr.us-east-1.amazonaws.com/bertlib:test")
    for exp in ("local", "reference", "reference-packed", "ci"):
        reg = Registry.for_experiment(exp)
        smoke = {
            v: {"train_file": f"/d/{v}-train.json", "predict_file": f"/d/{v}-dev.json"} for v in ("squadv1", "squadv2")
        }
        reg.record("data", datasets={"phase1": "/d/phase1", "phase2": "/d/phase2"}, squad_smoke=smoke)
        # SageMaker jobs record their model.tar.gz; local runs their export folder
        root = "s3://example-bucket/bertlib/output/job-" if exp.startswith("reference") else "/r/"
        reg.record("phase1", export_dir=root + "phase1/export")
        reg.record("phase2", export_dir=root + "phase2/export")
    return tmp_path


@pytest.mark.parametrize(
    "path", [p for p in PARAM_FILES if p.name in STEP_OF], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_params_file_validates(path, workdir):
    p = nb.parameters(STEP_OF[path.name], yaml.safe_load(path.read_text()))
    for cfg in p.configs.values():
        dumped = cfg.values()  # the launch settings and the job's config, resolved
        assert "auto" not in dumped.values() and not any("${" in str(v) for v in dumped.values())
    if path.name == "phase2.yaml":
        assert p.cfg.job.checkpoint_path.endswith("phase1/export") and p.cfg.job.data_dir.endswith("phase2")
    if path.name == "squad.yaml":
        assert all(c.job.checkpoint_path.endswith("phase2/export") for c in p.configs.values())


@pytest.mark.parametrize("name", ["report.yaml"])
def test_report_params_validate(name, workdir):
    for path in [p for p in PARAM_FILES if p.name == name]:
        assert nb.report_parameters(yaml.safe_load(path.read_text())).experiment


#: what a notebook's parameter cell may set besides params_file: what a user changes most
KNOBS = {
    "experiment",
    "backend",
    "dry_run",
    "wait",
    "new_job",
    "model_size",
    "total_steps",
    "learning_rate",
    "instance_type",
    "instance_count",
    "sources",
    "phases",
    "num_shards",
    "pack_sequences",
    "squad_versions",
    # 02_phase1's canary
    "canary",
    "canary_instance_count",
    # 04_squad's "Try it" and endpoint sections
    "try_questions",
    "question",
    "context",
    "deploy",
    "delete_endpoint",
}


def dumped(configs: dict) -> dict:
    return {name: cfg.values() for name, cfg in configs.items()}


@pytest.mark.parametrize("name", sorted(STEP_OF))
def test_notebook_cell_is_the_local_demo(name, workdir):
    """Run without a params file, a notebook resolves to exactly the config of params/local/X.yaml:
    its cell names that file and sets a few knobs to None ("the file's value") — nothing to keep in sync."""
    cell = parameter_cell(NOTEBOOK_OF[name])
    knobs = {k: v for k, v in cell.items() if k != "params_file"}
    assert cell["params_file"] == f"params/local/{name}"
    assert set(knobs) <= KNOBS and all(v is None for v in knobs.values()), knobs
    job = nb.STEPS[STEP_OF[name]][0]
    fields = {**launched_fields(job), **nb.STEPS[STEP_OF[name]][1].model_fields}
    assert all(fields[k].default is not None or fields[k].is_required() for k in knobs), (
        "a knob whose None is a value would override the file"
    )
    from_cell = nb.parameters(STEP_OF[name], cell).configs
    assert dumped(from_cell) == dumped(nb.load_configs(job, REPO / "params/local" / name, {}))
    # a knob set in the cell (or by papermill -p) overrides the file
    knob = "total_steps" if "total_steps" in cell else "dry_run"
    changed = nb.parameters(STEP_OF[name], {**cell, knob: 70 if knob == "total_steps" else True}).configs
    assert {c.values()[knob] for c in changed.values()} == {70 if knob == "total_steps" else True}


def test_report_cell_is_the_local_report(workdir):
    cell = parameter_cell(NOTEBOOK_OF["report.yaml"])
    assert nb.report_parameters(cell) == nb.load_configs("report", REPO / "params/local/report.yaml", {})["report"]


@pytest.mark.parametrize("name", sorted(STEP_OF))
def test_params_file_over_the_cell_is_the_params_file(name, workdir):
    """papermill -p params_file FILE: the notebook runs FILE's config, nothing of params/local."""
    cell = {**parameter_cell(NOTEBOOK_OF[name]), "params_file": f"params/sagemaker/{name}"}
    job = nb.STEPS[STEP_OF[name]][0]
    assert dumped(nb.parameters(STEP_OF[name], cell).configs) == dumped(
        nb.load_configs(job, REPO / "params/sagemaker" / name, {})
    )


@pytest.mark.parametrize("name", sorted(STEP_OF))
def test_a_params_file_injected_over_the_cell(name, workdir):
    """papermill -f FILE: FILE's values, injected after the cell, win over params/local (which only adds
    what FILE leaves out: local launch settings); a params_file out of reach (an installed bertlib run
    with --cwd elsewhere) is no error when FILE gives every value, and named when it does not."""
    cell, step = parameter_cell(NOTEBOOK_OF[name]), STEP_OF[name]
    values = yaml.safe_load((REPO / "params/sagemaker" / name).read_text())
    expected = dumped(nb.load_configs(nb.STEPS[step][0], REPO / "params/sagemaker" / name, {}))
    got = dumped(nb.parameters(step, {**cell, **values}).configs)
    differ = {k for n in got for k in got[n] if got[n][k] != expected[n][k]}
    assert differ <= {"num_processes", "threads_per_process"}, differ
    assert dumped(nb.parameters(step, {**cell, **values, "params_file": "elsewhere/x.yaml"}).configs) == expected
    with pytest.raises(
        nb.ParamsError, match=f"^{step} parameters: params_file 'elsewhere/x.yaml': config file not found$"
    ):
        nb.parameters(step, {**cell, "params_file": "elsewhere/x.yaml"})


def test_one_path_for_every_caller(workdir):
    """bertlib launch / estimate / report and the notebooks all go through bertlib.params.load_configs."""
    from bertlib import launch_cli, report
    from bertlib.estimate_cli import configs_from_file

    path = REPO / "params/sagemaker/phase2.yaml"
    resolved = nb.load_configs("pretrain", path, {"total_steps": 700})
    # bertlib launch: the same path, plus the registry it records its jobs in (the file's experiment)
    assert launch_cli.load_launch is nb.load_launch
    configs, registry = launch_cli.load_launch("pretrain", path, {"total_steps": 700})
    assert configs == resolved and registry.path == Path("runs/reference/registry.json")
    assert resolved["phase2"].job.checkpoint_path == "s3://example-bucket/bertlib/output/job-phase1/export"
    raw = configs_from_file(str(path), {"total_steps": 700})  # the estimate: nothing resolved, nothing looked up
    assert raw["phase2"].job.checkpoint_path == "auto" and raw["phase2"].job.total_steps == 700
    assert raw["phase2"].job.data_dir == "${BERTLIB_S3_PREFIX}/data/phase2"
    assert raw["phase2"].launch.instance_type == "ml.p3dn.24xlarge"
    assert report.report_config(
        ["--config", str(REPO / "params/local/report.yaml"), "--phase1", "x"]
    ) == nb.ReportConfig(experiment="local", phase1="x")
    # a plain run config: bertlib.core.config.load_launched, named by its step
    plain = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "experiment"}
    plain.update(checkpoint_path="/x", data_dir="/d", run_dir="/r")
    ((name, cfg),) = nb.load_configs("pretrain", None, plain).items()
    assert name == "phase2" and cfg.job.checkpoint_path == "/x" and cfg.launch.instance_count == 8
    assert launch_cli.load_launch("pretrain", None, plain)[1].path == Path("runs/default/registry.json")


def test_notebook_defaults_validate(workdir):
    for name, step in STEP_OF.items():
        nb.parameters(step, parameter_cell(NOTEBOOK_OF[name]))


def test_sagemaker_params_are_the_reference_schedule(workdir):
    """DESIGN.md: phase 1 14064 steps, 128 × 64 GPUs × 4 = 32768, seq 128/20, LAMB 0.005 → 0.0003, warmup
    2812, power 0.5; phase 2 6248 steps, 32 × 64 × 4 = 8192, 512/80, 0.004 → 0.0003, warmup 625, from the
    phase 1 checkpoint without optimizer state; SQuAD v1.1 3649 steps, 6 × 8 = 48, 5e-5, warmup 365;
    v2.0 8144 steps, 1e-4, warmup 814; no XLA for SQuAD; 8 × ml.p3dn.24xlarge for pretraining."""
    load = lambda n: yaml.safe_load((REPO / "params/sagemaker" / n).read_text())  # noqa: E731
    launched1 = nb.parameters("phase1", load("phase1.yaml")).cfg
    p1 = launched1.job
    assert (
        p1.total_steps,
        p1.per_gpu_batch_size,
        launched1.world_size,
        p1.gradient_accumulation_steps,
        launched1.global_batch_size,
    ) == (14064, 128, 64, 4, 32768)
    assert (
        p1.max_seq_length,
        p1.max_predictions_per_seq,
        p1.optimizer,
        p1.learning_rate,
        p1.end_learning_rate,
        p1.warmup_steps,
        p1.learning_rate_decay_power,
    ) == (128, 20, "lamb", 0.005, 0.0003, 2812, 0.5)
    assert (p1.hidden_dropout_prob, p1.attention_probs_dropout_prob, p1.precision) == (0.1, 0.1, "mixed_float16")
    launch1 = launched1.launch
    assert (launch1.backend, launch1.instance_type, launch1.instance_count) == ("sagemaker", "ml.p3dn.24xlarge", 8)
    launched2 = nb.parameters("phase2", load("phase2.yaml")).cfg
    p2 = launched2.job
    assert (
        p2.total_steps,
        p2.per_gpu_batch_size,
        launched2.world_size,
        p2.gradient_accumulation_steps,
        launched2.global_batch_size,
    ) == (6248, 32, 64, 4, 8192)
    assert (p2.max_seq_length, p2.max_predictions_per_seq, p2.learning_rate, p2.end_learning_rate, p2.warmup_steps) == (
        512,
        80,
        0.004,
        0.0003,
        625,
    )
    assert (
        p2.optimizer,
        p2.learning_rate_decay_power,
        p2.hidden_dropout_prob,
        p2.attention_probs_dropout_prob,
        p2.precision,
    ) == ("lamb", 0.5, 0.1, 0.1, "mixed_float16")
    assert not p1.skip_xla and not p2.skip_xla  # XLA for pretraining
    assert (p1.deterministic_ops, p2.deterministic_ops) == (False, False)  # fastest GPU kernels
    assert (p2.load_from, p2.load_optimizer_state, p2.checkpoint_path) == (
        "checkpoint",
        False,
        "s3://example-bucket/bertlib/output/job-phase1/export",
    )
    sq = nb.parameters("squad", load("squad.yaml")).configs
    assert sq["squadv1"].global_batch_size == sq["squadv2"].global_batch_size == 48
    assert sq["squadv1"].world_size == 8
    v1, v2 = sq["squadv1"].job, sq["squadv2"].job
    assert (v1.total_steps, v1.learning_rate, v1.warmup_steps) == (3649, 5e-5, 365)
    assert (v2.total_steps, v2.learning_rate, v2.warmup_steps) == (8144, 1e-4, 814)
    assert (v1.per_gpu_batch_size, v1.optimizer, v2.optimizer) == (6, "adamw", "adamw")
    # the reference's run_squad.py: tfa AdamW(weight_decay=0.0), clip 1.0, linear decay to 0, dynamic-loss-scale
    # fp16, ModelArguments' dropout 0.0, features 384/128/64
    for v in (v1, v2):
        assert (
            v.weight_decay,
            v.max_grad_norm,
            v.end_learning_rate,
            v.learning_rate_decay_power,
            v.precision,
            v.initial_loss_scale,
            v.hidden_dropout_prob,
            v.attention_probs_dropout_prob,
            v.seed,
        ) == (0.0, 1.0, 0.0, 1.0, "mixed_float16", 2.0**15, 0.0, 0.0, 42)
        assert (v.max_seq_length, v.doc_stride, v.max_query_length, v.gradient_accumulation_steps) == (384, 128, 64, 1)
    assert v1.skip_xla and v2.skip_xla and (v1.squad_version, v2.squad_version) == ("squadv1", "squadv2")
    assert v1.train_file.endswith("train-v1.1.json") and v2.predict_file.endswith("dev-v2.0.json")
    # the official files' published sha256 (as listed by TFDS and ParlAI), checked when downloaded
    assert (v1.train_file_sha256, v1.predict_file_sha256, v2.train_file_sha256, v2.predict_file_sha256) == (
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
        "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    )


@pytest.mark.parametrize("name", ["data.yaml", "phase1.yaml", "phase2.yaml"])
def test_packed_variant_is_the_reference_on_packed_rows(name, workdir):
    """params/sagemaker-packed = params/sagemaker with packing on and, for training, fewer rows per step
    (a packed row holds several pairs); everything else — schedule, model, data settings — the same."""
    load = lambda d, n=name: yaml.safe_load((REPO / "params" / d / n).read_text())  # noqa: E731
    ref, packed = load("sagemaker"), load("sagemaker-packed")
    differ = {k for k in ref.keys() | packed.keys() if ref.get(k) != packed.get(k)}
    if name == "data.yaml":
        assert differ == {
            "experiment",
            "pack_sequences",
            "max_pairs_per_row",
            "dynamic_masking",
            "phases",
            "s3_data_uri",
        }
        # each variant's data job writes where its own training params read
        assert packed["s3_data_uri"] == ref["s3_data_uri"].replace("/data", "/data-packed")
        assert load("sagemaker-packed", "phase1.yaml")["data_dir"] == packed["s3_data_uri"] + "/phase1"
        assert packed["pack_sequences"] and packed["max_pairs_per_row"] == 3 and not packed["dynamic_masking"]
        assert [{k: v for k, v in p.items() if k != "max_pairs_per_row"} for p in packed["phases"]] == ref["phases"]
        cfg = nb.parameters("data", packed).cfg.job
        assert [cfg.pairs_per_row(p) for p in cfg.phases] == [3, 6]
        return
    assert differ == {"experiment", "data_dir", "checkpoint_s3_uri", "per_gpu_batch_size", "global_batch_size_check"}
    assert packed["data_dir"] == ref["data_dir"].replace("/data/", "/data-packed/")
    ref_cfg = nb.parameters(STEP_OF[name], ref).cfg
    packed_cfg = nb.parameters(STEP_OF[name], packed).cfg
    assert packed_cfg.global_batch_size == packed["global_batch_size_check"] < ref_cfg.global_batch_size


def test_no_account_values_in_params():
    for path in (REPO / "params").glob("*/*.yaml"):
        text = path.read_text()
        assert "arn:aws" not in text and "dkr.ecr" not in text and "subnet-" not in text, path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"total_stepz": 10}, "phase1 parameters: unknown key 'total_stepz'"),
        (
            {"total_steps": "many"},
            "phase1 parameters: key 'total_steps': Input should be a valid integer, "
            "unable to parse string as an integer (got 'many')",
        ),
        ({"experiment": ["x"]}, "phase1 parameters: key 'experiment': Input should be a valid string (got ['x'])"),
        (
            {"data_dir": "${BERTLIB_NOT_SET_ANYWHERE}/x"},
            "phase1 parameters: key 'data_dir': environment variable BERTLIB_NOT_SET_ANYWHERE is not set "
            "(used as '${BERTLIB_NOT_SET_ANYWHERE}/x')",
        ),
    ],
)
def test_bad_parameters_one_line(change, message, workdir):
    values = {**yaml.safe_load((REPO / "params/local/phase1.yaml").read_text()), **change}
    with pytest.raises(nb.ParamsError) as err:
        nb.parameters("phase1", values)
    assert str(err.value) == message
    assert err.value._render_traceback_() == [f"ParamsError: {message}"]


def test_unknown_key_reported_before_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no registry: the typo is still what is reported
    values = {**yaml.safe_load((REPO / "params/local/phase2.yaml").read_text()), "lr": 1.0}
    with pytest.raises(nb.ParamsError, match="unknown key 'lr'"):
        nb.parameters("phase2", values)
    values.pop("lr")
    with pytest.raises(nb.ParamsError, match=r"no 'data' entry \(run notebooks/01_data_prep first\)"):
        nb.parameters("phase2", values)


def test_collect_ignores_modules_functions_and_ipython_names():
    import os

    ns = {"a": 1, "b": None, "os": os, "f": lambda: 0, "In": [], "Out": {}, "_": 3, "get_ipython": print, "C": int}
    assert nb.collect(ns) == {"a": 1, "b": None}


def test_sagemaker_settings_checked_at_the_first_cell(workdir, monkeypatch):
    """A SageMaker run without a role stops at validation, not at the launch cell."""
    monkeypatch.delenv("BERTLIB_SAGEMAKER_ROLE")
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)  # the reference's name for it
    values = yaml.safe_load((REPO / "params/sagemaker/phase1.yaml").read_text())
    with pytest.raises(nb.ParamsError) as err:
        nb.parameters("phase1", values)
    assert str(err.value) == (
        "phase1 parameters: SageMaker launch: no IAM role — set role or $BERTLIB_SAGEMAKER_ROLE / $SAGEMAKER_ROLE"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"question": 5}, "squad parameters: key 'question': Input should be a valid string (got 5)"),
        ({"question": "When?"}, "squad parameters: question and context go together: set both (or neither)"),
        ({"context": "It ended in 1945."}, "squad parameters: question and context go together: set both (or neither)"),
        (
            {"question": " ", "context": "x"},
            "squad parameters: question and context go together: set both (or neither)",
        ),
        (
            {"try_questions": -1},
            "squad parameters: key 'try_questions': Input should be greater than or equal to 0 (got -1)",
        ),
        ({"questions": "When?"}, "squad parameters (squadv1): unknown key 'questions'"),
    ],
)
def test_try_it_parameters_one_line(change, message, workdir):
    """04_squad's "Try it" parameters are checked at the first cell, before the registry is read."""
    values = {**yaml.safe_load((REPO / "params/local/squad.yaml").read_text()), **change}
    with pytest.raises(nb.ParamsError) as err:
        nb.parameters("squad", values)
    assert str(err.value) == message


def test_try_it_parameters_reach_the_notebook_keys(workdir, monkeypatch):
    values = {
        **yaml.safe_load((REPO / "params/local/squad.yaml").read_text()),
        "question": "When did it end?",
        "context": "It ended in 1945.",
        "try_questions": 0,
    }
    keys = nb.load_params("squad", values, resolve=False).keys
    assert (keys.question, keys.context, keys.try_questions) == ("When did it end?", "It ended in 1945.", 0)


def test_try_it_cell_none_keeps_the_params_files_question(workdir):
    """The cell's None (its "not set here") leaves the params file's question/context and count in place."""
    values = {**parameter_cell("04_squad"), "params_file": str(REPO / "tests/notebooks/params/squad.yaml")}
    assert values["question"] is None and values["try_questions"] is None
    keys = nb.load_params("squad", values, resolve=False).keys
    file = yaml.safe_load((REPO / "tests/notebooks/params/squad.yaml").read_text())
    assert (keys.question, keys.context, keys.try_questions) == (file["question"], file["context"], 2)
