"""Data-parallel plumbing: Horovod when present, a plain single process otherwise.

Facts this module is built around (Keras 3 + Horovod 0.28.1, measured with both):

* ``hvd.DistributedGradientTape`` / ``hvd.broadcast_variables(model.variables)`` fail on Keras 3
  variables, so gradients are averaged with ``hvd.grouped_allreduce(grads, op=hvd.Average)`` and
  variables broadcast with ``v.assign(hvd.broadcast(tf.convert_to_tensor(v), 0))``.
* ``hvd.allreduce`` cannot run inside a ``jit_compile=True`` function: the trainer compiles the
  gradient computation, then calls :func:`allreduce_mean` outside it.

How many processes were *asked for* is read from the launcher's environment (``HOROVOD_SIZE`` from
``horovodrun`` with Gloo, ``OMPI_COMM_WORLD_SIZE`` / ``PMI_SIZE`` from mpirun) without importing
anything, so that "2 processes but no Horovod" is a clear error before TensorFlow starts.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys

from bertlib.core.errors import ConfigError
from bertlib.core.log import get_logger

_log = get_logger(__name__)

_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
_RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_LOCAL_RANK_VARS = ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK")
PLACEMENT_CHECK_SIZE = 4096
_state: dict = {"hvd": None, "rank": 0, "size": 1, "local_rank": 0, "initialized": False}


def _launcher_value(names: tuple[str, ...], default, env: dict | None = None):
    """The first of the launcher variables ``names`` set to a whole number in ``env``, else ``default``."""
    env = os.environ if env is None else env
    return next((int(env[v]) for v in names if env.get(v, "").isdigit()), default)


def launcher_world_size(env: dict | None = None) -> int:
    """Processes started by horovodrun/mpirun according to the environment (1 when run directly)."""
    return _launcher_value(_SIZE_VARS, 1, env)


def launcher_rank(env: dict | None = None) -> int:
    """This process's rank according to the launcher's environment (0 when run directly)."""
    return _launcher_value(_RANK_VARS, 0, env)


def check_world_size(num_processes: int = 1, env: dict | None = None) -> int:
    """The world size this process will join; raise ConfigError if the request cannot be met.

    ``num_processes`` is a caller's expected process count (the entry points give none: a job's
    world size is the launcher's, its launch settings never reach it); a value > 1 in a process
    started directly (not by horovodrun/mpirun) is an error, as is a launcher size that differs. Call before importing TensorFlow.
    """
    launched = launcher_world_size(env)
    if launched == 1 and num_processes > 1:
        raise ConfigError(
            f"num_processes={num_processes} but this process was started alone: run it with "
            f"`horovodrun -np {num_processes} ...` or `bertlib launch` (backend: local)"
        )
    if launched > 1 and num_processes > 1 and launched != num_processes:
        raise ConfigError(f"num_processes={num_processes} but the launcher started {launched} processes")
    return launched


def pin_gpu(env: dict | None = None) -> str | None:
    """Give each process of a multi-process launch its own GPU: the ``local rank``-th of its host.

    Without this every Horovod rank on a p3dn/p4d/p5 host sees all 8 GPUs, places its work on GPU 0
    and reserves memory on all of them. Sets ``CUDA_VISIBLE_DEVICES`` to the local rank (or, when it
    already lists several devices, to the local rank's entry of that list) and turns on TF's GPU
    memory growth. Reads only the launcher's environment, so it must run before TensorFlow is
    imported; harmless on a machine without GPUs. Returns the device id chosen (None: single process
    or already pinned to one device).
    """
    env = os.environ if env is None else env
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if launcher_world_size(env) == 1:
        return None
    local = _launcher_value(_LOCAL_RANK_VARS, None, env)
    if local is None:
        return None
    visible = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",")] if env.get("CUDA_VISIBLE_DEVICES") else None
    if visible is not None and len(visible) == 1:
        return None
    if visible is not None and local >= len(visible):
        raise ConfigError(
            f"local rank {local} but CUDA_VISIBLE_DEVICES lists {len(visible)} GPUs: "
            "lower processes_per_host (or num_processes)"
        )
    env["CUDA_VISIBLE_DEVICES"] = visible[local] if visible is not None else str(local)
    return env["CUDA_VISIBLE_DEVICES"]


def prepare_process(num_processes: int = 1, threads_per_process: int = 0) -> int:
    """What an entry point does before TensorFlow is imported: check the world size against the
    launcher, set TF's thread counts, pin one GPU per process. Returns the world size."""
    world = check_world_size(num_processes)
    if "tensorflow" not in sys.modules:  # in-process callers (tests, notebooks) get init()'s warning instead
        configure_threads(threads_per_process)
    pin_gpu()
    return world


def configure_threads(threads: int) -> None:
    """Use ``threads`` TF intra- and inter-op threads (0 = TF default).

    Sets ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` (read when the TF runtime starts, so
    this needs no TF import); if TF is already imported, also ``tf.config.threading`` — a runtime
    that already executed ops keeps its pool, with a warning.
    """
    if not threads or threads <= 0:
        return
    # already in the environment (the launcher's, or an earlier call before TF started): TF read it
    done = os.environ.get("TF_NUM_INTRAOP_THREADS") == os.environ.get("TF_NUM_INTEROP_THREADS") == str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    if "tensorflow" not in sys.modules or done:
        return
    import tensorflow as tf

    if (
        tf.config.threading.get_intra_op_parallelism_threads() == threads
        and tf.config.threading.get_inter_op_parallelism_threads() == threads
    ):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        _log.warning(f"TensorFlow already initialized; threads_per_process={threads} ignored")


def init(threads_per_process: int = 0, num_processes: int = 1) -> tuple[int, int, int]:
    """Set TF threads, start Horovod if it is installed, and return ``(rank, size, local_rank)``.

    Without Horovod a single process runs as rank 0 of 1; if more processes were requested
    (launcher environment or ``num_processes`` > 1) that is a ConfigError naming the fix.
    Calling again returns the same values.
    """
    if _state["initialized"]:
        return _state["rank"], _state["size"], _state["local_rank"]
    want = check_world_size(num_processes)
    configure_threads(threads_per_process)
    try:
        import horovod.tensorflow as hvd
    except ImportError as e:
        if want > 1:
            raise ConfigError(
                f"{want} processes requested but Horovod is not importable ({e}); install it with "
                "container/install_horovod.sh or run a single process"
            ) from None
        hvd = None
    if hvd is not None:
        hvd.init()
        if want > 1 and hvd.size() != want:
            raise ConfigError(
                f"the launcher started {want} processes but Horovod sees {hvd.size()} "
                "(was it built with Gloo/MPI support? check `horovodrun --check-build`)"
            )
        _state.update(
            hvd=hvd if hvd.size() > 1 else None, rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank()
        )
        if hvd.size() > 1 and hvd.rank() == 0:
            _log.info(
                f"horovod: {hvd.size()} ranks on {hvd.cross_size()} host(s), "
                f"controller {'mpi' if hvd.mpi_enabled() else 'gloo'}"
            )
        if hvd.size() > 1:
            _log.info(placement_line(hvd))
    _state["initialized"] = True
    return _state["rank"], _state["size"], _state["local_rank"]


def placement_contribution(rank: int, n: int = PLACEMENT_CHECK_SIZE):
    """What rank ``rank`` adds to the placement check's allreduce: ``n`` int64 that depend on the rank."""
    import numpy as np

    return (np.arange(n, dtype=np.int64) * (rank + 1) * 7919) % 1000003


def placement_digest(total) -> str:
    """sha256 (16 hex digits) of the placement check's int64 sum, as bytes."""
    import numpy as np

    return hashlib.sha256(np.asarray(total, dtype=np.int64).tobytes()).hexdigest()[:16]


def placement_line(hvd) -> str:
    """This rank's place (rank, local rank, host) and the digest of an exact allreduce (int64 sum of every
    rank's :func:`placement_contribution`): every rank must print the same digest, the one a single process
    computes from all contributions — a wrong rank count or a rank left out shows here, before training."""
    import tensorflow as tf

    total = hvd.allreduce(tf.constant(placement_contribution(hvd.rank())), op=hvd.Sum, name="bertlib_placement_check")
    return (
        f"placement: rank {hvd.rank()}/{hvd.size()} local_rank {hvd.local_rank()}/{hvd.local_size()} "
        f"host {socket.gethostname()} allreduce_check={placement_digest(total.numpy())}"
    )


def rank() -> int:
    return _state["rank"]


def size() -> int:
    return _state["size"]


def is_chief() -> bool:
    """True on rank 0, the only process that writes files."""
    return _state["rank"] == 0


def allreduce_mean(tensors: list, compression: str = "none") -> list:
    """Average each tensor over all processes (``hvd.grouped_allreduce``, op=Average).

    ``compression="fp16"``: floating tensors cross as float16 and come back in their own dtype
    (``hvd.Compression.fp16``, as the reference's gradient allreduce). Must be called outside any
    ``jit_compile`` function. Identity for a single process (no compression either).
    """
    hvd = _state["hvd"]
    if hvd is None or not tensors:
        return list(tensors)
    codec = hvd.Compression.fp16 if compression == "fp16" else hvd.Compression.none
    return list(hvd.grouped_allreduce(list(tensors), op=hvd.Average, compression=codec))


def allreduce_sum(tensor):
    """Sum ``tensor`` over all processes (``hvd.allreduce``, op=Sum), e.g. counts that each process
    gathered on its own share of the data. Identity for a single process."""
    hvd = _state["hvd"]
    if hvd is None:
        return tensor
    return hvd.allreduce(tensor, op=hvd.Sum, name="bertlib_sum")


def broadcast_variables(variables, root_rank: int = 0) -> None:
    """Overwrite ``variables`` (Keras or tf.Variables) on every process with rank ``root_rank``'s values."""
    hvd = _state["hvd"]
    if hvd is None:
        return
    import tensorflow as tf

    for i, v in enumerate(variables):
        v.assign(hvd.broadcast(tf.convert_to_tensor(v), root_rank, name=f"bertlib_bcast_{i}"))
