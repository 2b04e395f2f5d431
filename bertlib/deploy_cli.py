"""``bertlib deploy [--action create|ask|delete] [--key value ...]``: the SageMaker real-time endpoint of a
finetuned SQuAD model (:mod:`bertlib.launch.deploy`), found in the run registry.

``create`` takes the SQuAD run ``squad_version`` of ``<runs_root>/<experiment>/registry.json`` (its
export: the job's ``model.tar.gz``) or ``--model_data``, creates the endpoint, asks it one question
and records the endpoint in the registry (``<squad_version>_endpoint``), where notebooks/04_squad's
"Try it" finds it; ``ask`` sends ``--question`` / ``--context``; ``delete`` tears it down. ``--dry_run``
prints the requests and sends nothing.

It lives above :mod:`bertlib.launch` (beside :mod:`bertlib.launch_cli`), since it reads the registry.
"""

from __future__ import annotations

import json
import sys

from bertlib.core.cli_schema import command, parse
from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.launch import deploy
from bertlib.registry import Registry


def endpoint_step(squad_version: str) -> str:
    """The registry step of a SQuAD version's endpoint."""
    return f"{squad_version}_endpoint"


def squad_export(registry: Registry, squad_version: str, dry_run: bool) -> str:
    """The export of the registry's SQuAD run ``squad_version`` (a SageMaker job's model.tar.gz URI or a
    local export dir); one line if there is none (or only a dry run's, for a real deploy)."""
    entry = registry.lookup(squad_version)  # "no 'squadv1' entry (run notebooks/04_squad first)"
    if entry.get("dry_run") and not dry_run:
        raise ConfigError(
            f"{registry.path}: the {squad_version!r} entry is from a dry run; deploy needs a real SQuAD run"
        )
    export = entry.get("export_dir")
    if not export:
        raise ConfigError(f"{registry.path}: the {squad_version!r} entry names no SQuAD model (export_dir)")
    return str(export)


def create(cfg: deploy.DeployConfig, registry: Registry) -> dict:
    """:func:`bertlib.launch.deploy.deploy` on the registry's (or ``model_data``'s) SQuAD model; recorded."""
    source = cfg.model_data or squad_export(registry, cfg.squad_version, cfg.dry_run)
    info = deploy.deploy(cfg, source)
    registry.record(
        endpoint_step(cfg.squad_version),
        endpoint_name=info["endpoint_name"],
        region=info["region"],
        status=info["status"],
        dry_run=cfg.dry_run,
        model_data=info["model_data"],
        image=info["image"],
        source=source,
    )
    return info


def delete(cfg: deploy.DeployConfig, registry: Registry) -> dict:
    """:func:`bertlib.launch.deploy.delete`; the registry's endpoint entry says it is gone."""
    info = deploy.delete(cfg)
    entry = registry.get(endpoint_step(cfg.squad_version))
    if not cfg.dry_run and entry is not None and entry.get("endpoint_name") == info["endpoint_name"]:
        registry.record(endpoint_step(cfg.squad_version), **{**entry, "status": "Deleted"})
    return info


def main(argv: list[str]) -> int:
    """``bertlib deploy`` (``--help``: every key)."""
    args = parse(
        command(
            "bertlib deploy",
            deploy.DeployConfig,
            help="Create (default), ask or delete the SageMaker real-time endpoint of a finetuned SQuAD model "
            "(AWS's Hugging Face inference image, HF_TASK=question-answering): the registry's SQuAD run or "
            "--model_data; --dry_run prints the requests.",
        ),
        argv,
    )
    if args is None:
        return 0
    cfg = build_config(deploy.DeployConfig, args.values, "command line")
    registry = Registry.for_experiment(cfg.experiment, cfg.runs_root)
    if cfg.action == "create":
        info = create(cfg, registry)
    elif cfg.action == "ask":
        info = deploy.ask(cfg)
    else:
        info = delete(cfg, registry)
    print(json.dumps(info, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
