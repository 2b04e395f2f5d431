"""FLOPs, wall time and on-demand cost of a pretraining or SQuAD run, before launching it.

Training FLOPs = 3 × forward FLOPs (the backward pass costs two forwards), counting multiply-adds
as 2 FLOPs and only the matmuls (embedding lookups, softmax, LayerNorm, GELU are < 1 %). For one
sequence of length S with P masked positions, a model of L layers, hidden H, intermediate I and
vocabulary V, the forward pass costs::

    encoder    L · S · 2 · (4H² + 2HI)        Q, K, V, output projections and the two FFN matmuls
                                              (= 2 · N_layers · S: "6·N·tokens" once tripled)
    attention  L · 2 · 2 · S² · H             scores Q·Kᵀ and the weighted sum with V
    MLM head   P · 2 · (H² + HV)              transform dense + output projection, masked positions
                                              only (Google's gather_indexes); SQuAD: S · 2 · 2H
    NSP        2H² + 2 · 2H                   pooler + classifier (per sequence)

Wall time = FLOPs / (devices × peak × utilization); ``peak`` is the dense fp16/bf16 tensor-core peak
of the GPU (:mod:`bertlib.launch.instances`). The default utilization, 20 %, is what the reference
run implies (BERT-base on 64 V100: 5 h 33 min for phase 1, see tests/launch/test_estimate.py).
Cost = hours × instances × on-demand USD/hour; a local run has no cost and uses this machine's
measured ~130 GFLOP/s (DESIGN.md) as its peak.

Padding costs the same matmuls as a real token, so the estimate also counts the REAL tokens a run
trains on: rows × S × the dataset's real-token fraction (``manifest.json``'s per-shard ``real_tokens``
over ``examples × S``; near 1 for packed rows, ~0.5 for unpacked rows of length 512 on full Wikipedia
per Krell et al. 2021), and the FLOPs spent per real token — the number packing lowers.
"""

from __future__ import annotations

import sys

from bertlib.config import NOTEBOOK_KEYS, ConfigError, build_config, parse_overrides, read_yaml
from bertlib.launch.instances import instance

DEFAULT_UTILIZATION = 0.20
DEFAULT_VOCAB_SIZE = 30522  # bert-base-uncased
LOCAL_PEAK_TFLOPS = 0.13  # this 2-core CPU on a large fp32 matmul (DESIGN.md)


def model_dims(model_size: str) -> tuple[int, int, int]:
    """(layers L, hidden H, intermediate I) of a preset (``intermediate = 4 × hidden``)."""
    from bertlib.model.config import PRESETS

    layers, hidden, _ = PRESETS[model_size]
    return layers, hidden, 4 * hidden


def forward_flops(layers: int, hidden: int, intermediate: int, seq_len: int, predictions: int | None,
                  vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, float]:
    """Forward FLOPs of one sequence, by part (see the module docstring); ``predictions=None``
    means a SQuAD span head instead of the MLM + NSP heads."""
    L, H, I, S = layers, hidden, intermediate, seq_len
    parts = {"encoder": L * S * 2.0 * (4 * H * H + 2 * H * I), "attention": L * 2.0 * 2 * S * S * H}
    if predictions is None:
        parts["heads"] = S * 2.0 * 2 * H
    else:
        parts["heads"] = predictions * 2.0 * (H * H + H * vocab_size) + 2.0 * H * H + 2.0 * 2 * H
    return parts


def real_token_fraction(data_dir) -> float | None:
    """Share of the training rows' ``[rows, S]`` positions that are real tokens, from a local prepared
    dataset's ``manifest.json`` (None if ``data_dir`` is not a readable local dataset, e.g. an S3 URI)."""
    from pathlib import Path

    from bertlib.data.records import DataError, read_manifest

    if not data_dir or "://" in str(data_dir) or not (Path(data_dir) / "manifest.json").is_file():
        return None
    try:
        manifest = read_manifest(data_dir)
    except DataError:
        return None
    shards = manifest["shards"].get("train") or []
    rows = sum(s.get("examples", 0) for s in shards)
    if not rows or any("real_tokens" not in s for s in shards):
        return None
    return sum(s["real_tokens"] for s in shards) / (rows * manifest["max_seq_length"])


def estimate(cfg, utilization: float = DEFAULT_UTILIZATION, vocab_size: int = DEFAULT_VOCAB_SIZE,
             real_fraction: float | None = None) -> dict:
    """FLOPs / wall time / cost of the run ``cfg`` (a PretrainConfig or SquadConfig).

    ``real_fraction``: the share of row positions that are real tokens (:func:`real_token_fraction`);
    None leaves ``real_tokens`` and ``flops_per_real_token`` out.

    Returns a dict: ``flops`` (total training FLOPs), ``flops_per_sequence`` (training, i.e. 3 ×
    forward), ``sequences`` (rows), ``devices``, ``peak_tflops`` per device, ``utilization``, ``hours``,
    ``wall_time`` ("5h33m"), ``usd`` (None locally), ``instance_type``, ``instance_count``, and with
    ``real_fraction``: ``real_tokens`` and ``flops_per_real_token``.
    """
    if not 0 < utilization <= 1:
        raise ConfigError(f"utilization {utilization}: expected a fraction in (0, 1]")
    layers, hidden, inter = model_dims(cfg.model_size)
    predictions = getattr(cfg, "max_predictions_per_seq", None)
    parts = forward_flops(layers, hidden, inter, cfg.max_seq_length, predictions, vocab_size)
    per_seq = 3.0 * sum(parts.values())
    sequences = cfg.global_batch_size * cfg.total_steps
    flops = per_seq * sequences
    if cfg.backend == "sagemaker":
        inst = instance(cfg.instance_type)
        devices, peak, usd_per_hour = cfg.world_size, inst.peak_tflops_per_gpu, inst.usd_per_hour
        where, count = cfg.instance_type, cfg.instance_count
    else:
        devices, peak, usd_per_hour, where, count = 1, LOCAL_PEAK_TFLOPS, None, "local", 1
    hours = flops / (devices * peak * 1e12 * utilization) / 3600
    real = {}
    if real_fraction is not None:
        tokens = sequences * cfg.max_seq_length * real_fraction
        real = {"real_fraction": real_fraction, "real_tokens": tokens, "flops_per_real_token": flops / tokens}
    return {
        "model_size": cfg.model_size,
        "flops": flops,
        "flops_per_sequence": per_seq,
        "flops_share": {k: v / sum(parts.values()) for k, v in parts.items()},
        "sequences": sequences,
        "devices": devices,
        "peak_tflops": peak,
        "utilization": utilization,
        "hours": hours,
        "wall_time": format_hours(hours),
        "usd": round(hours * count * usd_per_hour, 2) if usd_per_hour is not None else None,
        "instance_type": where,
        "instance_count": count,
        **real,
    }


def implied_utilization(cfg, hours: float, vocab_size: int = DEFAULT_VOCAB_SIZE) -> float:
    """The utilization at which :func:`estimate` gives ``hours`` (e.g. a measured wall time)."""
    return estimate(cfg, 1.0, vocab_size)["hours"] / hours


def format_hours(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def configs_from_file(path: str, overrides: dict) -> dict:
    """``{name: config}`` from a run-config or params YAML; a SQuAD params file with per-version
    blocks (``squadv1: {...}``) gives one config per version. Unresolved ``auto`` / ``${VAR}`` path
    values are irrelevant to the estimate and stay as they are."""
    values = {k: v for k, v in read_yaml(path).items() if k not in NOTEBOOK_KEYS}
    values.update(overrides)
    blocks = {k: values.pop(k) for k in ("squadv1", "squadv2") if isinstance(values.get(k), dict)}
    job = "squad" if blocks or "train_file" in values or "squad_version" in values else "pretrain"
    if not blocks:
        return {values.get("phase", job) if job == "pretrain" else values.get("squad_version", job):
                build_config(job, values, path)}
    return {v: build_config(job, {**values, **block, "squad_version": v}, f"{path} ({v})") for v, block in blocks.items()}


def main(argv: list[str]) -> int:
    """``bertlib estimate --config FILE [--utilization 0.2] [--vocab_size N] [--real_token_fraction F]
    [--key value ...]`` (the fraction defaults to the local dataset's, see :func:`real_token_fraction`)."""
    overrides = parse_overrides(argv)
    path = overrides.pop("config", None)
    if not path:
        raise ConfigError("estimate: --config FILE is required")
    utilization = float(overrides.pop("utilization", DEFAULT_UTILIZATION))
    vocab_size = int(overrides.pop("vocab_size", DEFAULT_VOCAB_SIZE))
    fraction = overrides.pop("real_token_fraction", None)
    for name, cfg in configs_from_file(path, overrides).items():
        real = float(fraction) if fraction is not None else real_token_fraction(getattr(cfg, "data_dir", None))
        e = estimate(cfg, utilization, vocab_size, real)
        cost = f", ${e['usd']:,.0f} on demand" if e["usd"] is not None else ""
        if "real_tokens" in e:
            cost += (f"; {e['real_tokens']:.3g} real tokens ({e['real_fraction']:.1%} of the row positions), "
                     f"{e['flops_per_real_token']:.3g} FLOP per real token")
        print(f"{name}: BERT-{e['model_size']}, {e['sequences']:,} sequences × {e['flops_per_sequence']:.3g} FLOP "
              f"= {e['flops']:.3g} FLOP; {e['devices']} × {e['peak_tflops']:g} TFLOP/s peak at "
              f"{e['utilization']:.0%} → {e['wall_time']} on {e['instance_count']} × {e['instance_type']}{cost}")
    return 0


if __name__ == "__main__":
    from bertlib.cli import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
