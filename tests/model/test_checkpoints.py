"""Checkpoint import/export: a Google TF1 checkpoint written here with the original variable names
(tf.compat.v1 Saver, as google-research/bert wrote them), HF safetensors, the convert-checkpoint CLI,
and the real all-MiniLM-L6-v2 model against an independent numpy forward pass."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from google_reference import google_names
from safetensors.numpy import save_file

from bertlib.cli import main as cli_main
from bertlib.model import BertConfig, BertEncoder, BertPretrainer, load_pretrained
from bertlib.model.checkpoints import google_name_map, load_weights, resolve_pretrained, save_google_checkpoint

CFG = dict(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=32,
    type_vocab_size=2,
    initializer_range=0.02,
)


def google_shapes(c):
    h, i = c["hidden_size"], c["intermediate_size"]
    shapes = {}
    for n in google_names(c["num_hidden_layers"]):
        if n.endswith("word_embeddings"):
            s = (c["vocab_size"], h)
        elif n.endswith("position_embeddings"):
            s = (c["max_position_embeddings"], h)
        elif n.endswith("token_type_embeddings"):
            s = (c["type_vocab_size"], h)
        elif n == "cls/predictions/output_bias":
            s = (c["vocab_size"],)
        elif n == "cls/seq_relationship/output_weights":
            s = (2, h)
        elif n == "cls/seq_relationship/output_bias":
            s = (2,)
        elif n.endswith("intermediate/dense/kernel"):
            s = (h, i)
        elif n.endswith("intermediate/dense/bias"):
            s = (i,)
        elif "layer_" in n and n.endswith("output/dense/kernel") and "attention" not in n:
            s = (i, h)
        elif n.endswith("kernel"):
            s = (h, h)
        else:
            s = (h,)
        shapes[n] = s
    return shapes


def write_tf1_checkpoint(directory, with_heads=True):
    """Google-style dir: bert_config.json + bert_model.ckpt written by a tf.compat.v1 Saver, including
    optimizer slots and global_step as in a real pretraining checkpoint."""
    rng = np.random.default_rng(0)
    values = {
        n: rng.normal(size=s).astype(np.float32)
        for n, s in google_shapes(CFG).items()
        if with_heads or not n.startswith("cls/")
    }
    directory.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        for n, v in values.items():
            tf.compat.v1.get_variable(n, initializer=v)
            tf.compat.v1.get_variable(n + "/adam_m", initializer=np.zeros_like(v))
        tf.compat.v1.get_variable("global_step", initializer=np.int64(7))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(directory / "bert_model.ckpt"), write_meta_graph=False)
    (directory / "bert_config.json").write_text(json.dumps(CFG))
    (directory / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(CFG["vocab_size"])))
    return values


def test_google_checkpoint_roundtrip(tmp_path):
    values = write_tf1_checkpoint(tmp_path / "uncased_L-2_H-16_A-2")
    for path in (tmp_path / "uncased_L-2_H-16_A-2", tmp_path / "uncased_L-2_H-16_A-2" / "bert_model.ckpt"):
        encoder, config = load_pretrained(path)
        assert config == BertConfig(**CFG)
        got = {n: v.numpy() for n, v in google_name_map(encoder).items()}
        assert set(got) == {n for n in values if n.startswith("bert/")}
        for n, v in got.items():
            np.testing.assert_array_equal(v, values[n], err_msg=n)
    assert resolve_pretrained(tmp_path / "uncased_L-2_H-16_A-2").do_lower_case is True

    model = BertPretrainer(BertConfig(**CFG))
    loaded = load_weights(model, tmp_path / "uncased_L-2_H-16_A-2" / "bert_model.ckpt")
    assert sorted(loaded) == sorted(values)  # heads included
    save_google_checkpoint(model, tmp_path / "out" / "model.ckpt")
    reader = tf.train.load_checkpoint(str(tmp_path / "out" / "model.ckpt"))
    assert set(reader.get_variable_to_shape_map()) == set(values)
    for n, v in values.items():
        np.testing.assert_array_equal(reader.get_tensor(n), v, err_msg=n)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_missing_and_mismatched_tensors_are_reported(tmp_path):
    write_tf1_checkpoint(tmp_path / "g", with_heads=False)
    model = BertPretrainer(BertConfig(**CFG))
    with pytest.raises(ValueError, match=r"no tensor 'cls/"):
        load_weights(model, tmp_path / "g" / "bert_model.ckpt", allow_missing=())
    assert len(load_weights(model, tmp_path / "g" / "bert_model.ckpt")) == 5 + 2 + 2 * 16
    wrong = BertEncoder(BertConfig(**dict(CFG, max_position_embeddings=64)))
    with pytest.raises(ValueError, match=r"position_embeddings has shape \[32, 16\]"):
        load_weights(wrong, tmp_path / "g" / "bert_model.ckpt")


def test_hf_safetensors_names_and_transposes(tmp_path):
    """PyTorch Linear weights are [out, in]; the import must transpose them to Keras kernels."""
    rng = np.random.default_rng(1)
    h, i = CFG["hidden_size"], CFG["intermediate_size"]
    sd = {
        "bert.embeddings.word_embeddings.weight": rng.normal(size=(50, h)),
        "bert.embeddings.position_embeddings.weight": rng.normal(size=(32, h)),
        "bert.embeddings.token_type_embeddings.weight": rng.normal(size=(2, h)),
        "bert.embeddings.LayerNorm.gamma": rng.normal(size=h),
        "bert.embeddings.LayerNorm.beta": rng.normal(size=h),
        "bert.pooler.dense.weight": rng.normal(size=(h, h)),
        "bert.pooler.dense.bias": rng.normal(size=h),
        "cls.seq_relationship.weight": rng.normal(size=(2, h)),
        "cls.seq_relationship.bias": rng.normal(size=2),
        "cls.predictions.bias": rng.normal(size=50),
        "cls.predictions.transform.dense.weight": rng.normal(size=(h, h)),
        "cls.predictions.transform.dense.bias": rng.normal(size=h),
        "cls.predictions.transform.LayerNorm.weight": rng.normal(size=h),
        "cls.predictions.transform.LayerNorm.bias": rng.normal(size=h),
        "cls.predictions.decoder.weight": rng.normal(size=(50, h)),
        "bert.embeddings.position_ids": np.arange(32)[None],
        # the task head of an HF BertForQuestionAnswering file: not part of BERT, skipped
        "qa_outputs.weight": rng.normal(size=(2, h)),
        "qa_outputs.bias": rng.normal(size=2),
    }
    for n in range(2):
        p = f"bert.encoder.layer.{n}."
        for sub, (o, k) in {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (i, h),
            "output.dense": (h, i),
        }.items():
            sd[p + sub + ".weight"], sd[p + sub + ".bias"] = rng.normal(size=(o, k)), rng.normal(size=o)
        for sub in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[p + sub + ".weight"], sd[p + sub + ".bias"] = rng.normal(size=h), rng.normal(size=h)
    sd = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in sd.items()}
    (tmp_path / "hf").mkdir()
    save_file(sd, str(tmp_path / "hf" / "model.safetensors"))
    (tmp_path / "hf" / "config.json").write_text(json.dumps(dict(CFG, layer_norm_eps=1e-12, model_type="bert")))
    model = BertPretrainer(BertConfig(**CFG))
    assert len(load_weights(model, tmp_path / "hf")) == len(google_names(2))
    w = {n: v.numpy() for n, v in google_name_map(model).items()}
    np.testing.assert_array_equal(
        w["bert/encoder/layer_1/intermediate/dense/kernel"], sd["bert.encoder.layer.1.intermediate.dense.weight"].T
    )
    np.testing.assert_array_equal(w["bert/embeddings/LayerNorm/gamma"], sd["bert.embeddings.LayerNorm.gamma"])
    np.testing.assert_array_equal(w["cls/seq_relationship/output_weights"], sd["cls.seq_relationship.weight"])
    np.testing.assert_array_equal(w["cls/predictions/output_bias"], sd["cls.predictions.bias"])
    np.testing.assert_array_equal(
        w["cls/predictions/transform/LayerNorm/beta"], sd["cls.predictions.transform.LayerNorm.bias"]
    )


def test_convert_checkpoint_cli(tmp_path, capsys):
    values = write_tf1_checkpoint(tmp_path / "uncased_g")
    rc = cli_main(["convert-checkpoint", "--input", str(tmp_path / "uncased_g"), "--output", str(tmp_path / "exp")])
    assert rc == 0
    exp = tmp_path / "exp"
    assert {p.name for p in exp.iterdir()} == {
        "bert_config.json",
        "vocab.txt",
        "vocab_info.json",
        "bert_model.ckpt.index",
        "bert_model.ckpt.data-00000-of-00001",
    }
    assert json.loads((exp / "vocab_info.json").read_text())["lowercase"] is True
    reader = tf.train.load_checkpoint(str(exp / "bert_model.ckpt"))
    assert set(reader.get_variable_to_shape_map()) == set(values)
    info = resolve_pretrained(exp)
    assert info.kind == "google" and info.do_lower_case is True and info.vocab_file == exp / "vocab.txt"

    capsys.readouterr()
    assert cli_main(["convert-checkpoint", "--input", str(tmp_path / "nowhere"), "--output", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err
    assert cli_main(["convert-checkpoint", "--input", str(tmp_path / "uncased_g"), "--bogus", "1"]) == 2
    assert "--bogus" in capsys.readouterr().err


# ------------------------------------------------------------------ the real MiniLM (HF safetensors)


def np_layer_norm(x, g, b, eps=1e-12):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b


def np_bert_forward(sd, cfg, ids, mask):
    """Independent BERT forward in float64 numpy straight from the PyTorch state dict."""
    t = {k: v.astype(np.float64) for k, v in sd.items() if v.dtype.kind == "f"}
    lin = lambda x, name: x @ t[name + ".weight"].T + t[name + ".bias"]  # noqa: E731
    b, s = ids.shape
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:s][None]
    x = x + t["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)]
    x = np_layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    nh = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // nh
    erf = np.vectorize(math.erf)
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        q, k, v = (
            lin(x, p + f"attention.self.{m}").reshape(b, s, nh, d).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, nh * d)
        x = np_layer_norm(
            lin(ctx, p + "attention.output.dense") + x,
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
        )
        hmid = lin(x, p + "intermediate.dense")
        hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))
        x = np_layer_norm(
            lin(hmid, p + "output.dense") + x, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"]
        )
    return x


def mean_pool_normalize(seq, mask):
    m = mask[..., None].astype(np.float64)
    e = (seq * m).sum(1) / m.sum(1)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar on stage.",
    "The central bank raised interest rates again.",
    "Interest rates were increased by the central bank.",
    "A cat sleeps on the warm windowsill.",
]


def test_minilm_import_matches_numpy_and_ranks_paraphrases(tmp_path):
    from safetensors.numpy import load_file

    from bertlib.core.assets import asset
    from bertlib.data.tokenization import load_wordpiece

    weights, config, vocab = asset("minilm_safetensors"), asset("minilm_config"), asset("bert_uncased_vocab")
    hf = tmp_path / "minilm"
    hf.mkdir()
    for f in (weights, config, vocab):
        (hf / f.name).symlink_to(f)
    encoder, cfg = load_pretrained(hf)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 384, 12)

    tok = load_wordpiece(vocab, lowercase=True)  # uncased WordPiece; [CLS] … [SEP] added here
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    rows = [[cls_id] + tok.encode(s).ids + [sep_id] for s in SENTENCES]
    seq = max(map(len, rows))
    ids = np.array([r + [0] * (seq - len(r)) for r in rows], np.int32)
    mask = (np.arange(seq)[None] < np.array([len(r) for r in rows])[:, None]).astype(np.int32)

    out = encoder({"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)})
    got = mean_pool_normalize(out["sequence_output"].numpy().astype(np.float64), mask)
    sd = load_file(str(weights))
    want_seq = np_bert_forward(sd, json.loads(config.read_text()), ids, mask)
    want = mean_pool_normalize(want_seq, mask)
    cosines = (got * want).sum(-1)
    print("1 - cosine(bertlib, numpy) per sentence:", 1 - cosines)
    assert cosines.min() > 0.9999, cosines
    # pooled_output = tanh(dense(first token)), the pooler of the same file
    pool_w, pool_b = (sd[f"pooler.dense.{k}"].astype(np.float64) for k in ("weight", "bias"))
    want_pooled = np.tanh(want_seq[:, 0] @ pool_w.T + pool_b)
    np.testing.assert_allclose(out["pooled_output"].numpy(), want_pooled, atol=1e-4)

    sim = got @ got.T
    print("similarity matrix:\n", np.round(sim, 3))
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 4]) + 0.2
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1], sim[2, 4]) + 0.2


def test_convert_checkpoint_rejects_bad_input_before_importing_tensorflow(tmp_path, subprocess_env):
    import subprocess
    import sys

    code = (
        "import sys; from bertlib.core.errors import run_guarded; from bertlib.model.checkpoints import main; "
        f"rc = run_guarded(main, ['--input', {str(tmp_path / 'missing')!r}, '--output', 'x']); "
        "print(rc, 'tensorflow' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=60)
    assert r.stdout.split() == ["2", "False"], r.stderr
    assert r.stderr.strip().endswith("no checkpoint, export dir or safetensors file at this path")
