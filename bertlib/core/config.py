"""Typed run configurations, loaded from YAML plus ``--key value`` overrides.

One flat schema per job (``prepare-data``, ``adopt-data``, ``pretrain``, ``squad``), so that a params file, a
papermill parameter cell and the SageMaker hyperparameters all carry the same plain names (the seed's
flag names: ``per_gpu_batch_size``, ``learning_rate``, ...). Unknown keys and ill-typed values are
rejected with one line that names the file and the key, before anything expensive starts.

Launch settings (``backend``, ``num_processes``, ``instance_type`` ...) live in the same flat file for
the launched jobs but in their own schema, :class:`LaunchConfig`: :func:`build_launched` splits one flat
dict by which schema declares each key into a :class:`LaunchedJob` ``(launch, job)`` — what
``bertlib launch`` and the notebooks use — while the entry points (``bertlib pretrain`` ...) validate
only their job's schema (a launch key given to them is an unknown key). The job learns its world size
from the launcher at run time; :func:`global_batch` is the one global-batch rule.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bertlib.core.cli_schema import command, parse, parse_values, progress_option
from bertlib.core.errors import ConfigError
from bertlib.core.instances import gpus_per_instance

#: where the training loop clips gradients (bertlib.train.loop): the averaged mean after the allreduce,
#: or each rank's unscaled sum over its micro-batches before it (aws-samples' albert/run_pretraining.py)
GRAD_CLIP_MODES = ("global_mean", "per_rank_sum")
#: how gradients cross the allreduce: float32 as computed, or cast to float16 (hvd.Compression.fp16)
ALLREDUCE_COMPRESSIONS = ("none", "fp16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


#: ``instance_type`` values that run a SageMaker job in the SDK's own local mode: ``instance_count``
#: containers of the image on this machine's Docker (``local_gpu``: with the GPUs), local folders as channels
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
#: launch settings of real SageMaker jobs that the SDK's local mode has no counterpart for (refused there)
_NOT_IN_LOCAL_MODE = (
    "dry_run",
    "new_job",
    "use_spot",
    "max_wait_seconds",
    "checkpoint_s3_uri",
    "output_s3_uri",
    "s3_data_uri",
    "fsx_file_system_id",
    "fsx_directory_path",
    "subnets",
    "security_group_ids",
)


class LaunchConfig(_Strict):
    """Where and how a job runs (``bertlib launch``, the notebooks); the entry points never see it."""

    backend: Literal["local", "sagemaker"] = Field("local", description="where `bertlib launch` runs the job")
    num_processes: int = Field(1, ge=1, description="local: horovodrun -np N (1 = plain process)")
    threads_per_process: int = Field(
        0, ge=0, description="local: TF intra/inter-op threads of each process; 0 = TF default"
    )
    dry_run: bool = Field(False, description="sagemaker: build and show the request, start nothing")
    wait: bool = Field(
        True, description="sagemaker: follow the job to its end (false: return once it is created; attach later)"
    )
    new_job: bool = Field(
        False, description="sagemaker: start a new job even when the registry's job of this config completed"
    )
    # SageMaker (values that identify an AWS account come from the environment, never from files)
    job_name: str | None = Field(None, description="SageMaker job name prefix; default: bertlib-<job>-<name>")
    image_uri: str | None = Field(None, description="default: $BERTLIB_IMAGE_URI, else $SAGEMAKER_IMAGE_NAME")
    role: str | None = Field(None, description="default: $BERTLIB_SAGEMAKER_ROLE, else $SAGEMAKER_ROLE")
    instance_type: str = Field(
        "ml.p3dn.24xlarge",
        description="SageMaker instance type; local / local_gpu: the SDK's local mode (Docker on this machine)",
    )
    instance_count: int = Field(1, ge=1, description="SageMaker instances (hosts; local mode: containers)")
    processes_per_host: int | None = Field(None, ge=1, description="default: GPUs of instance_type (local mode: 1)")
    mpi_options: list[str] = Field(default_factory=list, description="extra mpirun options of a SageMaker job")
    subnets: list[str] = Field(
        default_factory=list, description="default: $BERTLIB_SUBNETS, else $SAGEMAKER_SUBNET_IDS"
    )
    security_group_ids: list[str] = Field(
        default_factory=list, description="default: $BERTLIB_SECURITY_GROUP_IDS, else $SAGEMAKER_SECURITY_GROUP_IDS"
    )
    fsx_file_system_id: str | None = Field(None, description="default: $BERTLIB_FSX_ID, else $SAGEMAKER_FSX_ID")
    fsx_mount_name: str | None = Field(
        None,
        description="default: $BERTLIB_FSX_MOUNT_NAME, else $SAGEMAKER_FSX_MOUNT_NAME; FSx paths are "
        "/<mount name>/<path>",
    )
    fsx_directory_path: str | None = Field(None, description="FSx for Lustre folder given as the train channel")
    s3_data_uri: str | None = Field(None, description="s3:// prefix of the data channel (prepare-data: its output)")
    checkpoint_s3_uri: str | None = Field(None, description="s3:// prefix SageMaker syncs the checkpoints to")
    output_s3_uri: str | None = Field(None, description="s3:// prefix of the job's model.tar.gz / output")
    max_run_seconds: int = Field(5 * 24 * 3600, ge=60, description="SageMaker stopping condition")
    use_spot: bool = Field(False, description="managed spot training (resumes from the checkpoints)")
    max_wait_seconds: int | None = Field(None, description="spot: run + wait time limit; default 2 × max_run_seconds")
    volume_size_gb: int = Field(100, ge=1, description="EBS volume per SageMaker instance")
    environment: dict[str, str] = Field(default_factory=dict, description="environment variables of every rank")
    tags: dict[str, str] = Field(default_factory=dict, description="SageMaker job tags")
    region: str | None = Field(None, description="AWS region; default: the session's")

    @property
    def local_mode(self) -> bool:
        """The job runs in the SageMaker SDK's local mode (``instance_type`` local / local_gpu)."""
        return self.instance_type in LOCAL_INSTANCE_TYPES

    @property
    def per_host(self) -> int:
        """Ranks per SageMaker instance: ``processes_per_host``, else the GPUs of ``instance_type`` (local
        mode: 1, the GPU count of this machine is not known here)."""
        if self.local_mode:
            return self.processes_per_host or 1
        return self.processes_per_host or gpus_per_instance(self.instance_type)

    @model_validator(mode="after")
    def _check_local_mode(self):
        """Local mode has no S3, spot, VPC or FSx: a setting for one of them is refused, not ignored."""
        if self.local_mode:
            given = [k for k in _NOT_IN_LOCAL_MODE if getattr(self, k)] + ([] if self.wait else ["wait: false"])
            if given:  # (local mode runs in the foreground: nothing to attach to later)
                raise ValueError(
                    f"instance_type {self.instance_type} (the SDK's local mode) has no {', '.join(given)}: "
                    "unset it (checkpoints stay in the containers, results go to run_dir / output_dir)"
                )
        return self

    @property
    def world_size(self) -> int:
        """Processes the launch starts: SageMaker ``per_host × instance_count``, locally ``num_processes``."""
        if self.backend == "sagemaker":
            return self.per_host * self.instance_count
        return self.num_processes


class DataLaunchConfig(LaunchConfig):
    """Launch settings of ``prepare-data``: a CPU instance type, one process per host."""

    instance_type: str = Field("ml.m5.24xlarge", description="SageMaker instance type")

    @model_validator(mode="after")
    def _check_per_host(self):
        if self.processes_per_host not in (None, 1):
            raise ValueError("processes_per_host: data preparation runs one process per host (it uses every core)")
        return self

    @property
    def per_host(self) -> int:
        return 1


def global_batch(cfg, world: int) -> int:
    """THE global-batch rule: sequences per optimizer step of the training config ``cfg`` with ``world``
    processes, ``per_gpu_batch_size × world × gradient_accumulation_steps``. A set
    ``global_batch_size_check`` (pretraining) must equal it, else ConfigError. Used at launch time with
    the launch's world size (:class:`LaunchedJob`, :mod:`bertlib.launch.sagemaker`) and in the job with
    the launcher's (:mod:`bertlib.train.pretrain`, :mod:`bertlib.train.loop`)."""
    got = cfg.per_gpu_batch_size * world * cfg.gradient_accumulation_steps
    want = getattr(cfg, "global_batch_size_check", None)
    if want is not None and got != want:
        raise ConfigError(
            f"global batch: per_gpu_batch_size {cfg.per_gpu_batch_size} × {world} processes × "
            f"{cfg.gradient_accumulation_steps} accumulation = {got}, not global_batch_size_check={want}"
        )
    return got


class _TrainingCommon(_Strict):
    """Knobs shared by pretraining and SQuAD finetuning (the seed's flag names)."""

    model_size: Literal["tiny", "mini", "small", "base", "large"] = Field(
        "base", description="BERT preset (a checkpoint_path export brings its own config)"
    )
    per_gpu_batch_size: int = Field(..., ge=1, description="sequences per process per micro-batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_seq_length: int = Field(..., ge=8, le=4096, description="tokens per sequence (must match the data)")
    learning_rate: float = Field(..., gt=0, description="peak learning rate (after warmup)")
    end_learning_rate: float = Field(0.0, ge=0, description="learning rate at total_steps")
    learning_rate_decay_power: float = Field(1.0, gt=0, description="polynomial decay power (1 = linear)")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    total_steps: int = Field(..., ge=1, description="optimizer steps of the run")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay; LayerNorm and biases excluded")
    max_grad_norm: float = Field(1.0, ge=0, description="global-norm clip; 0 = off")
    grad_clip: Literal[GRAD_CLIP_MODES] = Field(
        "global_mean",
        description="where max_grad_norm clips: global_mean = the mean gradient after the allreduce; "
        "per_rank_sum = each rank's unscaled sum over its micro-batches, before the allreduce (the reference's)",
    )
    allreduce_compression: Literal[ALLREDUCE_COMPRESSIONS] = Field(
        "none", description="gradients cross the allreduce as float32 (none) or float16 (fp16, the reference's)"
    )
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1, description="dropout of embeddings and layer outputs")
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1, description="dropout of attention probabilities")
    precision: Literal["fp32", "mixed_float16", "mixed_bfloat16"] = Field(
        "fp32", description="Keras mixed-precision policy (float16 uses dynamic loss scaling)"
    )
    initial_loss_scale: float = Field(2.0**15, gt=0, description="mixed_float16: starting loss scale")
    skip_xla: bool = Field(False, description="do not XLA-compile the train step")
    load_from: Literal["scratch", "checkpoint"] = Field(
        "scratch", description="scratch: random init; checkpoint: weights from checkpoint_path"
    )
    checkpoint_path: str | None = Field(
        None, description="export dir, training checkpoints, Google TF1 or HF safetensors checkpoint"
    )
    load_optimizer_state: bool = Field(False, description="also restore the optimizer slots from checkpoint_path")
    log_frequency: int = Field(10, ge=1, description="metrics line every N steps")
    checkpoint_frequency: int = Field(1000, ge=1, description="training checkpoint every N steps")
    keep_checkpoints: int = Field(3, ge=1, description="newest training checkpoints kept")
    run_dir: str = Field("runs/latest", description="outputs: metrics, checkpoints, export, summary.json")
    hf_export: bool | None = Field(
        None,
        description="also write the Hugging Face export (transformers, keras-hub) into the export's hf/; "
        "unset: on for phase 2 and SQuAD, off for phase 1",
    )
    seed: int = Field(42, description="random seed (initialization, dropout, shuffling)")
    deterministic_ops: bool = Field(
        True, description="TF op determinism: a resumed run matches an uninterrupted one (slower on GPU)"
    )

    @model_validator(mode="after")
    def _check_common(self):
        if self.load_from == "checkpoint" and not self.checkpoint_path:
            raise ValueError("load_from: checkpoint needs checkpoint_path")
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) > total_steps ({self.total_steps})")
        return self


class PretrainConfig(_TrainingCommon):
    """Phase 1 / phase 2 BERT pretraining (``bertlib pretrain``)."""

    phase: Literal["phase1", "phase2"] = Field("phase1", description="label of the run (metrics, registry)")
    data_dir: str = Field(..., description="a prepared dataset folder (manifest.json) or $SM_CHANNEL_TRAIN")
    validation_dir: str | None = Field(
        None,
        description="held-out shards: a prepared dataset folder (its validation split, else all its "
        "shards); unset: data_dir's validation split. On SageMaker it is shipped as the validation channel",
    )
    validation_frequency: int = Field(
        2000,
        ge=0,
        description="held-out MLM/NSP evaluation every N steps and at the end (the reference's 2000); 0 = never",
    )
    validation_steps: int | None = Field(
        None, ge=1, description="at most N batches per process per evaluation; unset = every held-out record"
    )
    max_predictions_per_seq: int = Field(..., ge=1, description="masked positions per sequence (must match the data)")
    optimizer: Literal["lamb", "adamw", "google_adamw"] = Field(
        "lamb", description="LAMB (the reference's), or adamw / google_adamw as SquadConfig.optimizer"
    )
    learning_rate_decay_power: float = Field(0.5, gt=0, description="polynomial decay power (the reference's 0.5)")
    global_batch_size_check: int | None = Field(
        None,
        description="if set, per_gpu_batch_size × processes × accumulation must equal it (checked at launch "
        "and in the job, with the launcher's world size)",
    )
    shuffle_buffer: int = Field(10000, ge=1, description="records in the input shuffle buffer")

    @model_validator(mode="after")
    def _check_pretrain(self):
        if self.max_predictions_per_seq > self.max_seq_length:
            raise ValueError("max_predictions_per_seq > max_seq_length")
        return self


class SquadConfig(_TrainingCommon):
    """SQuAD v1.1 / v2.0 finetuning, prediction and evaluation (``bertlib squad``)."""

    squad_version: Literal["squadv1", "squadv2"] = Field("squadv1", description="squadv2: questions may have no answer")
    train_file: str = Field(..., description="path or URL of the SQuAD train JSON")
    predict_file: str = Field(..., description="path or URL of the SQuAD dev JSON")
    train_file_sha256: str | None = Field(None, description="expected sha256 of train_file")
    predict_file_sha256: str | None = Field(None, description="expected sha256 of predict_file")
    vocab_file: str | None = Field(None, description="default: the checkpoint's vocab.txt")
    do_lower_case: bool | None = Field(None, description="default: the checkpoint's casing")
    # the defaults are the reference's finetuning recipe (aws-samples/deep-learning-models run_squad.py)
    optimizer: Literal["adamw", "google_adamw", "lamb"] = Field(
        "adamw",
        description="adamw: Adam with bias correction and ε 1e-7 added to √v, as tf.keras Adam / "
        "tfa.optimizers.AdamW (the reference's); google_adamw: google-research/bert AdamWeightDecayOptimizer "
        "(no bias correction, ε 1e-6; Google's recipe pairs it with weight_decay 0.01 and dropout 0.1); "
        "lamb. β1 0.9, β2 0.999 for all",
    )
    weight_decay: float = Field(0.0, ge=0, description="decoupled, lr·λ·w; LayerNorm and biases excluded")
    hidden_dropout_prob: float = Field(0.0, ge=0, lt=1, description="the reference's ModelArguments default")
    attention_probs_dropout_prob: float = Field(0.0, ge=0, lt=1, description="the reference's ModelArguments default")
    max_seq_length: int = Field(384, ge=8, le=4096, description="tokens per question + context window")
    doc_stride: int = Field(128, ge=1, description="tokens between the starts of a long context's windows")
    max_query_length: int = Field(64, ge=1, description="question tokens kept")
    n_best_size: int = Field(20, ge=1, description="start/end candidates considered per window")
    max_answer_length: int = Field(30, ge=1, description="longest predicted answer, in tokens")
    null_score_diff_threshold: float = Field(0.0, description="squadv2: predict no answer above this score margin")
    predict_batch_size: int = Field(32, ge=1, description="windows per prediction batch")
    cache_dir: str | None = Field(None, description="feature cache; default: run_dir/../squad_cache")
    skip_xla: bool = Field(True, description="do not XLA-compile the train step")
    learning_rate_decay_power: float = Field(1.0, gt=0, description="polynomial decay power (1 = linear)")


class PhaseSpec(_Strict):
    """One output dataset of ``prepare-data`` (phase 1 = 128/20, phase 2 = 512/80)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="sub-folder of output_dir")
    max_seq_length: int = Field(..., ge=8, le=4096, description="tokens per record")
    max_predictions_per_seq: int = Field(..., ge=1, description="masked positions per record")
    max_pairs_per_row: int | None = Field(
        None, ge=1, description="pack_sequences: this phase's pairs per record (unset: DataConfig's)"
    )


class DataConfig(_Strict):
    """Wikipedia / text → WordPiece → pretraining TFRecords (``bertlib prepare-data``).

    Launched with ``backend: sagemaker`` (:class:`DataLaunchConfig`) it runs as a SageMaker job on
    ``instance_count`` instances, one MPI rank each, writing the dataset to ``s3_data_uri``
    (:mod:`bertlib.launch.sagemaker`)."""

    sources: list[str] = Field(..., min_length=1, description="dump/text paths or http(s)/s3 URLs")
    source_sha256: dict[str, str] = Field(default_factory=dict, description="URL → expected sha256")
    source_format: Literal["auto", "wikipedia", "text"] = Field(
        "auto", description="wikipedia: XML dump (.bz2); text: plain text; auto: by file name"
    )
    text_doc_mode: Literal["blank_line", "file"] = Field(
        "blank_line", description="text sources: documents end at a blank line, or one per file"
    )
    output_dir: str = Field(..., description="dataset root; one sub-folder per phase")
    cache_dir: str | None = Field(None, description="download cache; default ~/.cache/bertlib")
    vocab_file: str | None = Field(None, description="existing vocab.txt; unset = train one")
    vocab_sha256: str | None = Field(None, description="expected sha256 of vocab_file")
    vocab_size: int = Field(30522, ge=100, description="size of a trained vocab")
    do_lower_case: bool = Field(True, description="lowercase the text (uncased model)")
    strip_accents: bool | None = Field(None, description="unset: as do_lower_case (BERT's rule)")
    max_documents: int | None = Field(None, ge=1, description="use only the first N documents (smoke runs)")
    phases: list[PhaseSpec] = Field(
        description="output datasets: name, max_seq_length, max_predictions_per_seq[, max_pairs_per_row]",
        default_factory=lambda: [
            PhaseSpec(name="phase1", max_seq_length=128, max_predictions_per_seq=20),
            PhaseSpec(name="phase2", max_seq_length=512, max_predictions_per_seq=80),
        ],
    )
    num_shards: int = Field(8, ge=1, description="training shards (files) per phase")
    validation_shards: int = Field(1, ge=0, description="held-out shards per phase (0 = none)")
    validation_fraction: float = Field(0.01, ge=0, lt=1, description="share of documents held out")
    num_workers: int = Field(0, ge=0, description="0 = os.cpu_count()")
    work_dir: str | None = Field(None, description="scratch for .corpus and instance files; default output_dir")
    num_hosts: int | None = Field(
        None,
        ge=1,
        description="machines sharing this run on one file system (host_index: this one's "
        "number); unset = the MPI world's size, else 1 (bertlib.data.hosts)",
    )
    host_index: int | None = Field(None, ge=0, description="with num_hosts: which share this run writes")
    dupe_factor: int = Field(5, ge=1, description="passes over the corpus, each with other masks and pairs")
    short_seq_prob: float = Field(0.1, ge=0, le=1, description="probability of a shorter target length")
    masked_lm_prob: float = Field(0.15, gt=0, lt=1, description="share of tokens masked")
    whole_word_masking: bool = Field(False, description="mask all WordPieces of a word together")
    pack_sequences: bool = Field(
        False,
        description="pack several [CLS] A [SEP] B [SEP] pairs per record (Krell et al. 2021, "
        "arXiv 2107.02027, shortest-pack-first histogram packing) instead of padding each one",
    )
    max_pairs_per_row: int = Field(3, ge=1, description="pack_sequences: at most this many pairs per record")
    dynamic_masking: bool = Field(
        False, description="store unmasked pairs; the input pipeline draws fresh token-level masks every epoch"
    )
    seed: int = Field(12345, description="random seed of pairing and masking")

    @model_validator(mode="after")
    def _check_packing(self):
        if self.dynamic_masking and self.whole_word_masking:
            raise ValueError("dynamic_masking draws token-level masks only; set whole_word_masking: false")
        if self.pack_sequences:
            # a row's pairs (each >= 5 tokens) predict sum_j max(1, rint(prob * L_j)) <= prob * S + K / 2 tokens
            for p in self.phases:
                k = self.pairs_per_row(p)
                need = math.floor(self.masked_lm_prob * p.max_seq_length + k / 2 + 1e-9)
                if p.max_predictions_per_seq < need:
                    raise ValueError(
                        f"phases.{p.name}: pack_sequences with max_pairs_per_row={k} needs "
                        f"max_predictions_per_seq >= {need} (masked_lm_prob * max_seq_length + "
                        f"max_pairs_per_row / 2), got {p.max_predictions_per_seq}"
                    )
        return self

    def pairs_per_row(self, phase: PhaseSpec) -> int:
        """K of a phase's records: 1 unpacked, else the phase's ``max_pairs_per_row`` or this config's."""
        if not self.pack_sequences:
            return 1
        return phase.max_pairs_per_row or self.max_pairs_per_row


class AdoptConfig(_Strict):
    """Google-format pretraining TFRecords made elsewhere → a prepared dataset (``bertlib adopt-data``)."""

    data_dir: str = Field(..., description="folder of the records; manifest.json and vocab.txt are written into it")
    vocab_file: str = Field(..., description="the vocab.txt the records were made with")
    do_lower_case: bool = Field(True, description="casing the records were tokenized with")
    strip_accents: bool | None = Field(None, description="unset: as do_lower_case (BERT's rule)")
    train_files: str = Field("*", description="glob under data_dir (** recurses) of the training record files")
    validation_files: str | None = Field(None, description="glob of held-out record files (wins over train_files)")
    validation_shards: int = Field(0, ge=0, description="without validation_files: hold out the last N files")
    force: bool = Field(False, description="replace a manifest.json written by prepare-data or another tool")

    @model_validator(mode="after")
    def _check_split(self):
        if self.validation_files and self.validation_shards:
            raise ValueError("give validation_files or validation_shards, not both")
        return self


#: allreduce message sizes a canary measures by default: 1 KiB, 4 KiB, ... 64 MiB
CANARY_ALLREDUCE_SIZES = [1024 * 4**i for i in range(9)]


class CanaryConfig(PretrainConfig):
    """``bertlib canary``: a pretraining config (the run the canary precedes, its model, batch and
    sequence settings as they are) plus what the canary measures and the run it projects."""

    canary_steps: int = Field(6, ge=2, le=1000, description="training steps timed (the first, tracing, apart)")
    allreduce_sizes: list[int] = Field(
        CANARY_ALLREDUCE_SIZES, min_length=1, description="allreduce message sizes in bytes (multiples of 4)"
    )
    allreduce_iterations: int = Field(5, ge=1, description="timed allreduces per message size (after 2 warm-ups)")
    projected_instance_type: str = Field("local", description="the full run's instance type (its price)")
    projected_instance_count: int = Field(1, ge=1, description="the full run's instances")
    projected_world_size: int = Field(1, ge=1, description="the full run's processes")
    projected_max_run_seconds: int | None = Field(None, ge=1, description="the full run's max_run_seconds")

    @model_validator(mode="after")
    def _check_canary(self):
        bad = [s for s in self.allreduce_sizes if s < 4 or s % 4]
        if bad:
            raise ValueError(f"allreduce_sizes: {bad[0]} is not a positive multiple of 4 bytes (float32 elements)")
        return self


JOBS: dict[str, type[_Strict]] = {
    "prepare-data": DataConfig,
    "pretrain": PretrainConfig,
    "squad": SquadConfig,
    "adopt-data": AdoptConfig,
    "canary": CanaryConfig,
}


def parse_overrides(argv: list[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """``["--total_steps", "10", "--skip_xla", "true"]`` → ``{"total_steps": 10, "skip_xla": True}``.

    A thin wrapper over the generated command line (:func:`bertlib.core.cli_schema.parse_values`): values
    are parsed as YAML, so SageMaker's string hyperparameters type-check like the YAML file does;
    ``--key=value`` and dashes in keys work too. With ``model``, a key that is not one of its fields is
    refused; without, any ``--key`` is taken.
    """
    return parse_values(list(argv), model)


def job_command(
    job: str,
    help: str | None = None,
    params: list | None = None,
    name: str | None = None,
    progress_flag: bool = False,
    launched: bool = False,
    **kwargs,
):
    """``bertlib JOB``'s command line (:func:`bertlib.core.cli_schema.command`): ``--config FILE`` plus one
    option per key of the job's schema, whose ``--help`` lists them with type, default and description;
    with ``progress_flag`` also ``--no_progress`` (``args.extras["no_progress"]``). ``launched=True``: the
    keys of the launched job (its :class:`LaunchConfig` ones too, :func:`flat_schema`)."""
    cls = flat_schema(job) if launched else JOBS[job]
    return command(
        name or f"bertlib {job}",
        cls,
        help=help,
        params=[*(params or []), *([progress_option()] if progress_flag else [])],
        config=f"params YAML ({cls.__name__} keys); the options below override its values",
        **kwargs,
    )


def parse_job_args(job: str, cmd, argv: list[str]):
    """``argv`` → ``(validated config, Args)`` with ``cmd`` (:func:`job_command`), or ``(None, None)`` when
    ``--help`` was printed."""
    args = parse(cmd, argv)
    if args is None:
        return None, None
    return load_config(job, args.config, args.values), args


def _format_error(source: str, err: ValidationError) -> str:
    # an unknown key (often a typo) explains the other problems best, so it is named first
    first = min(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = ".".join(str(p) for p in first["loc"]) or "(file)"
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = f"unknown key {loc!r}"
    elif kind == "missing":
        msg = f"missing required key {loc!r}"
    elif kind == "value_error" and not first["loc"]:  # a rule across keys (a model validator) names its keys
        msg = first["msg"].removeprefix("Value error, ")
    else:
        given = first.get("input")
        msg = f"key {loc!r}: {first['msg']}" + (f" (got {given!r})" if not isinstance(given, dict) else "")
    more = len(err.errors()) - 1
    return f"{source}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a params YAML file into a dict; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def build_config(job: str | type[_Strict], values: dict[str, Any], source: str = "params"):
    """Validate ``values`` against the job's schema; ``source`` names where they came from."""
    cls = JOBS[job] if isinstance(job, str) else job
    try:
        return cls(**values)
    except ValidationError as e:
        raise ConfigError(_format_error(source, e)) from None


#: papermill-only keys of the notebook params files (``params/*/*.yaml``, :mod:`bertlib.notebook`)
NOTEBOOK_KEYS = ("experiment", "runs_root", "squad_versions")
#: how to run a notebook params file instead of giving it to an entry point
_RUN_NOTEBOOK_PARAMS = {
    "pretrain": "bertlib launch pretrain --config {path}",
    "squad": "bertlib launch squad --config {path}",
    "prepare-data": "papermill notebooks/01_data_prep.ipynb OUT.ipynb -f {path}",
}


def load_config(
    job: str | type[_Strict], path: str | os.PathLike | None = None, overrides: dict[str, Any] | list[str] | None = None
):
    """Load ``path`` (optional) and apply overrides (a dict or ``--key value`` argv list); the job's own
    schema only (an entry point's config: launch keys are unknown keys here, see :func:`load_launched`).

    A notebook params file (it sets ``experiment``; its ``auto`` / ``asset:`` / ``${VAR}`` values are
    resolved by the notebooks and ``bertlib launch``) is refused with the command that runs it.
    """
    values, source = _load_values(job, path, overrides)
    return build_config(job, values, source)


def _load_values(job, path, overrides) -> tuple[dict[str, Any], str]:
    """The values of ``path`` (optional) updated by ``overrides``, and the source naming them."""
    values = read_yaml(path) if path else {}
    notebook_keys = [k for k in NOTEBOOK_KEYS if k in values]
    if notebook_keys and job in _RUN_NOTEBOOK_PARAMS:
        raise ConfigError(
            f"{path}: a notebook params file (it sets {notebook_keys[0]!r}): run it with "
            f"`{_RUN_NOTEBOOK_PARAMS[job].format(path=path)}`; `bertlib {job}` takes a plain "
            "run config"
        )
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values.update(overrides or {})
    source = str(path) if path else "command line"
    if overrides and path:
        source += " (with overrides)"
    return values, source


def to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (written to ``RUN_DIR/config.yaml``)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


#: job → the schema of its launch settings (the jobs ``bertlib launch`` and the notebooks run)
LAUNCH_CONFIGS: dict[str, type[LaunchConfig]] = {
    "prepare-data": DataLaunchConfig,
    "pretrain": LaunchConfig,
    "squad": LaunchConfig,
}


@dataclass(frozen=True)
class LaunchedJob:
    """A job as launched: where and how it runs (``launch``) composed with what it does (``job``, the
    config its entry point validates). Built from one flat params dict by :func:`build_launched`."""

    launch: LaunchConfig
    job: PretrainConfig | SquadConfig | DataConfig

    @property
    def world_size(self) -> int:
        """The processes the launch starts (the job learns its own from the launcher at run time)."""
        return self.launch.world_size

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step of a training job with this launch's world size (:func:`global_batch`)."""
        return global_batch(self.job, self.world_size)

    def values(self) -> dict[str, Any]:
        """The flat params dict (launch keys, then the job's), as JSON-compatible values."""
        return {**self.launch.model_dump(mode="json"), **self.job.model_dump(mode="json")}

    def updated(self, values: dict[str, Any], source: str = "params") -> LaunchedJob:
        """A copy with ``values`` (keys of either schema) laid over, validated again."""
        launch_cls, job_cls = type(self.launch), type(self.job)
        return _build_launched(
            launch_cls, job_cls, {**self.launch.model_dump(), **self.job.model_dump(), **values}, source
        )


def flat_schema(job: str) -> type[_Strict]:
    """One model with the launch keys and the job's keys, for generated command lines and key lists
    (never for validation: :func:`build_launched` validates the two schemas apart)."""
    return type(f"Launched{JOBS[job].__name__}", (JOBS[job], LAUNCH_CONFIGS[job]), {"__doc__": JOBS[job].__doc__})


def launched_fields(job: str) -> dict[str, Any]:
    """Every key a launched ``job`` takes (its launch settings and its config) → its pydantic field."""
    return {**LAUNCH_CONFIGS[job].model_fields, **JOBS[job].model_fields}


def _build_launched(launch_cls, job_cls, values: dict[str, Any], source: str) -> LaunchedJob:
    unknown = [k for k in values if k not in launch_cls.model_fields and k not in job_cls.model_fields]
    if unknown:
        more = len(unknown) - 1
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
        )
    job_cfg = build_config(job_cls, {k: v for k, v in values.items() if k in job_cls.model_fields}, source)
    launch = build_config(launch_cls, {k: v for k, v in values.items() if k not in job_cls.model_fields}, source)
    if getattr(job_cfg, "global_batch_size_check", None) is not None:
        try:
            global_batch(job_cfg, launch.world_size)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return LaunchedJob(launch, job_cfg)


def build_launched(job: str, values: dict[str, Any], source: str = "params") -> LaunchedJob:
    """One flat params dict → :class:`LaunchedJob`: each key goes to the schema that declares it (a key
    of neither is refused, one line naming ``source`` and the key); then the global batch is checked
    with the launch's world size."""
    if job not in LAUNCH_CONFIGS:
        raise ConfigError(f"job {job!r}: expected one of {', '.join(LAUNCH_CONFIGS)}")
    return _build_launched(LAUNCH_CONFIGS[job], JOBS[job], values, source)


def load_launched(
    job: str, path: str | os.PathLike | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> LaunchedJob:
    """:func:`load_config` for a launched job: the file's and the overrides' keys split into
    :class:`LaunchedJob` ``(launch, job)`` by :func:`build_launched`."""
    values, source = _load_values(job, path, overrides)
    return build_launched(job, values, source)
