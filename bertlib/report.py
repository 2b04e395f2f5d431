"""Plots and the F1/timing table of a pretraining + SQuAD experiment (``bertlib report``).

Inputs are run directories as every training job writes them (``metrics.jsonl``, ``summary.json``,
``config.yaml``), either local folders or S3 URIs (fetched through
:func:`bertlib.launch.results.fetch_run`). Outputs:

- per-run figures of ``metrics.jsonl``: loss (total, MLM, NSP), accuracy (MLM, NSP) — each with its
  held-out counterpart (``val_*``, dashed with dots) where the run evaluated —, learning rate,
  loss scale, throughput, gradient norm;
- one figure with both pretraining phases' losses and MLM accuracies (training and held-out) on a
  shared global-step axis;
- the table in the seed's format, the reference row (the published result) beside this run's row, plus EM and the
  held-out MLM accuracy at the end of pretraining (how a pretraining run is judged; MLPerf's BERT target
  is 0.720)::

    | Model | Phase1 | Phase2 | Total Training Time | SQuAD v1.1 F1 | SQuAD v2.0 F1 |
      SQuAD v1.1 EM | SQuAD v2.0 EM | Held-out MLM acc |     (one row)

  as a pandas DataFrame, ``report.md`` and ``results_table.png``.

``bertlib report --experiment demo`` takes the runs from the experiment's registry
(:mod:`bertlib.registry`); ``--phase1 s3://...`` etc. name runs directly.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertlib.core.cli_schema import command, parse
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.core.files import write_bytes
from bertlib.launch.results import fetch_run
from bertlib.params import ReportConfig, load_configs
from bertlib.registry import Registry

#: The published result this kit reproduces (BERT-base, TF 2.1, 8 × p3dn.24xlarge; the README's table).
#: (It publishes no EM and no held-out MLM accuracy.)
REFERENCE = {
    "model": "BERT-base (reference)",
    "phase1_s": 5 * 3600 + 33 * 60,
    "phase2_s": 2 * 3600 + 53 * 60,
    "squadv1_f1": 87.68,
    "squadv2_f1": 76.14,
    "squadv1_em": None,
    "squadv2_em": None,
    "squadv1_f1_official": None,
    "mlm_acc": None,
}
COLUMNS = [
    "Model",
    "Phase1",
    "Phase2",
    "Total Training Time",
    "SQuAD v1.1 F1",
    "SQuAD v2.0 F1",
    "SQuAD v1.1 EM",
    "SQuAD v2.0 EM",
    "SQuAD v1.1 F1 (official)",
    "Held-out MLM acc",
]
MISSING = "—"
SYNTHETIC_MARK = " †"
#: what the two v1.1 F1 columns hold (bertlib.squad.predictions.reference_v1_scores)
SCORING_NOTE = (
    "SQuAD v1.1 F1: scored as the reference's run_squad_evaluation.py scored it (v2-style post-processing: a "
    "question is answered '' when its null score wins), like its 87.68; SQuAD v1.1 F1 (official) and EM: the "
    "official v1.1 rule."
)
SYNTHETIC_NOTE = (
    "† measured on the synthetic smoke set of bertlib.squad.smoke (cloze questions on the "
    "Wikipedia slice), not on SQuAD: not comparable with the reference."
)
STEPS = ("phase1", "phase2", "squadv1", "squadv2")


def format_duration(seconds: float | None) -> str:
    """Wall time in the seed's words: 19980 → ``"5 hrs 33 mins"``; under an hour ``"2 mins 5 secs"``.

    From one hour on, rounded to the nearest minute; below, to the nearest second (halves up).
    """
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return MISSING
    if seconds < 0:
        raise ValueError(f"negative duration {seconds}")
    total_s = math.floor(seconds + 0.5)
    if total_s >= 3600:
        total_min = math.floor(seconds / 60 + 0.5)
        return f"{total_min // 60} hrs {total_min % 60} mins"
    if total_s >= 60:
        return f"{total_s // 60} mins {total_s % 60} secs"
    return f"{total_s} secs"


def format_score(value: float | None) -> str:
    """An EM/F1 percentage with two decimals (``87.68``), or ``—`` when the run does not exist."""
    return MISSING if value is None else f"{float(value):.2f}"


def format_accuracy(value: float | None) -> str:
    """An accuracy fraction with three decimals (``0.720``), or ``—``."""
    return MISSING if value is None or math.isnan(value) else f"{float(value):.3f}"


# ---------------------------------------------------------------------------------------- loading


@dataclass
class Run:
    """One training run directory: its metrics (one row per logged step), summary and config."""

    path: Path
    metrics: Any  # pandas.DataFrame, columns = the metrics.jsonl keys, sorted by step
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def wall_time_s(self) -> float | None:
        return self.summary.get("wall_time_s")

    @property
    def label(self) -> str:
        return str(
            self.summary.get("phase") or self.config.get("phase") or self.config.get("squad_version") or self.path.name
        )


def read_metrics(path: str | os.PathLike):
    """``metrics.jsonl`` → DataFrame [n_logged_steps, keys], sorted by step, one row per step.

    A resumed run logs again the steps between its last checkpoint and the interruption: the later
    record of a step (the one the finished model went through) is kept. A run still in progress may
    have a half-written last line: it is skipped, any other bad line is an error naming the file and line.
    """
    import pandas as pd

    path = Path(path)
    rows = []
    lines = path.read_text().splitlines() if path.is_file() else []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ConfigError(f"{path}:{i + 1}: not a JSON line") from None
    df = pd.DataFrame(rows)
    if "step" in df:
        df = df.drop_duplicates("step", keep="last").sort_values("step", kind="stable").reset_index(drop=True)
    return df


def load_run(uri_or_dir: str | os.PathLike) -> Run:
    """Read a run directory (local path, or ``s3://`` prefix fetched by ``launch.results.fetch_run``)."""
    if str(uri_or_dir).startswith("s3://"):
        path = Path(fetch_run(str(uri_or_dir)))
    else:
        path = Path(uri_or_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: run directory not found")
    if not (path / "metrics.jsonl").is_file() and not (path / "summary.json").is_file():
        raise ConfigError(f"{path}: neither metrics.jsonl nor summary.json (not a bertlib run directory)")
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    config = (yaml.safe_load((path / "config.yaml").read_text()) or {}) if (path / "config.yaml").is_file() else {}
    return Run(path=path, metrics=read_metrics(path / "metrics.jsonl"), summary=summary, config=config)


# ---------------------------------------------------------------------------------------- figures

#: (panel title, metrics keys, log y-axis) — panels whose keys are all absent are left out; a held-out
#: ``val_K`` (bertlib.eval.pretraining) is drawn in the colour of ``K``, dashed with dots
PANELS = [
    ("Loss", ["loss", "mlm_loss", "nsp_loss", "val_loss", "val_mlm_loss", "val_nsp_loss"], False),
    ("Accuracy", ["mlm_acc", "nsp_acc", "val_mlm_acc", "val_nsp_acc"], False),
    ("Learning rate", ["learning_rate"], False),
    ("Loss scale", ["loss_scale"], True),
    ("Throughput (sequences/s)", ["seq_per_sec"], False),
    ("Gradient norm (before clipping)", ["grad_norm"], False),
]


def plot_run(run: Run | str | os.PathLike, title: str | None = None):
    """A grid of the run's curves against the optimizer step (see ``PANELS``) → matplotlib Figure."""
    from matplotlib.figure import Figure

    run = run if isinstance(run, Run) else load_run(run)
    df = run.metrics
    panels = [(t, [k for k in keys if k in df], logy, keys) for t, keys, logy in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels or "step" not in df:
        raise ConfigError(f"{run.path / 'metrics.jsonl'}: no logged steps to plot")
    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    for i, (ptitle, keys, logy, all_keys) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k in keys:
            x, y = _series(df, k)
            style = dict(linestyle="--", marker="o", markersize=3) if k.startswith("val_") else {}
            ax.plot(x, y, label=k, linewidth=1.2, color=f"C{all_keys.index(k.removeprefix('val_'))}", **style)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("step")
        if logy and (_series(df, keys[0])[1] > 0).all():
            ax.set_yscale("log", base=2)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"{run.label}: {run.path}", fontsize=11)
    return fig


def _series(df, key: str):
    """``(steps, values)`` of the rows that have ``key`` (held-out rows exist only at evaluation steps)."""
    rows = df[["step", key]].dropna()
    return rows["step"], rows[key]


def plot_pretraining(phase1: Run | str | os.PathLike, phase2: Run | str | os.PathLike | None = None):
    """Both phases' loss, MLM loss and NSP loss (and held-out loss) on one figure, and their training
    and held-out MLM accuracy; phase 2's steps continue phase 1's.

    Returns a matplotlib Figure with two panels (loss / MLM accuracy) and a line at the phase switch.
    """
    from matplotlib.figure import Figure

    runs = [r if isinstance(r, Run) else load_run(r) for r in (phase1, phase2) if r is not None]
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    offset = 0
    for run, colour in zip(runs, ("tab:blue", "tab:orange")):
        df = run.metrics
        if "step" not in df:
            continue
        name = run.label
        for ax, key, style in (
            (ax_loss, "loss", "-"),
            (ax_loss, "mlm_loss", "--"),
            (ax_loss, "nsp_loss", ":"),
            (ax_loss, "val_loss", "o-"),
            (ax_acc, "mlm_acc", "-"),
            (ax_acc, "val_mlm_acc", "o-"),
        ):
            if key in df:
                steps, values = _series(df, key)
                ax.plot(
                    steps + offset,
                    values,
                    style,
                    color=colour,
                    label=f"{name} {key}",
                    linewidth=1.2,
                    markersize=3,
                    alpha=0.6 if key.startswith("val_") else 1.0,
                )
        if offset:
            for ax in (ax_loss, ax_acc):
                ax.axvline(offset, color="grey", linewidth=0.8)
        offset += int(run.summary.get("steps") or df["step"].max())
    ax_loss.set_title("Pretraining loss (phase 1 → phase 2)", fontsize=10)
    ax_acc.set_title("Masked-LM accuracy (dots: held-out)", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def figure_png(fig, path: str | os.PathLike | None = None, dpi: int = 110) -> bytes:
    """Render a Figure to PNG bytes; also write them (temp + rename) when ``path`` is given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    data = buf.getvalue()
    if path is not None:
        write_bytes(Path(path), data)
    return data


def show(fig) -> None:
    """Display a Figure as a PNG output in a notebook (plain ``Figure`` objects don't auto-render)."""
    from IPython.display import Image, display

    display(Image(data=figure_png(fig)))


def show_file(path: str | os.PathLike) -> None:
    """Display a PNG file as a notebook output."""
    from IPython.display import Image, display

    display(Image(filename=str(path)))


# ---------------------------------------------------------------------------------------- table


def _model_name(runs: dict[str, Run]) -> str:
    for step in STEPS:
        if step in runs and runs[step].config.get("model_size"):
            cfg = runs[step].config
            where = "SageMaker" if cfg.get("backend") == "sagemaker" else "local"
            return f"BERT-{cfg['model_size']} (this run, {where})"
    return "this run"


def _score(run: Run | None, *keys: str) -> float | None:
    if run is None:
        return None
    for k in keys:
        if run.summary.get(k) is not None:
            return float(run.summary[k])
    return None


def _reference_scoring_f1(run: Run | None) -> float | None:
    """The v1.1 F1 as the reference's evaluation scored it (``summary.json["reference_scoring"]``; None for
    a run from before it was recorded, never the official F1 in its place)."""
    scoring = run.summary.get("reference_scoring") if run is not None else None
    return float(scoring["f1"]) if scoring else None


def run_row(runs: dict[str, Run], model: str | None = None) -> dict:
    """This run's numbers from the summaries of ``runs`` (keys among phase1/phase2/squadv1/squadv2).

    ``synthetic`` marks SQuAD scores measured on a set whose summary carries a ``dataset_note``
    (bertlib.squad.smoke's synthetic smoke set), which must not pass for SQuAD accuracy.
    ``squadv1_f1`` is the v1.1 F1 as the reference scored it, ``squadv1_f1_official`` the official one
    (:data:`SCORING_NOTE`). ``mlm_acc`` is the held-out MLM accuracy at the end of the last pretraining phase present
    (``summary.json["final"]["val_mlm_acc"]``; None when that phase did not evaluate).
    """
    p1 = runs["phase1"].wall_time_s if "phase1" in runs else None
    p2 = runs["phase2"].wall_time_s if "phase2" in runs else None
    last_phase = runs.get("phase2") or runs.get("phase1")
    mlm_acc = (last_phase.summary.get("final") or {}).get("val_mlm_acc") if last_phase is not None else None
    return {
        "model": model or _model_name(runs),
        "phase1_s": p1,
        "phase2_s": p2,
        "mlm_acc": mlm_acc,
        "squadv1_f1": _reference_scoring_f1(runs.get("squadv1")),
        "squadv1_f1_official": _score(runs.get("squadv1"), "f1"),
        "squadv2_f1": _score(runs.get("squadv2"), "f1"),
        "squadv1_em": _score(runs.get("squadv1"), "exact_match", "exact"),
        "squadv2_em": _score(runs.get("squadv2"), "exact", "exact_match"),
        "synthetic": {v for v in ("squadv1", "squadv2") if v in runs and runs[v].summary.get("dataset_note")},
    }


def table_rows(rows: list[dict]) -> list[list[str]]:
    """Rows of numbers (``run_row`` / ``REFERENCE`` dicts) → rows of strings in ``COLUMNS`` order.

    Total Training Time = phase 1 + phase 2 (pretraining only, as in the reference). Scores of a
    synthetic smoke set get a trailing ``†`` (see :data:`SYNTHETIC_NOTE`). The held-out MLM accuracy
    is a fraction with three decimals. The reference row's 87.68 sits in the column of the like number
    (``squadv1_f1``: the reference's scoring); its official v1.1 F1 is unknown (—).
    """
    out = []
    for r in rows:
        p1, p2 = r.get("phase1_s"), r.get("phase2_s")
        total = p1 + p2 if p1 is not None and p2 is not None else None
        synthetic = r.get("synthetic") or set()

        def score(version: str, kind: str) -> str:
            text = format_score(r.get(f"{version}_{kind}"))
            return text + SYNTHETIC_MARK if version in synthetic and text != MISSING else text

        out.append(
            [
                r["model"],
                format_duration(p1),
                format_duration(p2),
                format_duration(total),
                score("squadv1", "f1"),
                score("squadv2", "f1"),
                score("squadv1", "em"),
                score("squadv2", "em"),
                score("squadv1", "f1_official"),
                format_accuracy(r.get("mlm_acc")),
            ]
        )
    return out


def results_table(runs: dict[str, Run], model: str | None = None):
    """pandas DataFrame: the reference row and this run's row, in ``COLUMNS``."""
    import pandas as pd

    return pd.DataFrame(table_rows([REFERENCE, run_row(runs, model)]), columns=COLUMNS)


def markdown_table(df) -> str:
    """A DataFrame of strings → a GitHub Markdown table (``| a | b |`` lines)."""
    lines = ["| " + " | ".join(df.columns) + " |", "| " + " | ".join("---" for _ in df.columns) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def table_note(df) -> str:
    """The table's footnote: what its v1.1 F1 columns hold, after the synthetic smoke-set note if needed."""
    synthetic = any(str(v).endswith(SYNTHETIC_MARK) for v in df.values.ravel())
    return "\n".join(([SYNTHETIC_NOTE] if synthetic else []) + [SCORING_NOTE])


def plot_table(df, note: str | None = None):
    """The results table (and its footnote) rendered as a matplotlib Figure (``results_table.png``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0 + 1.45 * len(df.columns), 0.55 * (len(df) + 1) + 0.5))
    if note:
        fig.text(0.01, 0.02, note, fontsize=8, style="italic", wrap=True)
    ax = fig.add_subplot()
    ax.axis("off")
    tbl = ax.table(cellText=df.values, colLabels=list(df.columns), loc="center", cellLoc="center")
    tbl.auto_set_font_size(False)
    tbl.set_fontsize(9)
    tbl.scale(1.0, 1.6)
    for (row, _), cell in tbl.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8eef7")
    tbl.auto_set_column_width(list(range(len(df.columns))))
    return fig


# ---------------------------------------------------------------------------------------- report


def collect_runs(cfg: ReportConfig) -> dict[str, Run]:
    """The runs named in ``cfg`` (explicit URIs first, then the registry's ``run_dir`` entries)."""
    steps = Registry.for_experiment(cfg.experiment, cfg.runs_root).steps if cfg.experiment else {}
    runs = {}
    for step in STEPS:
        where = getattr(cfg, step) or (steps.get(step) or {}).get("run_dir")
        if where:
            runs[step] = load_run(where)
    if not runs:
        src = f"registry of experiment {cfg.experiment!r}" if cfg.experiment else "report config"
        raise ConfigError(f"{src}: no runs to report (give --phase1/--phase2/--squadv1/--squadv2 or --experiment)")
    return runs


def write_report(runs: dict[str, Run], output_dir: str | os.PathLike, model: str | None = None) -> dict:
    """Write ``report.md``, ``results_table.png``, ``pretraining_loss.png`` and one PNG per run.

    Returns ``{"table": DataFrame, "files": {name: Path}}``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = results_table(runs, model)
    note = table_note(df)
    files = {"results_table.png": out / "results_table.png"}
    figure_png(plot_table(df, note), files["results_table.png"])
    if "phase1" in runs:
        files["pretraining_loss.png"] = out / "pretraining_loss.png"
        figure_png(plot_pretraining(runs["phase1"], runs.get("phase2")), files["pretraining_loss.png"])
    for step, run in runs.items():
        if not run.metrics.empty:
            files[f"{step}.png"] = out / f"{step}.png"
            figure_png(plot_run(run, f"{step}: {run.path}"), files[f"{step}.png"])
    note = table_note(df)
    md = ["# bertlib results", "", markdown_table(df)] + ([note, ""] if note else [])
    md += ["Runs:", ""]
    md += [f"- {step}: `{run.path}`" for step, run in runs.items()]
    md += ["", "Figures:", ""] + [f"![{name}]({name})" for name in files if name.endswith(".png")]
    files["report.md"] = out / "report.md"
    write_bytes(files["report.md"], ("\n".join(md) + "\n").encode())
    return {"table": df, "files": files}


def report_dir(cfg: ReportConfig) -> Path:
    """``output_dir``, or ``<runs_root>/<experiment>/report``."""
    return Path(cfg.output_dir) if cfg.output_dir else Path(cfg.runs_root) / (cfg.experiment or "report") / "report"


def report_config(argv: list[str]) -> ReportConfig | None:
    """``[--config FILE] [--key value ...]`` → validated :class:`ReportConfig`
    (:func:`bertlib.params.load_configs`); None when ``--help`` was printed (every ReportConfig key)."""
    cli = command(
        "bertlib report",
        ReportConfig,
        help=__doc__.splitlines()[0] + " Runs come from --experiment's "
        "registry and/or --phase1/--phase2/--squadv1/--squadv2 (values are YAML).",
        config="params YAML (ReportConfig keys); the options below override its values",
    )
    args = parse(cli, argv)
    if args is None:
        return None
    (cfg,) = load_configs("report", args.config, args.values).values()
    return cfg


def main(argv: list[str]) -> int:
    """``bertlib report [--config FILE] [--experiment NAME] [--phase1 DIR|s3://...] ... [--output_dir D]``."""
    cfg = report_config(list(argv))
    if cfg is None:
        return 0
    runs = collect_runs(cfg)
    result = write_report(runs, report_dir(cfg), cfg.model_name)
    note = table_note(result["table"])
    print(markdown_table(result["table"]) + (note + "\n" if note else ""), end="")
    for name, path in result["files"].items():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
