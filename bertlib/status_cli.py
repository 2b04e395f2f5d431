"""``bertlib status [NAME] [--experiment E] [--runs_root R] [--follow true|false]``: the SageMaker jobs of the run registries.

Without NAME: one line per SageMaker job recorded in the registries (``<runs_root>/*/registry.json``,
or only experiment E's) with the status the registry holds and the job's live status
(DescribeTrainingJob). With NAME (a registry step such as ``phase1``, or a SageMaker job name): that
job's status, and while it runs, attached to it — its log and one progress display (step / total,
loss, throughput, ETA, cost so far) until it ends (``--follow false``: the status only).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bertlib import jobs
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.launch import monitor
from bertlib.registry import Registry, registry_path

USAGE = "usage: bertlib status [NAME] [--experiment E] [--runs_root R] [--follow true|false] [--region R]"


def _registries(experiment: str | None, runs_root: str) -> list[Registry]:
    if experiment:
        path = registry_path(experiment, runs_root)
        if not path.is_file():
            raise ConfigError(f"{path}: no run registry (experiment {experiment!r} has launched nothing here)")
        return [Registry(path)]
    return [Registry(p) for p in sorted(Path(runs_root).glob("*/registry.json"))]


def _jobs(registries: list[Registry]) -> list[tuple[Registry, str, dict]]:
    return [
        (reg, step, entry)
        for reg in registries
        for step, entry in reg.steps.items()
        if entry.get("backend") == "sagemaker" and not entry.get("dry_run") and entry.get("job_name")
    ]


def list_jobs(found: list[tuple[Registry, str, dict]], sm_client) -> list[str]:
    """One line per job: experiment, step, job name, recorded status → live status, cost so far."""
    lines = []
    for reg, step, entry in found:
        desc = monitor.describe(sm_client, entry["job_name"])
        live = "not found" if desc is None else desc["TrainingJobStatus"]
        cost = ""
        if desc is not None:
            progress = monitor.JobProgress(
                entry["job_name"],
                usd_per_hour=monitor.usd_per_hour(
                    desc.get("ResourceConfig", {}).get("InstanceType"),
                    desc.get("ResourceConfig", {}).get("InstanceCount", 1),
                ),
            )
            progress.described(desc)
            cost = "" if progress.cost_usd is None else f"  ${progress.cost_usd:,.2f}"
        lines.append(
            f"{reg.experiment}/{step}  {entry['job_name']}  registry: {entry.get('status', '?')}  live: {live}{cost}"
        )
    return lines


def _yes(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"--follow {value!r}: expected true or false")


@click.command("bertlib status", help=__doc__.split("\n\n")[0].replace("``", ""))
@click.argument("name", required=False)
@click.option("--experiment", default=None, help="only this experiment's registry (<runs_root>/<experiment>)")
@click.option("--runs_root", default="runs", show_default=True, help="folder of the experiments' registries")
@click.option("--follow", default="true", show_default=True, help="NAME running: attach until it ends")
@click.option("--region", default=None, help="AWS region (default: the environment's)")
def _command(name, experiment, runs_root, follow, region):
    return name, experiment, runs_root, _yes(follow), region


def main(argv: list[str]) -> int:
    try:
        parsed = _command.main(list(argv), prog_name="bertlib status", standalone_mode=False)
    except click.ClickException as e:
        raise ConfigError(f"status: {e.format_message()} ({USAGE})") from None
    if not isinstance(parsed, tuple):  # --help
        return 0
    name, experiment, runs_root, follow, region = parsed
    found = _jobs(_registries(experiment, runs_root))
    sm_client, logs_client = monitor.clients(region)
    if name is None:
        if not found:
            print(f"no SageMaker jobs recorded under {runs_root}/*/registry.json")
        for line in list_jobs(found, sm_client):
            print(line)
        return 0
    matches = [(reg, step, entry) for reg, step, entry in found if name in (step, entry["job_name"])]
    if len(matches) > 1:
        raise ConfigError(
            f"status {name!r}: in several registries ({', '.join(r.experiment for r, _, _ in matches)}); "
            "give --experiment"
        )
    reg, step, entry = matches[0] if matches else (None, None, {})
    job_name = entry.get("job_name", name)
    desc = monitor.describe(sm_client, job_name)
    if desc is None:
        raise ConfigError(f"status {name!r}: no registry entry or SageMaker training job of that name")
    status = desc["TrainingJobStatus"]
    print(f"{job_name}: {status}" + (f" ({desc['FailureReason']})" if desc.get("FailureReason") else ""))
    if reg is not None and entry.get("status") != status:
        reg.update(step, status=status)
    if status in monitor.TERMINAL or not follow:
        if status == "Completed" and reg is not None:
            print(f"results: {entry.get('run_dir')} (re-run its notebook cell to read them into the registry)")
        return 0
    desc = jobs.follow(
        job_name,
        reg,
        step,
        sm_client=sm_client,
        logs_client=logs_client,
        job=entry.get("job", "pretrain"),
        total_steps=entry.get("total_steps"),
        instance_type=entry.get("instance_type"),
        instance_count=entry.get("instance_count", 1),
    )
    print(f"{job_name}: {desc['TrainingJobStatus']}")
    return 0 if desc["TrainingJobStatus"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
