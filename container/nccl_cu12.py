"""The CUDA 12 NCCL that Horovod is built against and loads, checked by file (sha256), not only by version.

usage: python nccl_cu12.py prepare HOME | check HOME

The base image's venv holds nvidia-nccl-cu12 (TensorFlow's NCCL) and, through its sagemaker extra
(sagemaker-serve -> torch), nvidia-nccl-cu13, whose wheel writes the same nvidia/nccl/lib/libnccl.so.2.
The one installed last owns the file. The nvidia-nccl-cu12 distribution's RECORD says what it should be.

  prepare HOME  makes HOME (lib/libnccl.so.2, include/nccl.h) the nvidia-nccl-cu12 NCCL: a link to the
                wheel's nvidia/nccl if its libnccl.so.2 matches the RECORD; else (one line says which
                distribution's file is there now) the same nvidia-nccl-cu12 version installed with
                `pip install --no-deps --target HOME.wheel`, whose file must match the RECORD. Prints HOME
                on stdout, the line on stderr.
  check HOME    imports tensorflow, then horovod.tensorflow (its mpi_lib links libnccl.so.2), and checks
                that HOME/lib/libnccl.so.2 and the one libnccl.so.2 mapped into the process
                (/proc/self/maps) both have the RECORD's sha256, and that its ncclGetVersion() is the
                nvidia-nccl-cu12 version (2.30.7 -> 23007). Any failure: one line, exit 1.
Standard library only; runs with the image's Python.
"""

import base64
import ctypes
import hashlib
import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

DIST = "nvidia-nccl-cu12"
LIB = "nvidia/nccl/lib/libnccl.so.2"


def fail(message: str) -> None:
    sys.exit(f"nccl_cu12.py: {message}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded(dist: metadata.Distribution) -> str | None:
    """The hex sha256 the distribution's RECORD gives for LIB (None if it has no such file)."""
    for entry in dist.files or []:
        if entry.as_posix() == LIB and entry.hash is not None:
            return base64.urlsafe_b64decode(entry.hash.value + "==").hex()
    return None


def cu12() -> tuple[metadata.Distribution, str]:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        fail(f"{DIST} is not installed in {sys.prefix}")
    expected = recorded(dist)
    if expected is None:
        fail(f"{DIST} {dist.version}'s RECORD has no sha256 for {LIB}")
    return dist, expected


def owner(path: Path, digest: str) -> str:
    """Which installed distribution's RECORD matches the file at path."""
    for dist in metadata.distributions():
        if recorded(dist) == digest:
            return f"{dist.metadata['Name']} {dist.version}"
    return "no installed distribution"


def prepare(home: Path) -> None:
    dist, expected = cu12()
    wheel_file = Path(dist.locate_file(LIB))
    found = sha256(wheel_file) if wheel_file.exists() else "missing"
    if found == expected:
        source = wheel_file.parents[1]
    else:
        print(
            f"nccl_cu12.py: {wheel_file} is {owner(wheel_file, found)}'s (sha256 {found[:12]}), not {DIST}"
            f" {dist.version}'s ({expected[:12]}): installing {DIST}=={dist.version} into {home}.wheel",
            file=sys.stderr,
            flush=True,
        )
        target = Path(f"{home}.wheel")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-cache-dir",
                "--no-deps",
                "--target",
                str(target),
                f"{DIST}=={dist.version}",
            ],
            check=True,
        )
        source = target / "nvidia" / "nccl"
        found = sha256(source / "lib" / "libnccl.so.2")
        if found != expected:
            fail(f"{source}/lib/libnccl.so.2 has sha256 {found[:12]}, {DIST} {dist.version}'s RECORD {expected[:12]}")
    home.parent.mkdir(parents=True, exist_ok=True)
    if home.is_symlink():
        home.unlink()
    home.symlink_to(source, target_is_directory=True)
    print(home)


def check(home: Path) -> None:
    dist, expected = cu12()
    linked = home / "lib" / "libnccl.so.2"
    if not linked.exists() or sha256(linked) != expected:
        fail(f"{linked} (Horovod's link-time NCCL) is not {DIST} {dist.version}'s libnccl.so.2")
    # TensorFlow first, as in a job; then Horovod, whose mpi_lib needs libnccl.so.2
    for module in ("tensorflow", "horovod.tensorflow"):
        importlib.import_module(module)

    maps = Path("/proc/self/maps").read_text().splitlines()
    mapped = sorted({line.split()[-1] for line in maps if line.split()[-1].endswith("/libnccl.so.2")})
    if len(mapped) != 1:
        fail(f"{len(mapped)} libnccl.so.2 mapped after importing horovod.tensorflow, want 1: {mapped}")
    digest = sha256(Path(mapped[0]))
    if digest != expected:
        fail(
            f"loaded {mapped[0]} is {owner(Path(mapped[0]), digest)}'s (sha256 {digest[:12]}), not {DIST}"
            f" {dist.version}'s ({expected[:12]}) that Horovod was built against"
        )
    version = ctypes.c_int()
    ctypes.CDLL(mapped[0]).ncclGetVersion(ctypes.byref(version))
    major, minor, patch = (int(x) for x in dist.version.split(".")[:3])
    if version.value != major * 10000 + minor * 100 + patch:
        fail(f"loaded {mapped[0]} reports NCCL {version.value}, {DIST} is {dist.version}")
    print(
        f"nccl_cu12.py: Horovod loads {mapped[0]} = {DIST} {dist.version} (sha256 {digest[:12]}, NCCL {version.value})"
    )


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "check"):
        sys.exit(__doc__.split("\n\n")[1])
    {"prepare": prepare, "check": check}[sys.argv[1]](Path(sys.argv[2]))


if __name__ == "__main__":
    main()
