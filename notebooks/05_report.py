# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Report: this run beside the reference
#
# **What.** Collect the four runs of the experiment — phase 1, phase 2, SQuAD v1.1, SQuAD v2.0 — from
# the run registry (or from explicit run folders / `s3://` prefixes of SageMaker jobs), and build:
#
# * the pretraining loss and MLM accuracy of both phases on one figure, training and held-out,
# * the results table in the seed's format, with the published BERT-base row (8 × p3dn.24xlarge,
#   TF 2.1: phase 1 5 hrs 33 mins, phase 2 2 hrs 53 mins, SQuAD v1.1 F1 87.68, v2.0 F1 76.14) beside
#   this run's row, plus the SQuAD EM and the held-out MLM accuracy at the end of pretraining (the last
#   phase's `val_mlm_acc`: the fraction of masked tokens predicted right on held-out documents; MLPerf's
#   BERT target is 0.720; the reference publishes none),
#
# written to `report.md`, `results_table.png`, `pretraining_loss.png` and one figure per run.
#
# **What to expect.** Locally, a tiny model trained for minutes on half a million words is nowhere
# near BERT-base: its SQuAD scores are those of a barely-trained model. The row is there to show the
# measurement works end to end; the SageMaker parameters reproduce the reference schedule.

# %% tags=["parameters"]
experiment = "local"  # runs come from runs/<experiment>/registry.json ...
runs_root = "runs"
phase1 = None  # ... unless given here: a run folder or an s3:// output prefix
phase2 = None
squadv1 = None
squadv2 = None
output_dir = None  # default: runs/<experiment>/report
model_name = None  # label of this run's row; default "BERT-<model_size> (this run, ...)"

# %%
from bertlib import notebook as nb

p = nb.report_parameters(globals())

# %% [markdown]
# ## Build the report
# `report.md`, `results_table.png`, `pretraining_loss.png` and one figure per run, in `output_dir`.

# %%
report = nb.write_report(p)

# %% [markdown]
# ## Results table
# Times are wall-clock times of the training jobs (`summary.json`: start of training to the written
# export, held-out evaluations included); Total Training Time = phase 1 + phase 2, as in the reference.

# %%
nb.show_table(report)

# %% [markdown]
# ## Pretraining, both phases
# Lines: training metrics; dots: held-out metrics at the evaluation steps.

# %%
nb.show_figures(report, "pretraining_loss.png")

# %% [markdown]
# ## Every run's curves

# %%
nb.show_figures(report, "phase1.png", "phase2.png", "squadv1.png", "squadv2.png")
