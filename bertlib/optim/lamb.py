"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"),
as in NVIDIA's BERT ``LAMBOptimizer`` that the reference pretraining used::

    m ← β1·m + (1 − β1)·g,            v ← β2·v + (1 − β2)·g²
    m̂ = m / (1 − β1ᵗ),                v̂ = v / (1 − β2ᵗ)
    u = m̂ / (√v̂ + ε) + λ·w            (λ·w only if w is not excluded from weight decay)
    r = ‖w‖ / ‖u‖                     (1 if either norm is 0, or if w is excluded from adaptation)
    w ← w − lr · r · u

Weight decay is part of the update *before* the trust ratio (unlike ``keras.optimizers.Lamb``,
which decays separately and adapts every variable). LayerNorm weights and biases are excluded from
both weight decay and the trust ratio by default, as in the original BERT/LAMB code.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from bertlib.optim.adamw import DEFAULT_EXCLUDE, AdamW, matches_any, variable_name


class Lamb(AdamW):
    """Layer-wise adaptive moments (LAMB). Bias-corrected Adam direction plus weight decay, scaled
    per variable by the trust ratio ‖w‖/‖u‖.

    Args: as :class:`AdamW` (bias correction always on), plus ``exclude_from_layer_adaptation``
    (regexes; default = ``exclude_from_weight_decay``) naming variables whose trust ratio is 1.
    """

    def __init__(
        self,
        weight_decay: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE,
        exclude_from_layer_adaptation: Sequence[str] | None = None,
        schedule=None,
        name: str | None = None,
    ):
        super().__init__(
            weight_decay,
            beta_1,
            beta_2,
            epsilon,
            exclude_from_weight_decay,
            bias_correction=True,
            schedule=schedule,
            name=name,
        )
        self.exclude_from_layer_adaptation = tuple(
            self.exclude_from_weight_decay if exclude_from_layer_adaptation is None else exclude_from_layer_adaptation
        )

    def _scale(self, var, update) -> tf.Tensor:
        if matches_any(variable_name(var), self.exclude_from_layer_adaptation):
            return tf.constant(1.0)
        w_norm = tf.norm(tf.cast(var, tf.float32))
        u_norm = tf.norm(update)
        return tf.where((w_norm > 0) & (u_norm > 0), w_norm / tf.where(u_norm > 0, u_norm, 1.0), 1.0)
