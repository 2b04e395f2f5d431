"""Write container/standin/dlc-lock.txt from the AWS TensorFlow 2.21 DLC's uv.lock.

usage: python container/standin/lock_to_requirements.py UV_LOCK DLC_COMMIT > container/standin/dlc-lock.txt

UV_LOCK is aws/deep-learning-containers' docker/tensorflow/2.21/cuda/uv.lock at DLC_COMMIT, e.g.
  git -C /work/.mirror/aws+deep-learning-containers/repo show HEAD:docker/tensorflow/2.21/cuda/uv.lock

The DLC's Dockerfile.cuda installs the lock in two steps, and so does the stand-in:
  default    builder-base `uv sync --frozen --no-dev --no-install-project --inexact`
  sagemaker  sagemaker stage `uv sync --frozen --no-dev --extra sagemaker --no-install-project --inexact`
             (only the packages the first step did not install)
Each output line is `name==version` in its group, with `--hash=sha256:...` for every artifact of the lock
that a CPython 3.11 manylinux x86_64 interpreter can install (pure and abi3 wheels; the sdist when there is
such a wheel or no wheel at all). The lock is for Python 3.12: a package whose lock has only cp312 wheels
gets no hash (the stand-in then installs the cp311 wheel of the same version from PyPI) and a
`# cp312 wheels only` note.
"""

import sys

import tomllib
from packaging.markers import Marker
from packaging.utils import canonicalize_name, parse_wheel_filename

# The DLC's target: linux x86_64 CPython 3.12 ([tool.uv] environments of its pyproject.toml).
TARGET = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "os_name": "posix",
    "python_version": "3.12",
    "python_full_version": "3.12.0",
}


def applies(dep: dict, extra: str = "") -> bool:
    marker = dep.get("marker")
    return marker is None or Marker(marker).evaluate({**TARGET, "extra": extra})


def closure(packages: dict, roots: list[dict]) -> set[str]:
    """Names of every package reachable from roots (dependency entries, with their extras)."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(d["name"]), e) for d in roots if applies(d) for e in ["", *d.get("extra", [])]]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        pkg = packages[name]
        deps = pkg.get("optional-dependencies", {}).get(extra, []) if extra else pkg.get("dependencies", [])
        for d in deps:
            if applies(d, extra):
                todo += [(canonicalize_name(d["name"]), e) for e in ["", *d.get("extra", [])]]
    return {name for name, _ in seen}


def usable_on_cp311(filename: str) -> bool:
    _, _, _, tags = parse_wheel_filename(filename)
    for tag in tags:
        if tag.platform != "any" and not tag.platform.endswith("x86_64"):
            continue
        if tag.abi == "none" and (tag.interpreter in {"py3", "py311", "cp311"}):
            return True
        if tag.abi == "abi3" and tag.interpreter.startswith("cp3") and int(tag.interpreter[3:]) <= 11:
            return True
        if tag.abi == "cp311":
            return True
    return False


def line(pkg: dict) -> str:
    wheels = pkg.get("wheels", [])
    hashes = [w["hash"] for w in wheels if usable_on_cp311(w["url"].rsplit("/", 1)[1])]
    if "sdist" in pkg and (hashes or not wheels):  # not as a fallback that would build a cp312-only one
        hashes.append(pkg["sdist"]["hash"])
    text = f"{pkg['name']}=={pkg['version']}"
    if hashes:
        return text + "".join(f" --hash={h}" for h in hashes)
    return text + "  # cp312 wheels only"


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    path, commit = sys.argv[1:]
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    packages = {canonicalize_name(p["name"]): p for p in lock["package"]}
    (project,) = [p for p in lock["package"] if "virtual" in p["source"]]
    default = closure(packages, project["dependencies"])
    extra = closure(packages, project["optional-dependencies"]["sagemaker"]) - default
    unreached = set(packages) - default - extra - {canonicalize_name(project["name"])}
    print(f"# The AWS TensorFlow 2.21 training DLC's Python packages: aws/deep-learning-containers {commit}")
    print("# docker/tensorflow/2.21/cuda/uv.lock, written by container/standin/lock_to_requirements.py (do not edit).")
    print(f"# {len(lock['package'])} lock entries: the project {project['name']}, {len(default)} default,")
    print(f"# {len(extra)} more with the sagemaker extra, {len(unreached)} not installed on linux x86_64 CPython")
    print(f"# ({', '.join(sorted(unreached)) or '-'}). Hashes: the lock's artifacts a cp311 interpreter can use.")
    for group, names in (("default", default), ("sagemaker", extra)):
        print(f"[{group}]")
        for name in sorted(names):
            print(line(packages[name]))


if __name__ == "__main__":
    main()
