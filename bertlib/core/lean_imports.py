"""Keras in bertlib's command processes, without the scikit-learn import it does not need.

Keras imports scikit-learn whenever it is installed, for its scikit-learn wrappers
(``keras.wrappers``; ``keras/src/wrappers/fixes.py``: ``try: import sklearn``), which bertlib never
uses. The SageMaker extra installs it (sagemaker-train → mlflow → skops → scikit-learn), and the
import costs every training process about 1.2 s of its start (``python -c "import keras"``: 6.4 s,
5.5 s without). :func:`without_sklearn` hides it while a command runs: every ``bertlib``
subcommand and ``python -m`` entry point runs inside it (:func:`bertlib.core.errors.run_guarded`).
"""

from __future__ import annotations

import contextlib
import sys


def hide_sklearn() -> bool:
    """Make ``import sklearn`` raise ImportError from now on, unless it is already imported; True if it
    was hidden by this call."""
    if "sklearn" in sys.modules:
        return False
    sys.modules["sklearn"] = None  # the import system's "not importable" marker
    return True


@contextlib.contextmanager
def without_sklearn():
    """While inside, ``import sklearn`` raises ImportError (unless it is already imported); afterwards it
    imports again. A Keras first imported inside has its scikit-learn wrappers off for the process."""
    hidden = hide_sklearn()
    try:
        yield
    finally:
        if hidden and sys.modules.get("sklearn", 0) is None:
            del sys.modules["sklearn"]
