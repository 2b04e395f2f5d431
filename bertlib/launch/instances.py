"""Accelerator instance table: GPUs per instance, GPU peak throughput, on-demand price.

Prices are us-east-1 SageMaker training on-demand USD/hour as published by AWS (check the pricing
page before budgeting; they change). Peak TFLOP/s are the dense tensor-core numbers of the GPU's data
sheet for fp16/bf16 (V100 125, A100 312, H100 SXM 989).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instance:
    gpus: int
    gpu: str
    peak_tflops_per_gpu: float  # dense fp16/bf16 tensor-core peak
    usd_per_hour: float


INSTANCES: dict[str, Instance] = {
    "ml.p3.16xlarge": Instance(8, "V100-16GB", 125.0, 28.152),
    "ml.p3dn.24xlarge": Instance(8, "V100-32GB", 125.0, 35.894),
    "ml.p4d.24xlarge": Instance(8, "A100-40GB", 312.0, 37.688),
    "ml.p4de.24xlarge": Instance(8, "A100-80GB", 312.0, 47.11),
    "ml.p5.48xlarge": Instance(8, "H100-80GB", 989.0, 113.07),
    "ml.g5.12xlarge": Instance(4, "A10G-24GB", 125.0, 7.09),
    "ml.g5.48xlarge": Instance(8, "A10G-24GB", 125.0, 20.36),
    "ml.g5.2xlarge": Instance(1, "A10G-24GB", 125.0, 1.515),
}


def instance(name: str) -> Instance:
    """Look up an instance type; unknown names are a ConfigError naming the known ones."""
    from bertlib.config import ConfigError

    if name not in INSTANCES:
        raise ConfigError(f"instance_type {name!r}: unknown (known: {', '.join(sorted(INSTANCES))})")
    return INSTANCES[name]


def gpus_per_instance(name: str) -> int:
    return instance(name).gpus
