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
params_file = "params/local/phase1.yaml"  # every setting of the run (local: BERT-tiny, 150 steps, 2 processes)
# What a user changes most; None keeps params_file's value. Papermill: -p params_file FILE, -p KEY VALUE.
experiment = None  # run registry: runs/<experiment>/registry.json
backend = None  # local | sagemaker
dry_run = None  # sagemaker: build and show the request only
wait = None  # sagemaker: False = return once the job is created (run this again, or `bertlib status`, to attach)
new_job = None  # sagemaker: True = start a new job even if the registry's one of this config completed
model_size = None  # tiny | mini | small | base | large
total_steps = None
learning_rate = None
instance_type = None  # sagemaker
instance_count = None  # sagemaker
canary = None  # run the canary first (default "auto": on SageMaker, not locally; True / False force)
canary_instance_count = None  # the canary's instances (default 0: instance_count; fewer of the same type cost less)

# %% [markdown]
# Lay the values set above over `params_file`, validate them against `bertlib.core.config.PretrainConfig`
# (plus `experiment`) and fill in the `auto` values from the run registry. An unknown key or a wrong type stops the notebook here.

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
# ## Training image
# A SageMaker job runs in the training image of `container/Dockerfile` (the AWS TensorFlow 2.21 training
# image + Horovod + bertlib). With `image_uri` (in the params file, or `-p image_uri URI`) or
# `$BERTLIB_IMAGE_URI` set, that image is used and nothing
# is built. Otherwise — e.g. in a SageMaker Studio kernel, which has no Docker — this cell builds and pushes
# it with AWS CodeBuild (`bertlib launch image`, README: "Build the image from SageMaker Studio") and prints
# its URI: the first build takes roughly half an hour to an hour; re-running with unchanged sources finds the
# image in ECR and builds nothing. A dry run only shows the requests; local runs need no image.

# %%
nb.training_image(p)

# %% [markdown]
# ## Canary
# Before hours on many GPUs, a few minutes on the same instance type (`canary_instance_count` of them)
# with this config (`bertlib launch canary`): every rank up, allreduce bus bandwidth per message size and
# its transport (NCCL over EFA, `NET/OFI`, not sockets), a few timed steps and the projected time and cost
# of the whole run, a checkpoint written and read back, the image's versions. It ends with
# `canary: PASS — ...` or `canary: FAIL — <what> — <what to do>`, and a FAIL stops the notebook here.

# %%
nb.canary(p)

# %% [markdown]
# ## Launch
# Locally the log lines of rank 0 stream below as they come (`[bertlib] phase=phase1 step=...`); on
# SageMaker the job is recorded in the registry the moment it is created, its request is shown, and the
# cell follows it: its log and one progress line (step / total, loss, throughput, ETA, cost so far). Run
# again — after a dead kernel, or with `wait = False` — the cell attaches to that job while it runs and
# reuses it once it completed (`new_job = True` starts another); `bertlib status phase1` does the same
# from a terminal.

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
