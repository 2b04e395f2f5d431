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
# # 01 · Data preparation: Wikipedia → WordPiece → pretraining TFRecords
#
# **What.** Read a Wikipedia XML dump, strip the wiki markup (templates, tables, references, file
# links), split articles into sentences, tokenize them with the bert-base-uncased WordPiece vocabulary
# and write the pretraining examples of both phases as TFRecord shards:
#
# | dataset | max_seq_length | max_predictions_per_seq | used by |
# | --- | --- | --- | --- |
# | `phase1` | 128 | 20 | 02_phase1 |
# | `phase2` | 512 | 80 | 03_phase2 |
#
# Each example is Google's format: `[CLS] A [SEP] B [SEP]` where B follows A half of the time and is a
# random sentence otherwise (next-sentence label), with 15 % of the tokens selected for masked-LM
# (80 % → `[MASK]`, 10 % → random token, 10 % unchanged). `dupe_factor` repeats the corpus with
# different masks.
#
# **Packing.** An unpacked row is one pair padded to `max_seq_length`, and every padded position costs
# the same matmuls as a real token (on this slice 9 % of a phase-1 row and 27 % of a phase-2 row; on
# full Wikipedia about half of a 512-token row). With `pack_sequences`, up to `max_pairs_per_row`
# pairs share a row (shortest-pack-first histogram packing, Krell et al. 2021): attention stays inside
# each pair, positions restart at 0 for each pair, every pair keeps its own masked-LM predictions and
# next-sentence label, so a packed batch trains exactly as the same pairs unpacked — on fewer rows.
# `dynamic_masking` stores the pairs unmasked and lets the input pipeline draw fresh masks every
# epoch (RoBERTa-style): `dupe_factor: 1` then gives new masks without writing the corpus 5 times.
#
# **Why a fixed vocabulary.** Using the real bert-base-uncased `vocab.txt` keeps the data compatible
# with Google's checkpoints and with SQuAD finetuning; its checksum goes into every dataset's
# `manifest.json` and training refuses data built with another vocabulary.
#
# **What to expect.** The embedded default reads the real Wikipedia slice shipped in the gensim 4.4.0
# wheel (98 articles once redirects and disambiguation pages are dropped, ~0.45M words after markup removal,
# ~0.6M WordPiece tokens) and takes about a
# minute on 2 cores. Re-running with the same settings reuses the prepared datasets.

# %% tags=["parameters"]
params_file = "params/local/data.yaml"  # every setting of the run (the local demo: the Wikipedia slice)
# What a user changes most; None keeps params_file's value. Papermill: -p params_file FILE, -p KEY VALUE.
experiment = None  # run registry: runs/<experiment>/registry.json
backend = None  # local | sagemaker (a prepare-data job on instance_count CPU instances)
dry_run = None  # sagemaker: build and show the request only
wait = None  # sagemaker: False = return once the job is created (run this again, or `bertlib status`, to attach)
new_job = None  # sagemaker: True = start a new job even if the registry's one of this config completed
sources = None  # dump/text paths, http(s)/s3 URLs, or asset:NAME
phases = None  # [{"name": ..., "max_seq_length": ..., "max_predictions_per_seq": ...}, ...]
num_shards = None  # training shards per phase (>= the training runs' processes)
pack_sequences = None  # up to max_pairs_per_row pairs per row instead of one padded pair
instance_type = None  # sagemaker
instance_count = None  # sagemaker

# %% [markdown]
# Lay the values set above over `params_file`, validate them against `bertlib.core.config.DataConfig` and
# resolve `asset:` names to the cached, checksummed files. An unknown key or a wrong type stops the notebook here.

# %%
from bertlib import notebook as nb

p = nb.parameters("data", globals())
nb.show_config(p)

# %% [markdown]
# ## Prepare
# Streams the dump, cleans and tokenizes documents in `num_workers` processes, writes the shards of
# every phase through temp names, then each `manifest.json` (counts, settings, vocabulary checksum,
# per-shard sha256). The dataset folders are recorded in the run registry for the training notebooks.

# %%
datasets = nb.prepare_data(p)

# %% [markdown]
# ## What came out
# Documents, sentences, tokens, pairs, rows and masked tokens per dataset, the packing efficiency
# (real tokens / row positions) and the length distribution of the phase-1 pairs.

# %%
nb.show_datasets(p)

# %% [markdown]
# ## Are the shards alike?
# Each training rank reads its own shards, so every shard should be the same mix of examples. Google's
# script shuffles all instances and writes them round-robin; here every document group's shuffled
# instances are dealt round-robin to all shards, so one long article (or one that drew a short target
# length) is spread over all of them. Per shard: examples, the fraction with a random B (next-sentence
# label 1) and the fraction of positions that are padding, as recorded in `manifest.json`. Within a
# split they should differ by sampling noise only (about ±1/(2√examples) for the random-next fraction).

# %%
nb.show_shards(p)
