"""``bertlib canary``: a short job before the expensive run, on its instance type (and its instance
count, or fewer), with its real config — minutes instead of hours.

It reports (on stdout, ``canary:`` lines, and as ``canary.json`` in the job's output folder:
``SM_OUTPUT_DATA_DIR`` on SageMaker, the run directory locally):

* every rank up: hostname, rank, local rank, world size (gathered from all ranks);
* allreduce bandwidth per message size (``allreduce_sizes``, 1 KiB … 64 MiB by default): the mean
  time of ``allreduce_iterations`` sums of float32 tensors (the slowest rank's), algorithm bandwidth
  ``size / time`` and nccl-tests' bus bandwidth ``2 (n − 1) / n × size / time``, with the transport:
  on GPUs NCCL and its network (``NET/OFI`` = aws-ofi-nccl on EFA, ``NET/Socket`` = TCP sockets, read
  from NCCL's INFO log, which the canary turns on), on CPUs Horovod's MPI/Gloo operations over TCP;
* ``canary_steps`` training steps of the real config (model, batch, accumulation, sequence length,
  precision, XLA as the run has them), each timed; the first (tracing, XLA compilation) is shown apart
  and the median of the others projects the full run: ``total_steps × step time`` and its on-demand
  cost (:func:`bertlib.launch.estimate.measured_projection`, prices of :mod:`bertlib.core.instances`);
* a checkpoint written by rank 0 (the run's own checkpoint code), every weight zeroed, the checkpoint
  read back: every weight bit-identical;
* the versions: TensorFlow, Horovod, NCCL, CUDA, cuDNN, GPU driver (``none (...)`` on a CPU);
* what it could not check (on CPUs: NCCL, EFA, GPU step time, CUDA/driver) and one verdict line,
  ``canary: PASS — ...`` or ``canary: FAIL — <what> — <what to do>``.

The job exits 0 once it has measured (its verdict is in the report); ``bertlib launch canary`` and the
notebook read the verdict and stop on FAIL. A failing rank fails the job as any job.

The launcher side (:func:`canary_job`) turns the run's :class:`~bertlib.core.config.LaunchedJob` into
the canary's: ``instance_count`` → ``canary_instance_count`` (≤ the run's; the per-rank batch and
accumulation stay, so the step time is the run's), its own run directory (``<run_dir>-canary``) and
checkpoint prefix (``<checkpoint_s3_uri>-canary``: the run never resumes from the canary), job name
``bertlib-canary-<phase>``, at most an hour, on demand.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import statistics
import sys
from pathlib import Path

from bertlib.core.config import (
    CanaryConfig,
    LaunchedJob,
    PretrainConfig,
    build_config,
    global_batch,
    job_command,
    parse_job_args,
)
from bertlib.core.errors import ConfigError, LaunchError, run_guarded
from bertlib.core.files import write_json
from bertlib.core.instances import INSTANCES
from bertlib.launch import local, sagemaker
from bertlib.launch.estimate import forward_flops, measured_projection, model_dims
from bertlib.launch.results import fetch_run
from bertlib.train import distributed, pretrain
from bertlib.train.paths import run_paths

#: the module of the TensorFlow side, imported by name once the input is checked
RUN_MODULE = "bertlib.launch.canary_run"
REPORT_FILE = "canary.json"
#: NCCL's INFO log goes here (``%h`` host, ``%p`` pid; read back by the TensorFlow side)
NCCL_DEBUG_FILE = "/tmp/bertlib-canary-nccl.%h.%p.log"
#: instance types with EFA, where a multi-host NCCL allreduce must run over NET/OFI, not sockets
EFA_INSTANCE_TYPES = ("ml.p3dn.24xlarge", "ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge")
#: a canary job's time limit (seconds)
CANARY_MAX_RUN_SECONDS = 3600

CLI = job_command(
    "canary",
    help="A short job before the expensive run: ranks, allreduce bandwidth, a few timed steps of the "
    "real config and the projected time and cost, a checkpoint read back, versions, a verdict. --config "
    "FILE (optional) plus --key value overrides of its CanaryConfig keys (values are YAML).",
)


# ------------------------------------------------------------------------------- the job (every rank)


def nccl_network(log: str) -> str:
    """The network NCCL chose, from its INFO log: its last ``Using network <name>`` line (``Libfabric`` /
    ``AWS Libfabric`` = the aws-ofi-nccl plugin, with the libfabric provider of ``NET/OFI Selected Provider
    is <p>``; ``Socket``; ``IB``). A plugin that failed to start and fell back to sockets says ``Socket``
    there, whatever ``NET/OFI`` lines came before."""
    chosen = re.findall(r"NCCL INFO Using network (.+)", log)
    if not chosen:
        return "unknown (no 'Using network' line in NCCL's INFO log)"
    name = chosen[-1].strip()
    if "Libfabric" in name or "OFI" in name:
        provider = re.findall(r"NET/OFI Selected Provider is (\S+)", log)
        return f"NET/OFI ({provider[-1]})" if provider else "NET/OFI"
    if name == "Socket":
        return "NET/Socket (TCP sockets)"
    return f"NET/{name}"


def main(argv: list[str]) -> int:
    cfg = parse_job_args("canary", CLI, argv)[0]
    if cfg is None:
        return 0
    # NCCL's INFO log names its network (read by the TensorFlow side); set before NCCL starts
    os.environ["NCCL_DEBUG"] = "INFO"
    os.environ["NCCL_DEBUG_SUBSYS"] = "INIT,NET"
    os.environ.setdefault("NCCL_DEBUG_FILE", NCCL_DEBUG_FILE)
    world = distributed.prepare_process()
    paths = run_paths(cfg)
    manifest = pretrain.validate_inputs(cfg, paths, world)
    bert_config = pretrain.build_bert_config(cfg, manifest["vocab"]["size"])
    measured = importlib.import_module(RUN_MODULE).measure(cfg, paths, bert_config)
    if measured["rank"] != 0:
        return 0
    report = build_report(cfg, measured)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.output_dir / REPORT_FILE, report)
    print("\n".join(report_lines(report)), flush=True)
    return 0


def build_report(cfg: CanaryConfig, m: dict) -> dict:
    """The canary's report from rank 0's measurements ``m`` (:func:`bertlib.launch.canary_run.measure`):
    the measurements, the projection, the checks, what was not checked and the verdict."""
    world, ranks = m["world_size"], m["ranks"]
    hosts = list(dict.fromkeys(r["hostname"] for r in ranks))
    gpus = m["versions"]["gpus_visible"]
    times = m["training"]["step_times_s"]
    step_s = statistics.median(times[1:])
    projection = measured_projection(cfg.total_steps, step_s, cfg.projected_instance_type, cfg.projected_instance_count)
    # training FLOPs of a step (bertlib.launch.estimate's count) over its time: what each rank achieved
    gb = global_batch(cfg, world)
    step_flops = (
        3
        * sum(forward_flops(*model_dims(cfg.model_size), cfg.max_seq_length, cfg.max_predictions_per_seq).values())
        * gb
    )
    peak = INSTANCES[cfg.projected_instance_type].peak_tflops_per_gpu if cfg.projected_instance_type in INSTANCES else 0
    achieved = step_flops / step_s / world / 1e12
    ckpt = m["training"]["checkpoint"]
    largest = max(m["allreduce"], key=lambda a: a["bytes"])
    per_host = {h: sorted(r["local_rank"] for r in ranks if r["hostname"] == h) for h in hosts}
    checks = [
        (
            "ranks",
            [r["rank"] for r in ranks] == list(range(world))
            and all(v == list(range(len(v))) for v in per_host.values()),
            f"ranks {[r['rank'] for r in ranks]} / local ranks {per_host}: not every rank came up once",
            "check processes_per_host and the hosts' network (security group allows all traffic to itself)",
        ),
        (
            "allreduce",
            all(a["correct"] for a in m["allreduce"]),
            "an allreduce returned a wrong sum",
            "look for NCCL/Horovod errors in the log; try fewer hosts to find a bad one",
        ),
    ]
    want_gpus = INSTANCES[cfg.projected_instance_type].gpus if cfg.projected_instance_type in INSTANCES else 0
    if want_gpus:
        checks.append(
            (
                "gpus",
                all(r["gpus"] >= 1 for r in ranks),
                f"{cfg.projected_instance_type} has {want_gpus} GPUs but a rank sees none",
                "use the GPU training image (BERTLIB_IMAGE_URI) and check its CUDA / driver versions below",
            )
        )
    efa = gpus and len(hosts) > 1 and cfg.projected_instance_type in EFA_INSTANCE_TYPES
    if efa:
        checks.append(
            (
                "efa",
                m["transport"]["network"] == "NET/OFI (efa)",
                f"NCCL between hosts runs over {m['transport']['network']}, not EFA (NET/OFI (efa))",
                "let the security group allow all traffic to itself, and use an image with aws-ofi-nccl "
                "(the AWS DLC base has it)",
            )
        )
    checks.append(
        (
            "training",
            all(loss == loss and abs(loss) != float("inf") for loss in m["training"]["losses"]),
            f"a training step's loss is not finite ({m['training']['losses']})",
            "lower learning_rate or use precision fp32 / a smaller initial_loss_scale",
        )
    )
    checks.append(
        (
            "checkpoint",
            ckpt["equal"],
            f"the checkpoint read back differs (max |Δ| {ckpt['max_abs_diff']:g})",
            "check the checkpoint volume (disk full? /opt/ml/checkpoints writable?)",
        )
    )
    if cfg.projected_max_run_seconds:
        checks.append(
            (
                "time limit",
                projection["hours"] * 3600 <= cfg.projected_max_run_seconds,
                f"the run needs ~{projection['wall_time']} but max_run_seconds is {cfg.projected_max_run_seconds}",
                f"raise max_run_seconds to at least {int(projection['hours'] * 3600 * 1.2)} (20 % margin)",
            )
        )
    not_checked = []
    if world == 1:
        not_checked.append("the allreduce between processes (one process)")
    if not gpus:
        not_checked += [
            "NCCL and its network (NET/OFI on EFA): no GPU here, the allreduce ran on CPUs over TCP",
            "the GPU step time: the step time and the projection are this machine's CPUs'",
            "CUDA and GPU driver compatibility of the image",
        ]
    elif len(hosts) == 1:
        not_checked.append("NCCL between hosts (EFA): one host")
    failures = [{"check": c, "problem": what, "fix": fix} for c, ok, what, fix in checks if not ok]
    projected_on = (
        "local"
        if cfg.projected_instance_type == "local"
        else f"{cfg.projected_instance_count} × {cfg.projected_instance_type}"
    )
    cost = f", ${projection['usd']:,.2f}" if projection["usd"] is not None else ""
    if failures:
        f = failures[0]
        more = f" (+{len(failures) - 1} more, see the report)" if len(failures) > 1 else ""
        verdict = f"canary: FAIL — {f['problem']} — {f['fix']}{more}"
    else:
        bw = f"{largest['busbw_GBps']:.3g} GB/s busbw at {_size(largest['bytes'])}" if world > 1 else "no allreduce"
        verdict = (
            f"canary: PASS — {world} ranks on {len(hosts)} host(s) up, {bw} over {m['transport']['network']}, "
            f"step {step_s:.3g} s → {cfg.phase} ({cfg.total_steps} steps) ≈ {projection['wall_time']}{cost} on "
            f"{projected_on}, checkpoint read back equal"
            + (
                "; CPU only: NCCL, EFA, the GPU step time and CUDA/driver not checked (they need real GPUs)"
                if not gpus
                else (f"; not checked: {'; '.join(not_checked)}" if not_checked else "")
            )
        )
    return {
        "verdict": verdict,
        "passed": not failures,
        "failures": failures,
        "not_checked": not_checked,
        "world_size": world,
        "hosts": hosts,
        "ranks": ranks,
        "versions": m["versions"],
        "transport": m["transport"],
        "allreduce": m["allreduce"],
        "training": {
            "phase": cfg.phase,
            "model_size": cfg.model_size,
            "per_gpu_batch_size": cfg.per_gpu_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "max_seq_length": cfg.max_seq_length,
            "precision": cfg.precision,
            "xla": not cfg.skip_xla,
            "global_batch_size": gb,
            "tflops_per_rank": achieved,
            "utilization": achieved / peak if peak and gpus else None,
            "step_times_s": times,
            "first_step_s": times[0],
            "step_s": step_s,
            "losses": m["training"]["losses"],
        },
        "projection": {
            **projection,
            "total_steps": cfg.total_steps,
            "step_s": step_s,
            "world_size": cfg.projected_world_size,
            "measured_world_size": world,
        },
        "checkpoint": ckpt,
    }


def _size(n: int) -> str:
    for unit, div in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def report_lines(r: dict) -> list[str]:
    """The report as the ``canary:`` lines of the job's log (and of the notebook)."""
    v, t, p, c = r["versions"], r["training"], r["projection"], r["checkpoint"]
    lines = [f"canary: ranks up: {len(r['ranks'])} of {r['world_size']} on {len(r['hosts'])} host(s)"]
    lines += [
        f"  rank {x['rank']} local rank {x['local_rank']} of world {x['world_size']} on {x['hostname']} "
        f"(pid {x['pid']}, {x['gpus']} GPU)"
        for x in r["ranks"]
    ]
    lines.append(
        f"canary: versions: TensorFlow {v['tensorflow']}, Horovod {v['horovod']}, NCCL {v['nccl']}, "
        f"CUDA {v['cuda']}, cuDNN {v['cudnn']}, driver {v['gpu_driver']}, Python {v['python']}"
    )
    tr = r["transport"]
    lines.append(
        f"canary: allreduce over {tr['kind']}, network {tr['network']}" + (f" ({tr['detail']})" if tr["detail"] else "")
    )
    lines.append(f"  {'size':>8} {'time':>10} {'algbw':>11} {'busbw':>11}")
    for a in r["allreduce"]:
        if a["time_s"] is None:
            lines.append(f"  {_size(a['bytes']):>8}          -  (one process)")
        else:
            lines.append(
                f"  {_size(a['bytes']):>8} {a['time_s'] * 1e6:>8.0f}us {a['algbw_GBps']:>6.3g} GB/s "
                f"{a['busbw_GBps']:>6.3g} GB/s" + ("" if a["correct"] else "  WRONG SUM")
            )
    lines.append(
        f"canary: training: {len(t['step_times_s'])} steps of {t['phase']} ({t['model_size']}, {t['per_gpu_batch_size']} "
        f"per rank × {t['gradient_accumulation_steps']} accumulation × {r['world_size']} ranks = global batch "
        f"{t['global_batch_size']}, sequence {t['max_seq_length']}, {t['precision']}, XLA {t['xla']}): first "
        f"step {t['first_step_s']:.3g} s (tracing/compilation), then median {t['step_s']:.3g} s "
        f"(steps {', '.join(f'{s:.3g}' for s in t['step_times_s'])} s; loss {t['losses'][0]:.4g} → {t['losses'][-1]:.4g}); "
        f"{t['tflops_per_rank']:.3g} training TFLOP/s per rank"
        + (f" = {t['utilization']:.0%} of the GPU's peak (bertlib estimate assumes 20 %)" if t["utilization"] else "")
    )
    on = "local" if p["instance_type"] == "local" else f"{p['instance_count']} × {p['instance_type']}"
    cost = (
        f", ${p['usd']:,.2f} on demand (${p['usd_per_hour']:g}/h each)"
        if p["usd"] is not None
        else (", no cost (local)" if p["instance_type"] == "local" else ", no price for this type")
    )
    scale = (
        f"; measured with {p['measured_world_size']} ranks, the run has {p['world_size']}: the allreduce "
        "across more hosts may be slower"
        if p["measured_world_size"] != p["world_size"]
        else ""
    )
    lines.append(
        f"canary: projection: {p['total_steps']} steps × {p['step_s']:.3g} s = {p['wall_time']} on {on}{cost}{scale}"
    )
    lines.append(
        f"canary: checkpoint: {c['variables']} variables, {c['bytes'] / 1e6:.1f} MB written in {c['write_s']:.2f} s "
        f"and read back in {c['read_s']:.2f} s after zeroing the weights: "
        + ("every weight equal" if c["equal"] else f"NOT equal (max |Δ| {c['max_abs_diff']:g})")
    )
    if r["not_checked"]:
        lines.append("canary: needs real GPUs / more hosts (not checked here): " + "; ".join(r["not_checked"]))
    lines.append(r["verdict"])
    return lines


# --------------------------------------------------------------------------------- the launcher side


def canary_job(launched: LaunchedJob, instance_count: int | None = None, steps: int | None = None) -> LaunchedJob:
    """The canary of a pretraining run ``launched``: the same job config (run directory
    ``<run_dir>-canary``, ``canary_steps`` = ``steps``) and the same launch on ``instance_count``
    instances (default: the run's; at most the run's), its own checkpoint prefix and job name, at most
    an hour, on demand; the projection keys name the run."""
    launch, job = launched.launch, launched.job
    if not isinstance(job, PretrainConfig):
        raise ConfigError(f"canary: a pretraining run config is needed, got {type(job).__name__}")
    sm = launch.backend == "sagemaker"
    count = instance_count or launch.instance_count
    if sm and count > launch.instance_count:
        raise ConfigError(f"canary_instance_count {count}: more than the run's instance_count {launch.instance_count}")
    launch_values = launch.model_dump()
    launch_values.update(
        instance_count=count,
        job_name=f"{launch.job_name[:34]}-canary" if launch.job_name else None,
        checkpoint_s3_uri=f"{launch.checkpoint_s3_uri.rstrip('/')}-canary" if launch.checkpoint_s3_uri else None,
        max_run_seconds=min(launch.max_run_seconds, CANARY_MAX_RUN_SECONDS),
        use_spot=False,
        max_wait_seconds=None,
    )
    canary_launch = build_config(type(launch), launch_values, "canary launch")
    values = job.model_dump()
    values.update(
        run_dir=f"{job.run_dir.rstrip('/')}-canary",
        projected_instance_type=launch.instance_type if sm and not launch.local_mode else "local",
        projected_instance_count=launch.instance_count if sm else 1,
        projected_world_size=launched.world_size,
        projected_max_run_seconds=launch.max_run_seconds if sm else None,
    )
    if steps:
        values["canary_steps"] = steps
    if canary_launch.world_size != launched.world_size:  # fewer instances: the run's global batch is not the canary's
        values["global_batch_size_check"] = None
    return LaunchedJob(canary_launch, build_config(CanaryConfig, values, "canary"))


def run(canary: LaunchedJob, session=None) -> dict:
    """Run the canary ``canary`` (:func:`canary_job`) where its backend says and return its report
    (read back from ``canary.json``); a dry run returns ``{"dry_run": True, "info": <launch info>}``."""
    launch = canary.launch
    if launch.backend == "local":
        out = local.run("canary", canary, progress=False)
    else:
        info = sagemaker.launch("canary", canary, session=session, wait=not launch.dry_run)
        if launch.dry_run:
            return {"dry_run": True, "info": info}
        if info["status"] != "Completed":
            raise LaunchError(f"canary job {info['job_name']} ended {info['status']}")
        out = fetch_run(info["output_data"])
    return read_report(out)


def read_report(run_dir: str | os.PathLike) -> dict:
    """The ``canary.json`` of a canary's output folder."""
    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        raise LaunchError(f"{path}: the canary wrote no report (see its log)")
    return json.loads(path.read_text())


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
