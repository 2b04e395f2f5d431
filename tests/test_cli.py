"""The command line generated from the schemas (bertlib.core.cli_schema): every subcommand's ``--help`` lists
every key of its schema with type, default and description, ``--config`` + ``--key value`` overrides
parse as before, bad input is one line and exit 2, and ``--help`` imports no TensorFlow."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from bertlib.cli import COMMANDS, main
from bertlib.core.config import (
    NOTEBOOK_KEYS,
    AdoptConfig,
    DataConfig,
    PretrainConfig,
    SquadConfig,
    build_config,
    flat_schema,
)

PRETRAIN = {
    "model_size": "tiny",
    "per_gpu_batch_size": 4,
    "max_seq_length": 64,
    "max_predictions_per_seq": 10,
    "learning_rate": 1e-3,
    "total_steps": 10,
    "data_dir": "some/dir",
}
DATA = {"sources": ["a.txt"], "output_dir": "out"}


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def expected_default(field) -> str:
    """The default as the reference writes it: YAML/JSON spelling (null, true, 0.01, [...])."""
    from pydantic_core import to_jsonable_python

    value = to_jsonable_python(field.get_default(call_default_factory=True))
    return (value or "''") if isinstance(value, str) else json.dumps(value)


def help_of(argv, capsys) -> str:
    capsys.readouterr()
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: "), out[:200]
    return out


def entry(help_text: str, name: str, argument: bool = False) -> str:
    """The help lines of option ``--name`` (or argument ``NAME``), whitespace removed."""
    head = rf"^ +{name.upper()} " if argument else rf"^ +(?:-\w, )?--{name}[ ,]"
    m = re.search(head, help_text, re.M)
    assert m, f"--{name} not in the help"
    rest = help_text[m.end() :]
    end = re.search(r"\n(?:  (?:-\w, )?--\w|  [A-Z_]+ |\S|\n)", rest)  # the next entry or section
    return squash(rest[: end.start()] if end else rest)


def check_lists_every_field(help_text: str, model) -> None:
    assert model.model_fields, model
    for name, field in model.model_fields.items():
        extra = (field.json_schema_extra or {}).get("cli", {}) if isinstance(field.json_schema_extra, dict) else {}
        got = entry(help_text, name, extra.get("argument", False))
        if field.is_required():
            assert "[required" in got, (name, got)
        else:
            assert f"[default:{squash(expected_default(field))}" in got, (name, got)
        assert field.description, f"{model.__name__}.{name} has no description"
        assert squash(field.description) in got, (name, got)


@pytest.mark.parametrize(
    "argv, model",
    [
        (["pretrain"], PretrainConfig),
        (["squad"], SquadConfig),
        (["prepare-data"], DataConfig),
        (["adopt-data"], AdoptConfig),
        # bertlib launch: the job's keys and its launch settings (LaunchConfig / DataLaunchConfig)
        (["launch", "pretrain"], flat_schema("pretrain")),
        (["launch", "squad"], flat_schema("squad")),
        (["launch", "prepare-data"], flat_schema("prepare-data")),
    ],
)
def test_help_lists_every_key_of_the_schema(argv, model, capsys):
    out = help_of(argv, capsys)
    check_lists_every_field(out, model)
    assert "--config FILE" in out
    if argv[0] == "launch":
        assert all(f"--{k} " in out for k in NOTEBOOK_KEYS)


def test_help_of_the_other_subcommands(capsys):
    from bertlib.model.checkpoints import _convert_schema
    from bertlib.squad.metrics import _eval_schema

    check_lists_every_field(help_of(["squad-eval"], capsys), _eval_schema())
    check_lists_every_field(help_of(["convert-checkpoint"], capsys), _convert_schema())
    from bertlib.estimate_cli import _estimate_schema

    check_lists_every_field(help_of(["estimate"], capsys), _estimate_schema())
    from bertlib.train.hf_export import _export_schema

    check_lists_every_field(help_of(["export"], capsys), _export_schema())
    from bertlib.params import ReportConfig

    out = help_of(["report"], capsys)
    for name, field in ReportConfig.model_fields.items():
        assert f"[default:{squash(expected_default(field))}" in entry(out, name)


def test_every_subcommand_answers_help(capsys):
    out = help_of([], capsys)
    for name, (_, doc) in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(doc[:20])}", out, re.M), name
    for name in COMMANDS:
        assert help_of([name], capsys).startswith(f"Usage: bertlib {name} ")
    launch = help_of(["launch"], capsys)
    assert all(job in launch for job in ("pretrain", "squad", "prepare-data"))


def test_help_imports_neither_tensorflow_nor_the_other_subcommands(subprocess_env):
    code = (
        "import sys; from bertlib.cli import main; rc = main(['--help']); "
        "assert not any(m in sys.modules for m in ('bertlib.train.pretrain', 'bertlib.launch_cli')); "
        "rc += main(['squad-eval', '--help']) + main(['pretrain', '--help']); "
        "assert 'tensorflow' not in sys.modules, 'TF was imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Usage: bertlib squad-eval [OPTIONS] DATA_FILE PRED_FILE" in r.stdout


def test_config_plus_overrides_parse_as_before(tmp_path):
    from bertlib.core.config import job_command, parse_job_args
    from bertlib.train import pretrain

    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(PRETRAIN))
    cfg = pretrain.parse_args(
        [
            "--config",
            str(p),
            "--total_steps",
            "20",
            "--learning_rate",
            "1e-4",
            "--run-dir",
            "runs/x",
            "--skip_xla=true",
            "--phase",
            "'phase2'",
            "--checkpoint_path",
            "",
        ]
    )
    assert cfg == build_config(
        "pretrain",
        {
            **PRETRAIN,
            "total_steps": 20,
            "learning_rate": 1e-4,
            "run_dir": "runs/x",
            "skip_xla": True,
            "phase": "phase2",
            "checkpoint_path": None,
        },
    )
    d = tmp_path / "d.yaml"
    d.write_text(yaml.safe_dump(DATA))
    phases = [{"name": "p1", "max_seq_length": 64, "max_predictions_per_seq": 10}]
    cfg, args = parse_job_args(
        "prepare-data",
        job_command("prepare-data", progress_flag=True),
        ["--config", str(d), "--phases", json.dumps(phases), "--source_sha256", '{"a": "b"}'],
    )
    assert cfg == build_config("prepare-data", {**DATA, "phases": phases, "source_sha256": {"a": "b"}})
    assert args.extras["no_progress"] is False
    assert pretrain.parse_args(["--help"]) is None


def test_sagemaker_hyperparameters_round_trip(tmp_path):
    """A config sent as SageMaker hyperparameters (bertlib.launch.sagemaker.hyperparameter_value, then the
    hyperparameters.json strings sm_entry turns into --key value) parses back to the same config."""
    from bertlib.launch import sm_entry
    from bertlib.launch.sagemaker import hyperparameter_value
    from bertlib.train import pretrain

    cfg = build_config(
        "pretrain",
        {
            **PRETRAIN,
            "validation_dir": "123",
            "run_dir": "it's: odd",
            "learning_rate": 5e-5,
            "global_batch_size_check": 4,
            "skip_xla": True,
        },
    )
    sent = {k: hyperparameter_value(v) for k, v in cfg.model_dump(mode="json").items() if v is not None}
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in sent.items()}))
    assert pretrain.parse_args(sm_entry.hyperparameter_args([], hp)) == cfg


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["--bogus_key", "1"],
            "(with overrides): unknown key 'bogus_key' (--bogus_key; see `bertlib pretrain --help`)",
        ),
        (["--total_steps"], "command line: --total_steps needs a value"),
        (["stray"], "command line: expected --key value, got 'stray'"),
        (["--total_steps", "many"], "(with overrides): key 'total_steps'"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(PRETRAIN))
    capsys.readouterr()
    assert main(["pretrain", "--config", str(p), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    if "with overrides" in needle:
        assert str(p) in err


def test_launch_and_top_level_usage_errors(capsys):
    assert main(["launch", "pretrain", "--total_steps", "3"]) == 2
    assert "launch: --config FILE is required" in capsys.readouterr().err
    assert main(["launch", "pretrian"]) == 2
    assert "No such command 'pretrian'" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main([]) == 2 and "Commands:" in capsys.readouterr().out


def test_the_python_m_entry_points_answer_help(capsys):
    from bertlib import demo
    from bertlib.squad import smoke

    capsys.readouterr()
    assert demo.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"--{k} " in out for k in ("workdir", "params", "experiment")) and "--quiet " in out
    assert smoke.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert "OUT_DIR TEXT" in out and all(f"--{k} " in out for k in ("source", "max_train", "max_dev", "seed"))


KERAS_IN_A_COMMAND = """
import sys
from bertlib.core.errors import run_guarded
from bertlib.core.lean_imports import KERAS_EXTRAS

def command(argv):
    import keras
    print(sorted(name for name in KERAS_EXTRAS if name in sys.modules))
    print(float(keras.ops.sum(keras.ops.ones((2, 3)))))
    return 0

assert run_guarded(command, []) == 0
import sklearn, pandas, matplotlib.pyplot, IPython
print("imported afterwards:", sklearn.__name__, pandas.__name__, matplotlib.pyplot.__name__, IPython.__name__)
"""


@pytest.mark.slow  # a process importing TensorFlow
def test_keras_in_a_command_skips_its_extras_which_import_afterwards(subprocess_env):
    """Keras imported for the first time inside a command (``run_guarded``) imports none of scikit-learn,
    pandas, pyplot and IPython (all installed here; a plain ``import keras`` imports each,
    bertlib.core.lean_imports), works, and leaves them importable as usual."""
    r = subprocess.run(
        [sys.executable, "-c", KERAS_IN_A_COMMAND],
        capture_output=True,
        text=True,
        env=dict(subprocess_env, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == [
        "[]",
        "6.0",
        "imported afterwards: sklearn pandas matplotlib.pyplot IPython",
    ]
