"""Install one group of dlc-lock.txt into the running Python's environment, exactly and without dependencies.

usage: python install_lock.py LOCK_FILE GROUP RECORD_FILE
  GROUP        default | sagemaker (the DLC's two `uv sync` steps, see lock_to_requirements.py)
  RECORD_FILE  appended with one line per package of the group: `name==version<TAB>group<TAB>how`

Runs `uv pip install --no-deps` (uv on PATH) with the lock's pins and, where the lock has an artifact a
cp311 interpreter can use, its sha256 (uv verifies them). Packages already installed at the lock's version
are kept (mpi4py, built from source against the stand-in's Open MPI before this runs). Every package of
the group must then be installed at the lock's version, else this exits 1 naming it.
"""

import re
import subprocess
import sys
import tempfile
from importlib import metadata

LINE = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)(.*)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_group(path: str, group: str) -> list[tuple[str, str, str]]:
    """(name, version, rest of the line) of every package in [group]."""
    current, found = None, []
    for raw in open(path, encoding="utf-8"):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        if raw.startswith("["):
            current = raw.strip("[]")
            continue
        if current == group:
            m = LINE.match(raw)
            if m is None:
                sys.exit(f"install_lock.py: cannot read {raw!r} in {path}")
            found.append(m.groups())
    if not found:
        sys.exit(f"install_lock.py: no group [{group}] in {path}")
    return found


def installed() -> dict[str, str]:
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    lock, group, record = sys.argv[1:]
    packages = read_group(lock, group)
    before = installed()
    kept = [(n, v) for n, v, _ in packages if before.get(normalize(n)) == v]
    todo = [f"{n}=={v}{rest.split('#')[0]}" for n, v, rest in packages if (n, v) not in kept]
    if todo:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
            req.write("\n".join(todo) + "\n")
            req.flush()
            subprocess.run(
                [
                    "uv",
                    "pip",
                    "install",
                    "--python",
                    sys.executable,
                    "--no-deps",
                    "--no-cache",
                    "--system-certs",
                    "-r",
                    req.name,
                ],
                check=True,
            )
    after = installed()
    wrong = [
        f"{n}=={v} (installed: {after.get(normalize(n), 'none')})"
        for n, v, _ in packages
        if after.get(normalize(n)) != v
    ]
    if wrong:
        sys.exit(f"install_lock.py: [{group}] not at the lock's version: {', '.join(wrong)}")
    with open(record, "a", encoding="utf-8") as out:
        for name, version, rest in packages:
            if (name, version) in kept:
                how = "kept (installed before the lock, at its version)"
            elif "--hash=" in rest:
                how = "the lock's artifact (sha256 verified)"
            else:
                how = "cp311 wheel of the lock's version (the lock has cp312 wheels only)"
            out.write(f"{name}=={version}\t{group}\t{how}\n")
    print(
        f"install_lock.py: [{group}] {len(packages)} packages at the lock's versions"
        f" ({len(kept)} kept: {', '.join(f'{n}=={v}' for n, v in kept) or '-'})"
    )


if __name__ == "__main__":
    main()
