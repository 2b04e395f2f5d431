"""``bertlib launch JOB --config FILE [--key value ...]``: run a job where its ``backend`` says.

``JOB`` is ``pretrain``, ``squad`` or ``prepare-data``. ``FILE`` is a run config (bertlib.core.config schema) or a notebook
params file (``params/*/*.yaml``: ``experiment`` key, ``auto`` values, ``${VAR}`` references), which is
resolved exactly as the notebooks resolve it (:func:`bertlib.params.load_configs`); a SQuAD params
file launches each of its ``squad_versions``. ``backend: local`` runs under horovodrun on this
machine (:func:`bertlib.launch.local.run`; ``prepare-data`` runs here with every core);
``backend: sagemaker`` starts a training job
(:func:`bertlib.launch.sagemaker.launch`) and, unless ``dry_run``, waits for it while streaming its log.
"""

from __future__ import annotations

import json
import sys

from bertlib.core.errors import ConfigError

USAGE = "usage: bertlib launch {pretrain,squad,prepare-data} --config FILE.yaml [--key value ...]"


def load_configs(job: str, path: str, overrides: dict) -> dict:
    """``{name: config}`` for ``job`` from a run config or a notebook params file plus overrides
    (:func:`bertlib.params.load_configs`, the path of every params file and notebook cell)."""
    from bertlib.params import load_configs as load

    return load(job, path, overrides)


def command():
    """``bertlib launch``'s command line: one subcommand per job, generated from the job's schema (its
    launch settings included) plus the notebook params keys; ``--config`` is required."""
    import click

    from bertlib.core.cli_schema import YamlValue, group
    from bertlib.core.config import JOBS, NOTEBOOK_KEYS, job_command

    notebook = [
        click.Option([f"--{k}"], type=YamlValue(), default=None, help="notebook params files only (see bertlib.params)")
        for k in NOTEBOOK_KEYS
    ]
    jobs = {
        job: job_command(
            job,
            name=job,
            params=notebook,
            help=f"Run {job} where its backend says (local / sagemaker), with --config FILE (a "
            f"{JOBS[job].__name__} run config or a notebook params file) and --key value "
            "overrides (values are YAML).",
            short_help=f"{JOBS[job].__name__} keys, locally or on SageMaker",
        )
        for job in ("pretrain", "squad", "prepare-data")
    }
    return group("bertlib launch", jobs, help=__doc__.split("\n\n")[0].replace("``", ""))


def main(argv: list[str]) -> int:
    """``bertlib launch JOB --config FILE [--key value ...]`` (``--help``: every key of the job)."""
    from bertlib.core.cli_schema import parse

    args = parse(command(), argv)
    if args is None:
        return 0
    job, path = args.command, args.config
    if not path:
        raise ConfigError(f"launch: --config FILE is required ({USAGE})")
    overrides = {**args.values, **{k: v for k, v in args.extras.items() if k in args.given}}
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
    from bertlib.core.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
