"""Parameters → validated configs: the one path from a params file or a notebook cell to a job config.

:func:`load_configs` is what every caller uses — ``bertlib launch`` (:mod:`bertlib.launch_cli`),
``bertlib estimate`` (:mod:`bertlib.estimate_cli`), ``bertlib report`` and, through :func:`parameters` / :func:`load_params`, the
notebooks. Values = the YAML of a file (if any) updated by overrides; then

* a **notebook params file** (``params/*/*.yaml``: it sets a notebook-only key such as ``experiment``,
  see :data:`STEPS`) is resolved exactly as the notebook resolves it (:func:`load_params`);
* a **plain run config** goes through :func:`bertlib.core.config.load_launched`.

Either way a job becomes a :class:`~bertlib.core.config.LaunchedJob` ``(launch, job)``: the one flat
dict is split by which schema declares each key (:func:`bertlib.core.config.build_launched`); the job's
entry point later gets ``job`` only.

A notebook's parameters (its ``parameters`` cell plus what papermill injected after it) are

1. collected (every public, non-module, non-function global defined so far),
2. laid over ``params_file`` (the cell names ``params/local/<step>.yaml``: every setting of the
   embedded local demo has that file as its only home; a parameter left ``None`` keeps the file's
   value), then split into the few notebook-only keys (``experiment``, ``runs_root``; data prep adds
   ``squad_smoke``; SQuAD adds ``squad_versions`` and the per-version blocks ``squadv1``/``squadv2``),
   validated by a strict schema,
3. resolved: ``run_dir``/``output_dir: auto`` → ``<runs_root>/<experiment>/<step>``;
   ``data_dir``/``checkpoint_path``/SQuAD files ``auto`` → what an earlier notebook recorded in the run
   registry (:mod:`bertlib.registry`); ``${VAR}`` / ``${VAR:-default}`` → the environment (account
   specific values stay out of params files); ``asset:NAME`` → the cached file of :mod:`bertlib.core.assets`,
4. validated against the job's and the launch's schemas (:func:`bertlib.core.config.build_launched`) and
   what the launch would refuse,

and any problem stops the notebook with a one-line :class:`ParamsError` (unknown key, wrong type,
missing registry entry) before anything expensive runs.

Pure: configs, registry and assets only — no display, IPython or matplotlib (:mod:`bertlib.notebook`
has the notebooks' steps and display).
"""

from __future__ import annotations

import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertlib.core.assets import ASSETS, asset
from bertlib.core.config import (
    LaunchedJob,
    build_config,
    build_launched,
    launched_fields,
    load_config,
    load_launched,
    read_yaml,
)
from bertlib.core.errors import ConfigError, ParamsError
from bertlib.launch.local import require_horovod
from bertlib.launch.sagemaker import DRY_RUN_PLACEHOLDERS, resolve, stage_data_files
from bertlib.registry import AUTO, Registry

#: the project folder (``notebooks/``, ``params/``): a relative ``params_file`` is also looked up here
PROJECT = Path(__file__).resolve().parents[1]
#: names IPython puts into a kernel's namespace that are not parameters
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


class _NotebookKeys(BaseModel):
    """Keys every notebook understands besides its job's config keys."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    experiment: str = "local"  # registry: <runs_root>/<experiment>/registry.json
    runs_root: str = "runs"
    params_file: str | None = None  # the values beneath the given ones (a notebook cell: params/local/<step>.yaml)


class _Phase1Keys(_NotebookKeys):
    # a notebook cell's None keeps these values (or the params file's), so "auto" and 0 stand for the defaults
    canary: Literal["auto"] | bool = "auto"  # run the canary before phase 1 ("auto": on SageMaker, not locally)
    canary_instance_count: int = Field(0, ge=0)  # its instances (0: the run's instance_count)


class _DataKeys(_NotebookKeys):
    squad_smoke: bool = True  # also build the synthetic SQuAD smoke sets (bertlib.squad.smoke)


class _SquadKeys(_NotebookKeys):
    squad_versions: list[Literal["squadv1", "squadv2"]] = ["squadv1", "squadv2"]
    squadv1: dict[str, Any] = {}  # SquadConfig keys that differ for v1.1 (files, steps, lr, warmup)
    squadv2: dict[str, Any] = {}  # ... and for v2.0
    # "Try it" (bertlib.notebook.try_it): dev questions shown, and the user's own question on their context
    # ("" = none: a notebook cell's None keeps the params file's value)
    try_questions: int = Field(3, ge=0)
    question: str = ""
    context: str = ""
    # the SageMaker endpoint of the first version's model (bertlib.notebook.endpoint, bertlib.launch.deploy)
    deploy: bool = False
    delete_endpoint: bool = False
    endpoint_instance_type: str = "ml.m5.xlarge"

    @model_validator(mode="after")
    def _question_with_context(self):
        if bool(self.question.strip()) != bool(self.context.strip()):
            raise ValueError("question and context go together: set both (or neither)")
        return self


#: step → (job schema, notebook-only keys schema, {param: registry key} for "auto" values)
STEPS: dict[str, tuple[str | None, type[_NotebookKeys], dict[str, str]]] = {
    "data": ("prepare-data", _DataKeys, {}),
    "phase1": ("pretrain", _Phase1Keys, {"data_dir": "data.datasets.phase1"}),
    "phase2": ("pretrain", _NotebookKeys, {"data_dir": "data.datasets.phase2", "checkpoint_path": "phase1.export_dir"}),
    "squad": (
        "squad",
        _SquadKeys,
        {
            "checkpoint_path": "phase2.export_dir",
            "train_file": "data.squad_smoke.{name}.train_file",
            "predict_file": "data.squad_smoke.{name}.predict_file",
        },
    ),
}
#: keys whose "auto" means "a folder of this experiment" rather than a registry lookup
_OWN_DIRS = {"run_dir", "output_dir"}


class ReportConfig(BaseModel):
    """What ``bertlib report`` (and notebooks/05_report) reads and where it writes."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    experiment: str | None = Field(None, description="take the runs from <runs_root>/<experiment>/registry.json")
    runs_root: str = Field("runs", description="folder of the experiments' registries")
    phase1: str | None = Field(None, description="phase 1 run dir or s3:// prefix (wins over the registry)")
    phase2: str | None = Field(None, description="phase 2 run dir or s3:// prefix (wins over the registry)")
    squadv1: str | None = Field(None, description="SQuAD v1.1 run dir or s3:// prefix (wins over the registry)")
    squadv2: str | None = Field(None, description="SQuAD v2.0 run dir or s3:// prefix (wins over the registry)")
    output_dir: str | None = Field(
        None, description="where the plots and table go; default <runs_root>/<experiment>/report"
    )
    model_name: str | None = Field(None, description="this run's row label; default from the runs' model_size")


@dataclass
class Params:
    """Validated parameters of one notebook: the job config(s), notebook keys, registry."""

    step: str
    keys: _NotebookKeys
    registry: Registry
    configs: dict[str, LaunchedJob] = field(default_factory=dict)  # name → launched job (1, or 1 per SQuAD version)

    @property
    def cfg(self) -> LaunchedJob:
        """The launched job, for notebooks that run one job."""
        (only,) = self.configs.values()
        return only


# ------------------------------------------------------------------------------------ the one path


def job_of(values: dict[str, Any]) -> str:
    """The job a params file describes, from its keys: ``sources`` → prepare-data; SQuAD files,
    version or per-version blocks → squad; otherwise pretrain."""
    if "sources" in values:
        return "prepare-data"
    if any(k in values for k in ("squadv1", "squadv2", "squad_versions", "squad_version", "train_file")):
        return "squad"
    return "pretrain"


def step_of(job: str, values: dict[str, Any]) -> str | None:
    """The notebook step whose params ``values`` are (``data``, ``phase1``/``phase2`` from ``phase``,
    ``squad``), or None for a plain run config (it sets none of the step's notebook-only keys)."""
    step = {"prepare-data": "data", "squad": "squad"}.get(job)
    if job == "pretrain":
        step = values.get("phase") if values.get("phase") in STEPS else "phase1"
    if step is None or not any(k in values for k in STEPS[step][1].model_fields):
        return None
    return step


def load_configs(
    job: str | None,
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    resolve: bool = True,
) -> dict[str, Any]:
    """``{name: LaunchedJob}`` of ``job`` from the YAML of ``path`` (if any) updated by ``overrides``.

    A notebook params file is resolved as its notebook resolves it (:func:`load_params`; one per SQuAD
    version); a plain run config is validated by :func:`bertlib.core.config.load_launched`. Names
    are the notebook steps (``data``, ``phase1``, ``phase2``, ``squadv1``, ``squadv2``; ``report``).
    ``job`` ``"report"`` gives the :class:`ReportConfig`; ``None`` takes the job from the keys
    (:func:`job_of`). ``resolve=False`` leaves ``auto`` / ``${VAR}`` / ``asset:`` values as they are
    and checks nothing about the launch (no registry, environment or download: the estimate).
    """
    overrides = dict(overrides or {})
    values = {**(read_yaml(path) if path else {}), **overrides}
    job = job or job_of(values)
    if job == "report":
        return {"report": load_config(ReportConfig, path, overrides)}
    return _load(job, values, path, overrides, resolve)[0]


#: the registry of a launch from a plain run config (a notebook params file names its experiment)
DEFAULT_EXPERIMENT = "default"


def load_launch(
    job: str | None, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Registry]:
    """:func:`load_configs` (resolved) and the run registry the launch records its jobs in: the params
    file's experiment, or ``runs/default`` for a plain run config."""
    overrides = dict(overrides or {})
    values = {**(read_yaml(path) if path else {}), **overrides}
    return _load(job or job_of(values), values, path, overrides, True)


def _load(job: str, values: dict, path, overrides: dict, resolve: bool) -> tuple[dict[str, Any], Registry]:
    step = step_of(job, values)
    if step is not None:
        params = load_params(step, values, resolve=resolve)
        return params.configs, params.registry
    launched = load_launched(job, path, overrides)
    cfg = launched.job
    name = {
        "prepare-data": "data",
        "pretrain": getattr(cfg, "phase", None),
        "squad": getattr(cfg, "squad_version", None),
    }.get(job) or job
    return {name: launched}, Registry.for_experiment(DEFAULT_EXPERIMENT)


def load_params(step: str, values: dict[str, Any], *, resolve: bool = True) -> Params:
    """Validate notebook parameters ``values`` for ``step`` (data/phase1/phase2/squad) → :class:`Params`.

    Raises :class:`ParamsError` (one line: which key, what is wrong) on any problem, including what
    the launch would refuse later (a SageMaker run without role or image, no horovodrun); with
    ``resolve=False`` nothing is looked up or checked beyond the schemas (see :func:`load_configs`).
    """
    job, keys_cls, lookups = STEPS[step]
    source = f"{step} parameters"
    missing = None
    try:
        values, missing = _with_params_file(values, job, keys_cls)
        nb_values = {k: values.pop(k) for k in list(values) if k in keys_cls.model_fields}
        keys = build_config(keys_cls, nb_values, source)
        registry = Registry.for_experiment(keys.experiment, keys.runs_root)
        if step == "squad":
            raw = {v: {**values, **getattr(keys, v), "squad_version": v} for v in keys.squad_versions}
        else:
            raw = {step: values}
        # unknown keys / wrong types first ("auto" is a valid string)
        configs = {
            name: build_launched(job, vals, source if name == step else f"{source} ({name})")
            for name, vals in raw.items()
        }
        if resolve:
            configs = {
                name: build_launched(
                    job, _resolve(name, vals, keys, registry, lookups), source if name == step else f"{source} ({name})"
                )
                for name, vals in raw.items()
            }
            for cfg in configs.values():
                _check_launchable(job, cfg)
    except ConfigError as e:
        msg = str(e)
        if missing is not None and "missing required key" in msg:  # the values needed the file after all
            msg = f"params_file {str(missing)!r}: config file not found"
        raise ParamsError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    return Params(step=step, keys=keys, registry=registry, configs=configs)


# --------------------------------------------------------------------------------------- notebooks


def parameters(step: str, namespace: dict[str, Any]) -> Params:
    """A notebook's parameters (its ``globals()``) for ``step`` → :class:`Params` (:func:`load_params`)."""
    _chdir_to_project()
    return load_params(step, collect(namespace))


def report_parameters(namespace: dict[str, Any]) -> ReportConfig:
    """Validate notebooks/05_report's parameters (:class:`ReportConfig`)."""
    _chdir_to_project()
    try:
        (cfg,) = load_configs("report", None, collect(namespace)).values()
    except ConfigError as e:
        # load_config names values without a file "command line"; here they are the notebook's
        raise ParamsError(str(e).replace("command line", "report parameters", 1)) from None
    return cfg


def collect(namespace: dict[str, Any]) -> dict[str, Any]:
    """The parameter variables of a notebook namespace (``globals()``).

    Everything public that is not a module, function, class or IPython's own names: i.e. the values
    the ``parameters`` cell and papermill's injected cell assigned.
    """
    out = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
            continue
        out[name] = value
    return out


def find_params_file(path: str | os.PathLike) -> Path:
    """A relative params file is taken from the working directory, else from the project folder
    (papermill may run a notebook elsewhere)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not (PROJECT / p).exists():
        return p
    return PROJECT / p


def _with_params_file(
    values: dict[str, Any], job: str, keys_cls: type[_NotebookKeys]
) -> tuple[dict[str, Any], Path | None]:
    """``values`` laid over their ``params_file`` (recursively), if any, and the params file that was
    not found (None: all were). A ``None`` value of a key that cannot be None (a notebook cell's "not
    set here") is left out.

    A params file that is not there is only an error if the values miss a key it would have given: a
    notebook run by ``papermill -f FILE --cwd ELSEWHERE`` with an installed bertlib gets every value
    from FILE and cannot see the cell's ``params/local/...`` (a relative path: the working directory,
    else the project folder)."""
    fields = {**launched_fields(job), **keys_cls.model_fields}
    out = {
        k: v
        for k, v in values.items()
        if v is not None or k not in fields or (fields[k].default is None and not fields[k].is_required())
    }
    params_file = out.pop("params_file", None)
    if params_file is None:
        return out, None
    if not isinstance(params_file, (str, os.PathLike)):
        raise ConfigError(f"key 'params_file': expected a path (got {params_file!r})")
    path = find_params_file(params_file)
    if not path.exists():
        return out, path
    base, missing = _with_params_file(read_yaml(path), job, keys_cls)
    return {**base, **out}, missing


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, key: str, dry_run: bool = False) -> Any:
    """``"${VAR}/x"`` / ``"${VAR:-default}"`` → the environment's value (account-specific settings
    such as S3 prefixes stay out of the params files). An unset variable without default is an error,
    except in a dry run, where the known account settings get :data:`DRY_RUN_PLACEHOLDERS
    <bertlib.launch.sagemaker.DRY_RUN_PLACEHOLDERS>`."""
    if isinstance(value, list):
        return [_expand_env(v, key, dry_run) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match) -> str:
        got = os.environ.get(m.group(1))
        if got is None and dry_run:  # a dry run shows the request with a placeholder that says what to set
            got = DRY_RUN_PLACEHOLDERS.get(m.group(1))
        if got is None and m.group(2) is None:
            raise ConfigError(f"key {key!r}: environment variable {m.group(1)} is not set (used as {value!r})")
        return got if got is not None else m.group(2)

    return _ENV_REF.sub(sub, value)


def _resolve_assets(value: Any) -> Any:
    """``"asset:NAME"`` (also inside lists) → path of the verified cached asset."""
    if isinstance(value, str) and value.startswith("asset:"):
        name = value[len("asset:") :]
        if name not in ASSETS:
            raise ConfigError(f"{value!r}: unknown asset (known: {', '.join(ASSETS)})")
        return str(asset(name))
    if isinstance(value, list):
        return [_resolve_assets(v) for v in value]
    return value


def _resolve(
    name: str, values: dict[str, Any], keys: _NotebookKeys, registry: Registry, lookups: dict[str, str]
) -> dict[str, Any]:
    dry_run = bool(values.get("dry_run"))
    out = {k: _resolve_assets(_expand_env(v, k, dry_run)) for k, v in values.items()}
    for k in _OWN_DIRS:
        if out.get(k) == AUTO:
            out[k] = str(Path(keys.runs_root) / keys.experiment / name)
    return registry.resolve(out, {k: v.format(name=name) for k, v in lookups.items()}, allow_dry_run=dry_run)


def _chdir_to_project() -> None:
    """Jupyter starts kernels in the notebook's folder; params use paths relative to the project."""
    here = Path.cwd()
    if here.name == "notebooks" and (here.parent / "bertlib").is_dir():
        os.chdir(here.parent)


def _check_launchable(job: str, launched: LaunchedJob) -> None:
    """What the launch would refuse, refused now: SageMaker role/image/region-free settings and
    input URIs (:func:`bertlib.launch.sagemaker.resolve`, no AWS call), or Horovod for N > 1."""
    if launched.launch.backend == "sagemaker":
        resolve(job, stage_data_files(launched, None, dry_run=True) if job == "prepare-data" else launched)
    elif job != "prepare-data" and launched.launch.num_processes > 1:
        require_horovod()
