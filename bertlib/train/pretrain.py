"""``bertlib pretrain --config FILE.yaml [--key value ...]``: phase 1 / phase 2 BERT pretraining.

The same code runs as one process, under ``horovodrun -np N`` and in a SageMaker training job::

    config (YAML + overrides) ─ validated, with the dataset's manifest, before any TF graph is built
    └─ Horovod init ─ BertPretrainer (vocab size from the manifest) ─ LAMB/AdamW + warmup/poly decay
       └─ Trainer.fit: resume from run_dir/checkpoints, or init weights from checkpoint_path (phase 2);
          held-out MLM/NSP evaluation every validation_frequency steps and at the end
          (bertlib.eval.pretraining: validation_dir, else data_dir's validation split)
          └─ export (bert_config.json, vocab.txt, bert_model.ckpt) ─ summary.json

Bad input (unknown key, wrong type, a global batch that does not add up, a missing data dir, data
whose sequence length / predictions / vocab disagree with the config or the init checkpoint) is one
line on stderr and exit code 2; the config and data-dir checks run before TensorFlow is even imported.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bertlib.core.config import PretrainConfig, global_batch, job_command, parse_job_args
from bertlib.core.errors import ConfigError
from bertlib.core.vocab import check_vocab_compatible
from bertlib.train import distributed
from bertlib.train.paths import CHECKPOINT_VOCAB, RunPaths, is_training_checkpoint_dir, read_checkpoint_vocab, run_paths
from bertlib.train.setup import configure_numerics, model_config

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
    from bertlib.model.checkpoints import resolve_pretrained

    return resolve_pretrained(cfg.checkpoint_path)


def validate_inputs(cfg: PretrainConfig, paths: RunPaths, world: int) -> dict:
    """All checks that need no TensorFlow graph; returns the dataset manifest."""
    from bertlib.data.records import read_manifest, validate_dataset

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
                from bertlib.core.vocab import vocab_info

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


def run(cfg: PretrainConfig, paths: RunPaths, manifest: dict, bert_config, validation=None) -> dict:
    """Train as configured (after :func:`validate_inputs`), evaluating on ``validation`` (a
    :class:`bertlib.eval.pretraining.ValidationSource`, or None); returns the summary written by rank 0."""
    rank, world, _ = distributed.init()
    from bertlib.core.files import write_json
    from bertlib.core.vocab import vocab_info
    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertPretrainer, pretraining_losses
    from bertlib.model.checkpoints import export_model
    from bertlib.train.checkpointing import init_from_checkpoint
    from bertlib.train.loop import Trainer

    configure_numerics(cfg)
    model = BertPretrainer(bert_config)
    chief = rank == 0
    trainer = Trainer.from_config(cfg, model, pretraining_losses, paths, cfg.phase, world, chief)
    optimizer, writer, global_batch = trainer.optimizer, trainer.metrics, trainer.global_batch_size

    def data_fn(skip: int):
        return pretraining_dataset(
            paths.data_dir,
            "train",
            cfg.per_gpu_batch_size,
            cfg.max_seq_length,
            cfg.max_predictions_per_seq,
            rank=rank,
            world=world,
            shuffle=cfg.shuffle_buffer > 1,
            seed=cfg.seed,
            shuffle_buffer=cfg.shuffle_buffer,
            skip_batches=skip,
            checksums=False,
        )

    def init_fn() -> str:
        return init_from_checkpoint(model, cfg.checkpoint_path, optimizer if cfg.load_optimizer_state else None)

    evaluator = None
    if validation is not None:
        from bertlib.eval.pretraining import PretrainingEvaluator

        held_out = pretraining_dataset(
            validation.data_dir,
            validation.split,
            cfg.per_gpu_batch_size,
            cfg.max_seq_length,
            cfg.max_predictions_per_seq,
            rank=rank,
            world=world,
            shuffle=False,
            repeat=False,
            drop_remainder=False,
            checksums=False,
        )
        evaluator = PretrainingEvaluator(
            model, held_out, distributed.allreduce_sum, cfg.validation_steps, jit_compile=not cfg.skip_xla
        )

    if chief:
        write_json(paths.checkpoint_dir / CHECKPOINT_VOCAB, manifest["vocab"])
    writer.message(
        f"phase={cfg.phase} model={cfg.model_size} processes={world} global_batch={global_batch} "
        f"precision={cfg.precision} xla={not cfg.skip_xla} steps={cfg.total_steps}"
    )
    if evaluator is not None:
        cap = f", at most {cfg.validation_steps} batches per process" if cfg.validation_steps else ""
        writer.message(
            f"held-out evaluation every {cfg.validation_frequency} steps and at the end on {validation.describe()}{cap}"
        )
    elif cfg.validation_frequency:
        writer.message(
            f"no held-out evaluation: {paths.data_dir / 'manifest.json'} lists no validation shards "
            "and validation_dir is not set"
        )
    t0 = time.perf_counter()
    try:
        final = trainer.fit(
            data_fn,
            init_fn if cfg.load_from == "checkpoint" else None,
            evaluate=evaluator,
            evaluate_frequency=cfg.validation_frequency,
        )
    finally:
        writer.close()
    summary = {}
    if chief:
        vocab, lowercase = paths.data_dir / "vocab.txt", manifest["vocab"].get("lowercase")
        export_model(
            model,
            bert_config,
            vocab,
            paths.export_dir,
            vocab_info=None
            if lowercase is None
            else vocab_info(vocab, lowercase, manifest["vocab"].get("strip_accents")),
        )
        steps_run = final.pop("steps_run")
        wall = final.pop("wall_time_s")
        if steps_run == 0 and paths.summary_file.exists():  # restarted after it had finished
            return json.loads(paths.summary_file.read_text())
        eval_s = evaluator.time_s if evaluator is not None else 0.0
        summary = {
            "job": "pretrain",
            "phase": cfg.phase,
            "steps": cfg.total_steps,
            "steps_run": steps_run,
            "wall_time_s": time.perf_counter() - t0,
            "train_time_s": wall,
            "validation_time_s": eval_s,
            "validation_data": validation.describe() if validation is not None else None,
            "seq_per_sec": global_batch * steps_run / (wall - eval_s) if wall > eval_s else None,
            "processes": world,
            "global_batch_size": global_batch,
            "model_size": cfg.model_size,
            "precision": cfg.precision,
            "max_seq_length": cfg.max_seq_length,
            "resumed_from": trainer.restored_from,
            "export_dir": str(paths.export_dir),
            "final": final,
        }
        write_json(paths.summary_file, summary)
    return summary


def main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    if cfg is None:
        return 0
    world = distributed.prepare_process()  # before any TF op
    paths = run_paths(cfg)
    manifest = validate_inputs(cfg, paths, world)
    from bertlib.eval.pretraining import validation_source

    validation = validation_source(cfg, paths.data_dir, manifest["vocab"], checksums=distributed.launcher_rank() == 0)
    bert_config = build_bert_config(cfg, manifest["vocab"]["size"])
    from bertlib.optim.loss_scale import LossScaleCollapsed

    try:
        run(cfg, paths, manifest, bert_config, validation)
    except LossScaleCollapsed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from bertlib.core.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
