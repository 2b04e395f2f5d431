"""Held-out evaluation while pretraining: masked-LM loss and accuracy, NSP loss and accuracy.

Where the held-out shards come from (:func:`validation_source`, checked before TensorFlow starts):

- ``validation_dir`` when set: a prepared dataset folder (``manifest.json``) — its ``validation``
  split, or all its shards when it has none (a folder prepared or adopted for evaluation only). On
  SageMaker the launcher ships it as the ``validation`` channel and points ``validation_dir`` there.
- else the ``validation`` split of ``data_dir`` (``bertlib prepare-data`` holds out documents for it);
- with neither, the run says so once and trains without evaluation.

Every process evaluates its own share (the training pipeline's rank split: its files, or every
``world``-th record), one pass in file order keeping the short last batch (or at most
``validation_steps`` batches), with ``training=False`` (no dropout). It adds up the additive
statistics of :func:`bertlib.model.heads.pretraining_sums`; one Horovod sum combines the processes,
so the metrics are ratios of global sums and every held-out prediction counts once, whatever the
number of processes or the sizes of their shares (w = ``masked_lm_weights``, N = examples, i.e. the
pairs: a packed row holds several, each counted and scored on its own)::

    val_mlm_loss = Σ w·CE / Σ w      val_mlm_acc = Σ w·[argmax = id] / Σ w
    val_nsp_loss = Σ CE / N          val_nsp_acc = Σ [argmax = label] / N
    val_loss = val_mlm_loss + val_nsp_loss        val_examples = N

The evaluation reads its own dataset, draws no random numbers and assigns no variable, so a run with
it trains exactly as a run without it, and a resumed run stays bit-identical.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bertlib.core.errors import DataError
from bertlib.data.records import read_manifest, validate_dataset


@dataclass(frozen=True)
class ValidationSource:
    """The held-out shards of a run: a prepared dataset folder and the split to read."""

    data_dir: Path
    split: str
    examples: int

    def describe(self) -> str:
        return f"{self.data_dir} ({self.split} split, {self.examples} examples)"


def validation_source(
    cfg, data_dir: str | os.PathLike, vocab: dict | None, checksums: bool = True
) -> ValidationSource | None:
    """Where ``cfg`` (a PretrainConfig) evaluates, after ``data_dir`` was validated; None when
    ``validation_frequency`` is 0 or there are no held-out shards.

    A ``validation_dir`` is validated like the training data (``max_seq_length``,
    ``max_predictions_per_seq``, shard sizes, sha256 with ``checksums``, first records) and must have
    the training data's vocabulary ``vocab`` (its ``manifest.json["vocab"]``); any problem is a
    DataError naming the file.
    """
    if cfg.validation_frequency == 0:
        return None
    if cfg.validation_dir:
        folder = Path(cfg.validation_dir)
        manifest = validate_dataset(
            folder, cfg.max_seq_length, cfg.max_predictions_per_seq, vocab=vocab, checksums=checksums
        )
        split = "validation" if manifest["shards"].get("validation") else "train"
        if not manifest["shards"].get(split):
            raise DataError(f"{folder / 'manifest.json'}: validation_dir lists no shards")
    else:
        folder, split = Path(data_dir), "validation"
        manifest = read_manifest(folder)
        if not manifest["shards"].get(split):
            return None
    return ValidationSource(folder, split, sum(int(s.get("examples", 0)) for s in manifest["shards"][split]))


class PretrainingEvaluator:
    """``evaluator() -> {val_loss, val_mlm_loss, val_mlm_acc, val_nsp_loss, val_nsp_acc, val_examples}``
    (``bertlib.train.metrics.VALIDATION_METRIC_KEYS``) over the held-out data, pooled over all
    processes (every process must call it at the same steps).

    Args:
      model: a ``BertPretrainer``; called as ``model(batch, training=False)``.
      dataset: this process's share, a ``tf.data.Dataset`` of pretraining batches (read from its start
        at every call): ``pretraining_dataset(..., shuffle=False, repeat=False, drop_remainder=False)``.
      max_batches: at most this many batches per process and call (None: the whole share).
      allreduce_sum: ``float64 [6] -> float64 [6]`` summed over processes (the training loop passes
        :func:`bertlib.train.distributed.allreduce_sum`; a single process passes the identity).
      jit_compile: XLA-compile the forward pass.
      sums_fn: ``(outputs, batch) -> float32 [len(sum_keys)]``, the sums of one batch
        (:func:`bertlib.model.heads.pretraining_sums`, passed by the caller so that this module
        imports no model, hence no TensorFlow, at import time).
      sum_keys: the names of those sums (:data:`bertlib.model.heads.PRETRAINING_SUMS`).
    """

    def __init__(
        self,
        model,
        dataset,
        allreduce_sum: Callable,
        max_batches: int | None = None,
        jit_compile: bool = False,
        *,
        sums_fn: Callable,
        sum_keys: Sequence[str],
    ):
        import tensorflow as tf  # at call time: validation_source runs before TF is imported

        self.model = model
        self.dataset = dataset if max_batches is None else dataset.take(max_batches)
        self.allreduce_sum = allreduce_sum
        self.sum_keys = tuple(sum_keys)
        self.time_s = 0.0  # spent in evaluation so far (all calls)
        self._sums = tf.function(
            lambda batch: sums_fn(self.model(batch, training=False), batch),
            jit_compile=jit_compile,
            reduce_retracing=True,
            autograph=False,  # the model and the sums have no tensor-dependent Python control flow
        )

    def __call__(self) -> dict:
        import tensorflow as tf

        t0 = time.perf_counter()
        local = np.zeros(len(self.sum_keys), np.float64)
        for batch in self.dataset:
            local += self._sums(batch).numpy()  # float32 per batch, float64 across batches
        total = np.asarray(self.allreduce_sum(tf.constant(local, tf.float64)), np.float64)
        s = dict(zip(self.sum_keys, total.tolist()))

        def ratio(numerator: str, denominator: str) -> float:
            return s[numerator] / s[denominator] if s[denominator] > 0 else float("nan")

        mlm_loss, nsp_loss = ratio("mlm_ce_sum", "mlm_weight_sum"), ratio("nsp_ce_sum", "examples")
        out = {
            "val_loss": mlm_loss + nsp_loss,
            "val_mlm_loss": mlm_loss,
            "val_mlm_acc": ratio("mlm_correct_sum", "mlm_weight_sum"),
            "val_nsp_loss": nsp_loss,
            "val_nsp_acc": ratio("nsp_correct_sum", "examples"),
            "val_examples": int(round(s["examples"])),
        }
        self.time_s += time.perf_counter() - t0
        return out
