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
# # 02 · Pretraining phase 1 (sequence length 128)
#
# **What.** Train BERT from scratch on the phase-1 TFRecords of `01_data_prep` with the two
# pretraining tasks: masked-LM (predict the 15 % masked WordPiece tokens, at most
# `max_predictions_per_seq` per sequence) and next-sentence prediction.
#
# **Why phase 1 is short-sequence.** Attention cost grows with the square of the sequence length; the
# reference spends 90 % of its steps at length 128 and only the last 10 % (phase 2) at 512 to learn
# the long position embeddings. Phase 1 uses LAMB (layer-wise trust ratio), which keeps training
# stable at the reference's global batch of 32768 sequences (128 per GPU × 64 GPUs × 4 accumulation
# steps), with a linear warmup and a polynomial (power 0.5) decay of the learning rate.
#
# **Where.** `backend: local` runs `horovodrun -np num_processes` on this machine (the embedded
# default: BERT-tiny, 150 steps of 64 sequences, a few minutes on 2 CPU cores).
# `backend: sagemaker` submits the same entry point to SageMaker
# (`params/sagemaker/phase1.yaml` = the reference schedule on 8 × ml.p3dn.24xlarge); with
# `dry_run: True` it only builds and shows the request — no AWS credentials needed.
#
# **What to expect.** The MLM loss starts near ln(30522) ≈ 10.3 (uniform over the vocabulary) and
# drops quickly as the model learns token frequencies; NSP loss starts near ln 2 ≈ 0.69. A tiny model
# on ~0.5M words of Wikipedia will not get far below an MLM loss of ~6 — the point locally is a
# working, measured pipeline; the reference run reaches MLM accuracy around 0.7.
#
# **Held-out evaluation.** Every `validation_frequency` steps and at the end, every process evaluates
# its share of the held-out shards (`01_data_prep` keeps whole documents out of training for them;
# `validation_dir` can name other ones) without dropout, and the counts of all processes are summed:
# `val_mlm_acc` is the fraction of all held-out masked tokens predicted right, `val_mlm_loss`,
# `val_nsp_loss` and `val_nsp_acc` likewise. Held-out MLM accuracy is how a pretraining run is judged
# (MLPerf's BERT target is 0.720); locally the validation split is a couple of articles, so expect a
# noisy, low number. Evaluation never changes what training sees or draws.

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
phase = "phase1"
model_size = "tiny"             # tiny | mini | small | base | large
data_dir = "auto"               # auto: the phase1 dataset recorded by 01_data_prep
run_dir = "auto"                # auto: runs/<experiment>/phase1
per_gpu_batch_size = 32
gradient_accumulation_steps = 1
global_batch_size_check = 64    # per_gpu_batch_size × processes × accumulation must equal this
max_seq_length = 128
max_predictions_per_seq = 20
optimizer = "lamb"
learning_rate = 0.005
end_learning_rate = 0.0003
learning_rate_decay_power = 0.5
warmup_steps = 15
total_steps = 150
hidden_dropout_prob = 0.1
attention_probs_dropout_prob = 0.1
precision = "fp32"              # fp32 | mixed_float16 | mixed_bfloat16
skip_xla = True
load_from = "scratch"
log_frequency = 10
checkpoint_frequency = 100
validation_frequency = 50       # held-out MLM/NSP evaluation every N steps and at the end (0: never)
validation_steps = None         # at most N batches per process per evaluation (None: every held-out record)
validation_dir = None           # held-out shards (a prepared dataset folder); None: data_dir's validation split
seed = 42
deterministic_ops = True        # bit-exact resume; params/sagemaker turn it off for the fastest GPU kernels

# %% [markdown]
# Validate every parameter against `bertlib.config.PretrainConfig` (plus `experiment`) and fill in the
# `auto` values from the run registry. An unknown key or a wrong type stops the notebook here.

# %%
from bertlib import notebook as nb

p = nb.parameters("phase1", globals())
nb.show_config(p)

# %% [markdown]
# ## Estimate
# FLOPs of the whole schedule (≈ 6 × parameters × tokens for the forward + backward passes, plus
# attention), and what that costs in time and money on the chosen hardware.

# %%
nb.show_estimate(p)

# %% [markdown]
# ## Launch
# Locally the log lines of rank 0 stream below as they come (`[bertlib] phase=phase1 step=...`); on
# SageMaker the request is shown and the job is recorded in the registry.

# %%
run = nb.launch(p)

# %% [markdown]
# ## Curves
# Loss (total = MLM + NSP), accuracies, the learning-rate schedule (warmup then decay), the loss scale
# (constant in fp32; dynamic under mixed precision), throughput and the gradient norm. The dashed lines
# with dots in the loss and accuracy panels are the held-out metrics (`val_*`) at the evaluation steps;
# a gap between a training curve and its held-out one is the model memorizing its training text.

# %%
nb.show_run(p)
