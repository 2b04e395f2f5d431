"""The package as pip installs it: pyproject's ranges hold the lock, and ``pip install
"bertlib[sagemaker]"`` alone (no TensorFlow, no Horovod, no make) runs the SageMaker dry run of
notebooks/02_phase1 in a fresh Python, as in a SageMaker Studio kernel."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
#: what bertlib.launch.sagemaker.DRY_RUN_PLACEHOLDERS shows for an unset BERTLIB_IMAGE_URI
IMAGE_PLACEHOLDER = "000000000000.dkr.ecr.us-east-1.amazonaws.com/set-bertlib-image-uri:latest"


def _locked() -> dict[str, str]:
    """requirements.txt as ``{canonical name: pinned version}``."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt must pin exactly: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_lock_is_inside_the_declared_ranges():
    """Every requirement of pyproject's dependencies and extras is pinned in requirements.txt (what
    ``make`` installs and the tests run on), at a version its range allows."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]
    pins = _locked()
    for line in declared:
        req = Requirement(line)
        if canonicalize_name(req.name) == "bertlib":  # an extra that includes others
            continue
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None, f"{line}: not pinned in requirements.txt"
        assert req.specifier.contains(pinned, prereleases=True), f"{line}: requirements.txt pins {pinned}"


def _run(cmd: list, env: dict, cwd: Path, timeout: float) -> str:
    """Run ``cmd`` in ``cwd`` (not the repo, whose bertlib/ would shadow the installed one); on failure
    show its output (the installer's message, papermill's traceback)."""
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[0]} ... exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _text_of(nb) -> str:
    """The notebook's printed and displayed output as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            parts.append(out.get("text", "") + data.get("text/html", "") + data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_sagemaker_extra_runs_the_phase1_dry_run(tmp_path):
    """A fresh venv stands for a Studio kernel: a Python that has ipykernel (every Jupyter kernel
    does; papermill needs it to start the notebook's ``python3`` kernel), into which the user runs
    ``pip install "bertlib[sagemaker]"`` and nothing else. papermill (in the extra) then runs
    notebooks/02_phase1 on params/sagemaker/phase1.yaml with ``dry_run: True``: the rendered notebook
    shows the CreateTrainingJob request for 8 × ml.p3dn.24xlarge. Account settings are dummies, the
    image is left unset (the request shows its placeholder), and no AWS request is sent (the dry run
    refuses them).

    The installs are made with ``uv pip install``: the same requirements from the same package index
    (PyPI) resolved to the same versions, in 4 s where pip takes 44 s here; what this test proves is in
    the package's metadata (the extra names everything the dry run imports), not in the installer.
    The versions are held to those of the venv running this test (``pip freeze`` as constraints, which
    add no package): the extra decides what is installed, not the day's releases, and the resolver
    skips backtracking through aiobotocore releases for sagemaker-mlops's unpinned s3fs. bertlib is
    installed from a copy of its sources: building a local directory writes into it (build/,
    bertlib.egg-info), which must not touch the work tree.
    """
    src = tmp_path / "src"
    shutil.copytree(
        REPO / "bertlib", src / "bertlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", venv], dict(os.environ), work, timeout=120)
    bin_dir = venv / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "BERTLIB_", "SAGEMAKER_", "JUPYTER_")) and k not in ("PYTHONPATH", "IPYTHONDIR")
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        VIRTUAL_ENV=str(venv),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], dict(os.environ), work, timeout=120)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{line}\n" for line in frozen.splitlines() if " @ " not in line))
    uv = Path(sys.executable).parent / "uv"
    install = [uv, "pip", "install", "--quiet", "--python", bin_dir / "python", "--constraint", constraints]
    _run(install + ["ipykernel"], env, work, timeout=300)  # the kernel
    _run(install + [f"{src}[sagemaker]"], env, work, timeout=600)  # the user's one command
    probe = (
        "import bertlib, importlib.util as u; print(bertlib.__file__); "
        "print(*[m for m in ('tensorflow', 'keras', 'horovod', 'tokenizers') if u.find_spec(m)])"
    )
    where, heavy = _run([bin_dir / "python", "-c", probe], env, work, timeout=60).splitlines()
    assert Path(where).is_relative_to(venv) and heavy == "", (where, heavy)

    # a Studio user's account settings (dummies) without the training image; no credentials at all
    env.update(
        BERTLIB_S3_PREFIX="s3://bertlib-install-test/bertlib",
        AWS_DEFAULT_REGION="us-west-2",
        BERTLIB_SAGEMAKER_ROLE="arn:aws:iam::123456789012:role/bertlib-install-test",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    out = tmp_path / "02_phase1.out.ipynb"
    _run(
        [
            bin_dir / "papermill",
            REPO / "notebooks/02_phase1.ipynb",
            out,
            "-f",
            REPO / "params/sagemaker/phase1.yaml",
            "-p",
            "dry_run",
            "True",
            "-k",
            "python3",
            "--cwd",
            work,
            "--no-progress-bar",
        ],
        env,
        work,
        timeout=300,
    )

    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    text = _text_of(nb)
    assert "8 × ml.p3dn.24xlarge (64 devices)" in text  # the estimate table (pandas)
    assert "dry run — nothing was sent to AWS" in text
    assert "dry run: BERTLIB_IMAGE_URI not set" in text
    # the canary's request (its cell runs before the launch), then phase 1's
    canary, request = (
        json.loads(part.split("\n}\n", 1)[0] + "\n}") for part in text.split("CreateTrainingJob request:\n")[1:]
    )
    assert canary["CheckpointConfig"]["S3Uri"] == "s3://bertlib-install-test/bertlib/checkpoints/phase1-canary"
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE_PLACEHOLDER
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/bertlib-install-test"
    assert request["ResourceConfig"]["InstanceType"] == "ml.p3dn.24xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 8
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["train"] == "s3://bertlib-install-test/bertlib/data/phase1"
    assert {"code", "sm_drivers"} <= set(channels)  # bertlib's code and the SDK's MPI driver
    assert "sm_drivers/sm_train.sh" in request["AlgorithmSpecification"]["ContainerArguments"][-1]
    assert request["HyperParameters"]["total_steps"] == "14064"
    assert request["HyperParameters"]["per_gpu_batch_size"] == "128"
    assert request["HyperParameters"]["precision"] == "mixed_float16"
    assert request["CheckpointConfig"]["S3Uri"] == "s3://bertlib-install-test/bertlib/checkpoints/phase1"
    registry = json.loads((work / "runs/reference/registry.json").read_text())
    assert registry["steps"]["phase1"]["dry_run"] is True
