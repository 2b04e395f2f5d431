"""Instance table: GPUs per instance, GPU peak throughput, vCPUs, on-demand price.

Prices are us-east-1 SageMaker training on-demand USD/hour as published by AWS (check the pricing
page before budgeting; they change). Peak TFLOP/s are the dense tensor-core numbers of the GPU's data
sheet for fp16/bf16 (V100 125, A100 312, H100 SXM 989). vCPUs are the EC2 instance type's.

The CPU instances (``gpus=0``) are for ``prepare-data`` (:mod:`bertlib.data.projection`; one
process per host using every vCPU), not for training. Their prices could not be checked against the
AWS pricing page from here: they are the values several public price tables carry for
SageMaker us-east-1 (ml.m5.24xlarge 5.53, ml.m5.12xlarge 2.765, ml.c5.9xlarge 1.836,
ml.c5.18xlarge 3.672), which are the EC2 on-demand prices × 1.2; ml.r5.24xlarge is EC2's 6.048 × 1.2
on the same pattern (ml.r5.16xlarge's 4.838 in those tables × 1.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from bertlib.core.errors import ConfigError


@dataclass(frozen=True)
class Instance:
    gpus: int
    gpu: str
    peak_tflops_per_gpu: float  # dense fp16/bf16 tensor-core peak
    usd_per_hour: float
    vcpus: int


INSTANCES: dict[str, Instance] = {
    "ml.p3.16xlarge": Instance(8, "V100-16GB", 125.0, 28.152, 64),
    "ml.p3dn.24xlarge": Instance(8, "V100-32GB", 125.0, 35.894, 96),
    "ml.p4d.24xlarge": Instance(8, "A100-40GB", 312.0, 37.688, 96),
    "ml.p4de.24xlarge": Instance(8, "A100-80GB", 312.0, 47.11, 96),
    "ml.p5.48xlarge": Instance(8, "H100-80GB", 989.0, 113.07, 192),
    "ml.g5.12xlarge": Instance(4, "A10G-24GB", 125.0, 7.09, 48),
    "ml.g5.48xlarge": Instance(8, "A10G-24GB", 125.0, 20.36, 192),
    "ml.g5.2xlarge": Instance(1, "A10G-24GB", 125.0, 1.515, 8),
    # CPU instances for prepare-data (prices: see the module docstring)
    "ml.m5.12xlarge": Instance(0, "none", 0.0, 2.765, 48),
    "ml.m5.24xlarge": Instance(0, "none", 0.0, 5.53, 96),
    "ml.c5.9xlarge": Instance(0, "none", 0.0, 1.836, 36),
    "ml.c5.18xlarge": Instance(0, "none", 0.0, 3.672, 72),
    "ml.r5.24xlarge": Instance(0, "none", 0.0, 7.258, 96),
}


def instance(name: str) -> Instance:
    """Look up an instance type; unknown names are a ConfigError naming the known ones."""
    if name not in INSTANCES:
        raise ConfigError(f"instance_type {name!r}: unknown (known: {', '.join(sorted(INSTANCES))})")
    return INSTANCES[name]


def gpus_per_instance(name: str) -> int:
    return instance(name).gpus
