"""Optimizers (LAMB, AdamW with BERT's exclusions), the warmup + polynomial-decay schedule, and
:func:`make_optimizer` that builds both from a run config. Loss scaling: :mod:`bertlib.optim.loss_scale`.
"""

from __future__ import annotations

from bertlib.optim.adamw import ADAMW_VARIANTS, DEFAULT_EXCLUDE, AdamW
from bertlib.optim.lamb import Lamb
from bertlib.optim.schedules import PolynomialWarmup


def make_schedule(cfg) -> PolynomialWarmup:
    """``PolynomialWarmup`` from a config's ``learning_rate``, ``end_learning_rate``,
    ``warmup_steps``, ``total_steps``, ``learning_rate_decay_power``."""
    return PolynomialWarmup(
        cfg.learning_rate, cfg.end_learning_rate, cfg.warmup_steps, cfg.total_steps, cfg.learning_rate_decay_power
    )


def make_optimizer(cfg) -> AdamW:
    """The optimizer ``cfg.optimizer`` names — ``lamb``, or an AdamW variant of
    :data:`~bertlib.optim.adamw.ADAMW_VARIANTS` (``adamw``: Keras/TFA bias-corrected Adam;
    ``google_adamw``: Google's AdamWeightDecayOptimizer) — with ``cfg.weight_decay`` and its schedule
    attached as ``optimizer.schedule`` (used when ``apply_gradients`` is given no learning rate)."""
    schedule = make_schedule(cfg)
    if cfg.optimizer == "lamb":
        return Lamb(weight_decay=cfg.weight_decay, schedule=schedule)
    return AdamW(weight_decay=cfg.weight_decay, schedule=schedule, **ADAMW_VARIANTS[cfg.optimizer])


__all__ = ["ADAMW_VARIANTS", "DEFAULT_EXCLUDE", "AdamW", "Lamb", "PolynomialWarmup", "make_optimizer", "make_schedule"]
