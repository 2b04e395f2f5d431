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
of the GPU (:mod:`bertlib.core.instances`). The default utilization, 20 %, is what the reference
run implies (BERT-base on 64 V100: 5 h 33 min for phase 1, see tests/launch/test_estimate.py).
Cost = hours × instances × on-demand USD/hour; a local run has no cost and uses this machine's
measured ~130 GFLOP/s (a large fp32 matmul) as its peak.

Padding costs the same matmuls as a real token, so the estimate also counts the REAL tokens a run
trains on: rows × S × the dataset's real-token fraction (``manifest.json``'s per-shard ``real_tokens``
over ``examples × S``; near 1 for packed rows, ~0.5 for unpacked rows of length 512 on full Wikipedia
per Krell et al. 2021), and the FLOPs spent per real token — the number packing lowers.

The gradient allreduce moves every trained parameter once per optimizer step (not per micro-batch):
a payload of ``parameters × 4`` bytes per rank in float32, ``× 2`` with ``allreduce_compression: fp16``
(``hvd.Compression.fp16``), which saves ``parameters × (4 − 2)`` bytes per rank per step; a ring
allreduce sends ``2 (N − 1) / N`` times the payload from each of N ranks. :func:`parameter_count` counts
the parameters that receive gradients (pretraining: encoder, pooler, MLM and NSP heads; SQuAD: encoder
and span head — the pooler gets no gradient there).

A ``prepare-data`` config (it has ``sources``) gets the data-preparation projection instead: hours
per stage on 1, 2, 4, 8 and ``instance_count`` CPU instances of ``instance_type``, the cost, the disk
per host and the bounding stage (:mod:`bertlib.data.projection`, from rates measured on this machine).
"""

from __future__ import annotations

from pathlib import Path

from bertlib.core.config import LaunchedJob
from bertlib.core.errors import ConfigError, DataError
from bertlib.core.instances import INSTANCES, instance
from bertlib.data.preflight import gb
from bertlib.data.projection import STAGES
from bertlib.data.records import read_manifest
from bertlib.model.config import PRESETS

DEFAULT_UTILIZATION = 0.20
DEFAULT_VOCAB_SIZE = 30522  # bert-base-uncased
LOCAL_PEAK_TFLOPS = 0.13  # this 2-core CPU on a large fp32 matmul (measured)


def model_dims(model_size: str) -> tuple[int, int, int]:
    """(layers L, hidden H, intermediate I) of a preset (``intermediate = 4 × hidden``)."""
    layers, hidden, _ = PRESETS[model_size]
    return layers, hidden, 4 * hidden


def forward_flops(
    layers: int,
    hidden: int,
    intermediate: int,
    seq_len: int,
    predictions: int | None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
) -> dict[str, float]:
    """Forward FLOPs of one sequence, by part (see the module docstring); ``predictions=None``
    means a SQuAD span head instead of the MLM + NSP heads."""
    L, H, I, S = layers, hidden, intermediate, seq_len
    parts = {"encoder": L * S * 2.0 * (4 * H * H + 2 * H * I), "attention": L * 2.0 * 2 * S * S * H}
    if predictions is None:
        parts["heads"] = S * 2.0 * 2 * H
    else:
        parts["heads"] = predictions * 2.0 * (H * H + H * vocab_size) + 2.0 * H * H + 2.0 * 2 * H
    return parts


def parameter_count(
    layers: int,
    hidden: int,
    intermediate: int,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = 512,
    type_vocab_size: int = 2,
    pretraining: bool = True,
) -> int:
    """Trained parameters of BERT with the pretraining heads (MLM transform + LayerNorm + output bias
    [V] tied to the word embeddings, NSP [2, H] + [2], the pooler) or the SQuAD span head ([2, H] + [2],
    no pooler): the variables whose gradients are allreduced."""
    H, I = hidden, intermediate
    embeddings = (vocab_size + max_positions + type_vocab_size) * H + 2 * H
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
    if pretraining:
        heads = (H * H + H) + (H * H + H + 2 * H + vocab_size) + (2 * H + 2)
    else:
        heads = 2 * H + 2
    return embeddings + layers * layer + heads


def allreduce_bytes(parameters: int, compression: str) -> dict[str, int]:
    """Gradient allreduce payload per rank per optimizer step: ``bytes`` with ``compression`` (none:
    float32, fp16: float16), ``bytes_fp32`` without, ``saved`` = their difference."""
    width = {"none": 4, "fp16": 2}[compression]
    return {"bytes": parameters * width, "bytes_fp32": parameters * 4, "saved": parameters * (4 - width)}


def real_token_fraction(data_dir) -> float | None:
    """Share of the training rows' ``[rows, S]`` positions that are real tokens, from a local prepared
    dataset's ``manifest.json`` (None if ``data_dir`` is not a readable local dataset, e.g. an S3 URI)."""
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


def estimate(
    launched: LaunchedJob,
    utilization: float = DEFAULT_UTILIZATION,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    real_fraction: float | None = None,
) -> dict:
    """FLOPs / wall time / cost of a launched pretraining or SQuAD run (its job config and where it runs).

    ``real_fraction``: the share of row positions that are real tokens (:func:`real_token_fraction`);
    None leaves ``real_tokens`` and ``flops_per_real_token`` out.

    Returns a dict: ``flops`` (total training FLOPs), ``flops_per_sequence`` (training, i.e. 3 ×
    forward), ``sequences`` (rows), ``devices``, ``peak_tflops`` per device, ``utilization``, ``hours``,
    ``wall_time`` ("5h33m"), ``usd`` (None locally), ``instance_type``, ``instance_count``, and with
    ``real_fraction``: ``real_tokens`` and ``flops_per_real_token``; ``parameters`` (trained, see
    :func:`parameter_count`) and ``allreduce`` (:func:`allreduce_bytes` with the run's compression).
    """
    if not 0 < utilization <= 1:
        raise ConfigError(f"utilization {utilization}: expected a fraction in (0, 1]")
    cfg, launch = launched.job, launched.launch
    layers, hidden, inter = model_dims(cfg.model_size)
    predictions = getattr(cfg, "max_predictions_per_seq", None)
    parts = forward_flops(layers, hidden, inter, cfg.max_seq_length, predictions, vocab_size)
    per_seq = 3.0 * sum(parts.values())
    params = parameter_count(layers, hidden, inter, vocab_size, pretraining=predictions is not None)
    sequences = launched.global_batch_size * cfg.total_steps
    flops = per_seq * sequences
    if launch.backend == "sagemaker":
        inst = instance(launch.instance_type)
        if not inst.gpus:
            raise ConfigError(f"instance_type {launch.instance_type!r} has no GPU (a CPU instance for prepare-data)")
        devices, peak, usd_per_hour = launched.world_size, inst.peak_tflops_per_gpu, inst.usd_per_hour
        where, count = launch.instance_type, launch.instance_count
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
        "parameters": params,
        "allreduce": allreduce_bytes(params, cfg.allreduce_compression),
        **real,
    }


def format_hours(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def data_lines(p: dict, volume_gb: int | None = None) -> list[str]:
    """The printed data-prep projection (:func:`bertlib.data.projection.project`'s result): a header,
    one line per stage (hours on each instance count, the stage's work and what bounds it) and the
    total line (hours, USD, disk per host and the bounding stage per instance count; with
    ``volume_gb``, a host volume smaller than the disk it needs is named)."""
    w, runs = p["work"], p["runs"]
    counts = sorted(runs)
    pairs = sum(w["pairs"].values())
    origins = ", ".join(dict.fromkeys(origin for _, origin in p["sizes"].values()))
    lines = [
        f"data: {gb(w['source_bytes'])} of sources ({origins}) → {gb(w['text_bytes'])} of text, "
        f"{w['tokens']:.3g} tokens, {pairs:.3g} pairs ("
        + ", ".join(f"{k} {v:.3g}" for k, v in w["pairs"].items())
        + f"), {w['shards']} shards; {p['instance_type']}: {p['vcpus']} vCPUs (each taken to run a worker like a "
        f"core of this machine), ${p['usd_per_hour']:g}/h on demand; disk writes at {p['disk_MBps']:.0f} MB/s "
        "(--disk_MBps)" + "".join(f"; {note}" for note in p["notes"])
    ]
    what = {
        "download": f"{gb(w['download_bytes'])} at {p['download_MBps']:g} MB/s (assumed; --download_MBps), every host",
        "extract": f"{gb(w['source_bytes'])} → {gb(w['text_bytes'])} of text, every host",
        "vocab": "every host",
        "tokenize": f"{w['tokens']:.3g} tokens, every host",
        "instances": f"{pairs:.3g} pairs, every host",
        "shards": f"{pairs:.3g} pairs, divided among the hosts",
    }
    for stage in STAGES:
        hours = " | ".join(f"{n}× {format_hours(runs[n]['stages'][stage]['s'] / 3600):>6}" for n in counts)
        bounds = [runs[n]["stages"][stage]["bound"] for n in counts]
        bound = bounds[0] if len(set(bounds)) == 1 else ", ".join(f"{b} on {n}" for n, b in zip(counts, bounds))
        lines.append(f"  {stage:<10} {hours}   {what[stage]}; bound by {bound}")
    totals = []
    for n, r in runs.items():
        short = volume_gb is not None and r["disk_bytes"] > volume_gb * 1e9
        totals.append(
            f"{n} × {format_hours(r['hours'])} ${r['usd']:,.0f}, {gb(r['disk_bytes'])} disk per host"
            + (f" (> volume_size_gb {volume_gb})" if short else "")
            + f", bound by {r['bound']} (then {r['next']})"
            + (" [instance_count]" if n == p["instance_count"] else "")
        )
    lines.append("  total: " + " | ".join(totals))
    return lines


def measured_projection(total_steps: int, step_seconds: float, instance_type: str, instance_count: int) -> dict:
    """Wall time and on-demand cost of ``total_steps`` optimizer steps at a measured ``step_seconds``
    each (a canary's, :mod:`bertlib.launch.canary`) on ``instance_count`` × ``instance_type``
    (``"local"``, or a type missing from :mod:`bertlib.core.instances`: no cost). Returns ``hours``,
    ``wall_time`` ("5h33m"), ``usd`` (None without a price) and ``usd_per_hour`` of one instance."""
    hours = total_steps * step_seconds / 3600
    price = INSTANCES[instance_type].usd_per_hour if instance_type in INSTANCES else None
    return {
        "hours": hours,
        "wall_time": format_hours(hours),
        "usd": round(hours * instance_count * price, 2) if price is not None else None,
        "usd_per_hour": price,
        "instance_type": instance_type,
        "instance_count": instance_count,
    }
