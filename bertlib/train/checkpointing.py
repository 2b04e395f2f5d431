"""Training checkpoints (resume) and weight initialization from an exported / Google checkpoint.

Resume checkpoints are object-based ``tf.train.Checkpoint`` files (model weights by name, dropout
RNG states, optimizer slots, step, loss scale, data position) managed by
``tf.train.CheckpointManager``: ``ckpt-N.index`` / ``ckpt-N.data-*`` are written first (TF's saver writes shards under a temporary name and merges
them), and only then is the small ``checkpoint`` state file replaced atomically to point at them.
A process killed mid-save therefore leaves the state file naming the previous, complete checkpoint;
:meth:`TrainingCheckpoints.restore_latest` also falls back to an older one if the newest cannot be
read. Only rank 0 writes. No pickle anywhere.

Weight initialization (``load_from: checkpoint``, e.g. phase 2 from phase 1, or from Google's
BERT) reads a bertlib export directory, a Google TF1 checkpoint or HF safetensors by variable name
through :mod:`bertlib.model.checkpoints`: weights only, fresh optimizer and step.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from bertlib.config import ConfigError
from bertlib.train.paths import is_training_checkpoint_dir


def model_state(model) -> dict:
    """The model's checkpointed state, keyed so it does not depend on how layers are nested.

    ``model_weights``: ``{variable path (the Google name): variable}`` — every weight, including ones
    held in Python lists of layers, which Keras 3 tracks but ``tf.train.Checkpoint(model=...)``
    does not follow; ``model_rng``: the dropout seed-generator states, in creation order, so a
    resumed run draws the same dropout masks as an uninterrupted one.
    """
    weights = {v.path: v for v in model.weights}
    if len(weights) != len(model.weights):
        raise ValueError("model weights have duplicate paths; cannot checkpoint them by name")
    ids = {id(v) for v in model.weights}
    return {"model_weights": weights, "model_rng": [v for v in model.variables if id(v) not in ids]}


class TrainingCheckpoints:
    """``tf.train.Checkpoint`` + ``CheckpointManager`` over ``directory``, keeping ``keep`` files.

    Args:
      directory: where ``ckpt-<step>`` files and the ``checkpoint`` state file live.
      keep: number of most recent checkpoints kept (older ones are deleted by the manager).
      writer: whether this process writes (rank 0) — other ranks only read, if at all.
      **objects: the trackables to save (``model=``, ``optimizer=``, ``step=``, ...).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, writer: bool = True, **objects):
        self.directory = Path(directory)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.writer = writer
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=keep)

    def candidates(self) -> list[str]:
        """Complete checkpoints named by the state file, newest first."""
        return [p for p in reversed(self.manager.checkpoints) if tf.io.gfile.exists(p + ".index")]

    def restore_latest(self) -> str | None:
        """Restore the newest readable checkpoint; return its prefix, or None if there is none.

        A checkpoint that exists but does not match the objects (different model size, optimizer)
        is a ConfigError naming it, not a silent partial restore.
        """
        errors = []
        for prefix in self.candidates():
            try:
                self.checkpoint.restore(prefix).assert_existing_objects_matched()
                return prefix
            except tf.errors.OpError as e:   # unreadable (truncated, missing shard, bad table)
                errors.append(f"{prefix}: {type(e).__name__}")
            except AssertionError as e:
                raise ConfigError(f"{prefix}: checkpoint does not match this run's model/optimizer "
                                  f"({str(e).splitlines()[0][:200]}); use a fresh run_dir") from None
        if errors:
            raise ConfigError(f"{self.directory}: no readable checkpoint ({'; '.join(errors)})")
        return None

    def save(self, step: int) -> str | None:
        """Write ``ckpt-<step>`` (rank 0 only) and return its prefix."""
        if not self.writer:
            return None
        return self.manager.save(checkpoint_number=int(step))


def init_from_checkpoint(model, path: str | os.PathLike, optimizer=None) -> str:
    """Load weights into ``model`` from ``path`` (the step stays 0). Returns what was read.

    * bertlib export dir, Google TF1 checkpoint or HF safetensors: weights by Google variable name
      through ``bertlib.model.checkpoints.load_weights`` (``cls/`` heads may be absent).
    * a bertlib training checkpoint folder: the ``model`` of its newest checkpoint, and the
      ``optimizer`` slots too when ``optimizer`` is given (``load_optimizer_state: true``).
    """
    if is_training_checkpoint_dir(path):
        prefix = tf.train.latest_checkpoint(str(path))
        if prefix is None:
            raise FileNotFoundError(f"{path}: the checkpoint state file names no existing checkpoint")
        objects = {"model_weights": model_state(model)["model_weights"]}
        if optimizer is not None:
            objects["optimizer"] = optimizer
        tf.train.Checkpoint(**objects).restore(prefix).expect_partial().assert_existing_objects_matched()
        return prefix
    if optimizer is not None:
        raise ConfigError(f"{path}: load_optimizer_state needs a bertlib training checkpoint folder "
                          "(a run's checkpoints/), this one holds weights only")
    from bertlib.model.checkpoints import load_weights

    load_weights(model, path)
    return str(path)
