"""``bertlib launch JOB --config FILE [--key value ...]``: run a job where its ``backend`` says.

``JOB`` is ``pretrain``, ``squad`` or ``prepare-data``; ``bertlib launch canary --config FILE
[--canary_instance_count N] [--canary_steps N]`` runs the canary of a pretraining config first
(:mod:`bertlib.launch.canary`: a few minutes on its instance type, a report and a verdict; exit 1 on
FAIL); ``bertlib launch image [--region R] [--tag T]
[--dry-run]`` builds and pushes the training image with AWS CodeBuild instead (no Docker needed,
:mod:`bertlib.launch.image`). ``FILE`` is a run config (one flat file: the
job's keys and its launch settings, :func:`bertlib.core.config.build_launched`) or a notebook params
file (``params/*/*.yaml``: ``experiment`` key, ``auto`` values, ``${VAR}`` references), which is
resolved exactly as the notebooks resolve it (:func:`bertlib.params.load_configs`); a SQuAD params
file launches each of its ``squad_versions``. Each becomes a
:class:`~bertlib.core.config.LaunchedJob` ``(launch, job)``; the job's process gets only ``job``. ``backend: local`` runs under horovodrun on this
machine (:func:`bertlib.launch.local.run`; ``prepare-data`` runs here with every core);
``backend: sagemaker`` starts a training job (:func:`bertlib.jobs.launch_once`: recorded in the run
registry as it is created) and, unless ``dry_run`` or ``--wait false``, follows it to its end (log and
progress). Run again with the same config, it attaches to that job while it runs and reuses it once
completed (``--new_job true`` starts another); the registry is the params file's experiment, or
``runs/default`` for a plain run config.

It lives above :mod:`bertlib.launch` (beside :mod:`bertlib.params`, whose loader it uses).
"""

from __future__ import annotations

import json
import sys

import click

from bertlib import jobs
from bertlib.core.cli_schema import YamlValue, group, parse
from bertlib.core.cli_schema import command as schema_command
from bertlib.core.config import JOBS, NOTEBOOK_KEYS, build_config, job_command
from bertlib.core.errors import ConfigError, failure_line, print_error, run_guarded
from bertlib.data.prepare import prepare
from bertlib.launch import canary, image, local
from bertlib.params import load_configs, load_launch

USAGE = (
    "usage: bertlib launch {pretrain,squad,prepare-data,canary} --config FILE.yaml [--key value ...] | "
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
    jobs["canary"] = job_command(
        "pretrain",
        name="canary",
        launched=True,
        params=[
            *notebook,
            click.Option(
                ["--canary_instance_count"],
                type=click.IntRange(min=1),
                default=None,
                help="instances of the canary (default: the run's instance_count; at most that)",
            ),
            click.Option(
                ["--canary_steps"], type=click.IntRange(min=2), default=None, help="training steps timed (default 6)"
            ),
        ],
        help="A short canary job before the expensive run, with the run's --config FILE (a PretrainConfig run "
        "config or a phase 1/2 notebook params file) on its instance type: ranks, allreduce bandwidth and "
        "transport, a few timed steps and the projected time and cost, a checkpoint read back, versions, "
        "a verdict (exit 1 on FAIL).",
        short_help="a few minutes' check of a pretraining run before it runs",
    )
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
    extras = {k: v for k, v in args.extras.items() if k in args.given}
    if job == "canary":
        return run_canary(str(path), args.values, extras)
    overrides = {**args.values, **extras}
    configs, registry = load_launch(job, str(path), overrides)
    for name, launched in configs.items():
        backend = launched.launch.backend
        if backend == "local" and job == "prepare-data":
            summary = prepare(launched.job)
            print(f"{name}: prepared {', '.join(ph['dir'] for ph in summary['phases'].values())}")
        elif backend == "local":
            run_dir = local.run(job, launched)
            print(f"{name}: finished, run directory {run_dir}")
        else:
            info = jobs.launch_once(job, name, launched, registry)
            if info["action"] != "dry-run":  # a dry run's stdout stays one JSON document
                print(jobs.result_line(name, info))
            print(json.dumps({name: info}, indent=1, default=str))  # last: what scripts read
            if info["status"] in ("Failed", "Stopped"):
                print_error(f"{name}: {failure_line(info['job_name'], info['status'], info.get('failure_reason'))}")
                return 1
    return 0


def run_canary(path: str, values: dict, extras: dict) -> int:
    """``bertlib launch canary``: the canary of each pretraining config of ``path`` (with overrides); prints
    its report (a dry run: the request); exit 1 when a verdict is FAIL."""
    count, steps = extras.pop("canary_instance_count", None), extras.pop("canary_steps", None)
    code = 0
    for name, launched in load_configs("pretrain", path, {**values, **extras}).items():
        job = canary.canary_job(launched, instance_count=count, steps=steps)
        result = canary.run(job)
        if result.get("dry_run"):
            print(json.dumps({f"{name}-canary": result["info"]}, indent=1, default=str))
            continue
        if job.launch.backend != "local":  # a local run streamed its lines already
            print("\n".join(canary.report_lines(result)))
        code = code or (0 if result["passed"] else 1)
    return code


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
