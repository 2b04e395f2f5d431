"""``bertlib pretrain --config FILE.yaml [--key value ...]``: phase 1 / phase 2 BERT pretraining.

The same code runs as one process, under ``horovodrun -np N`` and in a SageMaker training job::

    config (YAML + overrides) ─ validated, with the dataset's manifest, here: before TF is imported
    └─ pretrain_run.run: Horovod init ─ BertPretrainer (vocab size from the manifest)
       ─ LAMB/AdamW + warmup/poly decay
       └─ Trainer.fit: resume from run_dir/checkpoints, or init weights from checkpoint_path (phase 2);
          held-out MLM/NSP evaluation every validation_frequency steps and at the end
          (bertlib.eval.pretraining: validation_dir, else data_dir's validation split)
          └─ export (bert_config.json, vocab.txt, bert_model.ckpt) ─ summary.json

Bad input (unknown key, wrong type, a global batch that does not add up, a missing data dir, data
whose sequence length / predictions / vocab disagree with the config or the init checkpoint) is one
line on stderr and exit code 2; the config and data-dir checks run before TensorFlow is even imported.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bertlib.core.config import PretrainConfig, global_batch, job_command, parse_job_args
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.core.vocab import check_vocab_compatible, vocab_info
from bertlib.data.records import read_manifest, validate_dataset
from bertlib.eval.pretraining import validation_source
from bertlib.model.checkpoints import resolve_pretrained
from bertlib.train import distributed
from bertlib.train.paths import RunPaths, is_training_checkpoint_dir, read_checkpoint_vocab, run_paths
from bertlib.train.setup import model_config

#: the module of the TensorFlow side, imported by name once the input is checked
RUN_MODULE = "bertlib.train.pretrain_run"

#: ``bertlib pretrain``'s command line, generated from PretrainConfig (``--help`` lists every key)
CLI = job_command(
    "pretrain",
    help="Phase 1 / phase 2 BERT pretraining (Horovod-aware): --config FILE (optional) "
    "plus --key value overrides of its PretrainConfig keys (values are YAML).",
)


def parse_args(argv: list[str]) -> PretrainConfig | None:
    """``--config FILE`` (optional) plus ``--key value`` overrides → a validated PretrainConfig (None: ``--help``
    was printed)."""
    return parse_job_args("pretrain", CLI, argv)[0]


def _pretrained(cfg: PretrainConfig):
    """The init checkpoint (``bertlib.model.checkpoints.Pretrained``), or None for scratch / a training
    checkpoint folder (whose model is the preset ``model_size``)."""
    if cfg.load_from != "checkpoint" or is_training_checkpoint_dir(cfg.checkpoint_path):
        return None
    return resolve_pretrained(cfg.checkpoint_path)


def validate_inputs(cfg: PretrainConfig, paths: RunPaths, world: int) -> dict:
    """All checks that need no TensorFlow graph; returns the dataset manifest."""
    global_batch(cfg, world)  # global_batch_size_check against the launcher's world size
    if paths.data_dir is None or not paths.data_dir.is_dir():
        raise FileNotFoundError(f"{paths.data_dir}: data_dir not found (a prepared dataset folder)")
    vocab = None
    data_vocab = read_manifest(paths.data_dir)["vocab"]
    for ckpt_dir in [paths.checkpoint_dir] + ([Path(cfg.checkpoint_path)] if cfg.load_from == "checkpoint" else []):
        trained_on = read_checkpoint_vocab(ckpt_dir)
        if trained_on is not None:  # resuming, or initializing from a training checkpoint folder
            check_vocab_compatible(
                trained_on, data_vocab, f"the checkpoints in {ckpt_dir}", f"{paths.data_dir}/manifest.json: data"
            )
    if cfg.load_from == "checkpoint":
        pre = _pretrained(cfg)
        if pre is not None:
            if cfg.load_optimizer_state:
                raise ConfigError(
                    f"{cfg.checkpoint_path}: load_optimizer_state needs a bertlib training "
                    "checkpoint folder (a run's checkpoints/), this one holds weights only"
                )
            if pre.config.vocab_size != data_vocab["size"]:
                raise ConfigError(
                    f"{cfg.checkpoint_path}: model vocab_size {pre.config.vocab_size} but "
                    f"{paths.data_dir}/manifest.json has a vocab of {data_vocab['size']}"
                )
            if pre.vocab_info is not None:
                vocab = pre.vocab_info
            elif pre.vocab_file is not None:
                lower = data_vocab.get("lowercase", True) if pre.do_lower_case is None else pre.do_lower_case
                vocab = vocab_info(pre.vocab_file, lower, data_vocab.get("strip_accents"))
    # rank 0 verifies every shard's sha256; the other ranks check sizes and first records only, so a
    # 64-rank job reads the dataset once at start, not 64 times
    return validate_dataset(
        paths.data_dir,
        cfg.max_seq_length,
        cfg.max_predictions_per_seq,
        vocab=vocab,
        checksums=distributed.launcher_rank() == 0,
    )


def build_bert_config(cfg: PretrainConfig, vocab_size: int):
    """The model config: the preset ``model_size`` (or the init checkpoint's config, which must be
    that size), with the run's dropout rates (:func:`bertlib.train.setup.model_config`)."""
    pre = _pretrained(cfg)
    return model_config(cfg, vocab_size, pre.config if pre is not None else None, require_model_size=True)


def main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    if cfg is None:
        return 0
    world = distributed.prepare_process()  # before any TF op
    paths = run_paths(cfg)
    manifest = validate_inputs(cfg, paths, world)
    validation = validation_source(cfg, paths.data_dir, manifest["vocab"], checksums=distributed.launcher_rank() == 0)
    bert_config = build_bert_config(cfg, manifest["vocab"]["size"])
    return importlib.import_module(RUN_MODULE).train(cfg, paths, manifest, bert_config, validation)


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
