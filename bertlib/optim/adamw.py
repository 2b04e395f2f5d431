"""AdamW with BERT's weight-decay exclusions, as Google's ``AdamWeightDecayOptimizer``.

The reference is ``AdamWeightDecayOptimizer`` in google-research/bert ``optimization.py`` (the
optimizer of the original SQuAD finetuning), reproduced exactly — including its choice of **no bias
correction** of the moments — so that finetuning hyperparameters published for BERT carry over::

    m ← β1·m + (1 − β1)·g
    v ← β2·v + (1 − β2)·g²
    u ← m / (√v + ε)  (+ λ·w  unless the variable is excluded from weight decay)
    w ← w − lr·u

``bias_correction=True`` gives Adam's bias-corrected m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ) instead
(Loshchilov & Hutter's AdamW). Variables whose name matches any of ``exclude_from_weight_decay``
(regular expressions; default LayerNorm and bias, as Google's) get no decay. Names are Keras
variable paths (``bert/encoder/layer_0/output/LayerNorm/gamma``) or ``tf.Variable.name``.

The optimizer is a plain ``tf.Module``: its step counter and moment slots are ``tf.Variable``s that
``tf.train.Checkpoint(optimizer=opt)`` saves and restores, and :meth:`apply_gradients` works eagerly
and inside ``tf.function`` (slots are created by :meth:`build`, called on first use).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import tensorflow as tf

#: Google's exclusion list (``run_pretraining.py`` / ``run_squad.py``).
DEFAULT_EXCLUDE = ("LayerNorm", "layer_norm", "bias")


def variable_name(var) -> str:
    """Keras variable path (``bert/pooler/dense/kernel``) or the ``tf.Variable`` name without ``:0``."""
    name = getattr(var, "path", None) or var.name
    return name[:-2] if name.endswith(":0") else name


def matches_any(name: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


class AdamW(tf.Module):
    """Adam with decoupled weight decay (Google's ``AdamWeightDecayOptimizer`` by default).

    Args:
      weight_decay: λ, added as λ·w to the update of non-excluded variables.
      beta_1, beta_2, epsilon: Adam constants (Google's 0.9, 0.999, 1e-6).
      exclude_from_weight_decay: regexes of variable names that get no weight decay.
      bias_correction: divide the moments by (1 − βᵗ) (False = Google's optimizer).
      schedule: optional ``step -> lr`` callable used when ``apply_gradients`` gets no learning rate.
    """

    def __init__(self, weight_decay: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-6, exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE,
                 bias_correction: bool = False, schedule=None, name: str | None = None):
        super().__init__(name=name or type(self).__name__.lower())
        self.weight_decay, self.beta_1, self.beta_2, self.epsilon = weight_decay, beta_1, beta_2, epsilon
        self.exclude_from_weight_decay = tuple(exclude_from_weight_decay)
        self.bias_correction = bias_correction
        self.schedule = schedule
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m: list[tf.Variable] = []
        self.v: list[tf.Variable] = []
        self._index: dict[int, int] = {}

    def build(self, var_list: Iterable) -> None:
        """Create the zero-initialized first/second moment slots of each variable (once)."""
        for var in var_list:
            if id(var) in self._index:
                continue
            self._index[id(var)] = len(self.m)
            slot = variable_name(var).replace("/", "_")
            self.m.append(tf.Variable(tf.zeros(var.shape, tf.float32), trainable=False, name=f"{slot}_m"))
            self.v.append(tf.Variable(tf.zeros(var.shape, tf.float32), trainable=False, name=f"{slot}_v"))

    def decays(self, var) -> bool:
        """Whether weight decay applies to ``var`` (its name matches no exclusion pattern)."""
        return self.weight_decay > 0 and not matches_any(variable_name(var), self.exclude_from_weight_decay)

    def _direction(self, var, grad, m, v, step) -> tf.Tensor:
        """Update moments in place and return the update direction u (before the learning rate)."""
        # m ← β1·m + (1 − β1)·g and v ← β2·v + (1 − β2)·g², as in-place increments (fewer passes)
        m = m.assign_add((grad - m) * (1.0 - self.beta_1))
        v = v.assign_add((tf.square(grad) - v) * (1.0 - self.beta_2))
        if self.bias_correction:
            # m̂ / (√v̂ + ε) with m̂ = m/c1, v̂ = v/c2, rewritten with the scalars folded:
            # (√c2 / c1) · m / (√v + ε·√c2) — the same value with two fewer full-size divisions
            sqrt_c2 = tf.sqrt(1.0 - tf.pow(self.beta_2, step))
            update = m / (tf.sqrt(v) + self.epsilon * sqrt_c2) * (sqrt_c2 / (1.0 - tf.pow(self.beta_1, step)))
        else:
            update = m / (tf.sqrt(v) + self.epsilon)
        if self.decays(var):
            update += self.weight_decay * tf.cast(var, tf.float32)
        return update

    def _scale(self, var, update) -> tf.Tensor:
        """Per-variable step multiplier (1 for AdamW; LAMB's trust ratio)."""
        return tf.constant(1.0)

    def apply_gradients(self, grads_and_vars, learning_rate=None) -> tf.Tensor:
        """Apply one update: ``w ← w − lr · scale(w, u) · u`` for each (gradient, variable) pair.

        Pairs whose gradient is None are skipped; sparse gradients (``IndexedSlices``) are densified.
        ``learning_rate`` defaults to ``schedule(iterations)``. Increments :attr:`iterations` and
        returns the learning rate used.
        """
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        self.build([v for _, v in pairs])
        if learning_rate is None:
            if self.schedule is None:
                raise ValueError("apply_gradients needs a learning_rate (the optimizer has no schedule)")
            learning_rate = self.schedule(self.iterations)
        lr = tf.cast(learning_rate, tf.float32)
        step = tf.cast(self.iterations + 1, tf.float32)
        for grad, var in pairs:
            i = self._index[id(var)]
            grad = tf.cast(tf.convert_to_tensor(grad), tf.float32)
            update = self._direction(var, grad, self.m[i], self.v[i], step)
            var.assign_sub(tf.cast(lr * self._scale(var, update) * update, var.dtype))
        self.iterations.assign_add(1)
        return lr
