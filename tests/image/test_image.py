"""The built training image (``make image``): what SageMaker jobs and GPUs will rely on, checked inside it."""

import json
import re
import subprocess
from pathlib import Path


def in_image(image: str, script: str) -> str:
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "bash", image, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_horovod_is_built_with_nccl_and_mpi(image):
    out = in_image(
        image,
        "python -c 'import horovod.tensorflow as h; "
        "print(int(h.nccl_built()), h.mpi_built(), h.gloo_built(), h.cuda_built())' 2>/dev/null",
    )
    nccl, mpi, gloo, cuda = out.split()
    assert int(nccl) == 23007  # NCCL 2.30.7, the AWS image's nvidia-nccl-cu12
    assert (mpi, gloo, cuda) == ("True", "True", "True")


def test_device_code_for_v100_a100_h100(image):
    out = in_image(
        image,
        "cuobjdump --list-elf --list-ptx "
        "$(python -c 'import horovod, os; print(os.path.dirname(horovod.__file__))')"
        "/tensorflow/mpi_lib.cpython-*.so",
    )
    archs = set(re.findall(r"sm_(\d+)\.cubin", out))
    assert {"70", "80", "90"} <= archs, out
    assert "sm_90.ptx" in out  # PTX for the newest, for GPUs after H100


def test_mpi_settings_the_sdk_driver_relies_on(image):
    out = in_image(
        image,
        'command -v mpirun; cat "$(command -v mpirun)"; ompi_info --all --parsable | '
        "grep -E 'rmaps_base_mapping_policy:value|hwloc_base_binding_policy:value'; "
        "echo excludes=$(grep -c _if_exclude /opt/amazon/openmpi/etc/openmpi-mca-params.conf); "
        "ls /root/.ssh",
    )
    lines = out.splitlines()
    assert lines[0] == "/opt/amazon/openmpi/bin/mpirun"
    assert "--allow-run-as-root" in out  # the base image's wrapper
    assert re.search(r"rmaps_base_mapping_policy:value:slot$", out, re.M)
    assert re.search(r"hwloc_base_binding_policy:value:none$", out, re.M)
    # no interface exclusions: the SDK's driver passes btl/oob_tcp_if_include, and Open MPI 4.1 refuses both
    assert "excludes=0" in lines
    assert {"id_rsa", "id_rsa.pub", "authorized_keys"} <= set(lines)


def compat_run(image: str, tmp_path, driver: str | None) -> subprocess.CompletedProcess:
    """The image started as the SageMaker SDK starts a job (ContainerEntrypoint ``/bin/bash -c ...``), with a
    cuda-compat package for drivers up to 575.57.08 mounted where the AWS base has it, and an ``nvidia-smi``
    reporting ``driver`` (None: no GPU)."""
    compat = tmp_path / "compat"
    compat.mkdir(exist_ok=True)
    (compat / "libcuda.so.575.57.08").write_bytes(b"")
    if not (compat / "libcuda.so.1").is_symlink():
        (compat / "libcuda.so.1").symlink_to("libcuda.so.575.57.08")
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho {driver}\n" if driver else "#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{compat}:/usr/local/cuda/compat:ro"]
        + ["-v", f"{smi}:/usr/local/bin/nvidia-smi:ro", "--entrypoint", "/bin/bash", image]
        + ["-c", 'echo "$LD_LIBRARY_PATH" && bash -c \'echo "$LD_LIBRARY_PATH"\''],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cuda_forward_compatibility_runs_before_the_sdks_entrypoint(image, tmp_path):
    """The base's ENTRYPOINT step (scripts/docker/common/start_cuda_compat.sh), applied although the SDK
    replaces the entrypoint: an older driver puts /usr/local/cuda/compat first, for the job and its children."""
    old = compat_run(image, tmp_path, "535.183.01")
    assert old.returncode == 0, old.stderr
    outer, inner = old.stdout.splitlines()
    assert outer.split(":")[0] == "/usr/local/cuda/compat" and inner == outer
    assert outer.count("/usr/local/cuda/compat") == 1  # once, though every bash sources the step
    assert "driver 535.183.01 is older than CUDA's 575.57.08" in old.stderr
    for driver in ("575.57.08", "580.65.06", None):  # as new or newer, or no GPU: unchanged
        new = compat_run(image, tmp_path, driver)
        assert new.returncode == 0 and "/usr/local/cuda/compat" not in new.stdout, (driver, new.stdout)


REPO = Path(__file__).resolve().parents[2]
NCCL_LIB = "nvidia/nccl/lib/libnccl.so.2"
# sha256 of a distribution's RECORD entry for NCCL_LIB, and of the file the venv has at that path
NCCL_FILES = f"""
import base64, hashlib, json, sys
from importlib import metadata
def record(name):
    (entry,) = [f for f in metadata.distribution(name).files if f.as_posix() == "{NCCL_LIB}"]
    return base64.urlsafe_b64decode(entry.hash.value + "==").hex()
shared = metadata.distribution("nvidia-nccl-cu12").locate_file("{NCCL_LIB}")
print(json.dumps({{"cu12": record("nvidia-nccl-cu12"), "cu13": record("nvidia-nccl-cu13"),
                  "shared": hashlib.sha256(open(shared, "rb").read()).hexdigest()}}))
"""


def lock_packages() -> dict[str, str]:
    """name -> version of every package in the committed DLC lock list (container/standin/dlc-lock.txt)."""
    found = {}
    for line in (REPO / "container/standin/dlc-lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split()[0].split("==")
            found[normalize(name)] = version
    return found


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(image: str) -> dict[str, str]:
    out = in_image(image, "python -m pip list --format=json --disable-pip-version-check")
    return {normalize(p["name"]): p["version"] for p in json.loads(out)}


def test_standin_carries_every_package_of_the_dlc_lock(standin_image):
    lock = lock_packages()
    assert len(lock) == 318  # the lock's 319 entries minus the project itself
    have = installed(standin_image)
    wrong = {name: (version, have.get(name)) for name, version in lock.items() if have.get(name) != version}
    assert wrong == {}  # documented: none of the lock's packages is left out (container/standin/Dockerfile)
    record = in_image(standin_image, "cat /opt/standin/lock-install.txt").splitlines()
    assert len(record) == 318
    assert sum("cp312 wheels only" in line for line in record) == 44


def test_base_nccl_file_is_cu13_while_horovod_links_and_loads_cu12(image):
    files = json.loads(in_image(image, f"python - <<'PY'\n{NCCL_FILES}\nPY"))
    assert files["shared"] == files["cu13"] != files["cu12"]  # the stand-in reproduces the AWS image's trap
    mpi_lib = (
        "$(python -c 'import horovod, os; print(os.path.dirname(horovod.__file__))')/tensorflow/mpi_lib.cpython-*.so"
    )
    out = in_image(
        image,
        f"readelf -d {mpi_lib} | grep -o 'NEEDED.*libnccl[^]]*'; ldd {mpi_lib} | grep libnccl; "
        "sha256sum $(readlink -f /opt/bertlib/nccl-cu12/lib/libnccl.so.2); "
        "TF_CPP_MIN_LOG_LEVEL=3 python /opt/bertlib/nccl_cu12.py check /opt/bertlib/nccl-cu12 2>/dev/null",
    )
    needed, resolved, linked, check = out.splitlines()
    assert needed.endswith("[libnccl.so.2")
    assert "=> /opt/bertlib/nccl-cu12/lib/libnccl.so.2" in resolved
    assert linked.split()[0] == files["cu12"]
    assert check.startswith("nccl_cu12.py: Horovod loads ") and f"(sha256 {files['cu12'][:12]}, NCCL 23007)" in check


def test_nccl_check_fails_in_one_line_when_the_cu13_file_is_loaded(image):
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "bash",
            image,
            "-c",
            "cu13=\"$(python -c 'import nvidia.nccl as m; print(list(m.__path__)[0])')/lib\"; "
            'TF_CPP_MIN_LOG_LEVEL=3 LD_LIBRARY_PATH="$cu13:$LD_LIBRARY_PATH" '
            "python /opt/bertlib/nccl_cu12.py check /opt/bertlib/nccl-cu12",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("nccl_cu12.py:")]
    assert len(lines) == 1 and out.stderr.rstrip().endswith(lines[0]), out.stderr[-2000:]
    assert "is nvidia-nccl-cu13 2.28.9's" in lines[0] and "not nvidia-nccl-cu12 2.30.7's" in lines[0]


def test_no_test_tools_in_the_image(image):
    out = in_image(
        image,
        "for m in ruff moto pytest_timeout pytest_randomly xdist importlinter jupytext papermill; do "
        'python -c "import $m" 2>/dev/null && echo "$m importable"; done; '
        "python -c 'import pytest; print(pytest.__version__)'",
    )
    # pytest itself is the base's (the DLC's sagemaker extra has pytest 9.0.3), not requirements.txt's
    assert out.split() == [lock_packages()["pytest"]]


def test_our_layers_change_no_base_package(image, standin_image):
    base, ours = installed(standin_image), installed(image)
    changed = {name: (version, ours.get(name)) for name, version in base.items() if ours.get(name) != version}
    assert changed == {}
    assert {"horovod", "bertlib", "tokenizers", "safetensors"} <= set(ours) - set(base)
