"""What the image tests' jobs share: the tiny CPU phase 1 they launch (as params/sagemaker/phase1.yaml, shrunk)
and the prepared dataset uploaded to (moto) S3, as the README says to."""

from pathlib import Path

import boto3

BUCKET = "bertlib-launch-test"
#: one thread per TensorFlow pool: the containers share this machine's 2 cores
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def upload_dataset(prepared_dataset: Path, prefix: str, phases=("phase1", "phase2")) -> dict[str, str]:
    """Every file of ``prepared_dataset/<phase>`` to ``s3://BUCKET/<prefix>/data/<phase>/``; {phase: its S3 URI}."""
    s3 = boto3.client("s3")
    for phase in phases:
        for path in sorted((prepared_dataset / phase).rglob("*")):
            if path.is_file():
                s3.upload_file(str(path), BUCKET, f"{prefix}/data/{phase}/{path.relative_to(prepared_dataset / phase)}")
    return {phase: f"s3://{BUCKET}/{prefix}/data/{phase}" for phase in phases}


def phase1_values(experiment: str, runs_root, prefix: str, **overrides) -> dict:
    """Notebook parameters (as in params/sagemaker/phase1.yaml) for a tiny 2-host × 1-rank CPU job whose data,
    checkpoints and outputs are under ``s3://BUCKET/<prefix>``."""
    uri = f"s3://{BUCKET}/{prefix}"
    return {
        "experiment": experiment,
        "runs_root": str(runs_root),
        "backend": "sagemaker",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 2,
        "processes_per_host": 1,
        "phase": "phase1",
        "model_size": "tiny",
        "data_dir": f"{uri}/data/phase1",
        "checkpoint_s3_uri": f"{uri}/checkpoints/phase1",
        "output_s3_uri": f"{uri}/output",
        "run_dir": "auto",
        "per_gpu_batch_size": 8,
        "max_seq_length": 64,
        "max_predictions_per_seq": 10,
        "optimizer": "lamb",
        "learning_rate": 0.005,
        "end_learning_rate": 0.0003,
        "warmup_steps": 5,
        "total_steps": 40,
        "log_frequency": 5,
        "checkpoint_frequency": 10,
        "precision": "fp32",
        "skip_xla": True,
        "seed": 42,
        "deterministic_ops": True,
        "environment": THREADS,
        "max_run_seconds": 3600,
        **overrides,
    }
