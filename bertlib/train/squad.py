"""``bertlib squad --config FILE.yaml [--key value ...]``: SQuAD v1.1 / v2.0 finetune, predict, evaluate.

The same code runs as one process, under ``horovodrun -np N`` and in a SageMaker training job::

    config + SQuAD files + vocabulary/casing checks      (before TensorFlow is imported)
    └─ Horovod init ─ features (rank 0 builds the TFRecord cache, the others wait for it)
       └─ encoder: load_pretrained(checkpoint_path) or a fresh model_size preset ─ BertQA head
          └─ Trainer.fit (AdamW + warmup/linear decay, loss scaling, Horovod averaging, resume)
             └─ rank 0: logits on predict_file ─ predictions.json, nbest_predictions.json,
                null_odds.json ─ squad_metrics.evaluate ─ summary.json + the eval log line

The loss is run_squad's: the mean of the start and end cross-entropies, each a softmax over all
``max_seq_length`` positions. For v2.0 the evaluation gets ``null_odds.json`` as its na-prob file
(as with the official script after run_squad), which adds the best-threshold numbers.

Bad input (unknown key, missing or malformed SQuAD file, a SQuAD version different from
``squad_version``, a vocabulary or casing that differs from the checkpoint's) is one line on stderr
and exit code 2, before any TensorFlow work.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bertlib.core.config import SquadConfig, job_command, parse_job_args
from bertlib.core.errors import ConfigError
from bertlib.train import distributed
from bertlib.train.paths import RunPaths, run_paths
from bertlib.train.setup import configure_numerics, model_config

VERSIONS = {"squadv1": "1.1", "squadv2": "2.0"}


#: ``bertlib squad``'s command line, generated from SquadConfig (``--help`` lists every key)
CLI = job_command(
    "squad",
    help="SQuAD finetune + predict + evaluate: --config FILE (optional) plus --key value "
    "overrides of its SquadConfig keys (values are YAML).",
)


def parse_args(argv: list[str]) -> SquadConfig | None:
    """``--config FILE`` (optional) plus ``--key value`` overrides → a validated SquadConfig (None: ``--help``
    was printed)."""
    return parse_job_args("squad", CLI, argv)[0]


# ----------------------------------------------------------------------------- input checks (before training)
def resolve_tokenizer(cfg: SquadConfig) -> tuple[Path, bool, int | None]:
    """The vocab file and casing to use → ``(vocab_file, lowercase, model vocab_size or None)``.

    Defaults come from the init checkpoint (its ``vocab.txt`` and the casing that
    :func:`bertlib.model.checkpoints.resolve_pretrained` finds: ``vocab_info.json``,
    ``tokenizer_config.json`` or Google's ``uncased_``/``cased_`` naming). A ``vocab_file`` or
    ``do_lower_case`` that differs from the checkpoint's is a ConfigError saying which part differs
    (vocab sha256/size, or casing); so is a vocab whose size is not the model's ``vocab_size``.
    """
    from bertlib.core.vocab import check_vocab_compatible, read_vocab, vocab_info

    info = None
    if cfg.load_from == "checkpoint":
        from bertlib.model.checkpoints import resolve_pretrained

        info = resolve_pretrained(cfg.checkpoint_path)
    vocab = Path(cfg.vocab_file) if cfg.vocab_file else (info.vocab_file if info else None)
    if vocab is None:
        raise ConfigError(
            "vocab_file is not set"
            + (f" and {cfg.checkpoint_path} has no vocab.txt" if info else " (needed with load_from: scratch)")
        )
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: vocab_file not found")
    ckpt_lower = info.do_lower_case if info else None
    lowercase = cfg.do_lower_case if cfg.do_lower_case is not None else ckpt_lower
    if lowercase is None:
        if info is not None:
            raise ConfigError(
                f"{cfg.checkpoint_path}: the checkpoint does not say whether it is cased; "
                "set do_lower_case: true or false"
            )
        lowercase = True
    if info is not None:
        expected = vocab_info(info.vocab_file, lowercase) if info.vocab_file else {}
        expected.update(info.vocab_info or {})
        if ckpt_lower is not None:
            expected["lowercase"] = ckpt_lower
        what = ", ".join(
            f"{k} {v}"
            for k, v in (("vocab_file", cfg.vocab_file), ("do_lower_case", cfg.do_lower_case))
            if v is not None
        )
        check_vocab_compatible(
            expected,
            vocab_info(vocab, lowercase),
            f"the checkpoint {cfg.checkpoint_path}",
            f"the requested tokenizer ({what or vocab})",
        )
        n = len(read_vocab(vocab))
        if n != info.config.vocab_size:
            raise ConfigError(
                f"vocab_file {vocab} has {n} entries but the checkpoint {cfg.checkpoint_path} "
                f"has vocab_size {info.config.vocab_size}"
            )
        return vocab, lowercase, info.config.vocab_size
    return vocab, lowercase, None


@dataclass
class SquadInputs:
    """Everything read and checked before TensorFlow: files, examples, tokenizer settings."""

    vocab_file: Path
    lowercase: bool
    vocab_size: int
    train_path: Path
    predict_path: Path
    train_examples: list
    predict_examples: list
    predict_json: dict
    reports: dict


def validate_inputs(cfg: SquadConfig) -> SquadInputs:
    """Read both SQuAD files (downloading URLs), check their version, then the tokenizer against
    the checkpoint (which imports TensorFlow only for ``load_from: checkpoint``)."""
    from bertlib.core.vocab import read_vocab
    from bertlib.data.squad import load_squad_json, read_squad_examples

    window = cfg.max_seq_length - cfg.max_query_length - 3
    if cfg.doc_stride > window:
        raise ConfigError(
            f"doc_stride {cfg.doc_stride} is larger than the document window "
            f"max_seq_length - max_query_length - 3 = {window}: tokens would be skipped"
        )
    want = VERSIONS[cfg.squad_version]
    v2 = want == "2.0"
    loaded = {}
    for key, src, sha in (
        ("train", cfg.train_file, cfg.train_file_sha256),
        ("predict", cfg.predict_file, cfg.predict_file_sha256),
    ):
        data, version, path = load_squad_json(src, sha)
        if version != want:
            raise ConfigError(
                f"{src}: SQuAD version {data.get('version', '1.1')!r} but squad_version is "
                f"{cfg.squad_version} (v{want})"
            )
        loaded[key] = (path, data)
    train_examples, train_report = read_squad_examples(cfg.train_file, True, v2, dataset=loaded["train"][1])
    predict_examples, predict_report = read_squad_examples(cfg.predict_file, False, v2, dataset=loaded["predict"][1])
    vocab, lowercase, model_vocab_size = resolve_tokenizer(cfg)
    return SquadInputs(
        vocab_file=vocab,
        lowercase=lowercase,
        vocab_size=model_vocab_size or len(read_vocab(vocab)),
        train_path=loaded["train"][0],
        predict_path=loaded["predict"][0],
        train_examples=train_examples,
        predict_examples=predict_examples,
        predict_json=loaded["predict"][1],
        reports={"train": train_report.as_dict(), "predict": predict_report.as_dict()},
    )


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
    import tensorflow as tf

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
    from bertlib.model import BertQA

    if cfg.load_from == "scratch":
        return BertQA(model_config(cfg, vocab_size)), None
    from bertlib.model.checkpoints import load_weights, resolve_pretrained

    model = BertQA(model_config(cfg, vocab_size, resolve_pretrained(cfg.checkpoint_path).config))

    def init_fn() -> str:
        load_weights(model, cfg.checkpoint_path, allow_missing=("cls/",))
        return f"{cfg.checkpoint_path} (encoder; new cls/squad head)"

    return model, init_fn


def predict_logits(model, features: dict, batch_size: int, jit_compile: bool):
    """Start/end logits [N, S] float32 (numpy) for feature arrays from ``read_features``."""
    import numpy as np
    import tensorflow as tf

    keys = ("input_ids", "input_mask", "segment_ids")

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
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
    import tensorflow as tf

    from bertlib.core.files import sha256_file, write_json
    from bertlib.core.vocab import vocab_info
    from bertlib.data.squad import load_or_build_features, postprocess, read_features, squad_dataset, write_predictions
    from bertlib.data.tokenization import load_wordpiece
    from bertlib.eval.squad_metrics import evaluate
    from bertlib.train.loop import Trainer
    from bertlib.train.metrics import format_eval_line

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
        result = evaluate(inputs.predict_json, predictions, na_probs=null_odds if v2 else None, source=cfg.predict_file)
        print(format_eval_line(phase, result), flush=True)
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
            "final": final,
            "train_features": train_info["features"],
            "predict_features": pred_info["features"],
            "inputs": inputs.reports,
            "predict_file": cfg.predict_file,
            "files": {k: str(v) for k, v in files.items()},
        }
        note = inputs.predict_json.get("bertlib_note")
        if note:
            summary["dataset_note"] = note
        write_json(paths.summary_file, summary)
    distributed.allreduce_mean([tf.zeros([])])  # the other ranks wait for rank 0's prediction
    return summary


def main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    if cfg is None:
        return 0
    distributed.prepare_process()  # before any TF op
    paths = run_paths(cfg)
    inputs = validate_inputs(cfg)
    run(cfg, paths, inputs)
    return 0


if __name__ == "__main__":
    from bertlib.core.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
