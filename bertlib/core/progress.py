"""Step progress for terminals and notebooks, shared by the launcher and the training loop.

* On a terminal: a tqdm bar on stderr; log lines are written above it (``tqdm.write``).
* In a notebook kernel (Jupyter, SageMaker Studio, papermill): one display output, updated in place
  through an IPython display handle, holding tqdm's text meter. Log lines print as plain stdout
  below it. Unlike tqdm's text fallback (no ipywidgets), this leaves no redrawn bar after every log
  line in the saved notebook or its HTML: papermill stores the last state of the display.
* Anywhere else (pipes, SageMaker's CloudWatch log): no bar; the ``[bertlib] ... step=N`` lines are
  the progress.
"""

from __future__ import annotations

import sys
import time


def in_notebook_kernel() -> bool:
    """True inside a running IPython kernel (a notebook), False in a terminal IPython or a script."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class NotebookProgress:
    """tqdm's meter text in one notebook display output, refreshed at most every ``min_interval`` s.

    The same methods as the tqdm bar the callers use: ``n``, ``update(k)``, ``write(line, file)``,
    ``close()``, and use as a context manager. ``total`` may be None (a count without percentage).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        initial: int = 0,
        unit: str = "step",
        min_interval: float = 0.5,
        unit_scale: bool = False,
    ):
        from IPython.display import display

        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.initial, self.min_interval, self.unit_scale = initial, min_interval, unit_scale
        self.t0 = self.shown_at = time.monotonic()
        self.handle = display({"text/plain": self._text()}, raw=True, display_id=True)

    def _text(self) -> str:
        from tqdm import tqdm

        return tqdm.format_meter(
            self.n,
            self.total,
            time.monotonic() - self.t0,
            prefix=self.desc,
            unit=self.unit,
            initial=self.initial,
            ncols=100,
            unit_scale=self.unit_scale,
        )

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.shown_at >= self.min_interval:
            self.handle.update({"text/plain": self._text()}, raw=True)
            self.shown_at = now

    def update(self, k: int = 1) -> None:
        self.n += k
        self._show(force=self.total is not None and self.n >= self.total)

    def write(self, line: str, file=None) -> None:
        print(line, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        self._show(force=True)

    def __enter__(self) -> "NotebookProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(
    total: int | None, desc: str, initial: int = 0, unit: str = "step", enabled: bool = True, unit_scale: bool = False
):
    """A :class:`NotebookProgress` in a notebook kernel, a tqdm bar on a terminal (stderr), else None.
    ``unit_scale``: counts shown with k/M/G prefixes (bytes)."""
    if not enabled:
        return None
    if in_notebook_kernel():
        return NotebookProgress(total, desc, initial, unit, unit_scale=unit_scale)
    if hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            unit_scale=unit_scale,
        )
    return None


def quiet_or_bar(
    progress: bool, desc: str, unit: str, total: int | None = None, initial: int = 0, unit_scale: bool = False
):
    """:func:`progress_bar` as a context manager that always exists: tqdm's no-op bar where none is shown."""
    from tqdm import tqdm

    return progress_bar(total, desc, initial=initial, unit=unit, enabled=progress, unit_scale=unit_scale) or tqdm(
        disable=True
    )


class MeterDisplay:
    """One progress line updated in place, with log lines written above it (a notebook) or between its
    redraws (a terminal), for a meter whose text the caller makes (e.g. a SageMaker job's progress,
    :mod:`bertlib.launch.monitor`).

    In a notebook kernel: one display output, updated through its display handle (papermill keeps its
    last state). On a terminal: the line is redrawn on stderr with ``\\r``. Anywhere else (a pipe, a
    log file): the line is printed to stdout whenever its ``key`` changes (e.g. a new step), so a log
    shows each state once.
    """

    def __init__(self):
        self.handle = None
        self.tty = False
        self.text = ""
        self.key = None
        if in_notebook_kernel():
            from IPython.display import display

            self.handle = display({"text/plain": ""}, raw=True, display_id=True)
        else:
            self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    def show(self, text: str, key=None) -> None:
        """Replace the line with ``text`` (plain output: printed when ``key`` differs from the last one)."""
        if self.handle is not None:
            if text != self.text:
                self.handle.update({"text/plain": text}, raw=True)
        elif self.tty:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
        elif key is None or key != self.key:
            print(text, flush=True)
        self.text, self.key = text, key

    def write(self, line: str) -> None:
        """A log line (below the display in a notebook; above the redrawn line on a terminal)."""
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        print(line, flush=True)
        if self.tty and self.text:
            sys.stderr.write(self.text)
            sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.text:
            sys.stderr.write("\n")
            sys.stderr.flush()
