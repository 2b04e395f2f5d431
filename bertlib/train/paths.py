"""Where a training run reads and writes, locally and under SageMaker.

Locally everything lives under ``cfg.run_dir``::

    run_dir/                 config.yaml, metrics.jsonl, summary.json, tb/   (output_dir = run_dir)
    run_dir/checkpoints/     tf.train.Checkpoint files (resume)
    run_dir/export/          the bertlib export (bert_config.json, vocab.txt, bert_model.ckpt.*)

Under SageMaker (``SM_MODEL_DIR`` set) the container's contract wins: the export goes to
``SM_MODEL_DIR`` (uploaded as model.tar.gz), metrics/summary to ``SM_OUTPUT_DATA_DIR``, checkpoints
to ``$BERTLIB_CHECKPOINT_DIR`` (default ``/opt/ml/checkpoints``, which SageMaker syncs with S3 and
restores on restart), and the data directory defaults to the ``train`` channel (``SM_CHANNEL_TRAIN``).

No TensorFlow import here: the entry points resolve paths before importing it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path
    checkpoint_dir: Path
    export_dir: Path
    output_dir: Path
    data_dir: Path | None = None

    @property
    def tb_dir(self) -> Path:
        return self.output_dir / "tb"

    @property
    def metrics_file(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.output_dir / "summary.json"

    @property
    def config_file(self) -> Path:
        return self.output_dir / "config.yaml"


def on_sagemaker(env: dict | None = None) -> bool:
    """True inside a SageMaker training container (``SM_MODEL_DIR`` is set)."""
    return bool((os.environ if env is None else env).get("SM_MODEL_DIR"))


def run_paths(cfg, env: dict | None = None) -> RunPaths:
    """Resolve the run's directories from ``cfg`` (``run_dir``, optional ``data_dir``) and ``env``.

    ``data_dir`` is ``cfg.data_dir`` when the config has one; under SageMaker a relative or empty
    ``data_dir`` (or ``"SM_CHANNEL_TRAIN"``) is taken from the ``train`` channel. Nothing is created.
    """
    env = os.environ if env is None else env
    data = getattr(cfg, "data_dir", None)
    if on_sagemaker(env):
        channel = env.get("SM_CHANNEL_TRAIN")
        if channel and (not data or data == "SM_CHANNEL_TRAIN" or not os.path.isabs(data)):
            data = os.path.join(channel, data) if data and data != "SM_CHANNEL_TRAIN" else channel
        output = Path(env.get("SM_OUTPUT_DATA_DIR") or "/opt/ml/output/data")
        return RunPaths(
            run_dir=output,
            output_dir=output,
            checkpoint_dir=Path(env.get("BERTLIB_CHECKPOINT_DIR") or "/opt/ml/checkpoints"),
            export_dir=Path(env["SM_MODEL_DIR"]),
            data_dir=Path(data) if data else None,
        )
    run_dir = Path(cfg.run_dir)
    return RunPaths(
        run_dir=run_dir,
        output_dir=run_dir,
        checkpoint_dir=run_dir / "checkpoints",
        export_dir=run_dir / "export",
        data_dir=Path(data) if data else None,
    )


def is_training_checkpoint_dir(path: str | os.PathLike) -> bool:
    """A bertlib training checkpoint folder (``run_dir/checkpoints``: a ``checkpoint`` state file,
    object-based ``ckpt-N``, no ``bert_config.json``) rather than an export/Google/HF model."""
    p = Path(path)
    return p.is_dir() and (p / "checkpoint").is_file() and not (p / "bert_config.json").exists()


#: beside the training checkpoints: the vocabulary (``manifest.json["vocab"]``) of the data they were
#: trained on, so that a resume or a phase-2 init from them refuses data tokenized differently
CHECKPOINT_VOCAB = "vocab.json"


def read_checkpoint_vocab(checkpoint_dir: str | os.PathLike) -> dict | None:
    """The vocab info recorded in a training checkpoint folder (None if there is none)."""
    path = Path(checkpoint_dir) / CHECKPOINT_VOCAB
    return json.loads(path.read_text()) if path.is_file() else None
