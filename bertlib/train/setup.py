"""What the pretraining and SQuAD entry points set up the same way: the model's config and the
process's numerics (seed, determinism, mixed-precision policy).

The model config is the preset ``model_size`` (``max_position_embeddings`` at least 512) or the init
checkpoint's config, in both cases with the run's dropout rates; a checkpoint whose
``max_position_embeddings`` is shorter than ``max_seq_length`` is a ConfigError.
"""

from __future__ import annotations

import os

from bertlib.core.errors import ConfigError
from bertlib.model.config import BertConfig

#: the model shape fields a preset fixes (what ``model_size`` names)
SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")


def dropout_rates(cfg) -> dict:
    """The run's dropout settings as BertConfig fields."""
    return dict(
        hidden_dropout_prob=cfg.hidden_dropout_prob, attention_probs_dropout_prob=cfg.attention_probs_dropout_prob
    )


def model_config(cfg, vocab_size: int, loaded=None, require_model_size: bool = False):
    """The BertConfig of a run.

    ``loaded``: the init checkpoint's BertConfig (``resolve_pretrained(...).config``), or None for
    a fresh ``model_size`` preset with ``vocab_size`` entries. ``require_model_size``: the checkpoint
    must have the preset's shape (pretraining continues a ``model_size`` model; SQuAD takes any).
    """
    dropout = dropout_rates(cfg)
    if loaded is None or require_model_size:
        preset = BertConfig.from_preset(
            cfg.model_size, vocab_size, max_position_embeddings=max(512, cfg.max_seq_length), **dropout
        )
        if loaded is None:
            return preset
        if any(getattr(loaded, k) != getattr(preset, k) for k in SHAPE_KEYS):
            raise ConfigError(
                f"{cfg.checkpoint_path}: checkpoint has "
                + ", ".join(f"{k}={getattr(loaded, k)}" for k in SHAPE_KEYS)
                + f", not model_size {cfg.model_size!r}"
            )
    if loaded.max_position_embeddings < cfg.max_seq_length:
        raise ConfigError(
            f"{cfg.checkpoint_path}: max_position_embeddings {loaded.max_position_embeddings} < "
            f"max_seq_length {cfg.max_seq_length}"
        )
    return BertConfig.from_dict({**loaded.to_dict(), **dropout})


def configure_numerics(cfg) -> None:
    """Seed every random generator (with TF op determinism if ``deterministic_ops``) and set Keras'
    global dtype policy from ``precision`` — before the model is built."""
    import keras  # imports TensorFlow

    seed_everything(cfg.seed, deterministic=cfg.deterministic_ops)
    keras.mixed_precision.set_global_policy("float32" if cfg.precision == "fp32" else cfg.precision)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy, TF and Keras; with ``deterministic``, make TF ops deterministic."""
    import keras  # both import TensorFlow: not at the entry points' import time
    import tensorflow as tf

    if deterministic:
        os.environ["TF_DETERMINISTIC_OPS"] = "1"
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
