"""The run registry: what each notebook produced, so that later notebooks read it instead of retyping it.

One JSON file per experiment, ``runs/<experiment>/registry.json``::

    {"format": "bertlib-registry/1", "experiment": "demo",
     "steps": {"data":    {"datasets": {"phase1": ".../phase1", "phase2": ".../phase2"}, ...},
               "phase1":  {"run_dir": ..., "export_dir": ..., "wall_time_s": ..., ...},
               "phase2":  {...},
               "squadv1": {"run_dir": ..., "f1": ..., "exact_match": ..., ...},
               "squadv2": {...}}}

Each notebook ``record``s one step (its entry is replaced as a whole, with a ``recorded_at`` time); a
SageMaker job is recorded the moment it is created (``status`` InProgress, its ``job_name`` and the
``identity`` of its config, :mod:`bertlib.jobs`) and again when it ends;
later notebooks ``lookup`` dotted keys such as ``"phase1.export_dir"``. A parameter whose value is the
string ``"auto"`` is resolved from the registry (phase 2's ``checkpoint_path: auto`` = phase 1's
export). Every write goes through a temp file + rename, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bertlib.core.errors import ConfigError
from bertlib.core.files import write_json

FORMAT = "bertlib-registry/1"
AUTO = "auto"

#: which notebook writes each step (for "run this first" hints)
PRODUCERS = {
    "data": "notebooks/01_data_prep",
    "phase1": "notebooks/02_phase1",
    "phase2": "notebooks/03_phase2",
    "squadv1": "notebooks/04_squad",
    "squadv2": "notebooks/04_squad",
}


def registry_path(experiment: str, root: str | os.PathLike = "runs") -> Path:
    """``<root>/<experiment>/registry.json``."""
    if not experiment or "/" in experiment or experiment.startswith("."):
        raise ConfigError(f"experiment {experiment!r}: must be a plain folder name")
    return Path(root) / experiment / "registry.json"


def _plain(value: Any) -> Any:
    """Paths → str, recursively, so that entries are plain JSON."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Registry:
    """The registry file of one experiment (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def for_experiment(cls, experiment: str, root: str | os.PathLike = "runs") -> "Registry":
        return cls(registry_path(experiment, root))

    @property
    def experiment(self) -> str:
        return self.path.parent.name

    def load(self) -> dict:
        """The whole registry (an empty one if the file does not exist yet)."""
        if not self.path.is_file():
            return {"format": FORMAT, "experiment": self.experiment, "steps": {}}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{self.path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{self.path}: not a bertlib run registry (format {FORMAT!r} expected)")
        return data

    @property
    def steps(self) -> dict[str, dict]:
        return self.load()["steps"]

    def record(self, step: str, **values: Any) -> dict:
        """Replace the entry of ``step`` with ``values`` (+ ``recorded_at``); returns the entry."""
        data = self.load()
        entry = {**_plain(values), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        data["steps"][step] = entry
        write_json(self.path, data)
        return entry

    def update(self, step: str, **values: Any) -> dict:
        """Merge ``values`` into the entry of ``step`` (created if missing); returns the entry."""
        data = self.load()
        entry = {
            **data["steps"].get(step, {}),
            **_plain(values),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data["steps"][step] = entry
        write_json(self.path, data)
        return entry

    def restore(self, step: str, entry: dict | None) -> None:
        """Put back an entry read earlier with :meth:`get` (None: the step had none)."""
        data = self.load()
        if entry is None:
            data["steps"].pop(step, None)
        else:
            data["steps"][step] = entry
        write_json(self.path, data)

    def get(self, step: str) -> dict | None:
        return self.steps.get(step)

    def lookup(self, dotted: str) -> Any:
        """``"phase1.export_dir"`` → that value; a ConfigError says which notebook to run if missing."""
        step, _, rest = dotted.partition(".")
        node: Any = self.get(step)
        if node is None:
            hint = f" (run {PRODUCERS[step]} first)" if step in PRODUCERS else ""
            raise ConfigError(f"{self.path}: no {step!r} entry{hint}")
        for part in rest.split(".") if rest else []:
            if not isinstance(node, dict) or part not in node or node[part] is None:
                raise ConfigError(f"{self.path}: entry {step!r} has no {rest!r}")
            node = node[part]
        return node

    def resolve(self, values: dict[str, Any], sources: dict[str, str], allow_dry_run: bool = False) -> dict[str, Any]:
        """Copy of ``values`` where each key of ``sources`` whose value is ``"auto"`` is looked up.

        ``sources`` maps a parameter name to a dotted registry key, e.g.
        ``{"checkpoint_path": "phase1.export_dir"}``. Entries recorded by a dry run (``dry_run:
        true``: the S3 paths a job *would* write) only serve another dry run.
        """
        out = dict(values)
        for key, dotted in sources.items():
            if out.get(key) == AUTO:
                step = dotted.partition(".")[0]
                out[key] = self.lookup(dotted)
                entry = self.get(step) or {}
                if entry.get("dry_run") and not allow_dry_run:
                    raise ConfigError(
                        f"{self.path}: the {step!r} entry is from a dry run; {key}: auto needs a real {step} run"
                    )
                if not entry.get("dry_run") and entry.get("status", "Completed") != "Completed":
                    raise ConfigError(
                        f"{self.path}: the {step!r} entry is SageMaker job {entry.get('job_name')} "
                        f"({entry['status']}); {key}: auto needs it Completed (bertlib status {step})"
                    )
        return out
