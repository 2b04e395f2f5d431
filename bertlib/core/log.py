"""bertlib's log: the logger ``bertlib`` (and its children), whose records read ``[bertlib] message``
on the standard output of the moment — a terminal, a notebook cell, SageMaker's CloudWatch log.

A leaf module. Warnings and errors read ``[bertlib] warning: ...`` / ``[bertlib] error: ...``. The
metric lines of training (``[bertlib] phase=... step=... loss=...``, read by SageMaker's metric
regexes) are not log records: :class:`bertlib.train.metrics.MetricsWriter` writes them as they are.
"""

from __future__ import annotations

import logging
import sys


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"[bertlib] {level}{record.getMessage()}"


class _Stdout(logging.Handler):
    """Writes to ``sys.stdout`` as it is when a record is emitted (captured by notebooks and tests)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: never raise from emit
            self.handleError(record)


def get_logger(name: str = "bertlib") -> logging.Logger:
    """The logger ``name`` (a ``bertlib.*`` module name), its root ``bertlib`` set up once: INFO and
    above to stdout, formatted as above, not passed on to the root logger."""
    root = logging.getLogger("bertlib")
    if not root.handlers:
        handler = _Stdout()
        handler.setFormatter(_Format())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name)
