"""``bertlib launch JOB --config FILE [--key value ...]``: run a job where its ``backend`` says.

``JOB`` is ``pretrain``, ``squad`` or ``prepare-data``; ``bertlib launch image [--region R] [--tag T]
[--dry-run]`` builds and pushes the training image with AWS CodeBuild instead (no Docker needed,
:mod:`bertlib.launch.image`). ``FILE`` is a run config (one flat file: the
job's keys and its launch settings, :func:`bertlib.core.config.build_launched`) or a notebook params
file (``params/*/*.yaml``: ``experiment`` key, ``auto`` values, ``${VAR}`` references), which is
resolved exactly as the notebooks resolve it (:func:`bertlib.params.load_configs`); a SQuAD params
file launches each of its ``squad_versions``. Each becomes a
:class:`~bertlib.core.config.LaunchedJob` ``(launch, job)``; the job's process gets only ``job``. ``backend: local`` runs under horovodrun on this
machine (:func:`bertlib.launch.local.run`; ``prepare-data`` runs here with every core);
``backend: sagemaker`` starts a training job
(:func:`bertlib.launch.sagemaker.launch`) and, unless ``dry_run``, waits for it while streaming its log.

It lives above :mod:`bertlib.launch` (beside :mod:`bertlib.params`, whose loader it uses).
"""

from __future__ import annotations

import json
import sys

import click

from bertlib.core.cli_schema import YamlValue, group, parse
from bertlib.core.cli_schema import command as schema_command
from bertlib.core.config import JOBS, NOTEBOOK_KEYS, build_config, job_command
from bertlib.core.errors import ConfigError, JobFailed, print_error, run_guarded
from bertlib.data.prepare import prepare
from bertlib.launch import image, local, sagemaker
from bertlib.params import load_configs

USAGE = (
    "usage: bertlib launch {pretrain,squad,prepare-data} --config FILE.yaml [--key value ...] | "
    "bertlib launch image [--region R] [--tag T] [--dry-run]"
)


def command():
    """``bertlib launch``'s command line: one subcommand per job, generated from the job's schema (its
    launch settings included) plus the notebook params keys; ``--config`` is required."""
    notebook = [
        click.Option([f"--{k}"], type=YamlValue(), default=None, help="notebook params files only (see bertlib.params)")
        for k in NOTEBOOK_KEYS
    ]
    jobs = {
        job: job_command(
            job,
            name=job,
            launched=True,
            params=notebook,
            help=f"Run {job} where its backend says (local / sagemaker), with --config FILE (a "
            f"{JOBS[job].__name__} run config or a notebook params file) and --key value "
            "overrides (values are YAML).",
            short_help=f"{JOBS[job].__name__} keys, locally or on SageMaker",
        )
        for job in ("pretrain", "squad", "prepare-data")
    }
    jobs["image"] = schema_command(
        "image",
        image.ImageBuildConfig,
        help="Build and push the training image with AWS CodeBuild (no Docker here): the context of "
        "container/context.sh goes to S3, CodeBuild runs container/build_and_push.sh; prints the image URI.",
        short_help="build and push the training image with CodeBuild",
    )
    return group("bertlib launch", jobs, help=__doc__.split("\n\n")[0].replace("``", ""))


def main(argv: list[str]) -> int:
    """``bertlib launch JOB --config FILE [--key value ...]`` (``--help``: every key of the job)."""
    args = parse(command(), argv)
    if args is None:
        return 0
    job, path = args.command, args.config
    if job == "image":
        return build_image(build_config(image.ImageBuildConfig, args.values, "command line"))
    if not path:
        raise ConfigError(f"launch: --config FILE is required ({USAGE})")
    overrides = {**args.values, **{k: v for k, v in args.extras.items() if k in args.given}}
    configs = load_configs(job, str(path), overrides)
    for name, launched in configs.items():
        backend = launched.launch.backend
        if backend == "local" and job == "prepare-data":
            summary = prepare(launched.job)
            print(f"{name}: prepared {', '.join(ph['dir'] for ph in summary['phases'].values())}")
        elif backend == "local":
            run_dir = local.run(job, launched)
            print(f"{name}: finished, run directory {run_dir}")
        else:
            try:
                info = sagemaker.launch(job, launched, wait=not launched.launch.dry_run)
            except JobFailed as e:  # the job's FailureReason, one line
                print_error(str(e))
                return 1
            print(json.dumps({name: info}, indent=1, default=str))
    return 0


def build_image(cfg: image.ImageBuildConfig) -> int:
    """``bertlib launch image``: a dry run prints the requests; a build prints its progress and the image
    URI; a failed build is one line on stderr (exit 1)."""
    try:
        info = image.build(cfg)
    except image.BuildFailed as e:
        print_error(str(e))
        return 1
    if cfg.dry_run:
        image.show_dry_run(info)
    print(f"export BERTLIB_IMAGE_URI={info['image_uri']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
