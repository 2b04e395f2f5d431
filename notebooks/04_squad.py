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
# # 04 · SQuAD v1.1 and v2.0 finetuning
#
# **What.** Put a span-prediction head (a start and an end logit per token) on the pretrained encoder
# from `03_phase2` and finetune it on question answering, once for SQuAD v1.1 (every question has an
# answer in its paragraph) and once for SQuAD v2.0 (a third of the questions have none: the model must
# learn to point at `[CLS]`). Each run then predicts the dev set, picks the best valid span per
# question (n-best over all document windows) and scores it with the official EM / F1 rules.
#
# **Why these settings.** The reference finetunes with AdamW at batch 48 (6 per GPU × 8 GPUs) for 2
# (v1.1: 3649 steps, lr 5e-5) and 4 (v2.0: 8144 steps, lr 1e-4) epochs, with 10 % warmup, no XLA, and
# reaches F1 87.68 (v1.1) and 76.14 (v2.0).
#
# **What to expect locally.** Without the SQuAD files (they are not shipped offline), the embedded
# default uses a **synthetic** smoke set built from the same Wikipedia slice
# (`bertlib.data.squad_smoke`: "… in what year?" cloze questions; v2.0 adds unanswerable ones). It
# exercises the whole path — features, finetuning, n-best decoding, the official metrics — but its
# scores are *not* SQuAD scores, and a tiny model trained for minutes scores low on it. The report
# marks them as such. Point `train_file` / `predict_file` at the official files (paths or URLs) for
# real numbers.

# %% tags=["parameters"]
experiment = "local"            # run registry: runs/<experiment>/registry.json
backend = "local"               # local | sagemaker
dry_run = False                 # sagemaker: build and show the requests only
num_processes = 2               # local: Horovod processes (horovodrun -np)
threads_per_process = 1         # local: TF threads per process (0: TF default)
instance_type = "ml.p3dn.24xlarge"
instance_count = 1
checkpoint_s3_uri = None         # sagemaker: where /opt/ml/checkpoints syncs (resume after restarts)
output_s3_uri = None             # sagemaker: job outputs (model.tar.gz, output.tar.gz)
use_spot = False                 # sagemaker: managed spot training (a restarted job resumes from its checkpoints)
max_run_seconds = 432000         # sagemaker: stop the job after this many seconds (5 days)
model_size = "tiny"             # must match the pretrained checkpoint
load_from = "checkpoint"
checkpoint_path = "auto"        # auto: phase 2's export, from the registry
run_dir = "auto"                # auto: runs/<experiment>/squadv1 and .../squadv2
per_gpu_batch_size = 8
gradient_accumulation_steps = 1
max_seq_length = 128
doc_stride = 64
max_query_length = 32
optimizer = "adamw"             # the reference's: Keras/TFA Adam (bias-corrected, ε 1e-7); google_adamw = Google's
weight_decay = 0.0              # the reference's (Google's recipe: 0.01)
hidden_dropout_prob = 0.0       # the reference's (Google's recipe: 0.1)
attention_probs_dropout_prob = 0.0
end_learning_rate = 0.0
learning_rate_decay_power = 1.0
precision = "fp32"
skip_xla = True
log_frequency = 5
checkpoint_frequency = 1000
predict_batch_size = 32
seed = 42
deterministic_ops = True        # bit-exact resume; params/sagemaker turn it off for the fastest GPU kernels
squad_versions = ["squadv1", "squadv2"]
squadv1 = {                     # what differs per version (auto: the smoke set of 01_data_prep)
    "train_file": "auto", "predict_file": "auto",
    "total_steps": 60, "learning_rate": 1e-3, "warmup_steps": 6,
}
squadv2 = {
    "train_file": "auto", "predict_file": "auto",
    "total_steps": 60, "learning_rate": 1e-3, "warmup_steps": 6,
}

# %% [markdown]
# Validate the parameters (`bertlib.config.SquadConfig`, once per version) and resolve
# `checkpoint_path: auto` from the registry. An unknown key or a wrong type stops the notebook here.

# %%
from bertlib import notebook as nb

p = nb.parameters("squad", globals())
nb.show_config(p)

# %% [markdown]
# ## Estimate

# %%
nb.show_estimate(p)

# %% [markdown]
# ## Finetune, predict, evaluate
# One run per version; each streams its progress, then prints the evaluation line.

# %%
runs = nb.launch(p)

# %% [markdown]
# ## Exact match and F1

# %%
nb.squad_scores(p)

# %% [markdown]
# ## Training curves

# %%
nb.show_run(p)
