"""The ``bertlib`` console script: ``bertlib SUBCOMMAND [--config FILE.yaml] [--key value ...]``.

Each subcommand lives in the module that does the work and is imported only when called, so that
``bertlib squad-eval`` or a bad ``--config`` never pays for importing TensorFlow. Every subcommand is
also ``python -m <module>``. Bad input prints one line to stderr and exits 2.
"""

from __future__ import annotations

import importlib
import sys

from bertlib.errors import run_guarded

#: subcommand -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare-data": ("bertlib.data.prepare", "main", "Wikipedia/text -> WordPiece -> pretraining TFRecords"),
    "adopt-data": ("bertlib.data.adopt", "main", "Google-format pretraining TFRecords -> manifest.json"),
    "pretrain": ("bertlib.train.pretrain", "main", "phase 1 / phase 2 pretraining (Horovod-aware)"),
    "squad": ("bertlib.train.squad", "main", "SQuAD finetune + predict + evaluate"),
    "launch": ("bertlib.launch.cli", "main", "run pretrain/squad locally (horovodrun) or on SageMaker"),
    "report": ("bertlib.report", "main", "plots and the F1/timing table from run directories"),
    "squad-eval": ("bertlib.eval.squad_metrics", "main", "official SQuAD v1.1/v2.0 evaluation"),
    "convert-checkpoint": ("bertlib.model.checkpoints", "main", "Google TF1 / HF safetensors -> bertlib"),
    "estimate": ("bertlib.launch.estimate", "main", "FLOPs, wall time and cost of a run"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: bertlib SUBCOMMAND [--config FILE.yaml] [--key value ...]\n\nsubcommands:")
        for name, (_, _, doc) in COMMANDS.items():
            print(f"  {name:<20}{doc}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown subcommand {name!r} (try: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return run_guarded(getattr(importlib.import_module(module), func), rest)


if __name__ == "__main__":
    sys.exit(main())
