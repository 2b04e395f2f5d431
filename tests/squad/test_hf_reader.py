"""Proof by an independent reader: models trained here by bertlib's own jobs, exported by the jobs
into ``hf/`` beside the bertlib export, read back by libraries that are not bertlib.

* keras-hub 0.32 (``BertBackbone.from_preset(dir)`` through its transformers converter, TensorFlow
  backend, no PyTorch) gives the sequence and pooled outputs; keras-hub has no BERT pretraining or
  SQuAD head, so the MLM, NSP and QA logits are computed here in numpy from the exported
  ``model.safetensors`` on top of keras-hub's outputs, the way transformers' ``BertForPreTraining``
  / ``BertForQuestionAnswering`` compute them (``cls.predictions.transform`` → GELU → LayerNorm →
  tied decoder = word embeddings + ``cls.predictions.bias``; ``cls.seq_relationship`` on the pooled
  output; ``qa_outputs`` on every position);
* transformers' ``AutoTokenizer`` turns real Wikipedia text from the demo slice into the ids, and
  ``AutoConfig`` reads ``config.json`` (``hidden_act``, ``layer_norm_eps``).

keras-hub's ``BertBackbone`` hard-codes the tanh approximation of GELU; the export's ``hidden_act``
is ``gelu`` (the exact erf form, which bertlib and transformers compute), so the reader is set to the
function config.json names. Everything must agree with bertlib to 1e-5, for an unpacked and a
packed-trained model, with an uncased and a cased vocabulary.

Trains small models (bertlib's pretrain / squad entry points, in process): marked slow.
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bertlib.core.config import build_config
from bertlib.data.prepare import prepare
from bertlib.train.hf_export import HF_FILES, HF_SUBDIR

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the readers must read the dir, never the Hub
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TOLERANCE = 1e-5
S = 64  # phase 1 rows of the prepared datasets
#: the largest |bertlib - reader| of each compared output, over all tests of this module (printed at the end)
DIFFS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def largest_differences():
    """Prints the largest difference of each output over the module's tests (run with ``-s``)."""
    yield DIFFS
    print("\nlargest |bertlib - independent reader|:", json.dumps(DIFFS, indent=1))


def keras_hub():
    """keras-hub from ``.venv/peers`` (``requirements-peers.txt``, installed ``--no-deps`` by ``make
    setup``: its requirements would pull the full ``tensorflow`` and ``tensorflow-text``)."""
    peers = Path(sys.prefix) / "peers"
    if (peers / "keras_hub").is_dir() and str(peers) not in sys.path:
        sys.path.append(str(peers))
    import keras_hub as kh

    assert kh.__version__ == "0.32.0", kh.__version__
    return kh


def pretrain(config: dict, path: Path, env: dict | None = None) -> None:
    from bertlib.train.pretrain import main

    path.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        assert main(["--config", str(path)]) == 0


def sagemaker_env(root: Path) -> dict:
    """What a SageMaker training container sets: the job writes its model to SM_MODEL_DIR (→ model.tar.gz)."""
    return {
        "SM_MODEL_DIR": str(root / "opt_ml_model"),
        "SM_OUTPUT_DATA_DIR": str(root / "opt_ml_output"),
        "BERTLIB_CHECKPOINT_DIR": str(root / "opt_ml_checkpoints"),
    }


def tiny(data: Path, run: Path, **overrides) -> dict:
    return {
        "model_size": "tiny",
        "data_dir": str(data),
        "run_dir": str(run),
        "max_seq_length": S,
        "max_predictions_per_seq": 10,
        "per_gpu_batch_size": 8,
        "learning_rate": 5e-3,
        "warmup_steps": 1,
        "total_steps": 6,
        "log_frequency": 3,
        "checkpoint_frequency": 1000,
        "validation_frequency": 0,
        "skip_xla": True,
        "seed": 5,
        **overrides,
    }


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, prepared_dataset, slice_data_settings, smoke_dir):
    """Models trained by bertlib's jobs; ``{name: the model dir the job wrote}``.

    * ``phase1``: uncased bert-base vocab, unpacked rows, local run (HF export off by default);
    * ``phase2``: from phase 1, as a SageMaker job (``SM_MODEL_DIR``);
    * ``packed_cased``: a cased vocab trained on the slice, packed rows (3 pairs per row), ``hf_export: true``;
    * ``squad``: SQuAD v1.1 finetuning of phase 2's export, as a SageMaker job.
    """
    root = tmp_path_factory.mktemp("hf_reader")
    out = {}
    pretrain(tiny(prepared_dataset / "phase1", root / "phase1"), root / "phase1.yaml")
    out["phase1"] = root / "phase1" / "export"

    env = sagemaker_env(root / "phase2-job")
    pretrain(
        tiny(
            prepared_dataset / "phase1",
            root / "unused",
            phase="phase2",
            load_from="checkpoint",
            checkpoint_path=str(out["phase1"]),
            total_steps=4,
        ),
        root / "phase2.yaml",
        env,
    )
    out["phase2"] = Path(env["SM_MODEL_DIR"])

    cased = root / "cased-data"
    settings = slice_data_settings(
        output_dir=str(cased),
        vocab_file=None,
        vocab_size=4000,
        do_lower_case=False,
        pack_sequences=True,
        max_pairs_per_row=3,
        phases=[{"name": "phase1", "max_seq_length": S, "max_predictions_per_seq": 12}],
    )
    prepare(build_config("prepare-data", settings), progress=False)
    assert json.loads((cased / "phase1" / "manifest.json").read_text())["vocab"]["lowercase"] is False
    pretrain(tiny(cased / "phase1", root / "packed", max_predictions_per_seq=12, hf_export=True), root / "packed.yaml")
    out["packed_cased"] = root / "packed" / "export"

    from bertlib.squad.finetune import main as squad_main

    squad = {
        "model_size": "tiny",
        "load_from": "checkpoint",
        "checkpoint_path": str(out["phase2"]),
        "per_gpu_batch_size": 8,
        "max_seq_length": 128,
        "doc_stride": 64,
        "max_query_length": 32,
        "learning_rate": 1e-3,
        "total_steps": 4,
        "log_frequency": 2,
        "skip_xla": True,
        "squad_version": "squadv1",
        "train_file": str(smoke_dir / "smoke-v1.1-train.json"),
        "predict_file": str(smoke_dir / "smoke-v1.1-dev.json"),
        "run_dir": str(root / "unused-squad"),
        "cache_dir": str(root / "squad-cache"),
        "seed": 7,
    }
    (root / "squad.yaml").write_text(yaml.safe_dump(squad))
    env = sagemaker_env(root / "squad-job")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert squad_main(["--config", str(root / "squad.yaml")]) == 0
    out["squad"] = Path(env["SM_MODEL_DIR"])
    return out


def test_jobs_write_the_hf_export_next_to_the_bertlib_export(jobs):
    bertlib_files = {"bert_config.json", "vocab.txt", "vocab_info.json", "bert_model.ckpt.index"}
    assert not (jobs["phase1"] / HF_SUBDIR).exists()  # phase 1: off unless hf_export: true
    for name, arch in (
        ("phase2", "BertForPreTraining"),
        ("packed_cased", "BertForPreTraining"),
        ("squad", "BertForQuestionAnswering"),
    ):
        model_dir = jobs[name]
        assert bertlib_files <= {p.name for p in model_dir.iterdir()}, name
        assert sorted(p.name for p in (model_dir / HF_SUBDIR).iterdir()) == sorted(HF_FILES), name
        assert json.loads((model_dir / HF_SUBDIR / "config.json").read_text())["architectures"] == [arch]
        assert not [p for p in (model_dir / HF_SUBDIR).iterdir() if p.name.startswith(".")]  # no temp files


def real_pairs(wiki_slice) -> list[tuple[str, str]]:
    """Consecutive sentence pairs of Wikipedia articles of the demo slice (past the first 30, which
    the models were trained on), of at most 200 characters together."""
    from bertlib.data.corpus import document_sentences, iter_wikipedia

    pairs = []
    for i, doc in enumerate(iter_wikipedia(wiki_slice)):
        if i < 40:
            continue
        sentences = document_sentences(doc)
        pairs += [(a, b) for a, b in zip(sentences, sentences[1:]) if 20 < len(a) + len(b) < 200]
        if len(pairs) >= 200:
            break
    return pairs


def encode(hf_dir: Path, export: Path, pairs, max_length: int, n: int = 24) -> dict:
    """Ids from transformers' AutoTokenizer on the HF dir, checked against bertlib's tokenizer on the
    bertlib export (``[CLS] A [SEP] B [SEP]``, padding 0), for the first ``n`` of ``pairs`` that fit
    ``max_length`` tokens."""
    from transformers import AutoTokenizer

    from bertlib.data.tokenization import load_wordpiece

    info = json.loads((export / "vocab_info.json").read_text())
    ours = load_wordpiece(export / "vocab.txt", info["lowercase"], info["strip_accents"])
    pairs = [(a, b) for a, b in pairs if len(ours.encode(a).ids) + len(ours.encode(b).ids) + 3 <= max_length][:n]
    assert len(pairs) == n
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    enc = tok(
        [a for a, _ in pairs], [b for _, b in pairs], padding="max_length", max_length=max_length, return_tensors="np"
    )
    vocab = (export / "vocab.txt").read_text().splitlines()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    for row, (a, b) in enumerate(pairs):
        ia, ib = ours.encode(a).ids, ours.encode(b).ids
        expected = [cls, *ia, sep, *ib, sep]
        assert len(expected) <= max_length
        np.testing.assert_array_equal(enc["input_ids"][row], expected + [0] * (max_length - len(expected)))
        np.testing.assert_array_equal(
            enc["token_type_ids"][row][: len(expected)], [0] * (len(ia) + 2) + [1] * (len(ib) + 1)
        )
    unk = vocab.index("[UNK]")
    assert (enc["input_ids"] == unk).mean() < 0.05  # the casing is right: real words, not [UNK]
    return {
        "input_ids": enc["input_ids"].astype(np.int32),
        "input_mask": enc["attention_mask"].astype(np.int32),
        "segment_ids": enc["token_type_ids"].astype(np.int32),
    }


def keras_hub_outputs(hf_dir: Path, features: dict) -> dict:
    """Sequence and pooled outputs of keras-hub's BertBackbone loaded from the HF dir, with the
    intermediate activation config.json names (keras-hub's own is the tanh GELU)."""
    import keras
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(hf_dir))
    assert config.hidden_act == "gelu" and config.layer_norm_eps == 1e-12
    backbone = keras_hub().models.BertBackbone.from_preset(str(hf_dir))
    inputs = {
        "token_ids": features["input_ids"],
        "segment_ids": features["segment_ids"],
        "padding_mask": features["input_mask"],
    }
    stock = {k: np.asarray(v) for k, v in backbone(inputs, training=False).items()}
    for layer in backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = lambda x: keras.activations.gelu(x, approximate=False)
    out = {k: np.asarray(v) for k, v in backbone(inputs, training=False).items()}
    real = features["input_mask"].astype(bool)
    DIFFS["keras-hub stock (tanh GELU) sequence_output"] = max(
        DIFFS.get("keras-hub stock (tanh GELU) sequence_output", 0.0),
        float(np.abs(stock["sequence_output"] - out["sequence_output"])[real].max()),
    )
    return out


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def check(name: str, ours, theirs) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    diff = float(np.abs(ours - theirs).max())
    DIFFS[name] = max(DIFFS.get(name, 0.0), diff)
    assert diff <= TOLERANCE, f"{name}: max |bertlib - reader| = {diff:.3g}"


@pytest.mark.parametrize("name", ["phase2", "packed_cased"], ids=["uncased-unpacked", "cased-packed"])
def test_pretrained_model_in_keras_hub_and_numpy_heads(jobs, name, wiki_slice):
    from safetensors.numpy import load_file

    from bertlib.model import BertConfig, BertPretrainer
    from bertlib.model.checkpoints import load_weights

    export = jobs[name]
    hf = export / HF_SUBDIR
    features = encode(hf, export, real_pairs(wiki_slice), S)
    real = features["input_mask"].astype(bool)
    # every real token but [CLS] as a "masked" position: MLM logits at 20 positions per row
    positions = np.stack([np.resize(np.flatnonzero(m)[1:], 20) for m in real]).astype(np.int32)

    model = BertPretrainer(BertConfig.from_json_file(export / "bert_config.json"))
    load_weights(model, export, allow_missing=())
    ours_enc = model.encoder(features, training=False)
    ours = model({**features, "masked_lm_positions": positions}, training=False)

    theirs = keras_hub_outputs(hf, features)
    check("sequence_output", np.asarray(ours_enc["sequence_output"])[real], theirs["sequence_output"][real])
    check("pooled_output", ours_enc["pooled_output"], theirs["pooled_output"])

    st = {k: v.astype(np.float64) for k, v in load_file(str(hf / "model.safetensors")).items()}
    eps = json.loads((hf / "config.json").read_text())["layer_norm_eps"]
    x = np.take_along_axis(theirs["sequence_output"].astype(np.float64), positions[..., None], axis=1)
    x = np_gelu(x @ st["cls.predictions.transform.dense.weight"].T + st["cls.predictions.transform.dense.bias"])
    x = np_layer_norm(
        x, st["cls.predictions.transform.LayerNorm.weight"], st["cls.predictions.transform.LayerNorm.bias"], eps
    )
    mlm = x @ st["bert.embeddings.word_embeddings.weight"].T + st["cls.predictions.bias"]  # the tied decoder
    nsp = (
        theirs["pooled_output"].astype(np.float64) @ st["cls.seq_relationship.weight"].T
        + st["cls.seq_relationship.bias"]
    )
    check("mlm_logits", ours["mlm_logits"], mlm)
    check("nsp_logits", ours["nsp_logits"], nsp)
    assert np.abs(mlm).max() > 0.1  # the heads hold weights, not zeros


def test_squad_model_in_keras_hub_and_numpy_qa_head(jobs, wiki_slice, smoke_dir):
    from safetensors.numpy import load_file

    from bertlib.model import BertConfig, BertQA
    from bertlib.model.checkpoints import load_weights

    export = jobs["squad"]
    hf = export / HF_SUBDIR
    dev = json.loads((smoke_dir / "smoke-v1.1-dev.json").read_text())["data"]
    pairs = [
        (qa["question"], " ".join(para["context"].split()[:40]))
        for article in dev
        for para in article["paragraphs"]
        for qa in para["qas"][:2]
    ]
    features = encode(hf, export, pairs, 128, n=16)
    real = features["input_mask"].astype(bool)

    model = BertQA(BertConfig.from_json_file(export / "bert_config.json"))
    load_weights(model, export, allow_missing=())
    ours = model(features, training=False)
    ours_enc = model.encoder(features, training=False)
    theirs = keras_hub_outputs(hf, features)
    check("sequence_output", np.asarray(ours_enc["sequence_output"])[real], theirs["sequence_output"][real])
    check("pooled_output", ours_enc["pooled_output"], theirs["pooled_output"])

    st = load_file(str(hf / "model.safetensors"))
    logits = theirs["sequence_output"].astype(np.float64) @ st["qa_outputs.weight"].T.astype(np.float64)
    logits += st["qa_outputs.bias"]
    check("start_logits", np.asarray(ours["start_logits"])[real], logits[..., 0][real])
    check("end_logits", np.asarray(ours["end_logits"])[real], logits[..., 1][real])
