"""The TensorFlow side of ``bertlib squad`` (:mod:`bertlib.squad.finetune` checks the input first and
imports this module by name): the BertQA model, the SQuAD loss, ``Trainer.fit``, prediction on
``predict_file``, the official evaluation, the export of the finetuned model (``export/``, with the
Hugging Face export in ``export/hf``) and ``summary.json``.

Importing this module imports TensorFlow (through :mod:`bertlib.model.heads` and
:mod:`bertlib.train.loop`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from bertlib.core.config import SquadConfig
from bertlib.core.files import sha256_file, write_json
from bertlib.core.vocab import vocab_info
from bertlib.data.tokenization import load_wordpiece
from bertlib.model.checkpoints import export_model, load_weights, resolve_pretrained
from bertlib.model.heads import BertQA
from bertlib.squad.answer import write_answer_settings
from bertlib.squad.cache import load_or_build_features, read_features, squad_dataset
from bertlib.squad.finetune import VERSIONS, SquadInputs
from bertlib.squad.metrics import evaluate
from bertlib.squad.predictions import postprocess, reference_v1_scores, write_predictions
from bertlib.train import distributed
from bertlib.train.hf_export import HF_SUBDIR, wants_hf_export, write_hf_export
from bertlib.train.loop import Trainer
from bertlib.train.metrics import format_eval_line, format_reference_scoring_line
from bertlib.train.paths import RunPaths
from bertlib.train.setup import configure_numerics, model_config

# ----------------------------------------------------------------------------- model pieces
#: the logit given to padding positions in :func:`squad_loss` (the reference's value)
PADDING_LOGIT = -100.0


def squad_loss(outputs: dict, batch: dict) -> dict:
    """The reference's SQuAD loss (aws-samples/deep-learning-models ``albert/run_squad.py`` ``loss_fn``):
    (CE(start_logits, start_positions) + CE(end_logits, end_positions)) / 2, averaged over the batch,
    with the logits of padding positions (``input_mask`` 0) set to −100 first, so that the softmax runs
    over the real tokens only. (google-research/bert's ``run_squad.py`` takes the softmax over all S
    positions; the answer is never a padding position, so the two differ only in the denominator.)

    ``outputs``: ``start_logits`` / ``end_logits`` [B, S]; ``batch``: ``input_mask`` [B, S] and
    ``start_positions`` / ``end_positions`` [B] or [B, 1] int. Returns ``{"loss": float32 scalar}``."""
    real = tf.equal(tf.cast(batch["input_mask"], tf.int32), 1)

    def ce(logits, positions):
        logits = tf.where(real, tf.cast(logits, tf.float32), PADDING_LOGIT)
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.reshape(tf.cast(positions, tf.int32), [-1]), logits=logits
            )
        )

    return {
        "loss": (
            ce(outputs["start_logits"], batch["start_positions"]) + ce(outputs["end_logits"], batch["end_positions"])
        )
        / 2.0
    }


def build_model(cfg: SquadConfig, vocab_size: int):
    """``(BertQA model, init_fn)``: the model with the run's dropout rates, and the function that
    loads its encoder weights from ``checkpoint_path`` (any format
    :func:`bertlib.model.checkpoints.resolve_pretrained` reads; the ``cls/squad`` head stays freshly
    initialized) — or ``None`` for ``load_from: scratch`` (a fresh ``model_size`` preset)."""
    if cfg.load_from == "scratch":
        return BertQA(model_config(cfg, vocab_size)), None
    model = BertQA(model_config(cfg, vocab_size, resolve_pretrained(cfg.checkpoint_path).config))

    def init_fn() -> str:
        load_weights(model, cfg.checkpoint_path, allow_missing=("cls/",))
        return f"{cfg.checkpoint_path} (encoder; new cls/squad head)"

    return model, init_fn


def predict_logits(model, features: dict, batch_size: int, jit_compile: bool):
    """Start/end logits [N, S] float32 (numpy) for feature arrays from ``read_features``."""
    keys = ("input_ids", "input_mask", "segment_ids")

    @tf.function(jit_compile=jit_compile, reduce_retracing=True, autograph=False)
    def step(batch):
        out = model(batch, training=False)
        return out["start_logits"], out["end_logits"]

    starts, ends = [], []
    ds = tf.data.Dataset.from_tensor_slices({k: features[k] for k in keys}).batch(batch_size)
    for batch in ds:
        s, e = step(batch)
        starts.append(s.numpy())
        ends.append(e.numpy())
    return np.concatenate(starts), np.concatenate(ends)


# ----------------------------------------------------------------------------- the run
def run(cfg: SquadConfig, paths: RunPaths, inputs: SquadInputs) -> dict:
    """Finetune, predict and evaluate as configured (after :func:`validate_inputs`); returns the
    summary written by rank 0 (``{}`` on other ranks)."""
    rank, world, _ = distributed.init()

    chief = rank == 0
    phase = cfg.squad_version
    v2 = cfg.squad_version == "squadv2"
    configure_numerics(cfg)
    tokenizer = load_wordpiece(inputs.vocab_file, inputs.lowercase)
    vocab = vocab_info(inputs.vocab_file, inputs.lowercase)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else paths.run_dir.parent / "squad_cache"
    common = dict(
        tokenizer=tokenizer,
        vocab=vocab,
        cache_dir=cache_dir,
        max_seq_length=cfg.max_seq_length,
        doc_stride=cfg.doc_stride,
        max_query_length=cfg.max_query_length,
    )

    def train_features():
        return load_or_build_features(
            inputs.train_examples,
            source_sha256=sha256_file(inputs.train_path),
            name=inputs.train_path.stem,
            is_training=True,
            **common,
        )

    if chief:  # rank 0 builds the cache, the others read it after the barrier
        train_rec, train_info = train_features()
    distributed.allreduce_mean([tf.zeros([])])
    if not chief:
        train_rec, train_info = train_features()

    model, init_fn = build_model(cfg, inputs.vocab_size)
    init_desc = f"checkpoint {cfg.checkpoint_path}" if init_fn else f"fresh {cfg.model_size} encoder"
    trainer = Trainer.from_config(cfg, model, squad_loss, paths, phase, world, chief)
    writer, global_batch = trainer.metrics, trainer.global_batch_size

    def data_fn(skip: int):
        return squad_dataset(
            train_rec, cfg.per_gpu_batch_size, cfg.max_seq_length, training=True, rank=rank, world=world, seed=cfg.seed
        ).skip(skip)

    writer.message(
        f"phase={phase} model={init_desc} processes={world} global_batch={global_batch} "
        f"precision={cfg.precision} xla={not cfg.skip_xla} steps={cfg.total_steps} "
        f"train_features={train_info['features']}"
    )
    t0 = time.perf_counter()
    try:
        final = trainer.fit(data_fn, init_fn)
    finally:
        writer.close()
    if "stopped_at_step" in final:  # stopped (SIGTERM): the checkpoint is written; predict when resumed
        return {"stopped_at_step": final["stopped_at_step"]}
    summary: dict = {}
    if chief:
        pred_rec, pred_info = load_or_build_features(
            inputs.predict_examples,
            source_sha256=sha256_file(inputs.predict_path),
            name=inputs.predict_path.stem,
            is_training=False,
            **common,
        )
        features = read_features(pred_rec, cfg.max_seq_length)
        t_pred = time.perf_counter()
        start_logits, end_logits = predict_logits(model, features, cfg.predict_batch_size, not cfg.skip_xla)
        predict_s = time.perf_counter() - t_pred
        predictions, nbest, null_odds = postprocess(
            inputs.predict_examples,
            features,
            start_logits,
            end_logits,
            tokenizer,
            n_best_size=cfg.n_best_size,
            max_answer_length=cfg.max_answer_length,
            version_2_with_negative=v2,
            null_score_diff_threshold=cfg.null_score_diff_threshold,
        )
        files = write_predictions(paths.output_dir, predictions, nbest, null_odds)
        # the finetuned model (encoder + cls/squad head) and the settings it answers with: run_dir/export,
        # or SM_MODEL_DIR → the job's model.tar.gz (bertlib.squad.answer reads it); the HF one in hf/
        export_model(model, model.config, inputs.vocab_file, paths.export_dir, vocab_info=vocab)
        write_answer_settings(paths.export_dir, cfg)
        if wants_hf_export(cfg):
            write_hf_export(model, model.config, inputs.vocab_file, vocab, paths.export_dir / HF_SUBDIR)
        result = evaluate(inputs.predict_json, predictions, na_probs=null_odds if v2 else None, source=cfg.predict_file)
        print(format_eval_line(phase, result), flush=True)
        reference_scoring = None
        if not v2:  # the same logits as the reference's evaluation scored v1.1 (null answers allowed)
            ref_predictions, reference_scoring = reference_v1_scores(
                inputs.predict_json,
                inputs.predict_examples,
                features,
                start_logits,
                end_logits,
                tokenizer,
                n_best_size=cfg.n_best_size,
                max_answer_length=cfg.max_answer_length,
                source=cfg.predict_file,
            )
            files["predictions_reference_scoring"] = write_json(
                paths.output_dir / "predictions_reference_scoring.json", ref_predictions
            )
            print(format_reference_scoring_line(phase, reference_scoring), flush=True)
        steps_run = final.pop("steps_run")
        wall = final.pop("wall_time_s")
        summary = {
            "job": "squad",
            "phase": phase,
            "squad_version": VERSIONS[phase],
            **result,
            "steps": cfg.total_steps,
            "steps_run": steps_run,
            "wall_time_s": time.perf_counter() - t0,
            "train_time_s": wall,
            "seq_per_sec": global_batch * steps_run / wall if wall > 0 and steps_run else None,
            "predict_time_s": predict_s,
            "predict_seq_per_sec": len(start_logits) / predict_s if predict_s else None,
            "processes": world,
            "global_batch_size": global_batch,
            "precision": cfg.precision,
            "max_seq_length": cfg.max_seq_length,
            "init": init_desc,
            "resumed_from": trainer.restored_from,
            "eval": result,
            "reference_scoring": reference_scoring,
            "final": final,
            "train_features": train_info["features"],
            "predict_features": pred_info["features"],
            "inputs": inputs.reports,
            "predict_file": cfg.predict_file,
            "files": {k: str(v) for k, v in files.items()},
            "export_dir": str(paths.export_dir),
        }
        note = inputs.predict_json.get("bertlib_note")
        if note:
            summary["dataset_note"] = note
        write_json(paths.summary_file, summary)
    distributed.allreduce_mean([tf.zeros([])])  # the other ranks wait for rank 0's prediction
    return summary
