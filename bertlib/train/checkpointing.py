"""Training checkpoints (resume) and weight initialization from an exported / Google checkpoint.

Resume checkpoints are object-based ``tf.train.Checkpoint`` files (model weights by name, dropout
RNG states, optimizer slots, step, loss scale, data position) managed by
``tf.train.CheckpointManager``: ``ckpt-N.index`` / ``ckpt-N.data-*`` are written first (TF's saver writes shards under a temporary name and merges
them), and only then is the small ``checkpoint`` state file replaced atomically to point at them.
A process killed mid-save therefore leaves the state file naming the previous, complete checkpoint;
:meth:`TrainingCheckpoints.restore_latest` also falls back to an older one if the newest cannot be
read. Only rank 0 writes these; every rank writes its input iterator state next to them
(:class:`InputCheckpoints`). No pickle anywhere.

Weight initialization (``load_from: checkpoint``, e.g. phase 2 from phase 1, or from Google's
BERT) reads a bertlib export directory, a Google TF1 checkpoint or HF safetensors by variable name
through :mod:`bertlib.model.checkpoints`: weights only, fresh optimizer and step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import tensorflow as tf

from bertlib.core.errors import ConfigError
from bertlib.model.checkpoints import load_weights
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
            except tf.errors.OpError as e:  # unreadable (truncated, missing shard, bad table)
                errors.append(f"{prefix}: {type(e).__name__}")
            except AssertionError as e:
                raise ConfigError(
                    f"{prefix}: checkpoint does not match this run's model/optimizer "
                    f"({str(e).splitlines()[0][:200]}); use a fresh run_dir"
                ) from None
        if errors:
            raise ConfigError(f"{self.directory}: no readable checkpoint ({'; '.join(errors)})")
        return None

    def save(self, step: int) -> str | None:
        """Write ``ckpt-<step>`` (rank 0 only) and return its prefix."""
        if not self.writer:
            return None
        return self.manager.save(checkpoint_number=int(step))


class InputCheckpoints:
    """One rank's input position: its ``tf.data`` iterator state, saved with every model checkpoint,
    so that a resume continues the data stream without re-reading the consumed records.

    ``<directory>/input/world-<W>/rank-<r>/ckpt-<step>.index`` + ``.data-*``, written by every rank
    (the model checkpoint is rank 0's alone). The state holds the positions in the shard files,
    the file order, the records in the shuffle buffer and the prefetched batches: about
    ``shuffle_buffer`` serialized records. Each is written under a temporary prefix and renamed into
    place, index last, so an ``.index`` only ever names a complete state; the newest ``keep`` are
    kept, as ``TrainingCheckpoints`` keeps its own. Per-rank names never collide, so on SageMaker
    the ranks of every host write into their host's ``/opt/ml/checkpoints`` and a restart finds all
    of them (S3 restores the whole prefix on every host). A state saved by another number of
    processes is in another folder and never read.

    Args:
      directory: the model checkpoint folder.
      rank, world: this process's rank and the number of processes.
      keep: states kept (the model checkpoints' ``keep_checkpoints``).
    """

    def __init__(self, directory: str | os.PathLike, rank: int, world: int, keep: int = 3):
        self.directory = Path(directory) / "input" / f"world-{world}" / f"rank-{rank}"
        self.keep = int(keep)

    def prefix(self, step: int) -> Path:
        return self.directory / f"ckpt-{int(step)}"

    def save(self, iterator, step: int) -> Path:
        """Write ``iterator``'s state as ``ckpt-<step>`` (atomically) and delete all but the newest ``keep``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # what a process killed mid-save left (this rank's folder has one writer), TF's "_temp" dir included
        for stale in self.directory.glob(".ckpt-*.tmp*"):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
        final = self.prefix(step)
        tmp = self.directory / f".{final.name}.tmp{os.getpid()}"
        tf.train.Checkpoint(iterator=iterator).write(str(tmp))
        written = sorted(self.directory.glob(tmp.name + ".*"), key=lambda p: p.suffix == ".index")  # index last
        for part in written:
            os.replace(part, final.with_name(final.name + part.name[len(tmp.name) :]))
        steps = sorted((int(p.name[5:-6]) for p in self.directory.glob("ckpt-*.index")), reverse=True)
        for old in steps[self.keep :]:
            (self.directory / f"ckpt-{old}.index").unlink(missing_ok=True)  # first: no index without data
            for part in self.directory.glob(f"ckpt-{old}.data-*"):
                part.unlink(missing_ok=True)
        return final

    def restore(self, iterator, step: int) -> str | None:
        """Restore ``iterator`` (of a pipeline built exactly as the saved one) to ``ckpt-<step>``.
        Returns None on success, else why not (no state for this step, or an unreadable / foreign one)."""
        prefix = self.prefix(step)
        if not prefix.with_name(prefix.name + ".index").is_file():
            return f"no input state {prefix}"
        try:
            tf.train.Checkpoint(iterator=iterator).read(str(prefix)).assert_consumed()
        except (tf.errors.OpError, AssertionError, ValueError) as e:
            return f"input state {prefix} unusable ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        return None


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
        raise ConfigError(
            f"{path}: load_optimizer_state needs a bertlib training checkpoint folder "
            "(a run's checkpoints/), this one holds weights only"
        )
    load_weights(model, path)
    return str(path)
