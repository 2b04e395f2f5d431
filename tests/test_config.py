"""Config validation and the CLI contract: bad input → one line naming the file, exit 2, no TF import."""

import subprocess
import sys
import time

import pytest

from bertlib.core.config import (
    DataLaunchConfig,
    LaunchConfig,
    PretrainConfig,
    build_launched,
    global_batch,
    load_config,
    load_launched,
    parse_overrides,
)
from bertlib.core.errors import ConfigError

PRETRAIN = {
    "model_size": "tiny",
    "per_gpu_batch_size": 4,
    "max_seq_length": 64,
    "max_predictions_per_seq": 10,
    "learning_rate": 1e-3,
    "total_steps": 10,
    "data_dir": "some/dir",
}


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_overrides_are_parsed_as_yaml_scalars():
    assert parse_overrides(
        ["--total_steps", "10", "--skip_xla", "true", "--learning_rate=5e-5", "--run-dir", "runs/x"]
    ) == {"total_steps": 10, "skip_xla": True, "learning_rate": 5e-5, "run_dir": "runs/x"}
    assert parse_overrides(["--job_name", "'123'", "--x", "1e3"]) == {"job_name": "123", "x": 1000.0}
    with pytest.raises(ConfigError, match="--total_steps needs a value"):
        parse_overrides(["--total_steps"])
    # with a schema: its generated command line (bertlib.core.cli_schema), which refuses other keys
    from bertlib.core.config import PretrainConfig

    assert parse_overrides(["--total-steps=3"], PretrainConfig) == {"total_steps": 3}
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'totl_steps' \(--totl_steps\)$"):
        parse_overrides(["--totl_steps", "1"], PretrainConfig)


def test_valid_config_and_override(tmp_path):
    import yaml

    p = write(tmp_path, yaml.safe_dump(PRETRAIN))
    cfg = load_config("pretrain", p, ["--total_steps", "20"])
    assert cfg.total_steps == 20 and cfg.optimizer == "lamb" and cfg.learning_rate_decay_power == 0.5
    assert global_batch(cfg, 1) == 4 and global_batch(cfg, 3) == 12


def test_one_flat_file_splits_into_launch_and_job(tmp_path):
    """A params file stays flat; `bertlib launch` splits it by schema, an entry point refuses launch keys."""
    import yaml

    p = write(tmp_path, yaml.safe_dump({**PRETRAIN, "num_processes": 2, "gradient_accumulation_steps": 3}))
    launched = load_launched("pretrain", p, {"threads_per_process": 1})
    assert type(launched.launch) is LaunchConfig and type(launched.job) is PretrainConfig
    assert launched.launch.num_processes == 2 and launched.launch.threads_per_process == 1
    assert launched.job.gradient_accumulation_steps == 3 and "num_processes" not in launched.job.model_fields
    assert launched.world_size == 2 and launched.global_batch_size == 4 * 2 * 3
    assert launched.values()["num_processes"] == 2 and launched.values()["total_steps"] == 10
    assert launched.updated({"num_processes": 4}).global_batch_size == 48
    with pytest.raises(ConfigError, match=r"p\.yaml: unknown key 'num_processes'$"):
        load_config("pretrain", p)
    with pytest.raises(ConfigError, match=r"^x: unknown key 'totl_steps'$"):
        build_launched("pretrain", {**PRETRAIN, "totl_steps": 1}, "x")
    data = build_launched("prepare-data", {"sources": ["a.txt"], "output_dir": "o", "backend": "sagemaker"})
    assert type(data.launch) is DataLaunchConfig and data.launch.instance_type == "ml.m5.24xlarge"
    assert data.world_size == 1
    with pytest.raises(ConfigError, match="processes_per_host"):
        build_launched("prepare-data", {"sources": ["a.txt"], "output_dir": "o", "processes_per_host": 2})


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"totl_steps": 5}, "unknown key 'totl_steps'"),
        ({"total_steps": "many"}, "key 'total_steps'"),
        ({"optimizer": "sgd"}, "key 'optimizer'"),
        ({"warmup_steps": 50}, "warmup_steps (50) > total_steps (10)"),
        (
            {"num_processes": 2, "gradient_accumulation_steps": 2, "global_batch_size_check": 12},
            "per_gpu_batch_size 4 × 2 processes × 2 accumulation = 16, not global_batch_size_check=12",
        ),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, extra, needle):
    import yaml

    p = write(tmp_path, yaml.safe_dump({**PRETRAIN, **extra}))
    with pytest.raises(ConfigError) as e:
        load_launched("pretrain", p)
    msg = str(e.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("pretrain", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("pretrain", write(tmp_path, "a: [1, 2"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config("pretrain", write(tmp_path, "- 1\n- 2\n"))


def test_reference_schedule_global_batch_matches_the_paper():
    """Phase 1 of the reference: 128 per GPU × 64 GPUs (8 × p3dn) × 4 accumulation = 32768."""
    cfg = load_launched(
        "pretrain",
        None,
        {
            **PRETRAIN,
            "backend": "sagemaker",
            "instance_count": 8,
            "instance_type": "ml.p3dn.24xlarge",
            "per_gpu_batch_size": 128,
            "gradient_accumulation_steps": 4,
            "global_batch_size_check": 32768,
        },
    )
    assert cfg.world_size == 64 and cfg.global_batch_size == 32768


def test_cli_bad_config_is_one_line_exit_2_without_tensorflow(tmp_path, subprocess_env):
    p = write(tmp_path, "model_size: tiny\nbogus_key: 1\n")
    code = (
        "import sys, bertlib.cli as c; rc = c.main(['pretrain', '--config', sys.argv[1]]); "
        "assert 'tensorflow' not in sys.modules, 'TF was imported'; sys.exit(rc)"
    )
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, env=subprocess_env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "bogus_key" in lines[0]
    assert time.monotonic() - t0 < 60


def test_cli_unknown_subcommand(subprocess_env):
    r = subprocess.run(
        [sys.executable, "-m", "bertlib", "pretrian"], capture_output=True, text=True, env=subprocess_env
    )
    assert r.returncode == 2 and "unknown subcommand 'pretrian'" in r.stderr


def test_a_notebook_params_file_given_to_an_entry_point_names_the_command_that_runs_it(repo_root):
    path = repo_root / "params/local/phase1.yaml"
    with pytest.raises(
        ConfigError,
        match=rf"^{path}: a notebook params file \(it sets 'experiment'\): run it with "
        rf"`bertlib launch pretrain --config {path}`",
    ):
        load_config("pretrain", path, ["--total_steps", "3"])
    with pytest.raises(ConfigError, match=r"`papermill notebooks/01_data_prep.ipynb OUT.ipynb -f "):
        load_config("prepare-data", repo_root / "params/local/data.yaml")
