"""``make demo`` / ``python -m bertlib.demo``: every notebook, in order, on the embedded default.

Runs ``notebooks/01_data_prep`` … ``05_report`` with papermill on ``params/local/*.yaml`` (experiment
``demo``), writing under ``<workdir>/runs/demo/``::

    notebooks/NN_*.ipynb, NN_*.html   the executed notebooks and their HTML (nbconvert)
    report/                           report.md, results_table.png, pretraining_loss.png, per-run PNGs
    data/                             the prepared datasets (kept: a re-run reuses them)
    phase1/ phase2/ squadv1/ squadv2/ the training runs (cleared before each demo: fresh timings)
    registry.json                     what each notebook recorded for the next one

A notebook that fails stops the demo; its executed copy (with the error cell) is still written.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bertlib.core.cli_schema import command, parse
from bertlib.core.config import build_config, read_yaml
from bertlib.core.errors import run_guarded
from bertlib.core.files import write_text

REPO = Path(__file__).resolve().parents[1]
#: (notebook, params file) in execution order
CHAIN = [
    ("01_data_prep", "data.yaml"),
    ("02_phase1", "phase1.yaml"),
    ("03_phase2", "phase2.yaml"),
    ("04_squad", "squad.yaml"),
    ("05_report", "report.yaml"),
]
#: run folders re-made by every demo (the data folder and the SQuAD feature cache are reused)
FRESH = ("phase1", "phase2", "squadv1", "squadv2", "report", "notebooks")


def to_html(notebook: Path) -> Path:
    """nbconvert's HTML of an executed notebook, next to it (written through a temp name)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    out = notebook.with_suffix(".html")
    return write_text(out, body)


def run_chain(
    workdir: str | os.PathLike = REPO,
    params_dir: str | os.PathLike = REPO / "params" / "local",
    experiment: str = "demo",
    overrides: dict[str, dict] | None = None,
    html: bool = True,
    log_output: bool = True,
    stop: str | None = None,
) -> dict:
    """Execute the notebook chain; returns ``{"notebooks": {name: path}, "html": {...}, "seconds": {...},
    "report_dir": path}``. Raises papermill's execution error after writing the failed notebook.

    Args:
      workdir: the kernels' working directory; runs go to ``<workdir>/runs/<experiment>``.
      params_dir: one YAML per notebook (see ``CHAIN``); ``experiment`` replaces theirs.
      overrides: per-notebook parameter overrides, e.g. ``{"02_phase1": {"total_steps": 3}}``.
      stop: the last notebook to run (default: all).
    """
    import papermill as pm

    workdir, params_dir = Path(workdir).resolve(), Path(params_dir)
    root = workdir / "runs" / experiment
    for name in FRESH:
        shutil.rmtree(root / name, ignore_errors=True)
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    result: dict = {"notebooks": {}, "html": {}, "seconds": {}, "report_dir": root / "report"}
    for name, params_file in CHAIN:
        # a notebook whose cell names its params file gets the file's name (its one home); the report's
        # cell holds its few keys itself, so it gets the file's values
        cell = (REPO / "notebooks" / f"{name}.py").read_text()
        given = (
            {"params_file": str((params_dir / params_file).resolve())}
            if "\nparams_file = " in cell
            else read_yaml(params_dir / params_file)
        )
        params = {**given, **(overrides or {}).get(name, {}), "experiment": experiment}
        out = root / "notebooks" / f"{name}.ipynb"
        t0 = time.perf_counter()
        print(f"[demo] {name} ({params_dir / params_file}) ...", flush=True)
        try:
            pm.execute_notebook(
                REPO / "notebooks" / f"{name}.ipynb",
                out,
                parameters=params,
                cwd=str(workdir),
                kernel_name="python3",
                progress_bar=False,
                log_output=log_output,
            )
        finally:
            result["notebooks"][name] = out
            result["seconds"][name] = time.perf_counter() - t0
            if html and out.is_file():
                result["html"][name] = to_html(out)
        print(f"[demo] {name} done in {result['seconds'][name]:.0f} s", flush=True)
        if name == stop:
            break
    return result


def main(argv: list[str]) -> int:
    """``python -m bertlib.demo [--workdir DIR] [--params DIR] [--experiment NAME] [--quiet]``."""

    class DemoArgs(BaseModel):
        """Every notebook, in order, on the embedded default."""

        model_config = ConfigDict(extra="forbid")
        workdir: str = Field(str(REPO), description="where runs/<experiment>/ goes (default: the repo)")
        params: str = Field(str(REPO / "params" / "local"), description="params folder (one YAML per notebook)")
        experiment: str = Field("demo", description="the experiment's name (runs/<experiment>/)")
        quiet: bool = Field(
            False, description="do not stream the notebooks' outputs", json_schema_extra={"cli": {"flag": True}}
        )

    parsed = parse(command("python -m bertlib.demo", DemoArgs, help=__doc__.splitlines()[0].replace("``", "")), argv)
    if parsed is None:
        return 0
    args = build_config(DemoArgs, parsed.values, "command line")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING if args.quiet else logging.INFO)
    t0 = time.perf_counter()
    try:
        result = run_chain(args.workdir, args.params, args.experiment, log_output=not args.quiet)
    except Exception as e:  # papermill's execution error names the cell; the notebook is written
        from papermill.exceptions import PapermillExecutionError

        if not isinstance(e, PapermillExecutionError):
            raise
        print(f"error: notebook failed: {e.ename}: {e.evalue} (see runs/{args.experiment}/notebooks/)", file=sys.stderr)
        return 1
    total = time.perf_counter() - t0
    report_md = result["report_dir"] / "report.md"
    print(
        f"\n[demo] all notebooks ran in {total / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result['seconds'].items())})"
    )
    print("[demo] executed notebooks:")
    for name, path in result["notebooks"].items():
        print(f"  {path}\n  {result['html'].get(name, '(no html)')}")
    print(f"[demo] report: {result['report_dir']}/ (report.md, results_table.png, pretraining_loss.png, ...)\n")
    if report_md.is_file():
        print(report_md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
