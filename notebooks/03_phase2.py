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
# # 03 · Pretraining phase 2 (sequence length 512)
#
# **What.** Continue pretraining the phase-1 model on the phase-2 TFRecords: sequences of up to 512
# tokens with up to 80 masked-LM predictions each.
#
# **Why.** Phase 1 never showed the model positions 128–511, so their position embeddings are still
# at their initial values; a short second phase at full length trains them (and long-range attention)
# at a fraction of the cost of training at 512 throughout. The model starts from phase 1's *export*
# (weights only): the optimizer state is fresh, with its own warmup (625 steps in the reference) and
# decay from 0.004 to 0.0003 at a global batch of 8192 (32 per GPU × 64 GPUs × 4 accumulation).
# `checkpoint_path: auto` takes the export that `02_phase1` recorded in the run registry.
#
# **What to expect.** The loss picks up roughly where phase 1 ended (a small jump: longer sequences,
# more masked positions per sequence, a re-warming learning rate), then keeps decreasing. Throughput in
# sequences/s drops by more than 4× against phase 1 (4× the tokens, attention grows quadratically).
# The held-out metrics (`val_*`, every `validation_frequency` steps and at the end, on the validation
# split of the phase-2 data, summed over all processes) end the pretraining: the report's results
# table shows this phase's final held-out MLM accuracy.

# %% tags=["parameters"]
params_file = "params/local/phase2.yaml"  # every setting of the run (local: BERT-tiny, 40 steps at length 512)
# What a user changes most; None keeps params_file's value. Papermill: -p params_file FILE, -p KEY VALUE.
experiment = None  # run registry: runs/<experiment>/registry.json
backend = None  # local | sagemaker
dry_run = None  # sagemaker: build and show the request only
wait = None  # sagemaker: False = return once the job is created (run this again, or `bertlib status`, to attach)
new_job = None  # sagemaker: True = start a new job even if the registry's one of this config completed
model_size = None  # must match phase 1
total_steps = None
learning_rate = None
instance_type = None  # sagemaker
instance_count = None  # sagemaker

# %% [markdown]
# Lay the values set above over `params_file`, validate them (`bertlib.core.config.PretrainConfig`) and
# resolve `checkpoint_path: auto` and `data_dir: auto` from the registry.
# An unknown key or a wrong type stops the notebook here.

# %%
from bertlib import notebook as nb

p = nb.parameters("phase2", globals())
nb.show_config(p)

# %% [markdown]
# ## Estimate

# %%
nb.show_estimate(p)

# %% [markdown]
# ## Launch

# %%
run = nb.launch(p)

# %% [markdown]
# ## Curves of this phase
# Dashed lines with dots: the held-out loss and accuracies at the evaluation steps.

# %%
nb.show_run(p)

# %% [markdown]
# ## Both phases on one axis
# Phase 2's steps continue phase 1's (the grey line marks the switch); dots are held-out values.

# %%
nb.show_pretraining(p)
