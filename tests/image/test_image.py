"""The built training image (``make image``): what SageMaker jobs and GPUs will rely on, checked inside it."""

import re
import subprocess


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
