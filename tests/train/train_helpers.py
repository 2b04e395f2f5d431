"""Helpers of the training tests: small synthetic prepared datasets (manifest.json + shards) and a tiny
real training run (BertPretrainer + LAMB + Trainer + the rank-sharded pipeline) that returns the weights.

Records are written with the DATA module's own writer (``records.encode_examples`` +
``write_tfrecord_file``) and have every prediction slot real (``masked_lm_weights`` all 1), so that
the MLM loss is a per-example mean and batch-splitting identities (accumulation, Horovod averaging)
hold exactly. ``hvd_worker.py`` runs ``train_tiny`` under ``horovodrun``.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from bertlib.data import records

# one TF thread per process (what `bertlib launch` sets for threads_per_process: 1)
QUIET = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "BERTLIB_PROGRESS": "0",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}

SEQ, PRED, VOCAB = 16, 3, 64


def make_examples(n: int, seq: int = SEQ, pred: int = PRED, vocab: int = VOCAB, seed: int = 0) -> dict:
    """``n`` examples: ids drawn from a few fixed "sentences" (learnable), ``pred`` masked positions.

    ``input_ids[:, 1] - 5`` is the example's index (unique for n <= vocab - 5), never masked.
    """
    rng = np.random.default_rng(seed)
    templates = rng.integers(5, vocab, size=(4, seq))
    ids = templates[rng.integers(0, len(templates), size=n)]
    ids[:, 0] = 2  # [CLS]
    ids[:, 1] = 5 + np.arange(n) % (vocab - 5)  # example tag
    length = rng.integers(seq // 2, seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < length[:, None]).astype(np.int64)
    ids = ids * mask
    positions = np.stack([rng.choice(np.arange(2, seq // 2), size=pred, replace=False) for _ in range(n)])
    positions.sort(axis=1)
    masked_ids = np.take_along_axis(ids, positions, axis=1)
    input_ids = ids.copy()
    np.put_along_axis(input_ids, positions, 4, axis=1)  # [MASK]
    segment = ((np.arange(seq)[None, :] >= seq // 2) & (mask == 1)).astype(np.int64)
    return {
        "input_ids": input_ids,
        "input_mask": mask,
        "segment_ids": segment,
        "masked_lm_positions": positions,
        "masked_lm_ids": masked_ids,
        "masked_lm_weights": np.ones((n, pred), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=(n, 1)),
    }


def write_dataset(
    out: Path,
    n: int = 64,
    num_files: int = 2,
    seq: int = SEQ,
    pred: int = PRED,
    vocab: int = VOCAB,
    seed: int = 0,
    validation: int = 0,
    validation_files: int = 1,
) -> Path:
    """A prepared dataset folder with ``num_files`` train shards (records split round-robin) and
    ``validation`` other examples (drawn with ``seed + 1``) in ``validation_files`` validation shards."""
    out.mkdir(parents=True, exist_ok=True)
    feats = make_examples(n, seq, pred, vocab, seed)
    recs = records.encode_examples(feats)
    vocab_text = "".join(
        ["[PAD]\n", "[UNK]\n", "[CLS]\n", "[SEP]\n", "[MASK]\n"] + [f"tok{i}\n" for i in range(vocab - 5)]
    )
    (out / "vocab.txt").write_text(vocab_text)
    val_recs = records.encode_examples(make_examples(validation, seq, pred, vocab, seed + 1)) if validation else []
    shards = {"train": [], "validation": []}
    for split, recs_, files in (
        ("train", recs, num_files),
        ("validation", val_recs, validation_files if validation else 0),
    ):
        for i in range(files):
            name = f"{split}-{i:05d}-of-{files:05d}.tfrecord"
            part = recs_[i::files]
            shards[split].append(
                {
                    "file": name,
                    "sha256": records.write_tfrecord_file(out / name, part),
                    "examples": len(part),
                    "bytes": (out / name).stat().st_size,
                }
            )
    manifest = {
        "format": records.MANIFEST_FORMAT,
        "max_seq_length": seq,
        "max_predictions_per_seq": pred,
        "vocab": {
            "sha256": hashlib.sha256(vocab_text.encode()).hexdigest(),
            "size": vocab,
            "lowercase": True,
            "strip_accents": None,
        },
        "settings": {"synthetic": True, "seed": seed},
        "counts": {
            "documents": n,
            "sentences": 2 * n,
            "tokens": int(feats["input_mask"].sum()),
            "examples": n,
            "masked_tokens": n * pred,
        },
        "shards": shards,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def base_config(data_dir: Path, run_dir: Path, **overrides) -> dict:
    """A tiny, fast, deterministic pretraining config (dropout off, 1 thread)."""
    cfg = dict(
        model_size="tiny",
        data_dir=str(data_dir),
        run_dir=str(run_dir),
        max_seq_length=SEQ,
        max_predictions_per_seq=PRED,
        per_gpu_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=0,
        total_steps=6,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        log_frequency=1,
        checkpoint_frequency=1000,
        optimizer="lamb",
        seed=1,
    )
    cfg.update(overrides)
    return cfg


def tiny_config(dropout: float = 0.0):
    from bertlib.model import BertConfig

    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=SEQ,
    )


def dropout_losses(data_dir, steps: int = 3, seed: int = 7, jit_compile: bool = False) -> np.ndarray:
    """Per-step losses of the 2-layer BERT with dropout 0.1 on this process's Horovod rank, all fed
    the same batch (the dataset's first 4 records, twice per step: 2 micro-batches) with learning
    rate 0 and no averaging across processes, after the start-of-training broadcast: weights and
    inputs are identical everywhere, so the losses differ only where the dropout masks do. Returns
    [steps + 1]: the training losses, then the loss without dropout (which shows the weights agree)."""
    import keras

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer
    from bertlib.train.setup import seed_everything

    seed_everything(seed)
    model = BertPretrainer(tiny_config(dropout=0.1))
    trainer = Trainer(
        model,
        pretraining_losses,
        Lamb(),
        lambda step: 0.0,
        total_steps=steps,
        accumulation_steps=2,
        jit_compile=jit_compile,
        allreduce=list,
    )
    trainer.restore_or_initialize()
    batch = next(iter(pretraining_dataset(data_dir, "train", 4, SEQ, PRED, shuffle=False)))
    losses = [float(trainer.train_step(iter([batch, batch]))["loss"]) for _ in range(steps)]
    losses.append(float(pretraining_losses(model(batch, training=False), batch)["loss"]))
    keras.backend.clear_session(free_memory=False)  # names restart; no forced gc.collect (~0.5 s)
    return np.array(losses)


def train_tiny(
    data_dir,
    batch_size: int,
    steps: int,
    rank: int = 0,
    world: int = 1,
    accumulation: int = 1,
    allreduce=None,
    jit_compile: bool = True,
    seed: int = 7,
    lr: float = 1e-2,
    dropout: float = 0.0,
    shuffle: bool = False,
    checkpoint_dir=None,
    schedule_steps: int | None = None,
    skips: list | None = None,
    max_grad_norm: float = 1.0,
    grad_clip: str = "global_mean",
    compression: str = "none",
) -> dict[str, np.ndarray]:
    """Train a 2-layer BERT (hidden 32) for ``steps`` optimizer steps on ``data_dir`` (file order, or
    shuffled through a buffer of 16) and return ``{variable path: value}``. With ``checkpoint_dir`` it
    checkpoints every 2 steps and resumes from there; the schedule decays over ``schedule_steps``
    (default ``steps``); ``skips`` collects the ``skip`` each pipeline is built with; ``max_grad_norm``,
    ``grad_clip`` and ``compression`` are the Trainer's."""
    import keras

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb, PolynomialWarmup
    from bertlib.train.loop import Trainer
    from bertlib.train.setup import seed_everything

    def data_fn(skip: int):
        if skips is not None:
            skips.append(skip)
        return pretraining_dataset(
            data_dir,
            "train",
            batch_size,
            SEQ,
            PRED,
            rank=rank,
            world=world,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer=16,
            skip_batches=skip,
        )

    seed_everything(seed)
    model = BertPretrainer(tiny_config(dropout))
    trainer = Trainer(
        model,
        pretraining_losses,
        Lamb(weight_decay=0.01),
        PolynomialWarmup(lr, 0.0, 1, schedule_steps or steps),
        total_steps=steps,
        accumulation_steps=accumulation,
        max_grad_norm=max_grad_norm,
        grad_clip=grad_clip,
        compression=compression,
        jit_compile=jit_compile,
        allreduce=allreduce,
        checkpoint_dir=checkpoint_dir,
        checkpoint_frequency=2,
    )
    trainer.fit(data_fn)
    keras.backend.clear_session(free_memory=False)  # names restart; no forced gc.collect (~0.5 s)
    return {v.path: v.numpy() for v in model.weights}
