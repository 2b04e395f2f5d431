"""Install what bertlib's jobs need into the image's Python without changing any package of the base image.

usage: python install_requirements.py PYPROJECT REQUIREMENTS

The job set is pyproject.toml's [project] dependencies plus its `job` extra (names only); each is pinned
at its version in requirements.txt. A package the base already has keeps the base's version (the pins
that differ are printed). The others are installed at our pins, with their dependencies, under a pip
constraints file that is the base's whole freeze: if that cannot be resolved, the build fails with one
line naming the base package pip would have to change and both versions. Afterwards every base package
must still be installed at its version, else one line names it and this exits 1.
Runs with the Python it installs into (the image's /opt/venv python); standard library only.
"""

import json
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import tomllib

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fail(message: str) -> None:
    sys.exit(f"install_requirements.py: {message}")


def job_names(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["job"]
    return [normalize(NAME.match(s).group(1)) for s in specs]


def pins(requirements: Path) -> dict[str, tuple[str, str]]:
    """normalized name -> (requirement as written, e.g. `moto[server]==5.2.5`, version)."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            req, version = line.split("==", 1)
            found[normalize(req.split("[")[0])] = (line, version.strip())
    return found


def freeze() -> dict[str, str]:
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}


def pip(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], text=True, **kwargs)


def explain_conflict(requested: list[str], base: dict[str, str]) -> str:
    """One line: the base package that pip, unconstrained, would change to satisfy our pins."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        out = pip("install", "--dry-run", "--quiet", "--report", str(report), *requested, capture_output=True)
        if out.returncode != 0:
            errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
            return (errors or ["pip failed"])[-1]
        changes = [
            f"{item['metadata']['name']} {base[normalize(item['metadata']['name'])]} -> {item['metadata']['version']}"
            for item in json.loads(report.read_text())["install"]
            if normalize(item["metadata"]["name"]) in base
        ]
    return "our pins need base package(s) changed: " + (", ".join(changes) or "none found unconstrained")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    pyproject, requirements = map(Path, sys.argv[1:])
    pinned = pins(requirements)
    base = freeze()
    missing = [n for n in job_names(pyproject) if n not in pinned]
    if missing:
        fail(f"no exact pin in {requirements} for: {', '.join(missing)}")
    requested = []
    for name in job_names(pyproject):
        req, version = pinned[name]
        if name not in base:
            requested.append(req)
        elif base[name] != version:
            print(f"install_requirements.py: keeping the base's {name}=={base[name]} ({requirements.name}: {version})")
    if requested:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
            constraints.write("".join(f"{n}=={v}\n" for n, v in sorted(base.items())))
            constraints.flush()
            dry = pip("install", "--dry-run", "--quiet", "-c", constraints.name, *requested, capture_output=True)
            if dry.returncode != 0:
                fail(explain_conflict(requested, base))
            pip("install", "--no-cache-dir", "-c", constraints.name, *requested, check=True)
    after = freeze()
    changed = [f"{n} {v} -> {after.get(n, 'removed')}" for n, v in sorted(base.items()) if after.get(n) != v]
    if changed:
        fail(f"base package(s) changed: {', '.join(changed)}")
    added = sorted(f"{n}=={v}" for n, v in after.items() if n not in base)
    print(f"install_requirements.py: {len(added)} added, no base package changed: {' '.join(added)}")


if __name__ == "__main__":
    main()
