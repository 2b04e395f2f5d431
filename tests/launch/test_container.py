"""The training image's recipe, checked without a Docker engine (``make test``; the image itself is
built and run by ``make test-image``, tests/image).

The Dockerfile is parsed into instructions; the checks are that it starts FROM the AWS TensorFlow 2.21
SageMaker training image, builds Horovod with NCCL through the very script the Makefile (and so CI)
runs, sets up what the SDK v3 MPI driver needs without what breaks it, and that every file it COPYs is
in the build context that container/context.sh assembles.
"""

import importlib.util
import re
import shlex
import subprocess

import pytest


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile → [(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    assert not current, "dangling line continuation"
    return out


@pytest.fixture(scope="module")
def dockerfile(repo_root):
    return instructions((repo_root / "container" / "Dockerfile").read_text())


def test_base_image_is_the_tf_2_21_sagemaker_training_image(dockerfile):
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kind, a in dockerfile if kind == "ARG" and "=" in a}
    froms = [a for kind, a in dockerfile if kind == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    base = args["BASE_IMAGE"].replace("${DLC_REGISTRY}", args["DLC_REGISTRY"])
    assert re.fullmatch(
        r"763104351884\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/tensorflow-training:"
        r"2\.21(\.0)?-gpu-py3\d+-cu\d+-[a-z0-9.]+-sagemaker",
        base,
    ), base


def test_horovod_is_built_by_the_script_the_makefile_runs(dockerfile, repo_root):
    runs = [a for kind, a in dockerfile if kind == "RUN"]
    hvd = [r for r in runs if "install_horovod.sh" in r]
    assert len(hvd) == 1 and ("ARG", "HOROVOD_GPU_OPERATIONS=NCCL") in dockerfile  # NCCL unless told otherwise
    script_in_image = next(w for w in shlex.split(hvd[0]) if w.endswith("install_horovod.sh"))
    copied = {
        f"{shlex.split(a)[-1].rstrip('/')}/{src.rsplit('/', 1)[-1]}": src
        for kind, a in dockerfile
        if kind == "COPY"
        for src in shlex.split(a)[:-1]
    }
    assert copied[script_in_image] == "container/install_horovod.sh"
    assert (repo_root / "container" / "install_horovod.sh").is_file()
    makefile = (repo_root / "Makefile").read_text()
    assert re.search(r"^\t.*bash container/install_horovod\.sh", makefile, re.M)
    # the script enables MPI when mpirun exists (it does in the image) and runs the check-build
    script = (repo_root / "container" / "install_horovod.sh").read_text()
    assert "HOROVOD_WITH_MPI=1" in script and "horovodrun --check-build" in script
    # the NCCL Horovod loads is checked by file at the end of the build
    assert any("nccl_cu12.py check" in r for r in runs)


def test_mpi_driver_prerequisites(dockerfile, repo_root):
    runs = " ".join(a for kind, a in dockerfile if kind == "RUN")
    packages = (repo_root / "container" / "system_packages.sh").read_text()
    assert "system_packages.sh" in runs and "openssh-server" in packages and "/usr/sbin/sshd" in packages
    assert "ssh-keygen -A" in runs and "authorized_keys" in runs
    # the AWS base already has /root/.ssh/id_rsa: an unguarded ssh-keygen would prompt and fail the build
    assert "[ -f /root/.ssh/id_rsa ] || ssh-keygen" in runs
    assert "hwloc_base_binding_policy = none" in runs and "rmaps_base_mapping_policy = slot" in runs
    # the SDK's driver passes btl/oob_tcp_if_include; Open MPI 4.1 refuses an _if_exclude beside them
    assert "_if_exclude" not in runs
    # what the SDK's MPI driver imports comes from the base ([LOCK] has both); the build checks they import
    assert re.search(r"python -c \"import [^\"]*\bmpi4py\b[^\"]*\bparamiko\b", runs)


def test_job_packages_are_the_jobs_and_pinned(repo_root):
    """The image's package set (pyproject's dependencies + `job` extra, container/install_requirements.py):
    every name pinned in requirements.txt, what the jobs import in it, no notebook, launch or test tool."""
    spec = importlib.util.spec_from_file_location(
        "install_requirements", repo_root / "container" / "install_requirements.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = set(module.job_names(repo_root / "pyproject.toml"))
    assert names <= set(module.pins(repo_root / "requirements.txt"))
    assert {"tokenizers", "safetensors", "mwparserfromhell", "blingfire", "google-crc32c", "tensorboard"} <= names
    tools = {"pytest", "ruff", "moto", "import-linter", "pytest-xdist", "papermill", "jupytext", "pandas", "matplotlib"}
    assert not names & tools and not names & {"sagemaker", "sagemaker-train", "tensorflow-cpu"}


def test_build_context_holds_every_copied_file(dockerfile, repo_root, tmp_path):
    """context.sh (used by build_and_push.sh and make image) puts every COPY source into the context."""
    subprocess.run(["bash", str(repo_root / "container" / "context.sh"), str(tmp_path)], check=True)
    for kind, args in dockerfile:
        if kind == "COPY":
            for src in shlex.split(args)[:-1]:
                assert (tmp_path / src).exists(), f"{src} is not in the build context"
    assert not list(tmp_path.rglob("__pycache__"))
    script = (repo_root / "container" / "build_and_push.sh").read_text()
    subprocess.run(["bash", "-n", str(repo_root / "container" / "build_and_push.sh")], check=True)
    for step in (
        "context.sh",
        "aws ecr get-login-password",
        "aws ecr create-repository",
        "docker build",
        "docker tag",
        "docker push",
    ):
        assert step in script


# aws/deep-learning-containers docs/reference/region_availability.md, "Deep Learning Containers" table
DLC_ACCOUNTS = {
    "us-east-1": "763104351884",
    "eu-west-1": "763104351884",
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "eu-south-1": "692866216735",
    "me-central-1": "914824155844",
    "il-central-1": "780543022126",
}


@pytest.mark.parametrize("region", sorted(DLC_ACCOUNTS))
def test_dlc_registry_is_the_regions_account(repo_root, region):
    out = subprocess.run(
        ["bash", str(repo_root / "container" / "dlc_registry.sh"), region], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"{DLC_ACCOUNTS[region]}.dkr.ecr.{region}.amazonaws.com"


def test_dlc_registry_china_and_unknown_region(repo_root):
    script = str(repo_root / "container" / "dlc_registry.sh")
    out = subprocess.run(["bash", script, "cn-northwest-1"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "727897471807.dkr.ecr.cn-northwest-1.amazonaws.com.cn"
    bad = subprocess.run(["bash", script, "mars-north-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'mars-north-1'" in bad.stderr


FAKE_TOOL = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$TOOL_LOG"
case "$*" in
  "sts get-caller-identity"*) echo 111122223333 ;;
  "ecr get-login-password"*) echo password ;;
  "ecr describe-repositories"*) exit 254 ;;
  "login "*) cat >/dev/null ;;
esac
exit 0
"""


def test_build_and_push_builds_from_the_regions_dlc_registry(repo_root, tmp_path):
    """build_and_push.sh run with `aws` and `docker` replaced by recorders: in af-south-1 it logs in to that
    region's DLC account, builds FROM it and pushes to the caller's registry of the same region."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("aws", "docker"):
        (bin_dir / tool).write_text(FAKE_TOOL)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "AWS_REGION": "af-south-1", "TOOL_LOG": str(log), "HOME": str(tmp_path)}
    subprocess.run(
        ["bash", str(repo_root / "container" / "build_and_push.sh"), "t1"], env=env, check=True, capture_output=True
    )
    calls = log.read_text().splitlines()
    logins = [c.split()[-1] for c in calls if c.startswith("docker login")]
    assert logins == ["626614931356.dkr.ecr.af-south-1.amazonaws.com", "111122223333.dkr.ecr.af-south-1.amazonaws.com"]
    build = next(c for c in calls if c.startswith("docker build"))
    assert "--build-arg DLC_REGISTRY=626614931356.dkr.ecr.af-south-1.amazonaws.com" in build
    assert calls[-1] == "docker push 111122223333.dkr.ecr.af-south-1.amazonaws.com/bertlib-training:t1"
