"""The subcommands of ``bertlib`` and the modules whose ``main(argv)`` runs each.

One table for the console script (:mod:`bertlib.cli`) and the SageMaker container entry
(:mod:`bertlib.launch.sm_entry`); both import a job's module by name only when it runs, so that
``--help`` and a bad ``--config`` never pay for importing TensorFlow.
"""

from __future__ import annotations

import importlib

from bertlib.core.errors import run_guarded

#: subcommand -> (module whose ``main(argv)`` runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("bertlib.data.prepare", "Wikipedia/text -> WordPiece -> pretraining TFRecords"),
    "adopt-data": ("bertlib.data.adopt", "Google-format pretraining TFRecords -> manifest.json"),
    "pretrain": ("bertlib.train.pretrain", "phase 1 / phase 2 pretraining (Horovod-aware)"),
    "squad": ("bertlib.squad.finetune", "SQuAD finetune + predict + evaluate"),
    "launch": ("bertlib.launch_cli", "run pretrain/squad/prepare-data locally (horovodrun) or on SageMaker"),
    "status": ("bertlib.status_cli", "the registry's SageMaker jobs, live; attach to a running one"),
    "report": ("bertlib.report", "plots and the F1/timing table from run directories"),
    "squad-eval": ("bertlib.squad.metrics", "official SQuAD v1.1/v2.0 evaluation"),
    "convert-checkpoint": ("bertlib.model.checkpoints", "Google TF1 / HF safetensors -> bertlib"),
    "export": ("bertlib.train.hf_export", "a bertlib model -> a Hugging Face dir (transformers, keras-hub)"),
    "estimate": ("bertlib.estimate_cli", "FLOPs, wall time and cost of a run"),
    "canary": ("bertlib.launch.canary", "ranks, allreduce bandwidth, step time and cost, checkpoint, versions"),
    "deploy": ("bertlib.deploy_cli", "a SageMaker endpoint for the finetuned SQuAD model (create / ask / delete)"),
}


def run_command(name: str, argv: list[str]) -> int:
    """Run subcommand ``name`` (a key of :data:`COMMANDS`) on ``argv``; bad input exits 2 (one line)."""
    return run_guarded(importlib.import_module(COMMANDS[name][0]).main, list(argv))
