"""LAMB, AdamW and the warmup/decay schedule against plain numpy implementations of the published
formulas (You et al. 2019 / NVIDIA BERT LAMB; google-research/bert AdamWeightDecayOptimizer; Keras Adam
as tfa.optimizers.AdamW runs it) and against TF's own ``ResourceApplyAdam`` kernel."""

import math

import numpy as np
import pytest
import tensorflow as tf
from numpy_optim import EXCLUDED, np_lamb

from bertlib.core.config import build_config
from bertlib.optim import ADAMW_VARIANTS, AdamW, Lamb, PolynomialWarmup, make_optimizer


def np_google_adamw(params, grads_per_step, lrs, wd, b1=0.9, b2=0.999, eps=1e-6):
    """Reference of google-research/bert AdamWeightDecayOptimizer (no bias correction)."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        for k, w in params.items():
            g = grads[k].astype(np.float64)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            u = m[k] / (np.sqrt(v[k]) + eps)
            if not any(s in k for s in EXCLUDED):
                u = u + wd * w
            params[k] = w - lr * u
    return params


def np_keras_adamw(params, grads_per_step, lrs, wd, b1=0.9, b2=0.999, eps=1e-7):
    """Reference of tf.keras Adam (TF 2.1 optimizer_v2/adam.py → the ResourceApplyAdam kernel), the update
    of tfa.optimizers.AdamW: lr_t = lr·√(1 − β2ᵗ)/(1 − β1ᵗ); w ← w − lr_t·m/(√v + ε) (ε not bias-corrected),
    plus decoupled weight decay lr·λ·w on non-excluded variables."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        for k, w in params.items():
            g = grads[k].astype(np.float64)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            decay = 0.0 if any(s in k for s in EXCLUDED) else lr * wd * w
            params[k] = w - lr_t * m[k] / (np.sqrt(v[k]) + eps) - decay
    return params


def make_problem(seed=0, steps=4):
    rng = np.random.default_rng(seed)
    params = {
        "bert/encoder/layer_0/attention/self/query/kernel": rng.normal(size=(6, 5)),
        "bert/encoder/layer_0/attention/self/query/bias": rng.normal(size=(5,)),
        "bert/embeddings/LayerNorm/gamma": 1 + 0.1 * rng.normal(size=(5,)),
        "cls/predictions/output_bias": rng.normal(size=(7,)),
        "cls/seq_relationship/output_weights": np.zeros((2, 5)),  # ‖w‖ = 0 → trust ratio 1
        "bert/pooler/dense/kernel": rng.normal(size=(5, 5)),  # zero gradient at step 2
    }
    grads = []
    for s in range(steps):
        g = {k: rng.normal(size=p.shape) * (10.0 ** (s - 1)) for k, p in params.items()}
        if s == 1:
            g["bert/pooler/dense/kernel"][:] = 0.0
        grads.append(g)
    return params, grads


def run_tf(opt, params, grads, lrs, use_function):
    variables = {k: tf.Variable(v.astype(np.float32), name=k) for k, v in params.items()}

    def step(gs, lr):
        return opt.apply_gradients([(gs[k], variables[k]) for k in variables], lr)

    if use_function:
        step = tf.function(step)
    for g, lr in zip(grads, lrs):
        step({k: tf.constant(v, tf.float32) for k, v in g.items()}, tf.constant(lr, tf.float32))
    return {k: v.numpy() for k, v in variables.items()}


@pytest.mark.parametrize("use_function", [False, True])
def test_lamb_matches_numpy(use_function):
    params, grads = make_problem()
    lrs = [0.01, 0.02, 0.015, 0.005]
    got = run_tf(Lamb(weight_decay=0.01), params, grads, lrs, use_function)
    want = np_lamb(params, grads, lrs, wd=0.01)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)
    # the zero-norm weight moved by exactly lr·u in the first step (ratio 1) and is no longer zero
    assert np.abs(got["cls/seq_relationship/output_weights"]).max() > 0


def test_lamb_trust_ratio_scales_the_decayed_update():
    """The trust ratio must scale the decayed update: with a huge weight decay, ‖Δw‖ = lr·‖w‖ exactly
    for a non-excluded variable in the first step (ratio·‖u‖ = ‖w‖)."""
    w0 = np.full((3, 3), 2.0, np.float32)
    var = tf.Variable(w0, name="layer/kernel")
    Lamb(weight_decay=1e3).apply_gradients([(tf.ones((3, 3)), var)], 0.1)
    np.testing.assert_allclose(np.linalg.norm(var.numpy() - w0), 0.1 * np.linalg.norm(w0), rtol=1e-5)


def test_lamb_zero_update_norm_is_finite():
    var = tf.Variable(np.ones((2, 2), np.float32), name="dense/kernel")
    Lamb(weight_decay=0.0).apply_gradients([(tf.zeros((2, 2)), var)], 0.1)
    np.testing.assert_array_equal(var.numpy(), np.ones((2, 2)))


@pytest.mark.parametrize("use_function", [False, True])
def test_adamw_matches_google_reference(use_function):
    params, grads = make_problem(seed=1)
    lrs = [1e-3, 2e-3, 3e-3, 1e-3]
    got = run_tf(AdamW(weight_decay=0.01), params, grads, lrs, use_function)
    want = np_google_adamw(params, grads, lrs, wd=0.01)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("grad_scale", [1.0, 1e-6])
@pytest.mark.parametrize("use_function", [False, True])
def test_reference_adamw_matches_keras_adam(use_function, grad_scale):
    """optimizer: adamw is the reference's tfa.optimizers.AdamW(weight_decay=0.0) (run_squad.py:318) — Keras
    Adam with ε 1e-7 added to √v. At gradients of 1e-6 the ε placement decides the result: the other
    placement (ε on √v̂, Adam's Algorithm 1) is checked to be outside the tolerance."""
    params, grads = make_problem(seed=3, steps=6)
    grads = [{k: g * grad_scale for k, g in step.items()} for step in grads]
    lrs = [0.0, 1e-4, 2e-4, 3e-4, 2e-4, 1e-4]
    got = run_tf(AdamW(weight_decay=0.0, **ADAMW_VARIANTS["adamw"]), params, grads, lrs, use_function)
    want = np_keras_adamw(params, grads, lrs, wd=0.0)
    for k in params:
        np.testing.assert_allclose(got[k] - params[k], want[k] - params[k], rtol=1e-3, atol=5e-7, err_msg=k)
    if grad_scale < 1:
        other = run_tf(AdamW(weight_decay=0.0, epsilon=1e-7, bias_correction=True), params, grads, lrs, False)
        k = "bert/pooler/dense/kernel"
        assert not np.allclose(other[k] - params[k], want[k] - params[k], rtol=1e-3, atol=5e-7)


@pytest.mark.parametrize("grad_scale", [1.0, 1e-6])
def test_reference_adamw_matches_tf_resource_apply_adam_kernel(grad_scale):
    """The same updates as TF's own C++ kernel that tf.keras Adam (and so tfa AdamW) dispatches to."""
    params, grads = make_problem(seed=4, steps=5)
    grads = [{k: g * grad_scale for k, g in step.items()} for step in grads]
    lrs = [1e-5, 5e-5, 1e-4, 5e-5, 1e-5]
    b1, b2, eps = 0.9, 0.999, 1e-7
    got = run_tf(AdamW(weight_decay=0.0, **ADAMW_VARIANTS["adamw"]), params, grads, lrs, True)
    for k, p0 in params.items():
        var = tf.Variable(p0.astype(np.float32))
        m, v = tf.Variable(tf.zeros_like(var)), tf.Variable(tf.zeros_like(var))
        for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1**t,
                beta2_power=b2**t,
                lr=lr,
                beta1=b1,
                beta2=b2,
                epsilon=eps,
                grad=tf.constant(g[k], tf.float32),
            )
        np.testing.assert_allclose(got[k] - p0, var.numpy() - p0, rtol=1e-3, atol=5e-7, err_msg=k)


def test_reference_adamw_weight_decay_is_lr_scaled():
    """With λ > 0 the adamw variant decays by lr·λ·w (as transformers.AdamWeightDecay; tfa's AdamW would
    subtract λ·w unscaled — the reference finetunes with λ = 0, where both agree)."""
    params, grads = make_problem(seed=5)
    lrs = [1e-3, 2e-3, 3e-3, 1e-3]
    got = run_tf(AdamW(weight_decay=0.1, **ADAMW_VARIANTS["adamw"]), params, grads, lrs, False)
    want = np_keras_adamw(params, grads, lrs, wd=0.1)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)


def test_adamw_excluded_variables_get_no_decay():
    """With zero gradients, only weight decay moves a variable: kernels shrink, LN/bias stay."""
    kernel = tf.Variable(np.ones(3, np.float32), name="x/dense/kernel")
    bias = tf.Variable(np.ones(3, np.float32), name="x/dense/bias")
    gamma = tf.Variable(np.ones(3, np.float32), name="x/LayerNorm/gamma")
    opt = AdamW(weight_decay=0.5)
    opt.apply_gradients([(tf.zeros(3), v) for v in (kernel, bias, gamma)], 0.1)
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.1 * 0.5)
    np.testing.assert_array_equal(bias.numpy(), 1.0)
    np.testing.assert_array_equal(gamma.numpy(), 1.0)


def test_optimizer_state_checkpoint_roundtrip(tmp_path):
    params, grads = make_problem(seed=2, steps=3)
    var = tf.Variable(params["bert/pooler/dense/kernel"].astype(np.float32), name="p/kernel")
    opt = Lamb()
    opt.apply_gradients([(tf.constant(grads[0]["bert/pooler/dense/kernel"], tf.float32), var)], 0.01)
    path = tf.train.Checkpoint(optimizer=opt, var=var).save(str(tmp_path / "ckpt"))
    var2 = tf.Variable(np.zeros_like(var.numpy()), name="p/kernel")
    opt2 = Lamb()
    tf.train.Checkpoint(optimizer=opt2, var=var2).restore(path)
    opt2.build([var2])
    assert int(opt2.iterations.numpy()) == 1
    np.testing.assert_array_equal(opt2.m[0].numpy(), opt.m[0].numpy())
    np.testing.assert_array_equal(opt2.v[0].numpy(), opt.v[0].numpy())


def test_schedule_against_formula():
    s = PolynomialWarmup(lr=1.0, end_lr=0.1, warmup=10, total=110, power=0.5)
    expected = {
        0: 0.0,
        5: 0.5,
        10: 1.0,
        60: 0.1 + 0.9 * math.sqrt(0.5),
        85: 0.1 + 0.9 * math.sqrt(0.25),
        110: 0.1,
        500: 0.1,
    }
    for step, lr in expected.items():
        assert float(s(step)) == pytest.approx(lr, rel=1e-6, abs=1e-7), step
    linear = PolynomialWarmup(lr=5e-5, end_lr=0.0, warmup=0, total=100, power=1.0)
    assert float(linear(0)) == pytest.approx(5e-5)
    assert float(linear(25)) == pytest.approx(5e-5 * 0.75)
    assert float(tf.function(linear)(tf.constant(50, tf.int64))) == pytest.approx(2.5e-5)


def test_make_optimizer_from_config():
    cfg = build_config(
        "pretrain",
        dict(
            per_gpu_batch_size=2,
            max_seq_length=32,
            max_predictions_per_seq=5,
            learning_rate=0.005,
            end_learning_rate=0.0003,
            warmup_steps=2812,
            total_steps=14064,
            data_dir="x",
        ),
    )
    opt = make_optimizer(cfg)
    assert isinstance(opt, Lamb) and opt.weight_decay == cfg.weight_decay
    assert float(opt.schedule(2812)) == pytest.approx(0.005)
    assert float(opt.schedule(14064)) == pytest.approx(0.0003)
    var = tf.Variable(np.ones(2, np.float32), name="k/kernel")
    assert float(opt.apply_gradients([(tf.ones(2), var)])) == 0.0  # schedule(0) = 0
    squad = build_config(
        "squad",
        dict(
            per_gpu_batch_size=6,
            learning_rate=5e-5,
            warmup_steps=365,
            total_steps=3649,
            train_file="t.json",
            predict_file="p.json",
        ),
    )
    # SquadConfig's defaults are the reference's: tfa AdamW(weight_decay=0.0), ε 1e-7, no dropout
    opt = make_optimizer(squad)
    assert (type(opt), opt.weight_decay, opt.epsilon, opt.beta_1, opt.beta_2, opt.bias_correction, opt.epsilon_hat) == (
        AdamW,
        0.0,
        1e-7,
        0.9,
        0.999,
        True,
        True,
    )
    assert (squad.optimizer, squad.hidden_dropout_prob, squad.attention_probs_dropout_prob) == ("adamw", 0.0, 0.0)
    google = make_optimizer(squad.model_copy(update={"optimizer": "google_adamw", "weight_decay": 0.01}))
    assert (google.weight_decay, google.epsilon, google.bias_correction) == (0.01, 1e-6, False)
    params, grads = make_problem(seed=6)
    lrs = [1e-3, 2e-3, 3e-3, 1e-3]
    got = run_tf(google, params, grads, lrs, False)
    want = np_google_adamw(params, grads, lrs, wd=0.01)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)
    with pytest.raises(ValueError, match="epsilon_hat"):
        AdamW(epsilon_hat=True)
