"""Dynamic loss scaling for float16 training (a no-op for fp32 / bf16).

fp16 gradients of small losses underflow; multiplying the loss by a scale S before differentiation
keeps them representable, and dividing the (allreduced) gradients by S restores their value. The
scale adapts (Micikevicius et al. 2018, as in NVIDIA's BERT and Keras' ``LossScaleOptimizer``):

* any inf/nan in the gradients → the step is skipped and S is halved (the optimizer's ``iterations``
  still advance, as in ``tf.keras``' ``LossScaleOptimizer``: see :mod:`bertlib.train.loop`);
* ``growth_interval`` consecutive finite steps → S is doubled;
* S falling below 1 means the gradients overflow even unscaled: training has diverged, and
  :func:`check_scale` stops it with a message saying so.

The state (scale, good-step counter) lives in tf.Variables so it is checkpointed with the model.
"""

from __future__ import annotations

import tensorflow as tf


class LossScaleCollapsed(RuntimeError):
    """The dynamic loss scale fell below 1 (gradients non-finite even without scaling)."""


class DynamicLossScale(tf.Module):
    """Loss scale S with halve-on-overflow / double-after-``growth_interval``-good-steps updates.

    Args:
      initial_scale: starting S (2**15 by default, as NVIDIA's BERT).
      growth_interval: finite steps in a row before S doubles.
      factor: multiplier for growth, divisor on overflow.
    """

    dynamic = True

    def __init__(self, initial_scale: float = 2.0**15, growth_interval: int = 2000, factor: float = 2.0):
        super().__init__(name="loss_scale")
        self.scale = tf.Variable(float(initial_scale), trainable=False, dtype=tf.float32, name="scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="good_steps")
        self.growth_interval = int(growth_interval)
        self.factor = float(factor)

    def update(self, grads_finite: tf.Tensor) -> None:
        """Adjust S after a step whose gradients were (``grads_finite``, bool scalar) finite or not."""
        grow = tf.logical_and(grads_finite, self.good_steps + 1 >= self.growth_interval)
        new_scale = tf.where(
            grads_finite, tf.where(grow, self.scale * self.factor, self.scale), self.scale / self.factor
        )
        self.scale.assign(new_scale)
        self.good_steps.assign(
            tf.where(
                tf.logical_and(grads_finite, tf.logical_not(grow)), self.good_steps + 1, tf.zeros_like(self.good_steps)
            )
        )

    def variables_to_sync(self) -> list[tf.Variable]:
        return [self.scale, self.good_steps]


class NoLossScale(tf.Module):
    """S = 1 always (fp32 and bfloat16 need no loss scaling); steps with inf/nan are still skipped."""

    dynamic = False

    def __init__(self):
        super().__init__(name="loss_scale")
        self.scale = tf.constant(1.0, tf.float32)

    def update(self, grads_finite: tf.Tensor) -> None:
        del grads_finite

    def variables_to_sync(self) -> list[tf.Variable]:
        return []


def make_loss_scale(precision: str, initial_scale: float = 2.0**15, growth_interval: int = 2000):
    """DynamicLossScale for ``mixed_float16``, NoLossScale for ``fp32`` / ``mixed_bfloat16``."""
    if precision == "mixed_float16":
        return DynamicLossScale(initial_scale, growth_interval)
    return NoLossScale()


def check_scale(loss_scale, step: int) -> None:
    """Raise LossScaleCollapsed with a clear message if the dynamic scale fell below 1."""
    if loss_scale.dynamic and float(loss_scale.scale.numpy()) < 1.0:
        raise LossScaleCollapsed(
            f"fp16 loss scale fell below 1 at step {step}: the gradients are inf/nan even unscaled, so "
            "training has diverged. Lower learning_rate, check the data, or use precision fp32/mixed_bfloat16."
        )
