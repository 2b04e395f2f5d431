"""``bertlib estimate --config FILE [--key value ...]``: FLOPs, wall time and cost of a run before launching it.

The command line of :mod:`bertlib.launch.estimate` (the arithmetic) and :mod:`bertlib.data.projection`
(a ``prepare-data`` config): it reads a run config or a notebook params file through
:func:`bertlib.params.load_configs`, which is why it lives at this layer, above :mod:`bertlib.launch`.
"""

from __future__ import annotations

import sys

import click
from pydantic import BaseModel, ConfigDict, Field

from bertlib.core.cli_schema import YamlValue, command, parse
from bertlib.core.config import JOBS, LAUNCH_CONFIGS, DataConfig, build_config, launched_fields
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.data.projection import DEFAULT_DISK_MBPS, DEFAULT_DOWNLOAD_MBPS, project
from bertlib.launch.estimate import (
    DEFAULT_UTILIZATION,
    DEFAULT_VOCAB_SIZE,
    data_lines,
    estimate,
    real_token_fraction,
)
from bertlib.params import load_configs


def configs_from_file(path: str, overrides: dict) -> dict:
    """``{name: LaunchedJob}`` from a run-config or params YAML (:func:`bertlib.params.load_configs`, the
    job taken from its keys): a SQuAD params file gives one per version, a data-prep file (``sources``)
    one ``"data"``. ``auto`` / ``${VAR}`` / ``asset:`` values are irrelevant to the estimate and stay as
    they are (no registry, environment or download needed)."""
    return load_configs(None, path, overrides, resolve=False)


def allreduce_line(e: dict, compression: str) -> str:
    """The gradient allreduce's bytes per rank per optimizer step, and what fp16 compression saves."""
    a, mb = e["allreduce"], 1e6
    world = e["devices"]
    ring = f", ring traffic {2 * (world - 1) / world * a['bytes'] / mb:,.1f} MB per rank" if world > 1 else ""
    if compression == "fp16":
        what = (
            f"fp16 {a['bytes'] / mb:,.1f} MB (float32 {a['bytes_fp32'] / mb:,.1f} MB: saves {a['saved'] / mb:,.1f} MB)"
        )
    else:
        what = (
            f"float32 {a['bytes'] / mb:,.1f} MB (allreduce_compression fp16 would save {a['bytes'] / 2 / mb:,.1f} MB)"
        )
    return f"  gradient allreduce per step: {e['parameters']:,} parameters, {what}{ring}"


def _estimate_schema():
    """The assumptions of ``bertlib estimate`` (its ``--help`` is generated from them); the run itself is
    the ``--config`` file's, with ``--key value`` overrides of its keys."""

    class EstimateArgs(BaseModel):
        """What the estimate assumes beyond the run config."""

        model_config = ConfigDict(extra="forbid")
        utilization: float = Field(
            DEFAULT_UTILIZATION, description="share of the GPUs' peak FLOP/s reached (the reference run's 20 %)"
        )
        vocab_size: int = Field(DEFAULT_VOCAB_SIZE, description="vocabulary size of the MLM head")
        real_token_fraction: float | None = Field(
            None, description="share of the row positions that are real tokens; default: the local dataset's"
        )
        source_bytes: float | None = Field(
            None, description="prepare-data: bytes of the sources; default: their known / local sizes"
        )
        download_MBps: float = Field(
            DEFAULT_DOWNLOAD_MBPS,
            description="prepare-data: download rate per host",
            json_schema_extra={"cli": {"aliases": ["--download_mbps"]}},
        )
        disk_MBps: float = Field(
            DEFAULT_DISK_MBPS,
            description="prepare-data: disk write rate per host",
            json_schema_extra={"cli": {"aliases": ["--disk_mbps"]}},
        )
        instance_counts: str | int | list[int] = Field(
            "1,2,4,8", description="prepare-data: instance counts to project (comma-separated or a list)"
        )

    return EstimateArgs


def main(argv: list[str]) -> int:
    """``bertlib estimate --config FILE [--utilization 0.2] [--vocab_size N] [--real_token_fraction F]
    [--key value ...]`` (the fraction defaults to the local dataset's, see :func:`real_token_fraction`).
    A data-prep config also takes ``[--source_bytes N] [--download_MBps 5] [--disk_MBps 262]
    [--instance_counts 1,2,4,8]`` (:mod:`bertlib.data.projection`). ``--help`` lists them all."""
    schema = _estimate_schema()
    # --key value overrides of the config's keys (any job's; the config's own schema validates them)
    keys = dict.fromkeys(
        k
        for job in JOBS
        for k in (launched_fields(job) if job in LAUNCH_CONFIGS else JOBS[job].model_fields)
        if k not in schema.model_fields
    )
    overridable = [
        click.Option([f"--{k}"], type=YamlValue(), default=None, hidden=True) for k in [*keys, "squadv1", "squadv2"]
    ]
    cli = command(
        "bertlib estimate",
        schema,
        params=overridable,
        config="run config or notebook params file (required); its keys can be overridden as --key "
        "value, as for `bertlib pretrain`, `bertlib squad` or `bertlib prepare-data` (see their --help)",
        help="FLOPs, wall time and on-demand cost of a pretraining or SQuAD run, before launching it."
        + " The run is the --config file's; the options below are the "
        "estimate's assumptions.",
    )
    args = parse(cli, argv)
    if args is None:
        return 0
    path = args.config
    if not path:
        raise ConfigError("estimate: --config FILE is required")
    opts = build_config(schema, args.values, "command line")
    overrides = {k: v for k, v in args.extras.items() if k in args.given}
    utilization, vocab_size, fraction = opts.utilization, opts.vocab_size, opts.real_token_fraction
    source_bytes, download_MBps, disk_MBps = opts.source_bytes, opts.download_MBps, opts.disk_MBps
    counts = opts.instance_counts
    counts = [
        int(c)
        for c in (counts.split(",") if isinstance(counts, str) else [counts] if isinstance(counts, int) else counts)
    ]
    for name, launched in configs_from_file(path, overrides).items():
        cfg, launch = launched.job, launched.launch
        if isinstance(cfg, DataConfig):
            p = project(launched, None if source_bytes is None else int(source_bytes), download_MBps, disk_MBps, counts)
            print("\n".join(data_lines(p, launch.volume_size_gb if launch.backend == "sagemaker" else None)))
            continue
        real = float(fraction) if fraction is not None else real_token_fraction(getattr(cfg, "data_dir", None))
        e = estimate(launched, utilization, vocab_size, real)
        cost = f", ${e['usd']:,.0f} on demand" if e["usd"] is not None else ""
        if "real_tokens" in e:
            cost += (
                f"; {e['real_tokens']:.3g} real tokens ({e['real_fraction']:.1%} of the row positions), "
                f"{e['flops_per_real_token']:.3g} FLOP per real token"
            )
        print(
            f"{name}: BERT-{e['model_size']}, {e['sequences']:,} sequences × {e['flops_per_sequence']:.3g} FLOP "
            f"= {e['flops']:.3g} FLOP; {e['devices']} × {e['peak_tflops']:g} TFLOP/s peak at "
            f"{e['utilization']:.0%} → {e['wall_time']} on {e['instance_count']} × {e['instance_type']}{cost}"
        )
        print(allreduce_line(e, cfg.allreduce_compression))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
