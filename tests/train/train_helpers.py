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

SEQ, PRED, VOCAB = 16, 3, 64


def make_examples(n: int, seq: int = SEQ, pred: int = PRED, vocab: int = VOCAB, seed: int = 0) -> dict:
    """``n`` examples: ids drawn from a few fixed "sentences" (learnable), ``pred`` masked positions.

    ``input_ids[:, 1] - 5`` is the example's index (unique for n <= vocab - 5), never masked.
    """
    rng = np.random.default_rng(seed)
    templates = rng.integers(5, vocab, size=(4, seq))
    ids = templates[rng.integers(0, len(templates), size=n)]
    ids[:, 0] = 2                                            # [CLS]
    ids[:, 1] = 5 + np.arange(n) % (vocab - 5)               # example tag
    length = rng.integers(seq // 2, seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < length[:, None]).astype(np.int64)
    ids = ids * mask
    positions = np.stack([rng.choice(np.arange(2, seq // 2), size=pred, replace=False) for _ in range(n)])
    positions.sort(axis=1)
    masked_ids = np.take_along_axis(ids, positions, axis=1)
    input_ids = ids.copy()
    np.put_along_axis(input_ids, positions, 4, axis=1)       # [MASK]
    segment = ((np.arange(seq)[None, :] >= seq // 2) & (mask == 1)).astype(np.int64)
    return {"input_ids": input_ids, "input_mask": mask, "segment_ids": segment,
            "masked_lm_positions": positions, "masked_lm_ids": masked_ids,
            "masked_lm_weights": np.ones((n, pred), np.float32),
            "next_sentence_labels": rng.integers(0, 2, size=(n, 1))}


def write_dataset(out: Path, n: int = 64, num_files: int = 2, seq: int = SEQ, pred: int = PRED,
                  vocab: int = VOCAB, seed: int = 0) -> Path:
    """A prepared dataset folder with ``num_files`` train shards (records split round-robin)."""
    out.mkdir(parents=True, exist_ok=True)
    feats = make_examples(n, seq, pred, vocab, seed)
    recs = records.encode_examples(feats)
    vocab_text = "".join(["[PAD]\n", "[UNK]\n", "[CLS]\n", "[SEP]\n", "[MASK]\n"]
                         + [f"tok{i}\n" for i in range(vocab - 5)])
    (out / "vocab.txt").write_text(vocab_text)
    shards = []
    for i in range(num_files):
        name = f"train-{i:05d}-of-{num_files:05d}.tfrecord"
        part = recs[i::num_files]
        shards.append({"file": name, "sha256": records.write_tfrecord_file(out / name, part),
                       "examples": len(part), "bytes": (out / name).stat().st_size})
    manifest = {
        "format": records.MANIFEST_FORMAT, "max_seq_length": seq, "max_predictions_per_seq": pred,
        "vocab": {"sha256": hashlib.sha256(vocab_text.encode()).hexdigest(), "size": vocab,
                  "lowercase": True, "strip_accents": None},
        "settings": {"synthetic": True, "seed": seed},
        "counts": {"documents": n, "sentences": 2 * n, "tokens": int(feats["input_mask"].sum()),
                   "examples": n, "masked_tokens": n * pred},
        "shards": {"train": shards, "validation": []},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def base_config(data_dir: Path, run_dir: Path, **overrides) -> dict:
    """A tiny, fast, deterministic pretraining config (dropout off, 1 thread)."""
    cfg = dict(model_size="tiny", data_dir=str(data_dir), run_dir=str(run_dir), max_seq_length=SEQ,
               max_predictions_per_seq=PRED, per_gpu_batch_size=4, learning_rate=1e-3, warmup_steps=0,
               total_steps=6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, log_frequency=1,
               checkpoint_frequency=1000, threads_per_process=1, optimizer="lamb", seed=1)
    cfg.update(overrides)
    return cfg


def train_tiny(data_dir, batch_size: int, steps: int, rank: int = 0, world: int = 1, accumulation: int = 1,
               allreduce=None, jit_compile: bool = True, seed: int = 7, lr: float = 1e-2) -> dict[str, np.ndarray]:
    """Train a 2-layer BERT (hidden 32, no dropout) for ``steps`` optimizer steps on ``data_dir``
    (file order, no shuffle) and return ``{variable path: value}``."""
    import keras

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb, PolynomialWarmup
    from bertlib.train.loop import Trainer, seed_everything

    seed_everything(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        max_position_embeddings=SEQ)
    model = BertPretrainer(config)
    trainer = Trainer(model, pretraining_losses, Lamb(weight_decay=0.01), PolynomialWarmup(lr, 0.0, 1, steps),
                      total_steps=steps, accumulation_steps=accumulation, max_grad_norm=1.0,
                      jit_compile=jit_compile, allreduce=allreduce)
    trainer.fit(lambda skip: pretraining_dataset(data_dir, "train", batch_size, SEQ, PRED, rank=rank, world=world,
                                                 shuffle=False, skip_batches=skip))
    keras.backend.clear_session()
    return {v.path: v.numpy() for v in model.weights}
