"""Learning-rate schedules.

:class:`PolynomialWarmup` is the schedule of the BERT pretraining recipe (the seed uses power 0.5 for
LAMB pretraining, power 1.0 — linear decay — for SQuAD): linear warmup from 0 to ``lr`` over
``warmup`` steps, then polynomial decay from ``lr`` to ``end_lr`` over the remaining
``total - warmup`` steps, then constant ``end_lr``::

    step < warmup:           lr · step / warmup
    warmup ≤ step ≤ total:   end_lr + (lr − end_lr) · (1 − (step − warmup) / (total − warmup)) ** power
    step > total:            end_lr

``step`` is the number of optimizer updates already applied (0 for the first update), as
``global_step`` in google-research/bert's ``optimization.py``. Unlike that file (which decays from
step 0 and overrides only the warmup), the decay starts at the end of warmup, so the peak reached is
exactly ``lr`` and the curve is continuous — the form of ``LinearWarmupPolyDecaySchedule`` in the
TF 2 / Horovod BERT code that produced the reference row (aws-samples/deep-learning-models).
"""

from __future__ import annotations

import tensorflow as tf


class PolynomialWarmup:
    """Callable ``step -> learning rate`` (float32 scalar tensor), usable inside ``tf.function``."""

    def __init__(self, lr: float, end_lr: float, warmup: int, total: int, power: float = 1.0):
        if total < 1 or warmup < 0 or warmup > total:
            raise ValueError(f"need 0 <= warmup ({warmup}) <= total ({total}) and total >= 1")
        self.lr, self.end_lr = float(lr), float(end_lr)
        self.warmup, self.total, self.power = int(warmup), int(total), float(power)

    def __call__(self, step) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warmup_lr = self.lr * step / max(self.warmup, 1)
        decay_steps = max(self.total - self.warmup, 1)
        done = tf.clip_by_value((step - self.warmup) / decay_steps, 0.0, 1.0)
        decay_lr = self.end_lr + (self.lr - self.end_lr) * (1.0 - done) ** self.power
        return tf.where(step < self.warmup, warmup_lr, decay_lr)

    def get_config(self) -> dict:
        return {"lr": self.lr, "end_lr": self.end_lr, "warmup": self.warmup, "total": self.total, "power": self.power}

    def __repr__(self) -> str:
        return "PolynomialWarmup(" + ", ".join(f"{k}={v}" for k, v in self.get_config().items()) + ")"
