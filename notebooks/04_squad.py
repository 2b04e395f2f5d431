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
# (`bertlib.squad.smoke`: "… in what year?" cloze questions; v2.0 adds unanswerable ones). It
# exercises the whole path — features, finetuning, n-best decoding, the official metrics — but its
# scores are *not* SQuAD scores, and a tiny model trained for minutes scores low on it. The report
# marks them as such. Point `train_file` / `predict_file` at the official files (paths or URLs) for
# real numbers.

# %% tags=["parameters"]
params_file = "params/local/squad.yaml"  # every setting of the runs (local: the synthetic smoke sets, 60 steps each)
# What a user changes most; None keeps params_file's value. Papermill: -p params_file FILE, -p KEY VALUE.
# Steps, learning rate, warmup and the SQuAD files are set per version (the file's squadv1 / squadv2 blocks).
experiment = None  # run registry: runs/<experiment>/registry.json
backend = None  # local | sagemaker
dry_run = None  # sagemaker: build and show the requests only
wait = None  # sagemaker: False = return once the jobs is created (run this again, or `bertlib status`, to attach)
new_job = None  # sagemaker: True = start a new jobs even if the registry's one of this config completed
model_size = None  # must match the pretrained checkpoint
squad_versions = None  # ["squadv1", "squadv2"], or one of them
instance_type = None  # sagemaker
instance_count = None  # sagemaker
# Try it: the finetuned models answer try_questions dev questions, and your own question about your context
try_questions = None  # dev questions shown per version (default 3)
question = None  # e.g. "When did the war end?"
context = None  # e.g. "The war ended in 1945, six years after it began."
deploy = None  # True: a SageMaker endpoint for the first version's model (billed per hour until deleted)
delete_endpoint = None  # True: tear that endpoint down

# %% [markdown]
# Lay the values set above over `params_file`, validate them (`bertlib.core.config.SquadConfig`, once per
# version) and resolve `checkpoint_path: auto` from the registry.
# An unknown key or a wrong type stops the notebook here.

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
#
# v1.1 is scored two ways on the same logits: the official way (the best span of every question), and
# the way the reference's `run_squad_evaluation.py` scored it (v2-style post-processing: a question is
# answered with the empty string when its null score beats the best span) — the number its 87.68 is.

# %%
nb.squad_scores(p)

# %% [markdown]
# ## Training curves

# %%
nb.show_run(p)

# %% [markdown]
# ## Try it
#
# Each finetuned model answers the first dev questions of the set its run predicted (the answers are
# the ones in its `predictions.json`; `bertlib.squad.answer` runs the same features and span decoding):
# the context with the predicted span highlighted, the answer with its n-best probability, and the gold
# answers. Ask your own with `-p question "..." -p context "..."`. A SageMaker run's model comes from the
# job's `model.tar.gz`. On the local smoke sets a tiny model trained for minutes answers often wrongly.

# %%
answers = nb.try_it(p)

# %% [markdown]
# ## Serve it: a SageMaker endpoint
#
# With `-p deploy True` the first version's finetuned model gets a SageMaker real-time endpoint: AWS's
# Hugging Face inference image with `HF_TASK=question-answering` (no inference code of ours) on the
# Hugging Face export in the job's `model.tar.gz` (`hf/`, repackaged at the root of a new archive). The
# cell prints the requests, then one question's InvokeEndpoint request and response (yours, or a sample);
# while the endpoint is up, "Try it" above asks it. `-p delete_endpoint True` tears it down (endpoint, its
# config, the model). A dry run prints the requests only. The same from a shell: `bertlib deploy`.

# %%
served = nb.endpoint(p)
