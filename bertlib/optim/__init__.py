"""Optimizers (LAMB, AdamW with BERT's exclusions), the warmup + polynomial-decay schedule, and
:func:`make_optimizer` that builds both from a run config. Loss scaling: :mod:`bertlib.optim.loss_scale`.
"""

from __future__ import annotations

from bertlib.optim.adamw import DEFAULT_EXCLUDE, AdamW
from bertlib.optim.lamb import Lamb
from bertlib.optim.schedules import PolynomialWarmup


def make_schedule(cfg) -> PolynomialWarmup:
    """``PolynomialWarmup`` from a config's ``learning_rate``, ``end_learning_rate``,
    ``warmup_steps``, ``total_steps``, ``learning_rate_decay_power``."""
    return PolynomialWarmup(cfg.learning_rate, cfg.end_learning_rate, cfg.warmup_steps, cfg.total_steps,
                            cfg.learning_rate_decay_power)


def make_optimizer(cfg) -> AdamW:
    """``Lamb`` or ``AdamW`` (``cfg.optimizer``) with ``cfg.weight_decay`` and its schedule attached
    as ``optimizer.schedule`` (used when ``apply_gradients`` is given no learning rate)."""
    cls = {"lamb": Lamb, "adamw": AdamW}[cfg.optimizer]
    return cls(weight_decay=cfg.weight_decay, schedule=make_schedule(cfg))


__all__ = ["DEFAULT_EXCLUDE", "AdamW", "Lamb", "PolynomialWarmup", "make_optimizer", "make_schedule"]
