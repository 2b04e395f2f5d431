"""``bertlib launch JOB --config FILE [--key value ...]``: run a job where its ``backend`` says.

``JOB`` is ``pretrain``, ``squad`` or ``prepare-data``. ``FILE`` is a run config (bertlib.config schema) or a notebook
params file (``params/*/*.yaml``: ``experiment`` key, ``auto`` values, ``${VAR}`` references), which is
resolved exactly as the notebooks resolve it (:func:`bertlib.notebook.parameters`); a SQuAD params
file launches each of its ``squad_versions``. ``backend: local`` runs under horovodrun on this
machine (:func:`bertlib.launch.local.run`; ``prepare-data`` runs here with every core);
``backend: sagemaker`` starts a training job
(:func:`bertlib.launch.sagemaker.launch`) and, unless ``dry_run``, waits for it while streaming its log.
"""

from __future__ import annotations

import json
import sys

from bertlib.config import build_config, parse_overrides, read_yaml
from bertlib.errors import ConfigError

USAGE = "usage: bertlib launch {pretrain,squad,prepare-data} --config FILE.yaml [--key value ...]"


def load_configs(job: str, path: str, overrides: dict) -> dict:
    """``{name: config}`` for ``job`` from a run config or a notebook params file plus overrides."""
    from bertlib.config import NOTEBOOK_KEYS

    values = {**read_yaml(path), **overrides}
    if any(k in values for k in NOTEBOOK_KEYS):
        from bertlib.notebook import parameters

        step = {"squad": "squad", "prepare-data": "data"}.get(job) or values.get("phase", "phase1")
        return parameters(step, values).configs
    return {job: build_config(job, values, f"{path} (with overrides)" if overrides else path)}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    if job not in ("pretrain", "squad", "prepare-data"):
        raise ConfigError(f"launch: unknown job {job!r} ({USAGE})")
    overrides = parse_overrides(rest)
    path = overrides.pop("config", None)
    if not path:
        raise ConfigError(f"launch: --config FILE is required ({USAGE})")
    configs = load_configs(job, str(path), overrides)
    for name, cfg in configs.items():
        if cfg.backend == "local" and job == "prepare-data":
            from bertlib.data.prepare import prepare

            summary = prepare(cfg)
            print(f"{name}: prepared {', '.join(ph['dir'] for ph in summary['phases'].values())}")
        elif cfg.backend == "local":
            from bertlib.launch.local import run

            run_dir = run(job, cfg)
            print(f"{name}: finished, run directory {run_dir}")
        else:
            from bertlib.launch.sagemaker import launch

            info = launch(job, cfg, wait=not cfg.dry_run)
            print(json.dumps({name: info}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    from bertlib.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
