"""Training metrics: ``metrics.jsonl``, TensorBoard events, ``summary.json`` and ``key=value`` log lines.

Every logged step becomes one JSON object in ``metrics.jsonl`` (appended, flushed per line, so a
crashed or killed run keeps what it logged), TensorBoard scalars in ``tb/``, and one stdout line::

    [bertlib] phase=phase1 step=100 loss=7.12346 mlm_loss=... learning_rate=... elapsed_s=...

that SageMaker's metric regexes (``r"\\b{key}=([-+0-9.eEinfa]+)"`` for each of :data:`METRIC_KEYS`)
parse. A step with a held-out evaluation (:mod:`bertlib.eval.pretraining`) carries the
:data:`VALIDATION_METRIC_KEYS` too, in that step's line and object (their own when the step logs
nothing else; ``\\b`` keeps the training key's regex ``mlm_acc`` from matching inside ``val_mlm_acc``).
Only rank 0 writes; other ranks get a writer whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from bertlib.core.files import plain
from bertlib.core.progress import progress_bar

#: keys of a pretraining metrics line, in log-line order
METRIC_KEYS = (
    "step",
    "loss",
    "mlm_loss",
    "mlm_acc",
    "nsp_loss",
    "nsp_acc",
    "learning_rate",
    "loss_scale",
    "grad_norm",
    "seq_per_sec",
    "elapsed_s",
)
#: keys of the held-out evaluation of pretraining (bertlib.eval.pretraining), at its steps only
VALIDATION_METRIC_KEYS = ("val_loss", "val_mlm_loss", "val_mlm_acc", "val_nsp_loss", "val_nsp_acc", "val_examples")
#: keys of a SQuAD finetuning metrics line
SQUAD_METRIC_KEYS = ("step", "loss", "learning_rate", "loss_scale", "grad_norm", "seq_per_sec", "elapsed_s")
#: keys of the SQuAD evaluation line (v1.1 reports exact_match, v2.0 exact)
EVAL_METRIC_KEYS = ("exact_match", "exact", "f1")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "%.6g" % value
    return str(value)


def format_log_line(phase: str, d: Mapping[str, Any]) -> str:
    """``[bertlib] phase=<phase> step=.. loss=..`` with the known keys first (in order), floats ``%.6g``."""
    keys = [k for k in METRIC_KEYS + SQUAD_METRIC_KEYS + VALIDATION_METRIC_KEYS if k in d]
    keys = list(dict.fromkeys(keys)) + [k for k in d if k not in keys]
    return " ".join([f"[bertlib] phase={phase}"] + [f"{k}={_fmt(d[k])}" for k in keys])


def format_reference_scoring_line(phase: str, scoring: Mapping[str, Any]) -> str:
    """``[bertlib] phase=squadv1 reference_scoring reference_exact=.. reference_f1=.. null_answers=..``: v1.1
    scored as the reference's evaluation did. Its keys are prefixed so that the ``exact`` / ``f1`` metric
    regexes of a SageMaker job (``\\bf1=``) keep reading the official evaluation line."""
    return (
        f"[bertlib] phase={phase} reference_scoring reference_exact={_fmt(scoring['exact'])} "
        f"reference_f1={_fmt(scoring['f1'])} null_answers={scoring['null_answers']}"
    )


def format_eval_line(phase: str, d: Mapping[str, Any]) -> str:
    """``[bertlib] phase=squadv1 eval exact_match=80.1 f1=87.6`` (only the keys present in ``d``)."""
    return " ".join([f"[bertlib] phase={phase} eval"] + [f"{k}={_fmt(d[k])}" for k in EVAL_METRIC_KEYS if k in d])


def _progress_wanted() -> bool:
    """A progress bar unless ``BERTLIB_PROGRESS=0`` (see :func:`bertlib.core.progress.progress_bar` for where)."""
    return os.environ.get("BERTLIB_PROGRESS", "1") not in ("0", "", "false", "no")


class MetricsWriter:
    """Rank-0 sink for per-step metrics; a no-op on other ranks (``enabled=False``).

    Args:
      output_dir: run output directory (``metrics.jsonl`` and ``tb/`` go there).
      phase: tag of the log lines (``phase1``, ``phase2``, ``squadv1`` ...).
      total_steps: length of the progress bar.
      initial_step: where a resumed run starts (progress bar offset).
      tensorboard: write TensorBoard events (imports TensorFlow).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        phase: str,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
        stream=None,
    ):
        self.enabled = enabled
        self.phase = phase
        self.stream = stream or sys.stdout
        self._file = self._tb = self._bar = None
        if not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self._file = open(out / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(str(out / "tb"))
        if _progress_wanted():
            self._bar = progress_bar(total_steps, phase, initial=initial_step)

    def log(self, metrics: Mapping[str, Any]) -> None:
        """Record one step's metrics (must contain ``step``): jsonl line, TB scalars, stdout line."""
        if not self.enabled:
            return
        d = {k: plain(v) for k, v in metrics.items()}
        self._file.write(json.dumps(d) + "\n")
        self._file.flush()
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=int(d["step"])):
                for k, v in d.items():
                    if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                        tf.summary.scalar(k, v)
            self._tb.flush()
        line = format_log_line(self.phase, d)
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def advance(self, step: int) -> None:
        """Move the progress bar to ``step`` (called every step; cheap)."""
        if self._bar is not None and step > self._bar.n:
            self._bar.update(step - self._bar.n)

    def message(self, text: str) -> None:
        """A free-form ``[bertlib]`` line on stdout (rank 0 only)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"[bertlib] {text}", file=self.stream)
        else:
            print(f"[bertlib] {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
        self._file = self._tb = self._bar = None
