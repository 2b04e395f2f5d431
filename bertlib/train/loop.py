"""The generic training loop shared by pretraining and SQuAD finetuning.

One optimizer step, per process::

    for each of k micro-batches i:                  ┐ one XLA-compiled function
        dropout seeds ← (layer seed, rank, position + i)  │ (jit_compile unless skip_xla)
        grads += ∇(loss · S)                        ┘
    grad_clip global_mean (bertlib's):              grad_clip per_rank_sum (the reference's):
        grads = grads / (k · S)                         grads = grads / S      (this rank's unscaled sum)
                                                        clip grads to max_grad_norm (this rank alone)
    grads = allreduce_mean(grads)                   Horovod, outside the compiled code; fp16 on the
                                                    wire with allreduce_compression: fp16
    finite = isfinite(‖grads‖)                      ┐
    global_mean: clip grads to max_grad_norm        │ one tf.function
    if finite: optimizer.apply_gradients(grads, lr(step))│
    else: optimizer.iterations += 1                 │
    S = loss_scale.update(finite);  step += 1       ┘

S is the dynamic fp16 loss scale (1 for fp32/bf16). With ``global_mean`` the averaged micro-batch
gradients equal the gradient of one batch of k·b examples when the loss is a per-example mean (tests
check this), and that mean is clipped. With ``per_rank_sum`` (aws-samples/deep-learning-models
``albert/run_pretraining.py`` ``allreduce()``) each rank clips the *sum* of its k micro-batch gradients,
unscaled, before the average: the update is ``mean_r clip(Σ_i g_ri)``, which no single-process batch
reproduces (a rank's large gradient is cut before it meets the others), and which is k times the
mean gradient when nothing is clipped (LAMB and Adam cancel a constant factor, up to ε).
``step`` counts optimizer steps including skipped (overflowing) ones, so that the data position is
``step · k`` micro-batches per rank and a resumed run skips exactly what was consumed. A skipped step
also advances the optimizer's ``iterations`` (Adam/LAMB bias correction), as ``tf.keras``'
``mixed_precision.LossScaleOptimizer`` does (its ``do_not_apply_fn``; ``tf_keras`` 2.21 still has it):
both counters stay equal. (TF 2.1–2.2's ``experimental`` LossScaleOptimizer and Keras 3's advance no
counter on a skipped step, so there the learning-rate schedule, which reads the same ``iterations``,
stays put too.)

Dropout: every rank draws its own masks. Before each micro-batch, each Keras ``SeedGenerator``
(one per Dropout layer; the TF backend draws ``stateless_dropout`` with its ``state`` [seed, counter]
and then adds 1 to the counter) gets the counter ``(position + i) · world + rank``, position being
the micro-batches this rank consumed before the step. The stream is thus a pure function of the
layer seeds (the same on all ranks: broadcast and checkpointed), the rank and the data position, so
no rank's RNG state has to be saved and a resumed run draws exactly the masks of an uninterrupted one.

State (model, optimizer slots, step, loss scale, data position) is checkpointed every
``checkpoint_frequency`` steps and at the end, restored automatically from the newest checkpoint,
and broadcast from rank 0 after initialization or restore. With it every rank saves its input
iterator (:class:`~bertlib.train.checkpointing.InputCheckpoints`), so a resume continues the data
stream without re-reading the consumed records (it falls back to skipping them, exactly, when the
state is missing or was saved by another number of processes).

Stops (SageMaker's SIGTERM before its SIGKILL 120 s later; :mod:`bertlib.core.stop`): while ``fit`` runs,
a SIGTERM only sets a flag. Each rank puts its flag into the step's allreduce (one more scalar), so every
rank learns of any rank's stop at the same step; all then finish that step, skip its evaluation, save the
checkpoint of that step (rank 0 the model, every rank its input state) and return. A resumed run starts
at that step: a stop loses no completed step.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable, Iterable, Iterator

import tensorflow as tf

from bertlib.core.config import ALLREDUCE_COMPRESSIONS as COMPRESSIONS
from bertlib.core.config import GRAD_CLIP_MODES, global_batch, to_yaml
from bertlib.core.log import get_logger
from bertlib.core.stop import StopSignal
from bertlib.optim import make_optimizer, make_schedule
from bertlib.optim.loss_scale import NoLossScale, check_scale, make_loss_scale
from bertlib.train import distributed
from bertlib.train.checkpointing import InputCheckpoints, TrainingCheckpoints, model_state
from bertlib.train.metrics import MetricsWriter

_log = get_logger(__name__)

#: tf.data options of the training input: keep a ``skip(0)``, which tf.data's no-op elimination
#: would drop, so that pipelines built for any data position have the same saved-iterator layout
_KEEP_SKIP = tf.data.Options()
_KEEP_SKIP.experimental_optimization.noop_elimination = False


class Trainer:
    """Gradient accumulation, loss scaling, clipping, Horovod averaging, checkpoints and metrics.

    Args:
      model: a Keras model; ``model(batch, training=True)`` → outputs.
      loss_fn: ``(outputs, batch) -> dict`` of float32 scalars with ``"loss"`` (a per-example mean);
        every entry is averaged over micro-batches and processes and logged.
      optimizer: an object with ``apply_gradients(grads_and_vars, learning_rate)`` (bertlib.optim).
      schedule: ``step (int64 tensor) -> learning rate``.
      total_steps: optimizer steps to run.
      accumulation_steps: micro-batches k per optimizer step.
      max_grad_norm: global-norm clipping threshold (0 = off).
      grad_clip: ``"global_mean"``: clip the averaged mean gradient after the allreduce;
        ``"per_rank_sum"``: each rank clips its unscaled sum over the k micro-batches before it
        (the reference's; see the module docstring).
      compression: ``"none"`` or ``"fp16"``: the gradients cross the allreduce as float16
        (``hvd.Compression.fp16``, the reference's); losses and norms stay float32.
      loss_scale: a ``bertlib.optim.loss_scale`` object (default: none).
      jit_compile: XLA-compile the gradient computation.
      checkpoint_dir: resume/periodic checkpoints go here (None = no checkpoints).
      checkpoint_frequency, keep_checkpoints: save every N steps, keep the newest M.
      log_frequency: log averaged metrics every N steps.
      metrics: a MetricsWriter (rank 0) or None for no output.
      global_batch_size: sequences per optimizer step over all processes (for seq_per_sec).
      allreduce: gradient/metric averaging across processes, ``list -> list`` (default: Horovod via
        distributed, with ``compression`` for the gradients); a given one is used as is for both.
    """

    @classmethod
    def from_config(cls, cfg, model, loss_fn: Callable, paths, phase: str, world: int, chief: bool) -> "Trainer":
        """The Trainer a run config asks for (pretraining or SQuAD): its optimizer and schedule, loss
        scaling, accumulation, XLA, checkpointing and a metrics writer for ``phase``. Rank 0 also writes
        the resolved ``config.yaml`` into the run's output dir (through a temp name)."""
        if chief:
            paths.output_dir.mkdir(parents=True, exist_ok=True)
            tmp = paths.config_file.with_name(f".config.yaml.tmp{os.getpid()}")
            tmp.write_text(to_yaml(cfg))
            os.replace(tmp, paths.config_file)
        return cls(
            model,
            loss_fn,
            make_optimizer(cfg),
            make_schedule(cfg),
            total_steps=cfg.total_steps,
            accumulation_steps=cfg.gradient_accumulation_steps,
            max_grad_norm=cfg.max_grad_norm,
            grad_clip=cfg.grad_clip,
            compression=cfg.allreduce_compression,
            loss_scale=make_loss_scale(cfg.precision, cfg.initial_loss_scale),
            jit_compile=not cfg.skip_xla,
            checkpoint_dir=paths.checkpoint_dir,
            checkpoint_frequency=cfg.checkpoint_frequency,
            keep_checkpoints=cfg.keep_checkpoints,
            log_frequency=cfg.log_frequency,
            metrics=MetricsWriter(paths.output_dir, phase, cfg.total_steps, enabled=chief),
            global_batch_size=global_batch(cfg, world),
        )

    def __init__(
        self,
        model,
        loss_fn: Callable,
        optimizer,
        schedule: Callable,
        *,
        total_steps: int,
        accumulation_steps: int = 1,
        max_grad_norm: float = 1.0,
        grad_clip: str = "global_mean",
        compression: str = "none",
        loss_scale=None,
        jit_compile: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_frequency: int = 1000,
        keep_checkpoints: int = 3,
        log_frequency: int = 10,
        metrics: MetricsWriter | None = None,
        global_batch_size: int | None = None,
        allreduce: Callable[[list], list] | None = None,
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.k = int(accumulation_steps)
        self.max_grad_norm = float(max_grad_norm)
        if grad_clip not in GRAD_CLIP_MODES:
            raise ValueError(f"grad_clip must be one of {GRAD_CLIP_MODES}, not {grad_clip!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        self.clip_per_rank = grad_clip == "per_rank_sum"
        self.compression = compression
        self.loss_scale = loss_scale if loss_scale is not None else NoLossScale()
        self.log_frequency = int(log_frequency)
        self.checkpoint_frequency = int(checkpoint_frequency)
        self.metrics = metrics
        self.global_batch_size = global_batch_size
        self.allreduce = allreduce or distributed.allreduce_mean
        self.allreduce_grads = allreduce or functools.partial(distributed.allreduce_mean, compression=compression)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.data_position = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_position")
        self.variables = list(model.trainable_variables)
        self.rank, self.world = distributed.rank(), distributed.size()
        # the dropout SeedGenerators' ``state`` variables ([2] int64: layer seed, counter)
        self._seed_states = [v for v in model_state(model)["model_rng"] if v.path.endswith("seed_generator_state")]
        self._grad_index: list[int] | None = None  # variables that receive a gradient (set when traced)
        # autograph off: the step's control flow is explicit (tf.cond) and converting the model's and
        # optimizer's Python source costs seconds at every start
        self._compute = tf.function(
            self._compute_grads, jit_compile=jit_compile, reduce_retracing=True, autograph=False
        )
        self._prepare = tf.function(self._prepare_grads, jit_compile=jit_compile, autograph=False)
        self._apply = tf.function(self._apply_grads, autograph=False)
        build = getattr(optimizer, "build", None)
        if callable(build):  # create optimizer slots now: restore and broadcast need them to exist
            build(self.variables)
        self.checkpoints = self.inputs = None
        if checkpoint_dir is not None:
            self.checkpoints = TrainingCheckpoints(
                checkpoint_dir,
                keep=keep_checkpoints,
                writer=distributed.is_chief(),
                **model_state(model),
                optimizer=optimizer,
                step=self.step,
                data_position=self.data_position,
                loss_scale=self.loss_scale,
            )
            self.inputs = InputCheckpoints(checkpoint_dir, self.rank, self.world, keep=keep_checkpoints)
        self.restored_from: str | None = None

    # ---- state -----------------------------------------------------------------------------------------
    def state_variables(self) -> list:
        """Everything that must be identical on all processes: weights, the dropout layer seeds (each
        rank then derives its own mask stream from them, see :meth:`_seed_dropout`), optimizer
        slots, counters."""
        opt_vars = getattr(self.optimizer, "variables", [])
        opt_vars = opt_vars() if callable(opt_vars) else opt_vars
        return (
            list(self.model.variables)
            + list(opt_vars)
            + [self.step, self.data_position]
            + self.loss_scale.variables_to_sync()
        )

    def restore_or_initialize(self, init_fn: Callable[[], str] | None = None) -> int:
        """Resume from the newest checkpoint, else call ``init_fn`` (e.g. load pretrained weights),
        on rank 0; then broadcast all state from rank 0. Returns the step training starts at."""
        if distributed.is_chief():
            if self.checkpoints is not None:
                self.restored_from = self.checkpoints.restore_latest()
            if self.restored_from:
                self._message(f"resumed from {self.restored_from} at step {int(self.step.numpy())}")
            elif init_fn is not None:
                self._message(f"initialized weights from {init_fn()}")
        distributed.broadcast_variables(self.state_variables(), root_rank=0)
        return int(self.step.numpy())

    # ---- compiled pieces ---------------------------------------------------------------------------------
    def _seed_dropout(self, micro):
        """Set each dropout SeedGenerator's counter for micro-batch ``micro`` (int64 scalar) of this step
        on this rank: ``(data_position + micro) · world + rank`` (unique per rank and micro-batch; the
        layer seed, ``state[0]``, is kept). Each Dropout draws once per forward pass."""
        counter = (self.data_position + micro) * self.world + self.rank
        for state in self._seed_states:
            state.assign(tf.stack([state.value[0], counter]))

    def _compute_grads(self, batch, micro, acc=None):
        """Gradients of ``loss · S`` for micro-batch ``micro`` (int64 scalar) of the step, and its loss
        dict. ``acc=None`` (one micro-batch per step): the gradients of the variables that get one.
        Accumulating: ``acc`` holds the sums so far for every trainable variable (zeros before the
        first micro-batch, so that one traced and compiled function serves every micro-batch) and the
        returned gradients are ``acc + g``, again for every variable (a variable without a gradient
        keeps its zeros; :meth:`train_step` drops it)."""
        self._seed_dropout(micro)
        with tf.GradientTape() as tape:
            outputs = self.model(batch, training=True)
            losses = self.loss_fn(outputs, batch)
            scaled = tf.cast(losses["loss"], tf.float32) * self.loss_scale.scale
        grads = tape.gradient(scaled, self.variables)
        if self._grad_index is None:
            self._grad_index = [i for i, g in enumerate(grads) if g is not None]
        losses = {k: tf.cast(v, tf.float32) for k, v in losses.items()}
        if acc is None:
            return [tf.convert_to_tensor(grads[i]) for i in self._grad_index], losses
        return [a if g is None else a + tf.convert_to_tensor(g) for a, g in zip(acc, grads)], losses

    def _prepare_grads(self, grads):
        """This rank's summed gradients of ``loss · S`` (list of variable-shaped float32) → what it
        contributes to the allreduce, and the norm this rank reports (float32 scalar).

        ``global_mean``: the mean micro-batch gradient ``Σ/(k·S)``; the norm is unused (0).
        ``per_rank_sum``: the unscaled sum ``Σ/S`` clipped to ``max_grad_norm``, and its norm before
        clipping (inf/nan if this rank overflowed: ``clip_by_global_norm`` then makes every entry nan,
        so the average is non-finite on every rank and all skip the step together)."""
        scale = self.loss_scale.scale
        if not self.clip_per_rank:
            return [g / (scale * self.k) for g in grads], tf.constant(0.0)
        grads = [g / scale for g in grads]
        norm = tf.linalg.global_norm(grads)
        if self.max_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm, use_norm=norm)
        return grads, norm

    def _apply_grads(self, grads, rank_norm):
        """Check, clip (``global_mean``) and apply the averaged unscaled gradients; returns (finite,
        grad_norm, lr, scale). ``grad_norm`` is the norm of the averaged gradient (``global_mean``) or
        the ranks' mean of their norms before clipping, ``rank_norm`` (``per_rank_sum``)."""
        scale = tf.identity(self.loss_scale.scale)
        grad_norm = tf.linalg.global_norm(grads)
        finite = tf.math.is_finite(grad_norm)
        if self.max_grad_norm > 0 and not self.clip_per_rank:
            grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm, use_norm=grad_norm)
        if self.clip_per_rank:
            grad_norm = rank_norm
        lr = tf.cast(self.schedule(self.step), tf.float32)
        variables = [self.variables[i] for i in self._grad_index]

        def apply():
            self.optimizer.apply_gradients(zip(grads, variables), lr)
            return tf.constant(True)

        def skip():  # as TF's LossScaleOptimizer: the skipped step still counts for bias correction
            self.optimizer.iterations.assign_add(1)
            return tf.constant(False)

        tf.cond(finite, apply, skip)
        self.loss_scale.update(finite)
        self.step.assign_add(1)
        self.data_position.assign_add(self.k)
        return finite, grad_norm, lr, scale

    def train_step(self, micro_batches: Iterator, stop: StopSignal | None = None) -> dict:
        """One optimizer step from k micro-batches of ``micro_batches``; returns metric tensors, and
        ``stop``: True on every rank when any rank's ``stop`` was requested by the time its gradients
        were computed (its flag travels in the step's allreduce, so all ranks agree on the same step)."""
        if self.k == 1:
            grads, losses = self._compute(next(micro_batches), tf.constant(0, tf.int64))
        else:
            acc, losses = [tf.zeros(v.shape, v.dtype) for v in self.variables], {}
            for i in range(self.k):
                acc, micro_losses = self._compute(next(micro_batches), tf.constant(i, tf.int64), acc)
                losses = {k: losses[k] + v if k in losses else v for k, v in micro_losses.items()}
            grads = [acc[i] for i in self._grad_index]
        grads, rank_norm = self._prepare(grads)
        names = list(losses)  # the loss_fn's order: the same on every rank
        flag = tf.constant(1.0 if stop is not None and stop.requested else 0.0)
        scalars = [losses[n] / self.k for n in names] + [flag, rank_norm]
        if self.compression == "none":  # one grouped allreduce
            reduced = self.allreduce(list(grads) + scalars)
            grads, values = reduced[: len(grads)], reduced[len(grads) :]
        else:  # compressed gradients, float32 scalars
            grads, values = self.allreduce_grads(list(grads)), self.allreduce(scalars)
        finite, grad_norm, lr, scale = self._apply(grads, values[-1])
        stopping = float(values[-2]) > 0
        values = values[:-2]
        out = dict(zip(names, values))
        out.update(finite=finite, grad_norm=grad_norm, learning_rate=lr, loss_scale=scale, stop=stopping)
        return out

    # ---- the loop ----------------------------------------------------------------------------------------
    def fit(
        self,
        data_fn: Callable[[int], Iterable],
        init_fn: Callable[[], str] | None = None,
        evaluate: Callable[[], dict] | None = None,
        evaluate_frequency: int = 0,
    ) -> dict:
        """Train until ``total_steps``.

        Args:
          data_fn: ``skip -> iterable of micro-batches`` for this rank, starting after ``skip``
            micro-batches (the data position of a resumed run). A ``tf.data.Dataset`` must be the
            same pipeline for every ``skip`` (``.skip(skip)`` even for 0): its iterator state is saved
            with each checkpoint and restored into ``data_fn(0)``.
          init_fn: weight initialization for a fresh run (not called when resuming).
          evaluate: held-out evaluation ``() -> dict of metrics``, called on every process after the
            steps that are multiples of ``evaluate_frequency`` and after the last one; its entries join
            that step's metrics line (a line of their own at a step that logs nothing else). Its time
            counts in no window's throughput. It must not change the training state.

        Returns:
          The last logged metrics (python floats), plus ``steps_run`` and ``wall_time_s``, and
          ``stopped_at_step`` when a SIGTERM ended it early (see the module docstring).
        """
        with StopSignal(label=f"rank {self.rank}") as stop:
            return self._fit(data_fn, init_fn, evaluate, evaluate_frequency, stop)

    def _fit(self, data_fn, init_fn, evaluate, evaluate_frequency, stop: StopSignal) -> dict:
        """:meth:`fit`'s loop; ``stop`` set ends it after the step all ranks agreed on, with a checkpoint."""
        start_step = self.restore_or_initialize(init_fn)
        it = self._input_iterator(data_fn)
        t_start = t_last = time.perf_counter()
        window: list[dict] = []
        last: dict = {}
        step = start_step
        stopped = False
        if self.metrics is not None:
            self.metrics.advance(step)
        while step < self.total_steps:
            out = self.train_step(it, stop)
            step += 1
            stopped = out["stop"]
            if self.loss_scale.dynamic:
                check_scale(self.loss_scale, step)
            window.append(out)
            logged = step % self.log_frequency == 0 or step == self.total_steps
            if logged:
                now = time.perf_counter()
                last = self._summarize(step, window, now - t_last, now - t_start)
                window, t_last = [], now
            if (
                evaluate is not None
                and not stopped  # a stop has 120 s: checkpoint first, the evaluation comes with the resumed run
                and (step == self.total_steps or (evaluate_frequency and step % evaluate_frequency == 0))
            ):
                t_eval = time.perf_counter()
                held_out = evaluate()
                t_last += time.perf_counter() - t_eval
                if logged:
                    last.update(held_out)
                elif self.metrics is not None:
                    self.metrics.log({"step": step, **held_out})
            if logged and self.metrics is not None:
                self.metrics.log(last)
            if self.metrics is not None:
                self.metrics.advance(step)
            if self.checkpoints is not None and (step % self.checkpoint_frequency == 0 or stopped):
                self._save(step, it)
            if stopped:
                break
        if self.checkpoints is not None and step > start_step and step % self.checkpoint_frequency and not stopped:
            self._save(step, it)
        if stopped:
            where = f"checkpoint written to {self.checkpoints.directory}" if self.checkpoints else "no checkpoint_dir"
            self._message(
                f"stopped by {stop.name or 'SIGTERM'} after step {step}; {where}; resume by relaunching the job"
            )
            if not last:
                last = {"step": step}
            last["stopped_at_step"] = step
        last.update(steps_run=step - start_step, wall_time_s=time.perf_counter() - t_start)
        return last

    def _input_iterator(self, data_fn: Callable[[int], Iterable]) -> Iterator:
        """This rank's micro-batches from the (restored, broadcast) data position on: a fresh
        ``data_fn(0)`` iterator set to the state saved with the restored checkpoint, so no consumed
        record is read again; without such a state, ``data_fn(position)``, which skips them."""
        position, step = int(self.data_position.numpy()), int(self.step.numpy())
        if position and self.inputs is not None:
            ds = data_fn(0)
            if isinstance(ds, tf.data.Dataset):
                it = iter(ds.with_options(_KEEP_SKIP))
                why = self.inputs.restore(it, step)
                if why is None:
                    self._message(f"input restored at data position {position} from {self.inputs.prefix(step)}")
                    return it
                _log.info(
                    f"rank {self.rank}: {why}: skipping {position} micro-batches to the data "
                    "position (reads every consumed record)"
                )
        ds = data_fn(position)
        return iter(ds.with_options(_KEEP_SKIP) if isinstance(ds, tf.data.Dataset) else ds)

    def _save(self, step: int, it: Iterator) -> None:
        """The model checkpoint (rank 0) and this rank's input iterator state (every rank) for ``step``."""
        self.checkpoints.save(step)
        if isinstance(it, tf.data.Iterator):
            self.inputs.save(it, step)

    def _summarize(self, step: int, window: list[dict], dt: float, elapsed: float) -> dict:
        """Average the loss entries over the window's steps; lr/scale/grad_norm from its last step."""
        finite_steps = [o for o in window if bool(o["finite"])] or window
        skip = {"finite", "grad_norm", "learning_rate", "loss_scale", "stop"}
        d = {"step": step}
        for k in window[-1]:
            if k not in skip:
                d[k] = float(sum(float(o[k]) for o in finite_steps) / len(finite_steps))
        d["learning_rate"] = float(window[-1]["learning_rate"])
        d["loss_scale"] = float(window[-1]["loss_scale"])
        d["grad_norm"] = float(window[-1]["grad_norm"])
        if self.global_batch_size:
            d["seq_per_sec"] = self.global_batch_size * len(window) / max(dt, 1e-9)
        d["elapsed_s"] = elapsed
        d["skipped_steps"] = sum(1 for o in window if not bool(o["finite"]))
        return d

    def _message(self, text: str) -> None:
        if self.metrics is not None:
            self.metrics.message(text)
