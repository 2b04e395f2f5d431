"""The TensorFlow side of ``bertlib canary`` (:mod:`bertlib.launch.canary` checks the config and the data
first and imports this module by name): every rank's identity, the allreduce bandwidth per message size
and its transport, a few timed training steps of the real config, a checkpoint written and read back,
and the versions of the image. Returns the measurements; the verdict and the projection are made by
:mod:`bertlib.launch.canary` from them.

Importing this module imports TensorFlow and (when installed) Horovod.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import socket
import subprocess
import time
from importlib import metadata

import numpy as np
import tensorflow as tf

from bertlib.core.config import CanaryConfig
from bertlib.launch.canary import NCCL_DEBUG_FILE, nccl_network
from bertlib.model.heads import BertPretrainer, pretraining_losses
from bertlib.train import distributed
from bertlib.train.checkpointing import init_from_checkpoint
from bertlib.train.loop import Trainer
from bertlib.train.paths import RunPaths
from bertlib.train.pretrain_run import training_data
from bertlib.train.setup import configure_numerics


def _hvd():
    """horovod.tensorflow once :func:`distributed.init` started it (None: a single process without Horovod)."""
    try:
        import horovod.tensorflow as hvd
    except ImportError:
        return None
    return hvd


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _horovod_version() -> str:
    import horovod

    return horovod.__version__


def nccl_version_string(code: int) -> str:
    """Horovod's ``nccl_built()`` (``23007``) → ``"2.30.7"`` (NCCL_VERSION_CODE = major·10000 + minor·100 + patch)."""
    return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"


def versions(gpus: int) -> dict:
    """The versions this process runs with: TensorFlow, Horovod, NCCL, CUDA/cuDNN of the TF build, the
    GPU driver; ``none (...)`` where there is none."""
    hvd = _hvd()
    build = tf.sysconfig.get_build_info()
    nccl = hvd.nccl_built() if hvd is not None else 0
    driver = "none (no GPU)"
    if gpus and shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else driver
    cuda = build.get("cuda_version") if build.get("is_cuda_build") else None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "horovod": _horovod_version() if hvd is not None else "none (not installed)",
        "nccl": nccl_version_string(int(nccl)) if nccl else "none (Horovod built without NCCL)",
        "cuda": (f"{cuda} (TF build)" + ("" if gpus else "; no GPU visible")) if cuda else "none (CPU)",
        "cudnn": build.get("cudnn_version") or "none (CPU)",
        "gpu_driver": driver,
        "gpus_visible": gpus,
        "numpy": _installed("numpy"),
    }


def ranks(rank: int, world: int, local_rank: int) -> list[dict]:
    """Every rank's identity, gathered from all processes (rank order)."""
    me = {
        "rank": rank,
        "local_rank": local_rank,
        "world_size": world,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }
    hvd = _hvd()
    if world == 1 or hvd is None:
        return [me]
    return sorted(hvd.allgather_object(me, name="canary_ranks"), key=lambda d: d["rank"])


def transport(gpus: int, world: int) -> dict:
    """What the allreduce ran over. GPU: NCCL, and its network plugin from NCCL's INFO log
    (``NET/OFI`` = aws-ofi-nccl, with its provider ``efa``; ``NET/Socket`` = TCP sockets; ``NET/IB``).
    CPU: Horovod's CPU operations over MPI or Gloo (TCP)."""
    hvd = _hvd()
    if world == 1 or hvd is None:
        return {"kind": "none (1 process)", "network": "none", "detail": "no allreduce crosses a process"}
    controller = "MPI" if hvd.mpi_enabled() else "Gloo"
    if not gpus:
        cpu_ops = os.environ.get("HOROVOD_CPU_OPERATIONS", "").upper() or controller
        return {
            "kind": f"CPU (Horovod {cpu_ops} operations, controller {controller})",
            "network": "TCP",
            "detail": "no GPU: NCCL is not used, so this says nothing about NCCL or EFA",
        }
    lines: list[str] = []
    pattern = os.environ.get("NCCL_DEBUG_FILE", NCCL_DEBUG_FILE)
    for path in glob.glob(pattern.replace("%h", "*").replace("%p", str(os.getpid()))):
        with open(path, errors="replace") as f:
            lines += f.read().splitlines()
    using = [ln.split("NCCL INFO", 1)[-1].strip() for ln in lines if "Using network" in ln or "Selected Provider" in ln]
    return {
        "kind": f"NCCL (controller {controller})",
        "network": nccl_network("\n".join(lines)),
        "detail": "; ".join(dict.fromkeys(using)),
    }


def allreduce_bandwidth(sizes: list[int], iterations: int, world: int) -> list[dict]:
    """For each message size: the mean time of ``iterations`` allreduces (sum of float32 ones; the
    slowest rank's mean), algorithm bandwidth ``size / time`` and nccl-tests' bus bandwidth
    ``algbw × 2 (n − 1) / n``; ``correct`` checks that every element came back as n."""
    hvd = _hvd()
    out = []
    for size in sizes:
        x = tf.ones([size // 4], tf.float32)
        if world == 1 or hvd is None:
            out.append({"bytes": size, "time_s": None, "algbw_GBps": None, "busbw_GBps": None, "correct": True})
            continue
        name = f"canary_allreduce_{size}"
        for _ in range(2):  # warm-up: Horovod negotiates the tensor, NCCL/Gloo set up their rings
            y = hvd.allreduce(x, op=hvd.Sum, name=name)
        hvd.allreduce(tf.zeros([1]), op=hvd.Sum, name="canary_barrier").numpy()
        t0 = time.perf_counter()
        for _ in range(iterations):
            y = hvd.allreduce(x, op=hvd.Sum, name=name)
        last = y[-1].numpy()  # waits for the last one (GPU: the stream)
        t = (time.perf_counter() - t0) / iterations
        t = float(hvd.allreduce(tf.constant(t, tf.float64), op=hvd.Max, name="canary_time").numpy())
        ok = bool(y[0].numpy() == world and last == world)
        ok = bool(hvd.allreduce(tf.constant(0 if ok else 1), op=hvd.Sum, name="canary_ok").numpy() == 0)
        algbw = size / t / 1e9
        out.append(
            {
                "bytes": size,
                "time_s": t,
                "algbw_GBps": algbw,
                "busbw_GBps": algbw * 2 * (world - 1) / world,
                "correct": ok,
            }
        )
    return out


def train_steps(cfg: CanaryConfig, paths: RunPaths, bert_config, rank: int, world: int) -> dict:
    """``canary_steps`` optimizer steps of the real config (its Trainer: accumulation, clipping,
    precision, XLA), each timed to its loss on the host; then a checkpoint written by rank 0, every
    weight overwritten with zeros and the checkpoint read back: ``equal`` when every weight is
    bit-identical to what was saved."""
    configure_numerics(cfg)
    model = BertPretrainer(bert_config)
    trainer = Trainer.from_config(cfg, model, pretraining_losses, paths, cfg.phase, world, rank == 0)
    trainer.metrics.close()
    trainer.metrics = None
    init = None
    if cfg.load_from == "checkpoint":

        def init():
            return init_from_checkpoint(model, cfg.checkpoint_path, None)

    trainer.restore_or_initialize(init)
    it = iter(training_data(cfg, paths, rank, world))
    times, losses = [], []
    for _ in range(cfg.canary_steps):
        t0 = time.perf_counter()
        out = trainer.train_step(it)
        losses.append(float(out["loss"]))
        times.append(time.perf_counter() - t0)
    result = {"step_times_s": times, "losses": losses, "steps": cfg.canary_steps}
    if rank == 0:
        step = int(trainer.step.numpy())
        t0 = time.perf_counter()
        prefix = trainer.checkpoints.save(step)
        write_s = time.perf_counter() - t0
        saved = {v.path: v.numpy() for v in model.weights}
        for v in model.weights:
            v.assign(tf.zeros_like(v))
        zeroed = sum(bool(np.any(a != 0)) for a in saved.values())
        t0 = time.perf_counter()
        trainer.checkpoints.checkpoint.restore(prefix).assert_existing_objects_matched()
        read_s = time.perf_counter() - t0
        diffs = {p: float(np.max(np.abs(v.numpy() - saved[p]))) if saved[p].size else 0.0 for p, v in _by_path(model)}
        size = sum(os.path.getsize(f) for f in glob.glob(prefix + ".*"))
        result["checkpoint"] = {
            "prefix": prefix,
            "bytes": size,
            "write_s": write_s,
            "read_s": read_s,
            "variables": len(saved),
            "variables_changed_by_zeroing": zeroed,
            "max_abs_diff": max(diffs.values()),
            "equal": all(d == 0.0 for d in diffs.values()) and zeroed > 0,
        }
    return result


def _by_path(model):
    return [(v.path, v) for v in model.weights]


def measure(cfg: CanaryConfig, paths: RunPaths, bert_config) -> dict:
    """Everything the canary measures (see the module docstring); rank 0's dict holds the gathered
    ranks and its checkpoint check, the others' only their own parts."""
    rank, world, local_rank = distributed.init()
    gpus = len(tf.config.list_physical_devices("GPU"))
    report = {"ranks": ranks(rank, world, local_rank), "versions": versions(gpus)}
    report["allreduce"] = allreduce_bandwidth(cfg.allreduce_sizes, cfg.allreduce_iterations, world)
    report["transport"] = transport(gpus, world)
    report["training"] = train_steps(cfg, paths, bert_config, rank, world)
    report["rank"], report["world_size"] = rank, world
    return report
