"""bertlib.report: the seed's table format checked against hand-computed strings, run loading, figures."""

import json
import math

import pytest

from bertlib import report
from bertlib.core.errors import ConfigError


@pytest.mark.parametrize(
    "seconds, text",
    [
        (19980, "5 hrs 33 mins"),  # the reference phase 1: 5 × 3600 + 33 × 60
        (10380, "2 hrs 53 mins"),  # the reference phase 2
        (30360, "8 hrs 26 mins"),  # their sum
        (3600, "1 hrs 0 mins"),
        (20009.9, "5 hrs 33 mins"),  # 333.498 min
        (20010, "5 hrs 34 mins"),  # 333.5 min rounds up
        (3599.4, "59 mins 59 secs"),
        (3599.6, "1 hrs 0 mins"),  # 3600 s after rounding is an hour
        (125, "2 mins 5 secs"),
        (59.5, "1 mins 0 secs"),
        (42.2, "42 secs"),
        (None, "—"),
        (math.nan, "—"),
    ],
)
def test_format_duration(seconds, text):
    assert report.format_duration(seconds) == text


def test_format_duration_rejects_negative():
    with pytest.raises(ValueError):
        report.format_duration(-1)


def test_reference_row_is_the_published_one():
    (row,) = report.table_rows([report.REFERENCE])
    assert row == [
        "BERT-base (reference)",
        "5 hrs 33 mins",
        "2 hrs 53 mins",
        "8 hrs 26 mins",
        "87.68",
        "76.14",
        "—",
        "—",
        "—",
        "—",
    ]
    assert report.COLUMNS[:6] == ["Model", "Phase1", "Phase2", "Total Training Time", "SQuAD v1.1 F1", "SQuAD v2.0 F1"]


def test_row_total_is_the_sum_of_unrounded_phases():
    # 1000.4 + 1000.4 s = 2000.8 s → 33 min 21 s (rounding each phase first would give 33 min 20 s)
    (row,) = report.table_rows(
        [
            {
                "model": "m",
                "phase1_s": 1000.4,
                "phase2_s": 1000.4,
                "squadv1_f1": 88.004,
                "squadv2_f1": None,
                "squadv1_em": 80.5,
                "squadv2_em": None,
                "squadv1_f1_official": 88.5,
            }
        ]
    )
    assert row == [
        "m",
        "16 mins 40 secs",
        "16 mins 40 secs",
        "33 mins 21 secs",
        "88.00",
        "—",
        "80.50",
        "—",
        "88.50",
        "—",
    ]


def test_markdown_table():
    import pandas as pd

    df = pd.DataFrame([["a", "1"], ["b", "2"]], columns=["X", "Y"])
    assert report.markdown_table(df) == "| X | Y |\n| --- | --- |\n| a | 1 |\n| b | 2 |\n"


HELD_OUT = {
    15: {
        "val_loss": 9.0,
        "val_mlm_loss": 8.3,
        "val_mlm_acc": 0.125,
        "val_nsp_loss": 0.7,
        "val_nsp_acc": 0.5,
        "val_examples": 366,
    },
    30: {
        "val_loss": 8.0,
        "val_mlm_loss": 7.3,
        "val_mlm_acc": 0.2125,
        "val_nsp_loss": 0.7,
        "val_nsp_acc": 0.5,
        "val_examples": 366,
    },
}


def _run_dir(path, phase, wall, steps=30, summary_extra=None, config_extra=None, held_out=False):
    """A run folder; ``held_out``: evaluated at step 15 (a line of its own) and 30 (joined to the training line)."""
    path.mkdir(parents=True)
    rows = [
        {
            "step": s,
            "loss": 11 - s / 10,
            "mlm_loss": 10.3 - s / 10,
            "mlm_acc": s / 100,
            "nsp_loss": 0.69,
            "nsp_acc": 0.5,
            "learning_rate": 1e-3 * s / steps,
            "loss_scale": 32768.0,
            "grad_norm": 1.0,
            "seq_per_sec": 50.0,
            "elapsed_s": s * 2.0,
        }
        for s in range(10, steps + 1, 10)
    ]
    if held_out:
        rows = rows[:1] + [{"step": 15, **HELD_OUT[15]}] + rows[1:]
        rows[-1].update(HELD_OUT[30])
        summary_extra = {**(summary_extra or {}), "final": rows[-1]}
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(
        json.dumps({"phase": phase, "steps": steps, "wall_time_s": wall, **(summary_extra or {})})
    )
    (path / "config.yaml").write_text(
        f"model_size: tiny\nbackend: local\nphase: {phase}\n"
        + "".join(f"{k}: {v}\n" for k, v in (config_extra or {}).items())
    )
    return path


@pytest.fixture
def runs(tmp_path):
    return {
        "phase1": report.load_run(_run_dir(tmp_path / "phase1", "phase1", 125.0)),
        "phase2": report.load_run(_run_dir(tmp_path / "phase2", "phase2", 61.0, held_out=True)),
        "squadv1": report.load_run(
            _run_dir(
                tmp_path / "squadv1",
                "squadv1",
                20.0,
                summary_extra={
                    "exact_match": 12.5,
                    "f1": 20.25,
                    "reference_scoring": {"exact": 10.0, "f1": 17.75, "null_answers": 3},
                    "dataset_note": "SYNTHETIC",
                },
            )
        ),
        "squadv2": report.load_run(
            _run_dir(tmp_path / "squadv2", "squadv2", 20.0, summary_extra={"exact": 50.0, "f1": 51.0})
        ),
    }


def test_results_table_has_both_rows(runs):
    df = report.results_table(runs)
    assert list(df.columns) == report.COLUMNS
    assert df.values.tolist() == [
        ["BERT-base (reference)", "5 hrs 33 mins", "2 hrs 53 mins", "8 hrs 26 mins", "87.68", "76.14"]
        + ["—", "—", "—", "—"],
        [
            "BERT-tiny (this run, local)",
            "2 mins 5 secs",
            "1 mins 1 secs",
            "3 mins 6 secs",
            "17.75 †",  # as the reference scored it: beside its 87.68
            "51.00",
            "12.50 †",
            "50.00",
            "20.25 †",  # official
            "0.212",
        ],  # phase 2's final held-out MLM accuracy 0.2125
    ]
    # without phase 2 the column shows phase 1's; a phase that did not evaluate shows —
    assert report.results_table({"phase1": runs["phase2"]}).values[1][-1] == "0.212"
    assert report.results_table({"phase1": runs["phase1"]}).values[1][-1] == "—"
    assert report.table_note(df).startswith("† measured on the synthetic smoke set")
    assert report.table_note(df).endswith(report.SCORING_NOTE)
    # a v1.1 run from before the reference's scoring was recorded: —, never the official F1 in its place
    del runs["squadv1"].summary["reference_scoring"]
    assert report.results_table(runs).values[1][4] == "—"


def test_write_report_files(runs, tmp_path):
    out = report.write_report(runs, tmp_path / "report", model="my run")
    files = out["files"]
    for name in ("report.md", "results_table.png", "pretraining_loss.png", "phase1.png", "squadv2.png"):
        assert files[name].is_file()
    for name, path in files.items():
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["report.md"].read_text()
    assert (
        "| BERT-base (reference) | 5 hrs 33 mins | 2 hrs 53 mins | 8 hrs 26 mins | 87.68 | 76.14 | — | — | — | — |"
        in md
    )
    assert (
        "| my run | 2 mins 5 secs | 1 mins 1 secs | 3 mins 6 secs | 17.75 † | 51.00 | 12.50 † | 50.00 | 20.25 † | 0.212 |"
        in md
    )
    assert report.SCORING_NOTE in md
    assert not list((tmp_path / "report").glob(".*tmp"))


def test_plot_run_panels(runs):
    fig = report.plot_run(runs["phase1"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "Loss",
        "Accuracy",
        "Learning rate",
        "Loss scale",
        "Throughput (sequences/s)",
        "Gradient norm (before clipping)",
    ]
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["loss", "mlm_loss", "nsp_loss"]
    assert list(loss_ax.get_lines()[0].get_xdata()) == [10, 20, 30]


def test_plot_run_draws_held_out_points_beside_unbroken_training_lines(runs):
    df = runs["phase2"].metrics
    assert df["step"].tolist() == [10, 15, 20, 30]  # the evaluation-only step is a row of its own
    fig = report.plot_run(runs["phase2"])
    loss_ax, acc_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in loss_ax.get_lines() + acc_ax.get_lines()}
    assert [k for k in lines] == [
        "loss",
        "mlm_loss",
        "nsp_loss",
        "val_loss",
        "val_mlm_loss",
        "val_nsp_loss",
        "mlm_acc",
        "nsp_acc",
        "val_mlm_acc",
        "val_nsp_acc",
    ]
    assert list(lines["mlm_acc"].get_xdata()) == [10, 20, 30]  # no gap at step 15
    assert list(lines["val_mlm_acc"].get_xdata()) == [15, 30]
    assert list(lines["val_mlm_acc"].get_ydata()) == [0.125, 0.2125]
    assert lines["val_mlm_acc"].get_color() == lines["mlm_acc"].get_color() and lines["val_mlm_acc"].get_marker() == "o"


def test_plot_pretraining_offsets_phase2(runs):
    fig = report.plot_pretraining(runs["phase1"], runs["phase2"])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    # phase 2's steps continue after phase 1's 30 steps
    assert list(lines["phase2 loss"].get_xdata()) == [40, 50, 60]
    assert list(lines["phase2 val_loss"].get_xdata()) == [45, 60] and "phase1 val_loss" not in lines
    acc = {line.get_label(): line for line in fig.axes[1].get_lines()}
    assert list(acc["phase2 val_mlm_acc"].get_ydata()) == [0.125, 0.2125]


def test_read_metrics_half_written_last_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert report.read_metrics(p)["step"].tolist() == [1, 2]
    p.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ConfigError, match="metrics.jsonl:2: not a JSON line"):
        report.read_metrics(p)


def test_read_metrics_keeps_the_resumed_runs_record_of_a_step(tmp_path):
    # killed after logging step 3 with the checkpoint at step 2: the restart logs step 3 again
    p = tmp_path / "metrics.jsonl"
    p.write_text(
        "".join(
            json.dumps({"step": s, "loss": v}) + "\n" for s, v in [(1, 4.0), (2, 3.0), (3, 2.5), (3, 2.4), (4, 2.0)]
        )
    )
    df = report.read_metrics(p)
    assert df["step"].tolist() == [1, 2, 3, 4] and df["loss"].tolist() == [4.0, 3.0, 2.4, 2.0]


def test_load_run_rejects_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.load_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a bertlib run directory"):
        report.load_run(tmp_path)


def test_cli_main(runs, tmp_path, capsys):
    argv = [
        "--phase1",
        str(runs["phase1"].path),
        "--phase2",
        str(runs["phase2"].path),
        "--squadv1",
        str(runs["squadv1"].path),
        "--output_dir",
        str(tmp_path / "cli"),
    ]
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| BERT-base (reference) |" in printed and "| BERT-tiny (this run, local) |" in printed
    assert (tmp_path / "cli" / "report.md").is_file()
    with pytest.raises(ConfigError, match="unknown key 'phase3'"):
        report.main(["--phase3", "x"])
