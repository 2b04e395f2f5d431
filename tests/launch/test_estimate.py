"""The FLOPs / time / cost estimate, checked against the real model and the reference row.

Reference (DESIGN.md): BERT-base on 8 × ml.p3dn.24xlarge = 64 V100, phase 1 took 5 h 33 min and
phase 2 2 h 53 min.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from bertlib.core.config import build_launched
from bertlib.launch import estimate as est

PHASE1_HOURS = 5 + 33 / 60
PHASE2_HOURS = 2 + 53 / 60
COMMON = dict(
    backend="sagemaker",
    instance_type="ml.p3dn.24xlarge",
    instance_count=8,
    model_size="base",
    optimizer="lamb",
    learning_rate_decay_power=0.5,
    precision="mixed_float16",
    data_dir="s3://b/d",
    end_learning_rate=0.0003,
    gradient_accumulation_steps=4,
)
PHASE1 = dict(
    COMMON,
    phase="phase1",
    per_gpu_batch_size=128,
    max_seq_length=128,
    max_predictions_per_seq=20,
    learning_rate=0.005,
    warmup_steps=2812,
    total_steps=14064,
    global_batch_size_check=32768,
)
PHASE2 = dict(
    COMMON,
    phase="phase2",
    per_gpu_batch_size=32,
    max_seq_length=512,
    max_predictions_per_seq=80,
    learning_rate=0.004,
    warmup_steps=625,
    total_steps=6248,
    global_batch_size_check=8192,
)


def test_encoder_flops_are_6_n_tokens_of_the_real_model():
    """The encoder term equals 6 × (weights of the transformer layers, counted on the real Keras
    model) × tokens, within the biases/LayerNorm share (< 1 %)."""
    from bertlib.model import BertConfig, BertEncoder

    config = BertConfig.from_preset("mini", vocab_size=1000)
    encoder = BertEncoder(config)
    encoder({k: np.zeros((1, 8), "int32") for k in ("input_ids", "input_mask", "segment_ids")})
    layer_weights = sum(
        int(math.prod(v.shape)) for v in encoder.weights if "/encoder/layer_" in v.path and v.path.endswith("kernel")
    )
    assert layer_weights == 4 * (4 * 256**2 + 2 * 256 * 1024)  # 4 layers of Q,K,V,O + FFN kernels
    parts = est.forward_flops(*est.model_dims("mini"), seq_len=128, predictions=20, vocab_size=1000)
    assert 3 * parts["encoder"] == pytest.approx(6 * layer_weights * 128, rel=1e-12)


def test_bert_base_phase1_numbers_by_hand():
    cfg = build_launched("pretrain", PHASE1)
    e = est.estimate(cfg)
    H, I, L, V, S, P = 768, 3072, 12, 30522, 128, 20
    n_layers = L * (4 * H * H + 2 * H * I)  # 84.9M: BERT-base's 110M minus embeddings/pooler
    assert n_layers == 84_934_656
    forward = 2 * n_layers * S + 4 * L * S * S * H + 2 * P * (H * H + H * V) + 2 * H * H + 4 * H
    assert e["flops_per_sequence"] == pytest.approx(3 * forward, rel=1e-12)
    assert e["sequences"] == 32768 * 14064 and e["devices"] == 64
    assert e["flops"] == pytest.approx(3 * forward * 32768 * 14064, rel=1e-12)
    assert e["usd"] == pytest.approx(e["hours"] * 8 * 35.894, abs=0.01)


def test_reference_row_implies_plausible_utilization_and_phase_ratio():
    p1, p2 = build_launched("pretrain", PHASE1), build_launched("pretrain", PHASE2)
    # the utilization at which the estimate gives the measured hours
    u1, u2 = (est.estimate(p, 1.0)["hours"] / hours for p, hours in ((p1, PHASE1_HOURS), (p2, PHASE2_HOURS)))
    # mixed precision V100 (125 TFLOP/s tensor-core peak) with TF 2.1 + Horovod: 15-60 % is plausible
    assert 0.15 < u1 < 0.6 and 0.15 < u2 < 0.6, (u1, u2)
    predicted_ratio = est.estimate(p1)["hours"] / est.estimate(p2)["hours"]
    measured_ratio = PHASE1_HOURS / PHASE2_HOURS
    assert predicted_ratio == pytest.approx(measured_ratio, rel=0.15), (predicted_ratio, measured_ratio)
    # and the default utilization reproduces the total of 8 h 26 min within 10 %
    total = est.estimate(p1)["hours"] + est.estimate(p2)["hours"]
    assert total == pytest.approx(8 + 26 / 60, rel=0.10)


@pytest.mark.parametrize("pretraining", [True, False], ids=["pretraining", "squad"])
def test_parameter_count_is_the_real_models_gradient_count(pretraining):
    """Counted on the Keras models: the variables that receive a gradient of the training loss (the
    pooler gets none under the SQuAD head), for the tiny preset at the real vocabulary size."""
    import tensorflow as tf

    from bertlib.model import BertConfig, BertPretrainer, BertQA, pretraining_losses

    config = BertConfig.from_preset("tiny", vocab_size=est.DEFAULT_VOCAB_SIZE)
    batch = {k: tf.ones((1, 8), tf.int32) for k in ("input_ids", "input_mask", "segment_ids")}
    if pretraining:
        model = BertPretrainer(config)
        batch.update(masked_lm_positions=tf.ones((1, 2), tf.int32), masked_lm_ids=tf.ones((1, 2), tf.int32))
        batch.update(masked_lm_weights=tf.ones((1, 2)), next_sentence_labels=tf.ones((1, 1), tf.int32))
    else:
        model = BertQA(config)
    with tf.GradientTape() as tape:
        out = model(batch, training=True)
        loss = (
            pretraining_losses(out, batch)["loss"]
            if pretraining
            else tf.add_n([tf.reduce_sum(v) for v in out.values()])
        )
    grads = tape.gradient(loss, model.trainable_variables)
    counted = sum(int(math.prod(v.shape)) for v, g in zip(model.trainable_variables, grads) if g is not None)
    assert est.parameter_count(*est.model_dims("tiny"), pretraining=pretraining) == counted


def test_allreduce_bytes_of_the_reference_run():
    """BERT-base with the pretraining heads: 110,106,428 parameters (Hugging Face's BertForPreTraining of
    bert-base-uncased reports the same number); fp16 compression halves the 4 bytes of each."""
    e = est.estimate(build_launched("pretrain", dict(PHASE1, allreduce_compression="fp16")))
    assert e["parameters"] == 110_106_428
    assert e["allreduce"] == {"bytes": 110_106_428 * 2, "bytes_fp32": 110_106_428 * 4, "saved": 110_106_428 * 2}
    plain = est.estimate(build_launched("pretrain", PHASE1))["allreduce"]
    assert plain["saved"] == 0 and plain["bytes"] == 110_106_428 * 4


def test_cli_prints_each_squad_version(repo_root, subprocess_env):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bertlib.cli",
            "estimate",
            "--config",
            str(repo_root / "params" / "sagemaker" / "squad.yaml"),
            "--utilization",
            "0.3",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if not line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == ["squadv1", "squadv2"]
    assert out.stdout.count("gradient allreduce per step: ") == 2
    assert all("at 30%" in line and "1 × ml.p3dn.24xlarge" in line for line in lines)
    bad = subprocess.run(
        [sys.executable, "-m", "bertlib.cli", "estimate", "--config", "missing.yaml"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr


def test_real_tokens_from_the_datasets_manifest(tmp_path):
    """Real tokens = rows × S × (Σ real_tokens / Σ examples·S) of the train shards; a packed dataset
    (fewer rows, more real tokens per row) costs fewer FLOPs per real token."""
    import json

    from bertlib.data.records import MANIFEST_FORMAT

    def dataset(name, shards):
        d = tmp_path / name
        d.mkdir()
        (d / "manifest.json").write_text(
            json.dumps(
                {
                    "format": MANIFEST_FORMAT,
                    "max_seq_length": 128,
                    "max_predictions_per_seq": 20,
                    "vocab": {},
                    "counts": {},
                    "shards": {"train": shards, "validation": [{"examples": 1, "real_tokens": 1}]},
                }
            )
        )
        return d

    unpacked = dataset("unpacked", [{"examples": 10, "real_tokens": 640}, {"examples": 30, "real_tokens": 2560}])
    packed = dataset("packed", [{"examples": 25, "real_tokens": 3200}])
    assert est.real_token_fraction(unpacked) == pytest.approx(3200 / (40 * 128))
    assert est.real_token_fraction(packed) == pytest.approx(1.0)
    assert est.real_token_fraction("s3://bucket/data") is None
    assert est.real_token_fraction(tmp_path / "missing") is None
    cfg = build_launched("pretrain", dict(PHASE1, data_dir=str(unpacked)))
    e = est.estimate(cfg, real_fraction=est.real_token_fraction(unpacked))
    rows = 32768 * 14064
    assert e["real_tokens"] == pytest.approx(rows * 128 * 0.625)
    assert e["flops_per_real_token"] == pytest.approx(e["flops"] / (rows * 128 * 0.625))
    assert "real_tokens" not in est.estimate(cfg)
