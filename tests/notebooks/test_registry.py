"""bertlib.registry: record / lookup / "auto" resolution, dry-run guard, atomic writes."""

import json

import pytest

from bertlib.core.errors import ConfigError
from bertlib.registry import Registry, registry_path


def test_record_and_lookup(tmp_path):
    reg = Registry.for_experiment("exp", tmp_path)
    assert reg.path == tmp_path / "exp" / "registry.json"
    assert reg.steps == {}
    reg.record("phase1", run_dir=tmp_path / "p1", export_dir=str(tmp_path / "p1" / "export"), wall_time_s=12.5)
    data = json.loads(reg.path.read_text())
    assert data["format"] == "bertlib-registry/1" and data["experiment"] == "exp"
    assert data["steps"]["phase1"]["run_dir"] == str(tmp_path / "p1")  # Paths stored as strings
    assert reg.lookup("phase1.wall_time_s") == 12.5
    # a second record of the same step replaces the entry as a whole
    reg.record("phase1", run_dir="other")
    assert "export_dir" not in reg.get("phase1")
    assert [p.name for p in reg.path.parent.iterdir()] == ["registry.json"]  # no temp files left


def test_lookup_errors_name_the_notebook(tmp_path):
    reg = Registry(tmp_path / "registry.json")
    with pytest.raises(ConfigError, match=r"no 'phase1' entry \(run notebooks/02_phase1 first\)"):
        reg.lookup("phase1.export_dir")
    reg.record("phase1", run_dir="x")
    with pytest.raises(ConfigError, match="entry 'phase1' has no 'export_dir'"):
        reg.lookup("phase1.export_dir")


def test_resolve_auto_only(tmp_path):
    reg = Registry(tmp_path / "registry.json")
    reg.record("data", datasets={"phase2": "/d/phase2"})
    reg.record("phase1", export_dir="/r/phase1/export")
    values = {"data_dir": "auto", "checkpoint_path": "/explicit", "seed": 1}
    out = reg.resolve(values, {"data_dir": "data.datasets.phase2", "checkpoint_path": "phase1.export_dir"})
    assert out == {"data_dir": "/d/phase2", "checkpoint_path": "/explicit", "seed": 1}
    assert values["data_dir"] == "auto"  # input untouched


def test_dry_run_entries_only_serve_dry_runs(tmp_path):
    reg = Registry(tmp_path / "registry.json")
    reg.record("phase1", dry_run=True, export_dir="s3://b/job/output/model.tar.gz")
    with pytest.raises(ConfigError, match="from a dry run"):
        reg.resolve({"checkpoint_path": "auto"}, {"checkpoint_path": "phase1.export_dir"})
    out = reg.resolve({"checkpoint_path": "auto"}, {"checkpoint_path": "phase1.export_dir"}, allow_dry_run=True)
    assert out["checkpoint_path"] == "s3://b/job/output/model.tar.gz"


def test_bad_files_and_names(tmp_path):
    p = tmp_path / "registry.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="registry.json: not valid JSON"):
        Registry(p).load()
    p.write_text('{"something": "else"}')
    with pytest.raises(ConfigError, match="not a bertlib run registry"):
        Registry(p).load()
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ConfigError, match="plain folder name"):
            registry_path(bad)
