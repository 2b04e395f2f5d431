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
experiment = "local"            # run registry: runs/<experiment>/registry.json
backend = "local"               # local | sagemaker
dry_run = False                 # sagemaker: build and show the request only
num_processes = 2               # local: Horovod processes (horovodrun -np)
threads_per_process = 1         # local: TF threads per process (0: TF default)
instance_type = "ml.p3dn.24xlarge"
instance_count = 1
checkpoint_s3_uri = None         # sagemaker: where /opt/ml/checkpoints syncs (resume after restarts)
output_s3_uri = None             # sagemaker: job outputs (model.tar.gz, output.tar.gz)
use_spot = False                 # sagemaker: managed spot training (a restarted job resumes from its checkpoints)
max_run_seconds = 432000         # sagemaker: stop the job after this many seconds (5 days)
phase = "phase2"
model_size = "tiny"             # must match phase 1
data_dir = "auto"               # auto: the phase2 dataset recorded by 01_data_prep
run_dir = "auto"                # auto: runs/<experiment>/phase2
load_from = "checkpoint"
checkpoint_path = "auto"        # auto: phase 1's export, from the registry
load_optimizer_state = False
per_gpu_batch_size = 8
gradient_accumulation_steps = 1
global_batch_size_check = 16    # per_gpu_batch_size × processes × accumulation must equal this
max_seq_length = 512
max_predictions_per_seq = 80
optimizer = "lamb"
learning_rate = 0.004
end_learning_rate = 0.0003
learning_rate_decay_power = 0.5
warmup_steps = 4
total_steps = 40
hidden_dropout_prob = 0.1
attention_probs_dropout_prob = 0.1
precision = "fp32"              # fp32 | mixed_float16 | mixed_bfloat16
skip_xla = True
log_frequency = 5
checkpoint_frequency = 100
validation_frequency = 20       # held-out MLM/NSP evaluation every N steps and at the end (0: never)
validation_steps = None         # at most N batches per process per evaluation (None: every held-out record)
validation_dir = None           # held-out shards (a prepared dataset folder); None: data_dir's validation split
seed = 42
deterministic_ops = True        # bit-exact resume; params/sagemaker turn it off for the fastest GPU kernels

# %% [markdown]
# Validate the parameters (`bertlib.config.PretrainConfig`) and resolve `checkpoint_path: auto` and
# `data_dir: auto` from the registry. An unknown key or a wrong type stops the notebook here.

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
