"""The notebooks' side of bertlib: one call per notebook step, and what the notebooks display.

Each notebook in ``notebooks/`` has a ``parameters`` cell (papermill injects a params YAML after it)
and then calls :func:`parameters` with its globals: :func:`bertlib.params.parameters`, which
validates them, resolves ``auto`` / ``${VAR}`` / ``asset:`` values and stops the notebook with a
one-line :class:`ParamsError` before anything expensive runs. The step functions below (data
preparation, estimate, launch, plots, report) keep the notebooks to narrative plus one call per step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from bertlib import deploy_cli, jobs, report
from bertlib.core import lean_imports
from bertlib.core.config import LaunchedJob
from bertlib.core.errors import (  # noqa: F401 - what a parameter cell raises (nb.ParamsError)
    ConfigError,
    JobFailed,
    LaunchError,
    ParamsError,
    failure_line,
)
from bertlib.data.prepare import prepare
from bertlib.data.summary import counts_table, shard_table, summarize
from bertlib.launch import canary as canary_job
from bertlib.launch import deploy, image, local, sagemaker
from bertlib.launch.estimate import estimate, real_token_fraction
from bertlib.launch.results import fetch_manifests, fetch_run
from bertlib.params import (  # noqa: F401 - the notebooks call nb.parameters(...)
    STEPS,
    Params,
    parameters,
    report_parameters,
)
from bertlib.squad import answer as qa_answer
from bertlib.squad.reading import load_squad_json
from bertlib.squad.smoke import build_smoke_sets

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel and the runs it starts: no C++ info logs
lean_imports.install()  # the kernel's Keras (the dataset histogram, "Try it") without the extras it skips in commands


# ------------------------------------------------------------------------------------------ steps


def _display(obj) -> None:
    from IPython.display import display  # only in a notebook kernel

    display(obj)


def _job(p: Params) -> str:
    return STEPS[p.step][0]


def show_config(p: Params) -> None:
    """Print the parameters as validated (only what was set, with ``auto`` values filled in): the
    launch settings, then the job's config."""
    for name, launched in p.configs.items():
        cfg, launch = launched.job, launched.launch
        shown = {
            **launch.model_dump(mode="json", include=launch.model_fields_set),
            **cfg.model_dump(mode="json", include=cfg.model_fields_set),
        }
        head = f"{name} ({type(cfg).__name__}, experiment {p.keys.experiment!r}, registry {p.registry.path})"
        extra = (
            f"\nglobal batch: {launched.global_batch_size} sequences per optimizer step "
            f"({launched.world_size} processes)"
            if hasattr(cfg, "per_gpu_batch_size")
            else ""
        )
        print(head + "\n" + yaml.safe_dump(shown, sort_keys=False).rstrip() + extra + "\n")


def prepare_data(p: Params) -> dict:
    """Run :func:`bertlib.data.prepare.prepare` (reusing finished shards) and, with ``squad_smoke``,
    build the synthetic SQuAD smoke sets (:mod:`bertlib.squad.smoke`) from the first source;
    record the dataset folders in the registry. Returns prepare's summary. ``backend: sagemaker``:
    :func:`prepare_data_on_sagemaker` instead (returns the launch's result)."""
    if p.cfg.launch.backend == "sagemaker":
        return prepare_data_on_sagemaker(p)
    cfg = p.cfg.job
    summary = prepare(cfg, progress=True)
    smoke = {}
    if p.keys.squad_smoke:
        files = build_smoke_sets(
            Path(cfg.output_dir) / "squad_smoke", source=cfg.sources[0], max_documents=cfg.max_documents
        )
        smoke = {
            f"squadv{v[0]}": {"train_file": str(files[f"v{v}-train"]), "predict_file": str(files[f"v{v}-dev"])}
            for v in ("1.1", "2.0")
        }
    p.registry.record(
        "data",
        output_dir=cfg.output_dir,
        datasets={n: ph["dir"] for n, ph in summary["phases"].items()},
        corpus=summary["corpus"],
        counts={n: ph["counts"] for n, ph in summary["phases"].items()},
        timings=summary["timings"],
        written_shards=summary["written_shards"],
        skipped_shards=summary["skipped_shards"],
        squad_smoke=smoke,
    )
    print(
        f"prepared in {summary['timings']['total_s']:.1f} s: {summary['written_shards']} shards written, "
        f"{summary['skipped_shards']} reused"
    )
    return summary


def prepare_data_on_sagemaker(p: Params) -> dict:
    """Start data preparation as a SageMaker job on ``instance_count`` instances
    (:func:`bertlib.launch.sagemaker.launch`, job ``prepare-data``): a dry run shows the request, a
    real one (:func:`bertlib.jobs.launch_once`: recorded as it is created, attached to / reused when run
    again) waits for the job while streaming its log, then fetches the phases' ``manifest.json`` and
    ``vocab.txt`` into ``output_dir`` for the tables below. The datasets' S3 URIs go into the registry,
    where ``data_dir: auto`` of the training notebooks finds them."""
    launch, cfg = p.cfg.launch, p.cfg.job
    info = jobs.launch_once("prepare-data", "data", p.cfg, p.registry, logs=True)
    what = "dry run — nothing was sent to AWS" if launch.dry_run else f"status {info['status']}, {info['action']}"
    print(
        f"data: SageMaker job {info['job_name']} on {launch.instance_count} × {launch.instance_type} ({what})\n"
        + "".join(f"  {name}: {uri}\n" for name, uri in info["datasets"].items()).rstrip("\n")
    )
    if info["action"] in ("started", "dry-run"):
        _show_request(info)
    entry = {
        "backend": "sagemaker",
        "job_name": info["job_name"],
        "status": info["status"],
        "identity": info["identity"],
        "dry_run": launch.dry_run,
        "output_dir": launch.s3_data_uri or str(cfg.output_dir),  # local mode: the datasets are in output_dir
        "datasets": info["datasets"],
        "squad_smoke": {},
    }
    if info["status"] == "Completed":
        entry["manifests_dir"] = str(fetch_manifests(info["datasets"], cfg.output_dir))
    elif not launch.dry_run and info["status"] not in jobs.RUNNING:  # running: wait: false
        raise RuntimeError(
            f"SageMaker job {info['job_name']} ended {info['status']}; rerun this cell to resume "
            "(finished shards in s3_data_uri are kept)"
        )
    p.registry.record("data", **entry)
    return info


def _local_datasets(p: Params) -> str | None:
    """The folder of the prepared datasets' manifests, or None (after printing why) for a SageMaker dry run."""
    entry = p.registry.lookup("data")
    if entry.get("dry_run"):
        print("dry run — no job ran, no dataset to show")
        return None
    return entry.get("manifests_dir", entry["output_dir"])


def show_datasets(p: Params) -> None:
    """What the prepared datasets hold (:mod:`bertlib.data.summary`): counts per phase × split and
    the distribution of tokens per example (how much of each sequence is padding)."""
    import matplotlib.pyplot as plt

    entry = p.registry.lookup("data")
    folder = _local_datasets(p)
    if folder is None:
        return
    if entry.get("backend") == "sagemaker":  # the shards stay in S3: counts only, no length histogram
        _display(counts_table(folder))
        return
    table, fig = summarize(folder)
    _display(table)
    report.show(fig)
    plt.close(fig)  # shown once, as a PNG; not again by the inline backend
    if entry.get("squad_smoke"):
        print("synthetic SQuAD smoke sets (not SQuAD):")
        for version, files in entry["squad_smoke"].items():
            print(f"  {version}: train {files['train_file']}\n           dev   {files['predict_file']}")


def show_shards(p: Params) -> None:
    """Per shard of every dataset: examples, random-next and padding fractions
    (:func:`bertlib.data.summary.shard_table`)."""
    folder = _local_datasets(p)
    if folder is not None:
        _display(shard_table(folder))


def show_estimate(p: Params) -> None:
    """The FLOPs / time / cost estimate of each run (:func:`bertlib.launch.estimate.estimate`)."""
    import pandas as pd

    rows = {}
    for name, launched in p.configs.items():
        e = estimate(launched, real_fraction=real_token_fraction(getattr(launched.job, "data_dir", None)))
        rows[name] = {
            "model": f"BERT-{e['model_size']}",
            "sequences": f"{e['sequences']:,}",
            "training FLOPs": f"{e['flops']:.3g}",
            "FLOPs / sequence": f"{e['flops_per_sequence']:.3g}",
            "hardware": f"{e['instance_count']} × {e['instance_type']} ({e['devices']} devices)",
            "peak TFLOP/s per device": e["peak_tflops"],
            "assumed utilization": f"{e['utilization']:.0%}",
            "estimated wall time": e["wall_time"],
            "on-demand cost": "—" if e["usd"] is None else f"${e['usd']:,.0f}",
        }
        if "real_tokens" in e:
            rows[name].update(
                {
                    "real tokens": f"{e['real_tokens']:.3g} ({e['real_fraction']:.1%} of rows)",
                    "FLOPs / real token": f"{e['flops_per_real_token']:.3g}",
                }
            )
    _display(pd.DataFrame(rows))


#: what the registry keeps of a run's ``summary.json`` (timings for the report, F1 for the table)
_SUMMARY_KEYS = (
    "wall_time_s",
    "train_time_s",
    "steps",
    "steps_run",
    "seq_per_sec",
    "global_batch_size",
    "export_dir",
    "final",
    "f1",
    "exact_match",
    "exact",
    "reference_scoring",
    "dataset_note",
    "squad_version",
    "predict_file",
)


def _summary_values(run_dir: str | os.PathLike) -> dict:
    summary_file = Path(run_dir) / "summary.json"
    if not summary_file.is_file():
        raise RuntimeError(f"{summary_file}: the run finished without a summary (see the log above)")
    summary = json.loads(summary_file.read_text())
    return {k: summary[k] for k in _SUMMARY_KEYS if k in summary}


def _record_local(p: Params, name: str, run_dir: Path) -> dict:
    entry = {"backend": "local", "run_dir": str(run_dir), **_summary_values(run_dir)}
    entry.setdefault("export_dir", str(Path(run_dir) / "export"))
    return p.registry.record(name, **entry)


def _record_sagemaker(p: Params, name: str, launched: LaunchedJob, info: dict) -> dict:
    """Record a SageMaker job; a completed one also gets its summary (times, EM/F1) from the job's
    ``output.tar.gz``. A dry run never replaces the entry of a real run: it goes to ``<name>-dry-run``."""
    existing = p.registry.get(name) or {}
    entry = {
        **(existing if existing.get("job_name") == info["job_name"] and not launched.launch.dry_run else {}),
        "backend": "sagemaker",
        "dry_run": launched.launch.dry_run,
        "job_name": info["job_name"],
        "status": info["status"],
        "identity": info.get("identity"),
        "run_dir": info["output_data"],
        "checkpoint_s3_uri": info["checkpoint_s3_uri"],
    }
    entry.pop("recorded_at", None)
    if info["status"] == "Completed":
        entry.update(_summary_values(fetch_run(info["output_data"])))
    entry["export_dir"] = info["model_artifacts"]  # the S3 model.tar.gz, not the container's path
    if launched.launch.dry_run and existing and not existing.get("dry_run"):
        name = f"{name}-dry-run"
        print(f"(recorded as {name!r}: the registry keeps the real run's entry)")
    return p.registry.record(name, **entry)


def launch(p: Params) -> dict[str, dict]:
    """Run each config of ``p`` where its ``backend`` says and record it in the registry.

    local: ``horovodrun -np num_processes`` through :func:`bertlib.launch.local.run`, rank 0's log
    streaming into the notebook; sagemaker: :func:`bertlib.jobs.launch_once` — a dry run shows the
    CreateTrainingJob request; a real one is recorded in the registry as it is created, then followed
    (its log and one progress display) to its end, unless ``wait: false``. Run again, it attaches to
    the registry's job of the same config while that runs and reuses it once completed (``new_job:
    true``: start another).
    Returns ``{name: registry entry}``.
    """
    entries = {}
    for name, launched in p.configs.items():
        cfg = launched.launch
        if cfg.backend == "local":
            run_dir = local.run(_job(p), launched, num_processes=cfg.num_processes, stream=True)
            entries[name] = _record_local(p, name, run_dir)
        else:
            info = jobs.launch_once(_job(p), name, launched, p.registry, logs=True)
            what = "dry run — nothing was sent to AWS" if cfg.dry_run else f"status {info['status']}, {info['action']}"
            if info["placeholders"]:
                print(
                    f"dry run: {', '.join(info['placeholders'])} not set — the request below shows "
                    "placeholders there (a real launch refuses to start without them)"
                )
            print(
                f"{name}: SageMaker training job {info['job_name']} ({what})\n"
                f"  export (model.tar.gz): {info['model_artifacts']}\n  outputs: {info['output_data']}"
            )
            if info["action"] in ("started", "dry-run"):
                _show_request(info)
            entries[name] = _record_sagemaker(p, name, launched, info)
            if info["status"] in ("Failed", "Stopped"):
                raise JobFailed(
                    f"{name}: {failure_line(info['job_name'], info['status'], info.get('failure_reason'))}"
                    " — run this cell again to start a new job (it resumes from checkpoint_s3_uri)"
                )
    return entries


def canary(p: Params) -> dict | None:
    """The canary before phase 1 (:mod:`bertlib.launch.canary`): a few minutes on the run's instance type
    and ``canary_instance_count`` instances (default the run's), with the run's config; shows its report
    and stops the notebook (LaunchError, the verdict) on FAIL, before the expensive launch. ``canary``:
    "auto" runs it on SageMaker (a dry run shows its request) and skips it locally; True / False force."""
    launched = p.cfg
    on_sagemaker = launched.launch.backend == "sagemaker"
    if not (on_sagemaker if p.keys.canary == "auto" else p.keys.canary):
        print("canary: skipped (local backend; -p canary True runs it here too)")
        return None
    job = canary_job.canary_job(launched, instance_count=p.keys.canary_instance_count or None)
    result = canary_job.run(job)
    if result.get("dry_run"):
        print(
            f"canary: dry run — job {result['info']['job_name']} on {job.launch.instance_count} × "
            f"{job.launch.instance_type}, {job.job.canary_steps} steps of this config (nothing was sent to AWS)"
        )
        _show_request(result["info"])
        return result
    if on_sagemaker:  # a local canary streamed its lines already
        print("\n".join(canary_job.report_lines(result)))
    if not result["passed"]:
        raise LaunchError(result["verdict"])
    return result


def _show_request(info: dict) -> None:
    """Print the job's CreateTrainingJob request (none in the SDK's local mode: nothing goes to AWS)."""
    if info["request"] is None:
        print("(the SDK's local mode: no request was sent to AWS)")
    else:
        print("CreateTrainingJob request:")
        print(json.dumps(info["request"], indent=1, default=str))


def training_image(p: Params) -> str | None:
    """The training image of a SageMaker launch, built when none is set.

    With ``image_uri`` (or ``$BERTLIB_IMAGE_URI`` / ``$SAGEMAKER_IMAGE_NAME``) set, that image; nothing is
    built. Else :func:`bertlib.launch.image.build` builds and pushes it with AWS CodeBuild (no Docker needed,
    e.g. in a SageMaker Studio kernel) and puts its URI into ``$BERTLIB_IMAGE_URI`` for :func:`launch`; a dry
    run only shows the build's requests. Local runs need no image (None).
    """
    launches = [launched.launch for launched in p.configs.values() if launched.launch.backend == "sagemaker"]
    if not launches:
        print("local run: no training image needed")
        return None
    cfg = launches[0]
    given = sagemaker._from_env(cfg, "image_uri")
    if cfg.local_mode:  # the SDK's local mode runs an image of this machine's Docker (make image)
        print(f"local mode: training image {given or '(not set: set image_uri, e.g. bertlib-training:local)'}")
        return given
    if given:
        print(f"training image: {given} (set: nothing to build)")
        return given
    try:
        info = image.build(image.ImageBuildConfig(region=cfg.region, dry_run=cfg.dry_run))
    except ConfigError as e:
        if not cfg.dry_run:
            raise
        print(f"dry run: the image build is not shown ({e}); the launch below shows the image placeholder")
        return None
    if cfg.dry_run:
        image.show_dry_run(info)
        return None
    os.environ["BERTLIB_IMAGE_URI"] = info["image_uri"]
    print(f"training image: {info['image_uri']} (now $BERTLIB_IMAGE_URI)")
    return info["image_uri"]


def _entries(p: Params) -> dict[str, dict]:
    return {name: p.registry.lookup(name) for name in p.configs}


def show_run(p: Params) -> None:
    """Plot each run's ``metrics.jsonl`` (:func:`bertlib.report.plot_run`) as notebook images."""
    for name, entry in _entries(p).items():
        if entry.get("dry_run"):
            print(f"{name}: dry run — no job ran, nothing to plot")
            continue
        if entry.get("status", "Completed") != "Completed":
            print(
                f"{name}: SageMaker job {entry.get('job_name')} is {entry['status']} — nothing to plot yet "
                f"(run the launch cell again, or `bertlib status {name}`, to attach)"
            )
            continue
        report.show(report.plot_run(entry["run_dir"], f"{name}: {entry['run_dir']}"))


def show_pretraining(p: Params) -> None:
    """Phase 1 and phase 2 losses on one figure (:func:`bertlib.report.plot_pretraining`)."""
    entries = [p.registry.lookup(s) for s in ("phase1", "phase2")]
    if any(e.get("dry_run") for e in entries):
        print("dry run — no job ran, nothing to plot")
        return
    report.show(report.plot_pretraining(*(e["run_dir"] for e in entries)))


def squad_scores(p: Params):
    """EM / F1 of each SQuAD version as recorded from its ``summary.json``; printed and returned. v1.1
    also shows EM / F1 as the reference's evaluation scored the same logits (null answers allowed:
    :data:`bertlib.report.SCORING_NOTE`) — the numbers its 87.68 compares with."""
    import pandas as pd

    rows = {}
    for name, entry in _entries(p).items():
        em = entry.get("exact_match", entry.get("exact"))
        ref = entry.get("reference_scoring") or {}
        rows[name] = {
            "EM (official)": em,
            "F1 (official)": entry.get("f1"),
            "EM (reference's scoring)": ref.get("exact"),
            "F1 (reference's scoring)": ref.get("f1"),
            "dataset": "synthetic smoke set (not SQuAD)" if entry.get("dataset_note") else entry.get("predict_file"),
        }
        if em is not None:
            print(
                f"{name}: EM {em:.2f}  F1 {entry['f1']:.2f} (official)"
                + (
                    f"; as the reference scored it: EM {ref['exact']:.2f}  F1 {ref['f1']:.2f} "
                    f"({ref['null_answers']} questions answered '')"
                    if ref
                    else ""
                )
                + ("  (synthetic smoke set, not SQuAD)" if entry.get("dataset_note") else "")
            )
    return pd.DataFrame(rows).T


def qa_model(entry: dict) -> qa_answer.QAModel:
    """The finetuned model of a SQuAD registry entry: a local run's ``export_dir``, or a SageMaker job's
    ``model.tar.gz`` (downloaded and unpacked once, :func:`bertlib.launch.results.fetch_run`)."""
    return qa_answer.load_qa_model(fetch_run(entry["export_dir"]))


def _dev_set(entry: dict) -> dict | None:
    """The dev set a run predicted (a local path or URL), or None if it cannot be read here (a path
    inside a SageMaker container)."""
    source = entry.get("predict_file")
    if not source:
        return None
    try:
        return load_squad_json(str(source))[0]
    except (FileNotFoundError, ConfigError):
        return None


def _serving_endpoint(p: Params, name: str) -> deploy.DeployConfig | None:
    """The deploy config of ``name``'s endpoint if the registry has a real one and AWS says it is InService."""
    entry = p.registry.get(deploy_cli.endpoint_step(name))
    if not entry or entry.get("dry_run") or entry.get("status") != "InService":
        return None
    cfg = deploy.DeployConfig(
        action="ask", squad_version=name, endpoint_name=entry["endpoint_name"], region=entry["region"]
    )
    return cfg if deploy.status(cfg) == "InService" else None


def _endpoint_answer(cfg: deploy.DeployConfig, question: str, context: str) -> qa_answer.Answer:
    """The endpoint's answer (HF pipeline: ``answer``, ``score``, character ``start`` / ``end``)."""
    got = deploy.ask(cfg.model_copy(update={"question": question, "context": context}))["answer"]
    return qa_answer.Answer(question, got["answer"], got["start"], got["end"], float(got["score"]))


def try_it(p: Params) -> dict[str, list]:
    """Ask each finetuned SQuAD model of ``p`` a few dev questions (``try_questions``, the first of the
    dev set its run predicted) and, with ``question`` / ``context``, the user's own; show each context
    with the predicted span highlighted next to the gold answers (HTML: the notebook and its rendered
    report). While an endpoint of the version is InService (:func:`endpoint`) it answers instead.
    Returns ``{version: [Answer, ...]}``."""
    from IPython.display import HTML

    keys = p.keys
    shown = {}
    for name, entry in _entries(p).items():
        if entry.get("dry_run"):
            print(f"{name}: dry run — no model to ask")
            continue
        dev = _dev_set(entry)
        questions = qa_answer.dev_questions(dev, keys.try_questions) if dev else []
        if keys.question:
            questions.append({"id": "yours", "question": keys.question, "context": keys.context, "answers": None})
        served = _serving_endpoint(p, name)
        if served is not None:  # the endpoint answers (the HF pipeline's span and score)
            answers = [_endpoint_answer(served, q["question"], q["context"]) for q in questions]
        else:
            answers = qa_answer.answer_questions(qa_model(entry), questions) if questions else []
        rows = [(a, q["context"], q["answers"]) for q, a in zip(questions, answers)]
        note = " (synthetic smoke set, not SQuAD)" if entry.get("dataset_note") else ""
        by = f"endpoint {served.endpoint_name}" if served is not None else "the finetuned model"
        print(
            f"{name}: {len(questions) - bool(keys.question)} dev questions{note}"
            + (" + your question" if keys.question else "")
            + f", answered by {by}"
        )
        _display(HTML(qa_answer.answer_html(rows)))
        shown[name] = answers
    return shown


def _deploy_config(p: Params, action: str) -> deploy.DeployConfig:
    """The :class:`bertlib.launch.deploy.DeployConfig` of 04_squad's endpoint: the first SQuAD version's
    model, the runs' region / role / dry run, the notebook's question."""
    keys = p.keys
    name = next(iter(p.configs))
    launch_cfg = p.configs[name].launch
    return deploy.DeployConfig(
        action=action,
        experiment=keys.experiment,
        runs_root=keys.runs_root,
        squad_version=name,
        instance_type=keys.endpoint_instance_type,
        region=launch_cfg.region,
        role=launch_cfg.role,
        question=keys.question or None,
        context=keys.context or None,
        dry_run=launch_cfg.dry_run,
    )


def endpoint(p: Params) -> dict:
    """04_squad's last section: with ``deploy``, a SageMaker real-time endpoint for the first SQuAD
    version's finetuned model (AWS's Hugging Face inference image, :mod:`bertlib.launch.deploy`), asked
    one question (yours, or a sample) — its request and response printed; with ``delete_endpoint``, the
    endpoint torn down. A dry run (the runs' ``dry_run``) prints the requests. Returns what was done."""
    keys = p.keys
    done: dict = {}
    if not (keys.deploy or keys.delete_endpoint):
        print(
            "no endpoint: -p deploy True creates one for the finetuned model (SageMaker, billed per hour), "
            "-p delete_endpoint True tears it down"
        )
        return done
    if keys.deploy:
        cfg = _deploy_config(p, "create")
        info = done["create"] = deploy_cli.create(cfg, p.registry)
        what = "dry run — nothing was sent to AWS" if cfg.dry_run else f"status {info['status']}"
        print(f"endpoint {info['endpoint_name']} ({what}): {info['image']}\n  model: {info['model_data']}")
        for op, request in info["requests"].items():
            if op != "InvokeEndpoint":
                print(f"{op} request:\n{json.dumps(request, indent=1)}")
        request = info.get("invoke_request") or info["requests"].get("InvokeEndpoint")
        if request:
            print(f"InvokeEndpoint request:\n{json.dumps(request, indent=1)}")
        if info.get("response") is not None:
            print(f"response ({info['endpoint_name']}):\n{info['response']}")
    if keys.delete_endpoint:
        cfg = _deploy_config(p, "delete")
        info = done["delete"] = deploy_cli.delete(cfg, p.registry)
        if cfg.dry_run:
            print("dry run — the teardown's requests:\n" + json.dumps(info["requests"], indent=1))
        else:
            print(f"endpoint {info['endpoint_name']}: deleted {', '.join(info['deleted']) or 'nothing (none found)'}")
    return done


# ----------------------------------------------------------------------------------------- report


def write_report(cfg) -> dict:
    """Build the report files (:func:`bertlib.report.write_report`) and print where they are.

    Returns ``{"table": DataFrame, "files": {name: Path}}``; show them with :func:`show_table` /
    :func:`show_figures`.
    """
    result = report.write_report(report.collect_runs(cfg), report.report_dir(cfg), cfg.model_name)
    print("\n".join(f"wrote {path}" for path in result["files"].values()))
    return result


def show_table(result: dict) -> None:
    """The results table (reference row + this run's row) and its footnote, if any."""
    df = result["table"]
    _display(df.style.hide(axis="index"))
    note = report.table_note(df)
    if note:
        print(note)


def show_figures(result: dict, *names: str) -> None:
    """Display the named PNG files of a report (all figures when no name is given)."""
    for name, path in result["files"].items():
        if name.endswith(".png") and (name in names or not names) and name != "results_table.png":
            report.show_file(path)
