"""The TensorFlow side of ``bertlib pretrain`` (:mod:`bertlib.train.pretrain` checks the config and
the data first and imports this module by name): BertPretrainer, ``Trainer.fit`` with the held-out
evaluation, the export and ``summary.json``.

Importing this module imports TensorFlow (through :mod:`bertlib.model.heads` and
:mod:`bertlib.train.loop`).
"""

from __future__ import annotations

import json
import time

from bertlib.core.config import PretrainConfig
from bertlib.core.errors import print_error
from bertlib.core.files import write_json
from bertlib.core.vocab import vocab_info
from bertlib.data.pipeline import pretraining_dataset
from bertlib.eval.pretraining import PretrainingEvaluator
from bertlib.model.checkpoints import export_model
from bertlib.model.heads import PRETRAINING_SUMS, BertPretrainer, pretraining_losses, pretraining_sums
from bertlib.optim.loss_scale import LossScaleCollapsed
from bertlib.train import distributed
from bertlib.train.checkpointing import init_from_checkpoint
from bertlib.train.hf_export import HF_SUBDIR, wants_hf_export, write_hf_export
from bertlib.train.loop import Trainer
from bertlib.train.paths import CHECKPOINT_VOCAB, RunPaths
from bertlib.train.setup import configure_numerics


def training_data(cfg: PretrainConfig, paths: RunPaths, rank: int, world: int, skip: int = 0):
    """This rank's training micro-batches (a ``tf.data.Dataset``), after ``skip`` of them."""
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


def run(cfg: PretrainConfig, paths: RunPaths, manifest: dict, bert_config, validation=None) -> dict:
    """Train as configured (after :func:`validate_inputs`), evaluating on ``validation`` (a
    :class:`bertlib.eval.pretraining.ValidationSource`, or None); returns the summary written by rank 0."""
    rank, world, _ = distributed.init()
    configure_numerics(cfg)
    model = BertPretrainer(bert_config)
    chief = rank == 0
    trainer = Trainer.from_config(cfg, model, pretraining_losses, paths, cfg.phase, world, chief)
    optimizer, writer, global_batch = trainer.optimizer, trainer.metrics, trainer.global_batch_size

    def data_fn(skip: int):
        return training_data(cfg, paths, rank, world, skip)

    def init_fn() -> str:
        return init_from_checkpoint(model, cfg.checkpoint_path, optimizer if cfg.load_optimizer_state else None)

    evaluator = None
    if validation is not None:
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
            model,
            held_out,
            distributed.allreduce_sum,
            cfg.validation_steps,
            jit_compile=not cfg.skip_xla,
            sums_fn=pretraining_sums,
            sum_keys=PRETRAINING_SUMS,
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
        info = None if lowercase is None else vocab_info(vocab, lowercase, manifest["vocab"].get("strip_accents"))
        export_model(model, bert_config, vocab, paths.export_dir, vocab_info=info)
        if wants_hf_export(cfg):  # model.tar.gz on SageMaker: the bertlib export + hf/
            if info is None:
                print("[bertlib] no Hugging Face export: the data manifest does not say the vocab casing", flush=True)
            else:
                write_hf_export(model, bert_config, vocab, info, paths.export_dir / HF_SUBDIR)
        steps_run = final.pop("steps_run")
        wall = final.pop("wall_time_s")
        stopped_at = final.pop("stopped_at_step", None)
        if stopped_at is not None:  # a stop (SIGTERM) before total_steps: the model of its last step, exported
            writer.message(f"exported the model of step {stopped_at} to {paths.export_dir}")
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
            "stopped_at_step": stopped_at,
            "export_dir": str(paths.export_dir),
            "final": final,
        }
        write_json(paths.summary_file, summary)
    return summary


def train(cfg: PretrainConfig, paths: RunPaths, manifest: dict, bert_config, validation=None) -> int:
    """:func:`run`, as an exit code: 0, or 1 (one line on stderr) when the loss scale collapsed."""
    try:
        run(cfg, paths, manifest, bert_config, validation)
    except LossScaleCollapsed as e:
        print_error(str(e))
        return 1
    return 0
