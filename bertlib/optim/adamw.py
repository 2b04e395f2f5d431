"""AdamW with BERT's weight-decay exclusions: Google's ``AdamWeightDecayOptimizer`` and the
bias-corrected Adam of Keras / TensorFlow Addons.

One update rule with two switches, so that each published finetuning recipe runs exactly::

    m ← β1·m + (1 − β1)·g
    v ← β2·v + (1 − β2)·g²
    u ← D(m, v)  (+ λ·w  unless the variable is excluded from weight decay)
    w ← w − lr·u

with the Adam direction D, for step t = 1, 2, ... and c1 = 1 − β1ᵗ, c2 = 1 − β2ᵗ:

* ``bias_correction=False`` (default): D = m / (√v + ε) — google-research/bert ``optimization.py``
  ``AdamWeightDecayOptimizer``, the optimizer of Google's SQuAD finetuning (ε 1e-6, λ 0.01).
* ``bias_correction=True``: D = m̂ / (√v̂ + ε) with m̂ = m / c1, v̂ = v / c2 — Adam's Algorithm 1
  (the direction of NVIDIA's LAMB, :class:`bertlib.optim.Lamb`).
* ``bias_correction=True, epsilon_hat=True``: D = (√c2 / c1) · m / (√v + ε) — ε is Kingma & Ba's
  "ε̂" (the form just before their §2.1), as ``tf.keras.optimizers.Adam`` (TF 2.1's
  ``ResourceApplyAdam`` kernel) and therefore ``tfa.optimizers.AdamW``, the reference's SQuAD
  optimizer, compute it; it equals m̂ / (√v̂ + ε/√c2).

Weight decay is decoupled: λ·w is added to the direction and so scaled by the learning rate (w ← w −
lr·λ·w), as Google's optimizer and ``transformers.AdamWeightDecay`` do. ``tfa.optimizers.AdamW``
instead subtracts λ·w unscaled (``var -= weight_decay * var``, before the Adam step); the reference
finetunes with λ = 0, where the two agree. Variables whose name matches any of
``exclude_from_weight_decay`` (regular expressions; default LayerNorm and bias, as Google's) get no
decay. Names are Keras variable paths (``bert/encoder/layer_0/output/LayerNorm/gamma``) or
``tf.Variable.name``.

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

#: the run configs' ``optimizer`` names for AdamW → its settings (β1 0.9 and β2 0.999 in both)
ADAMW_VARIANTS = {
    # tfa.optimizers.AdamW (TFA 0.9.1 weight_decay_optimizers.py:389-400: ε 1e-7, the Keras Adam
    # update): the reference's SQuAD optimizer (aws-samples/deep-learning-models albert/run_squad.py:318)
    "adamw": dict(epsilon=1e-7, bias_correction=True, epsilon_hat=True),
    # google-research/bert optimization.py AdamWeightDecayOptimizer as create_optimizer builds it
    "google_adamw": dict(epsilon=1e-6, bias_correction=False),
}


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
      epsilon_hat: with bias correction, ε is added to √v rather than √v̂ (Keras / TFA Adam).
      schedule: optional ``step -> lr`` callable used when ``apply_gradients`` gets no learning rate.
    """

    def __init__(
        self,
        weight_decay: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE,
        bias_correction: bool = False,
        epsilon_hat: bool = False,
        schedule=None,
        name: str | None = None,
    ):
        if epsilon_hat and not bias_correction:
            raise ValueError("epsilon_hat applies to the bias-corrected update (bias_correction=True)")
        super().__init__(name=name or type(self).__name__.lower())
        self.weight_decay, self.beta_1, self.beta_2, self.epsilon = weight_decay, beta_1, beta_2, epsilon
        self.exclude_from_weight_decay = tuple(exclude_from_weight_decay)
        self.bias_correction, self.epsilon_hat = bias_correction, epsilon_hat
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
            # (√c2 / c1) · m / (√v + ε·√c2) — the same value with two fewer full-size divisions;
            # with epsilon_hat, Keras' (√c2 / c1) · m / (√v + ε)
            sqrt_c2 = tf.sqrt(1.0 - tf.pow(self.beta_2, step))
            eps = self.epsilon if self.epsilon_hat else self.epsilon * sqrt_c2
            update = m / (tf.sqrt(v) + eps) * (sqrt_c2 / (1.0 - tf.pow(self.beta_1, step)))
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
