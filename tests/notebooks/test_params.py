"""params/**: every file validates through bertlib; local = the notebooks' defaults; SageMaker = DESIGN.md."""

import ast
from pathlib import Path

import pytest
import yaml

from bertlib import notebook as nb
from bertlib.registry import Registry

REPO = Path(__file__).resolve().parents[2]
STEP_OF = {"data.yaml": "data", "phase1.yaml": "phase1", "phase2.yaml": "phase2", "squad.yaml": "squad"}
NOTEBOOK_OF = {"data.yaml": "01_data_prep", "phase1.yaml": "02_phase1", "phase2.yaml": "03_phase2",
               "squad.yaml": "04_squad", "report.yaml": "05_report"}
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
        smoke = {v: {"train_file": f"/d/{v}-train.json", "predict_file": f"/d/{v}-dev.json"}
                 for v in ("squadv1", "squadv2")}
        reg.record("data", datasets={"phase1": "/d/phase1", "phase2": "/d/phase2"}, squad_smoke=smoke)
        # SageMaker jobs record their model.tar.gz; local runs their export folder
        root = "s3://example-bucket/bertlib/output/job-" if exp.startswith("reference") else "/r/"
        reg.record("phase1", export_dir=root + "phase1/export")
        reg.record("phase2", export_dir=root + "phase2/export")
    return tmp_path


@pytest.mark.parametrize("path", [p for p in PARAM_FILES if p.name in STEP_OF], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_params_file_validates(path, workdir):
    p = nb.parameters(STEP_OF[path.name], yaml.safe_load(path.read_text()))
    for cfg in p.configs.values():
        dumped = cfg.model_dump()
        assert "auto" not in dumped.values() and not any("${" in str(v) for v in dumped.values())
    if path.name == "phase2.yaml":
        assert p.cfg.checkpoint_path.endswith("phase1/export") and p.cfg.data_dir.endswith("phase2")
    if path.name == "squad.yaml":
        assert all(c.checkpoint_path.endswith("phase2/export") for c in p.configs.values())


@pytest.mark.parametrize("name", ["report.yaml"])
def test_report_params_validate(name, workdir):
    for path in [p for p in PARAM_FILES if p.name == name]:
        assert nb.report_parameters(yaml.safe_load(path.read_text())).experiment


@pytest.mark.parametrize("name", sorted(NOTEBOOK_OF))
def test_local_params_are_the_notebook_defaults(name):
    """The embedded default: params/local/X.yaml changes nothing in the notebook's parameter cell."""
    local = yaml.safe_load((REPO / "params/local" / name).read_text())
    defaults = parameter_cell(NOTEBOOK_OF[name])
    assert {k: defaults.get(k, "<missing>") for k in local} == local


def test_notebook_defaults_validate(workdir):
    for name, step in STEP_OF.items():
        nb.parameters(step, parameter_cell(NOTEBOOK_OF[name]))


def test_sagemaker_params_are_the_reference_schedule(workdir):
    """DESIGN.md: phase 1 14064 steps, 128 × 64 GPUs × 4 = 32768, seq 128/20, LAMB 0.005 → 0.0003, warmup
    2812, power 0.5; phase 2 6248 steps, 32 × 64 × 4 = 8192, 512/80, 0.004 → 0.0003, warmup 625, from the
    phase 1 checkpoint without optimizer state; SQuAD v1.1 3649 steps, 6 × 8 = 48, 5e-5, warmup 365;
    v2.0 8144 steps, 1e-4, warmup 814; no XLA for SQuAD; 8 × ml.p3dn.24xlarge for pretraining."""
    load = lambda n: yaml.safe_load((REPO / "params/sagemaker" / n).read_text())  # noqa: E731
    p1 = nb.parameters("phase1", load("phase1.yaml")).cfg
    assert (p1.total_steps, p1.per_gpu_batch_size, p1.world_size, p1.gradient_accumulation_steps,
            p1.global_batch_size) == (14064, 128, 64, 4, 32768)
    assert (p1.max_seq_length, p1.max_predictions_per_seq, p1.optimizer, p1.learning_rate, p1.end_learning_rate,
            p1.warmup_steps, p1.learning_rate_decay_power) == (128, 20, "lamb", 0.005, 0.0003, 2812, 0.5)
    assert (p1.hidden_dropout_prob, p1.attention_probs_dropout_prob, p1.precision) == (0.1, 0.1, "mixed_float16")
    assert (p1.backend, p1.instance_type, p1.instance_count) == ("sagemaker", "ml.p3dn.24xlarge", 8)
    p2 = nb.parameters("phase2", load("phase2.yaml")).cfg
    assert (p2.total_steps, p2.per_gpu_batch_size, p2.world_size, p2.gradient_accumulation_steps,
            p2.global_batch_size) == (6248, 32, 64, 4, 8192)
    assert (p2.max_seq_length, p2.max_predictions_per_seq, p2.learning_rate, p2.end_learning_rate,
            p2.warmup_steps) == (512, 80, 0.004, 0.0003, 625)
    assert (p2.optimizer, p2.learning_rate_decay_power, p2.hidden_dropout_prob, p2.attention_probs_dropout_prob,
            p2.precision) == ("lamb", 0.5, 0.1, 0.1, "mixed_float16")
    assert not p1.skip_xla and not p2.skip_xla                 # XLA for pretraining
    assert (p1.deterministic_ops, p2.deterministic_ops) == (False, False)   # fastest GPU kernels
    assert (p2.load_from, p2.load_optimizer_state, p2.checkpoint_path) == (
        "checkpoint", False, "s3://example-bucket/bertlib/output/job-phase1/export")
    sq = nb.parameters("squad", load("squad.yaml")).configs
    v1, v2 = sq["squadv1"], sq["squadv2"]
    assert (v1.total_steps, v1.learning_rate, v1.warmup_steps, v1.global_batch_size) == (3649, 5e-5, 365, 48)
    assert (v2.total_steps, v2.learning_rate, v2.warmup_steps, v2.global_batch_size) == (8144, 1e-4, 814, 48)
    assert (v1.per_gpu_batch_size, v1.world_size, v1.optimizer, v2.optimizer) == (6, 8, "adamw", "adamw")
    # the reference's run_squad.py: tfa AdamW(weight_decay=0.0), clip 1.0, linear decay to 0, dynamic-loss-scale
    # fp16, ModelArguments' dropout 0.0, features 384/128/64
    for v in (v1, v2):
        assert (v.weight_decay, v.max_grad_norm, v.end_learning_rate, v.learning_rate_decay_power, v.precision,
                v.initial_loss_scale, v.hidden_dropout_prob, v.attention_probs_dropout_prob, v.seed) == (
            0.0, 1.0, 0.0, 1.0, "mixed_float16", 2.0**15, 0.0, 0.0, 42)
        assert (v.max_seq_length, v.doc_stride, v.max_query_length, v.gradient_accumulation_steps) == (384, 128, 64, 1)
    assert v1.skip_xla and v2.skip_xla and (v1.squad_version, v2.squad_version) == ("squadv1", "squadv2")
    assert v1.train_file.endswith("train-v1.1.json") and v2.predict_file.endswith("dev-v2.0.json")
    # the official files' published sha256 (as listed by TFDS and ParlAI), checked when downloaded
    assert (v1.train_file_sha256, v1.predict_file_sha256, v2.train_file_sha256, v2.predict_file_sha256) == (
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
        "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8")


@pytest.mark.parametrize("name", ["data.yaml", "phase1.yaml", "phase2.yaml"])
def test_packed_variant_is_the_reference_on_packed_rows(name, workdir):
    """params/sagemaker-packed = params/sagemaker with packing on and, for training, fewer rows per step
    (a packed row holds several pairs); everything else — schedule, model, data settings — the same."""
    load = lambda d, n=name: yaml.safe_load((REPO / "params" / d / n).read_text())  # noqa: E731
    ref, packed = load("sagemaker"), load("sagemaker-packed")
    differ = {k for k in ref.keys() | packed.keys() if ref.get(k) != packed.get(k)}
    if name == "data.yaml":
        assert differ == {"experiment", "pack_sequences", "max_pairs_per_row", "dynamic_masking", "phases",
                          "s3_data_uri"}
        # each variant's data job writes where its own training params read
        assert packed["s3_data_uri"] == ref["s3_data_uri"].replace("/data", "/data-packed")
        assert load("sagemaker-packed", "phase1.yaml")["data_dir"] == packed["s3_data_uri"] + "/phase1"
        assert packed["pack_sequences"] and packed["max_pairs_per_row"] == 3 and not packed["dynamic_masking"]
        assert [{k: v for k, v in p.items() if k != "max_pairs_per_row"} for p in packed["phases"]] == ref["phases"]
        cfg = nb.parameters("data", packed).cfg
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


@pytest.mark.parametrize("change, message", [
    ({"total_stepz": 10}, "phase1 parameters: unknown key 'total_stepz'"),
    ({"total_steps": "many"}, "phase1 parameters: key 'total_steps': Input should be a valid integer, "
                              "unable to parse string as an integer (got 'many')"),
    ({"experiment": ["x"]}, "phase1 parameters: key 'experiment': Input should be a valid string (got ['x'])"),
    ({"data_dir": "${BERTLIB_NOT_SET_ANYWHERE}/x"},
     "phase1 parameters: key 'data_dir': environment variable BERTLIB_NOT_SET_ANYWHERE is not set "
     "(used as '${BERTLIB_NOT_SET_ANYWHERE}/x')"),
])
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

    ns = {"a": 1, "b": None, "os": os, "f": lambda: 0, "In": [], "Out": {}, "_": 3, "get_ipython": print,
          "C": int}
    assert nb.collect(ns) == {"a": 1, "b": None}


def test_sagemaker_settings_checked_at_the_first_cell(workdir, monkeypatch):
    """A SageMaker run without a role stops at validation, not at the launch cell."""
    monkeypatch.delenv("BERTLIB_SAGEMAKER_ROLE")
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)   # the reference's name for it
    values = yaml.safe_load((REPO / "params/sagemaker/phase1.yaml").read_text())
    with pytest.raises(nb.ParamsError) as err:
        nb.parameters("phase1", values)
    assert str(err.value) == ("phase1 parameters: SageMaker launch: no IAM role — set role or "
                              "$BERTLIB_SAGEMAKER_ROLE / $SAGEMAKER_ROLE")
