"""Keras in bertlib's processes, without the imports it makes for features bertlib never uses.

Keras tries these imports whenever the package is installed (each in ``try: ... except ImportError``):

- scikit-learn, for ``keras.wrappers`` (``keras/src/wrappers/fixes.py``); the SageMaker extra installs
  it (sagemaker-train → mlflow → skops → scikit-learn): ~1.2 s;
- pandas, for DataFrame inputs to ``Model.fit`` (``keras/src/trainers/data_adapters/array_slicing.py``):
  ~0.5 s;
- matplotlib's pyplot, for ``keras.visualization``'s image gallery: ~0.35 s;
- IPython, for ``keras.saving``'s file editor: ~0.3 s.

That is ~2 s of every TensorFlow process's start (``import tensorflow`` imports Keras; ``import
tensorflow, keras``: 4.9 s, 2.9 s without them): each ``bertlib pretrain`` / ``squad`` / ``export``,
each Horovod rank, here and on SageMaker.
:func:`install` puts a finder in front of the import system that runs Keras' own modules with those
names marked "not importable" while they execute, and only then: pandas and matplotlib import as usual
afterwards (the report and the notebook helpers use them), and a package already imported (IPython in
a notebook kernel) is left alone. Every ``bertlib`` subcommand and ``python -m`` entry point installs it
(:func:`bertlib.core.errors.run_guarded`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

#: what Keras imports for features bertlib does not use (see the module docstring)
KERAS_EXTRAS = ("sklearn", "pandas", "matplotlib", "matplotlib.pyplot", "IPython")

_state = {"depth": 0, "hidden": []}


class _ExtrasHidden(importlib.abc.Loader):
    """A Keras module's own loader, executing the module with :data:`KERAS_EXTRAS` not importable (the
    outermost Keras module hides them, the last one to finish restores them)."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        if _state["depth"] == 0:
            _state["hidden"] = [name for name in KERAS_EXTRAS if name not in sys.modules]
            for name in _state["hidden"]:
                sys.modules[name] = None  # the import system's "not importable" marker
        _state["depth"] += 1
        try:
            self._loader.exec_module(module)
        finally:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for name in _state["hidden"]:
                    if name in sys.modules and sys.modules[name] is None:
                        del sys.modules[name]

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package ...: the real loader's
        return getattr(self._loader, name)


class _KerasFinder(importlib.abc.MetaPathFinder):
    """Finds ``keras`` and its submodules as the path finder does, with :class:`_ExtrasHidden` loaders."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith("keras."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _ExtrasHidden(spec.loader)
        return spec


def install() -> None:
    """From now on, Keras modules imported for the first time skip :data:`KERAS_EXTRAS` (idempotent; no
    effect on a Keras already imported)."""
    if not any(isinstance(finder, _KerasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KerasFinder())
