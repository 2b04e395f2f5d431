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
