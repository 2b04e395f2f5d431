"""``bertlib export --to hf``: transformers' names and layouts (written out here by hand, not taken
from bertlib's table), the round trip HF export → ``bertlib convert-checkpoint`` → the same arrays,
every kind of input (export dir, training checkpoint folder, run dir), the tokenizer against
transformers' ``AutoTokenizer`` on real Wikipedia text, and bad input as one line.

No model is trained here (random weights); the numbers of an exported trained model against an
independent reader are ``test_hf_reader.py``.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml
from safetensors.numpy import load_file

from bertlib.cli import main as cli_main
from bertlib.core.vocab import vocab_info
from bertlib.model import BertConfig, BertPretrainer, BertQA
from bertlib.model.checkpoints import export_model, google_name_map
from bertlib.train.checkpointing import model_state
from bertlib.train.hf_export import HF_FILES, export_hf, find_source

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers must read the dir, never the Hub

CFG = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)

# transformers 5 BertForPreTraining.state_dict() minus the tied decoder and the position_ids buffer
# (what save_pretrained writes), for a 2-layer model; BertForQuestionAnswering: qa_outputs instead of cls.
ENCODER_NAMES = [
    "bert.embeddings.word_embeddings.weight",
    "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight",
    "bert.embeddings.LayerNorm.weight",
    "bert.embeddings.LayerNorm.bias",
    "bert.pooler.dense.weight",
    "bert.pooler.dense.bias",
] + [
    f"bert.encoder.layer.{i}.{m}.{leaf}"
    for i in range(2)
    for m in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    )
    for leaf in ("weight", "bias")
]
PRETRAINING_NAMES = ENCODER_NAMES + [
    "cls.predictions.bias",
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.seq_relationship.weight",
    "cls.seq_relationship.bias",
]
QA_NAMES = ENCODER_NAMES + ["qa_outputs.weight", "qa_outputs.bias"]


def randomized(model, seed=0):
    """Every weight set to distinct random values (biases and LayerNorms too, so a swap shows)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.trainable:
            v.assign(rng.normal(size=v.shape).astype(np.float32))
    return {n: v.numpy() for n, v in google_name_map(model).items()}


def read_ckpt(prefix) -> dict:
    reader = tf.train.load_checkpoint(str(prefix))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


@pytest.fixture
def pretrained_export(tmp_path, bert_vocab):
    model = BertPretrainer(BertConfig(**CFG))
    values = randomized(model)
    export_model(model, BertConfig(**CFG), bert_vocab, tmp_path / "export", vocab_info=vocab_info(bert_vocab, True))
    return tmp_path / "export", values


def test_pretrained_export_has_transformers_names_layouts_and_round_trips(pretrained_export, tmp_path, capsys):
    export, values = pretrained_export
    rc = cli_main(["export", "--to", "hf", "--input", str(export), "--output", str(tmp_path / "hf")])
    assert rc == 0, capsys.readouterr().err
    hf = tmp_path / "hf"
    assert sorted(p.name for p in hf.iterdir()) == sorted(HF_FILES)
    assert "BertForPreTraining" in capsys.readouterr().out

    state = load_file(str(hf / "model.safetensors"))
    assert sorted(state) == sorted(PRETRAINING_NAMES)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in state.values())
    # torch Linear weights are [out, in]: the transpose of the Keras kernel; embeddings and NSP as they are
    for i in range(2):
        for hf_name, google in [
            ("attention.self.query", "attention/self/query"),
            ("attention.output.dense", "attention/output/dense"),
            ("intermediate.dense", "intermediate/dense"),
            ("output.dense", "output/dense"),
        ]:
            kernel = values[f"bert/encoder/layer_{i}/{google}/kernel"]
            np.testing.assert_array_equal(state[f"bert.encoder.layer.{i}.{hf_name}.weight"], kernel.T)
            np.testing.assert_array_equal(
                state[f"bert.encoder.layer.{i}.{hf_name}.bias"], values[f"bert/encoder/layer_{i}/{google}/bias"]
            )
        np.testing.assert_array_equal(
            state[f"bert.encoder.layer.{i}.output.LayerNorm.weight"],
            values[f"bert/encoder/layer_{i}/output/LayerNorm/gamma"],
        )
    np.testing.assert_array_equal(state["bert.pooler.dense.weight"], values["bert/pooler/dense/kernel"].T)
    np.testing.assert_array_equal(state["cls.predictions.bias"], values["cls/predictions/output_bias"])
    np.testing.assert_array_equal(
        state["cls.predictions.transform.dense.weight"], values["cls/predictions/transform/dense/kernel"].T
    )
    np.testing.assert_array_equal(state["cls.seq_relationship.weight"], values["cls/seq_relationship/output_weights"])
    np.testing.assert_array_equal(
        state["bert.embeddings.word_embeddings.weight"], values["bert/embeddings/word_embeddings"]
    )

    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["model_type"] == "bert"
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-12  # bertlib's GELU is the erf one
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (16, 2, 24)
    assert (config["vocab_size"], config["max_position_embeddings"], config["type_vocab_size"]) == (30522, 512, 2)
    assert config["tie_word_embeddings"] is True  # decoder = word embeddings, as transformers ties it

    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(str(hf))
    assert type(hf_config).__name__ == "BertConfig" and hf_config.num_attention_heads == 2

    # round trip: HF export -> convert-checkpoint -> the very arrays of the source export
    rc = cli_main(["convert-checkpoint", "--input", str(hf), "--output", str(tmp_path / "back")])
    assert rc == 0, capsys.readouterr().err
    back = read_ckpt(tmp_path / "back" / "bert_model.ckpt")
    source = read_ckpt(export / "bert_model.ckpt")
    assert sorted(back) == sorted(source) == sorted(values)
    for name, value in source.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    assert json.loads((tmp_path / "back" / "vocab_info.json").read_text())["lowercase"] is True
    assert BertConfig.from_json_file(tmp_path / "back" / "bert_config.json") == BertConfig(**CFG)


def test_squad_model_exports_as_question_answering_and_round_trips(tmp_path, bert_vocab, capsys):
    model = BertQA(BertConfig(**CFG))
    values = randomized(model, seed=1)
    export_model(model, BertConfig(**CFG), bert_vocab, tmp_path / "export", vocab_info=vocab_info(bert_vocab, True))
    out = export_hf(tmp_path / "export", tmp_path / "hf")
    state = load_file(str(out / "model.safetensors"))
    assert sorted(state) == sorted(QA_NAMES)
    np.testing.assert_array_equal(state["qa_outputs.weight"], values["cls/squad/output_weights"])  # [2, H] both
    np.testing.assert_array_equal(state["qa_outputs.bias"], values["cls/squad/output_bias"])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]

    assert cli_main(["convert-checkpoint", "--input", str(out), "--output", str(tmp_path / "back")]) == 0
    assert "with the SQuAD head" in capsys.readouterr().out
    back = read_ckpt(tmp_path / "back" / "bert_model.ckpt")
    assert sorted(back) == sorted(values)
    for name, value in values.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_training_checkpoint_and_run_dir_inputs(tmp_path, bert_vocab):
    """A run's ``checkpoints/`` (object-based ckpt-N, model weights keyed by Google name) with its
    config.yaml and the data's vocab: the newest checkpoint's weights, the run's model_size config."""
    config = BertConfig.from_preset("tiny", 30522)
    model = BertPretrainer(config)
    run = tmp_path / "project" / "runs" / "exp" / "phase1"
    data = tmp_path / "project" / "data" / "phase1"
    data.mkdir(parents=True)
    (data / "vocab.txt").write_bytes(bert_vocab.read_bytes())
    ckpt = tf.train.Checkpoint(model_weights=model_state(model)["model_weights"])
    manager = tf.train.CheckpointManager(ckpt, str(run / "checkpoints"), max_to_keep=3)
    randomized(model, seed=2)
    manager.save(checkpoint_number=10)
    values = randomized(model, seed=3)
    manager.save(checkpoint_number=20)  # the newest one is exported
    (run / "checkpoints" / "vocab.json").write_text(json.dumps(vocab_info(bert_vocab, True)))
    # relative paths as a run started from the project root writes them
    cfg = {"model_size": "tiny", "max_seq_length": 128, "run_dir": "runs/exp/phase1", "data_dir": "data/phase1"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))

    for source in (run, run / "checkpoints"):
        found = find_source(source)
        assert found.description.endswith("ckpt-20") and found.config == config
        assert found.vocab_file == data / "vocab.txt" and found.lowercase is True
        assert sorted(found.tensors) == sorted(values)
        for name, value in values.items():
            np.testing.assert_array_equal(found.tensors[name], value, err_msg=name)
    out = export_hf(run, tmp_path / "hf")
    state = load_file(str(out / "model.safetensors"))
    np.testing.assert_array_equal(state["cls.seq_relationship.weight"], values["cls/seq_relationship/output_weights"])
    np.testing.assert_array_equal(
        state["bert.encoder.layer.1.attention.self.key.weight"],
        values["bert/encoder/layer_1/attention/self/key/kernel"].T,
    )


def test_tokenizer_gives_bertlib_ids_in_transformers(pretrained_export, tmp_path, wiki_slice, bert_vocab):
    from transformers import AutoTokenizer

    from bertlib.data.corpus import document_sentences, iter_wikipedia
    from bertlib.data.tokenization import load_wordpiece

    export, _ = pretrained_export
    out = export_hf(export, tmp_path / "hf")
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["do_lower_case"] is True and tok_config["strip_accents"] is True
    assert json.loads((out / "special_tokens_map.json").read_text())["mask_token"] == "[MASK]"

    docs = iter_wikipedia(wiki_slice)
    sentences = [s for _, doc in zip(range(3), docs) for s in document_sentences(doc)][:200]
    sentences += ["Café Ångström naïve — 東京 tab\there", "ALL CAPS, déjà vu!"]
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    ours = load_wordpiece(bert_vocab, lowercase=True)
    cls, sep = 101, 102
    mismatched = 0
    for a, b in zip(sentences, sentences[1:] + sentences[:1]):
        expected = [cls, *ours.encode(a).ids, sep, *ours.encode(b).ids, sep]
        got = hf_tok(a, b)
        mismatched += got["input_ids"] != expected
        segments = [0] * (len(ours.encode(a).ids) + 2) + [1] * (len(ours.encode(b).ids) + 1)
        assert got["token_type_ids"] == segments
    assert mismatched == 0
    assert len(sentences) > 100


def test_bad_input_is_one_line(tmp_path, pretrained_export, capsys):
    assert (
        cli_main(["export", "--to", "hf", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err
    assert cli_main(["export", "--to", "onnx", "--input", "x", "--output", "y"]) == 2
    assert "onnx" in capsys.readouterr().err
    orphan = tmp_path / "orphan"  # training checkpoints without their run's config.yaml
    model = BertPretrainer(BertConfig(**CFG))
    tf.train.CheckpointManager(
        tf.train.Checkpoint(model_weights=model_state(model)["model_weights"]), str(orphan), max_to_keep=1
    ).save(checkpoint_number=1)
    assert cli_main(["export", "--input", str(orphan), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.yaml" in err
    export, _ = pretrained_export
    (export / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # 2 entries, the model has 30522
    assert cli_main(["export", "--input", str(export), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vocab_size is 30522" in err
