"""``bertlib squad --config FILE.yaml [--key value ...]``: SQuAD v1.1 / v2.0 finetune, predict, evaluate.

The same code runs as one process, under ``horovodrun -np N`` and in a SageMaker training job::

    config + SQuAD files + vocabulary/casing checks      (here, before TensorFlow is imported)
    └─ finetune_run.run: Horovod init ─ features (rank 0 builds the TFRecord cache, the others wait)
       └─ encoder: load_pretrained(checkpoint_path) or a fresh model_size preset ─ BertQA head
          └─ Trainer.fit (AdamW + warmup/linear decay, loss scaling, Horovod averaging, resume)
             └─ rank 0: logits on predict_file ─ predictions.json, nbest_predictions.json,
                null_odds.json ─ metrics.evaluate ─ summary.json + the eval log line

The loss is run_squad's: the mean of the start and end cross-entropies, each a softmax over all
``max_seq_length`` positions. For v2.0 the evaluation gets ``null_odds.json`` as its na-prob file
(as with the official script after run_squad), which adds the best-threshold numbers.

Bad input (unknown key, missing or malformed SQuAD file, a SQuAD version different from
``squad_version``, a vocabulary or casing that differs from the checkpoint's) is one line on stderr
and exit code 2, before any TensorFlow work.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from bertlib.core.config import SquadConfig, job_command, parse_job_args
from bertlib.core.errors import ConfigError, run_guarded
from bertlib.core.vocab import check_vocab_compatible, read_vocab, vocab_info
from bertlib.model.checkpoints import resolve_pretrained
from bertlib.squad.reading import load_squad_json, read_squad_examples
from bertlib.train import distributed
from bertlib.train.paths import run_paths

#: the module of the TensorFlow side, imported by name once the input is checked
RUN_MODULE = "bertlib.squad.finetune_run"

VERSIONS = {"squadv1": "1.1", "squadv2": "2.0"}


#: ``bertlib squad``'s command line, generated from SquadConfig (``--help`` lists every key)
CLI = job_command(
    "squad",
    help="SQuAD finetune + predict + evaluate: --config FILE (optional) plus --key value "
    "overrides of its SquadConfig keys (values are YAML).",
)


def parse_args(argv: list[str]) -> SquadConfig | None:
    """``--config FILE`` (optional) plus ``--key value`` overrides → a validated SquadConfig (None: ``--help``
    was printed)."""
    return parse_job_args("squad", CLI, argv)[0]


# ----------------------------------------------------------------------------- input checks (before training)
def resolve_tokenizer(cfg: SquadConfig) -> tuple[Path, bool, int | None]:
    """The vocab file and casing to use → ``(vocab_file, lowercase, model vocab_size or None)``.

    Defaults come from the init checkpoint (its ``vocab.txt`` and the casing that
    :func:`bertlib.model.checkpoints.resolve_pretrained` finds: ``vocab_info.json``,
    ``tokenizer_config.json`` or Google's ``uncased_``/``cased_`` naming). A ``vocab_file`` or
    ``do_lower_case`` that differs from the checkpoint's is a ConfigError saying which part differs
    (vocab sha256/size, or casing); so is a vocab whose size is not the model's ``vocab_size``.
    """
    info = None
    if cfg.load_from == "checkpoint":
        info = resolve_pretrained(cfg.checkpoint_path)
    vocab = Path(cfg.vocab_file) if cfg.vocab_file else (info.vocab_file if info else None)
    if vocab is None:
        raise ConfigError(
            "vocab_file is not set"
            + (f" and {cfg.checkpoint_path} has no vocab.txt" if info else " (needed with load_from: scratch)")
        )
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: vocab_file not found")
    ckpt_lower = info.do_lower_case if info else None
    lowercase = cfg.do_lower_case if cfg.do_lower_case is not None else ckpt_lower
    if lowercase is None:
        if info is not None:
            raise ConfigError(
                f"{cfg.checkpoint_path}: the checkpoint does not say whether it is cased; "
                "set do_lower_case: true or false"
            )
        lowercase = True
    if info is not None:
        expected = vocab_info(info.vocab_file, lowercase) if info.vocab_file else {}
        expected.update(info.vocab_info or {})
        if ckpt_lower is not None:
            expected["lowercase"] = ckpt_lower
        what = ", ".join(
            f"{k} {v}"
            for k, v in (("vocab_file", cfg.vocab_file), ("do_lower_case", cfg.do_lower_case))
            if v is not None
        )
        check_vocab_compatible(
            expected,
            vocab_info(vocab, lowercase),
            f"the checkpoint {cfg.checkpoint_path}",
            f"the requested tokenizer ({what or vocab})",
        )
        n = len(read_vocab(vocab))
        if n != info.config.vocab_size:
            raise ConfigError(
                f"vocab_file {vocab} has {n} entries but the checkpoint {cfg.checkpoint_path} "
                f"has vocab_size {info.config.vocab_size}"
            )
        return vocab, lowercase, info.config.vocab_size
    return vocab, lowercase, None


@dataclass
class SquadInputs:
    """Everything read and checked before TensorFlow: files, examples, tokenizer settings."""

    vocab_file: Path
    lowercase: bool
    vocab_size: int
    train_path: Path
    predict_path: Path
    train_examples: list
    predict_examples: list
    predict_json: dict
    reports: dict


def validate_inputs(cfg: SquadConfig) -> SquadInputs:
    """Read both SQuAD files (downloading URLs), check their version, then the tokenizer against
    the checkpoint (which imports TensorFlow only for ``load_from: checkpoint``)."""
    window = cfg.max_seq_length - cfg.max_query_length - 3
    if cfg.doc_stride > window:
        raise ConfigError(
            f"doc_stride {cfg.doc_stride} is larger than the document window "
            f"max_seq_length - max_query_length - 3 = {window}: tokens would be skipped"
        )
    want = VERSIONS[cfg.squad_version]
    v2 = want == "2.0"
    loaded = {}
    for key, src, sha in (
        ("train", cfg.train_file, cfg.train_file_sha256),
        ("predict", cfg.predict_file, cfg.predict_file_sha256),
    ):
        data, version, path = load_squad_json(src, sha)
        if version != want:
            raise ConfigError(
                f"{src}: SQuAD version {data.get('version', '1.1')!r} but squad_version is "
                f"{cfg.squad_version} (v{want})"
            )
        loaded[key] = (path, data)
    train_examples, train_report = read_squad_examples(cfg.train_file, True, v2, dataset=loaded["train"][1])
    predict_examples, predict_report = read_squad_examples(cfg.predict_file, False, v2, dataset=loaded["predict"][1])
    vocab, lowercase, model_vocab_size = resolve_tokenizer(cfg)
    return SquadInputs(
        vocab_file=vocab,
        lowercase=lowercase,
        vocab_size=model_vocab_size or len(read_vocab(vocab)),
        train_path=loaded["train"][0],
        predict_path=loaded["predict"][0],
        train_examples=train_examples,
        predict_examples=predict_examples,
        predict_json=loaded["predict"][1],
        reports={"train": train_report.as_dict(), "predict": predict_report.as_dict()},
    )


def main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    if cfg is None:
        return 0
    distributed.prepare_process()  # before any TF op
    paths = run_paths(cfg)
    inputs = validate_inputs(cfg)
    importlib.import_module(RUN_MODULE).run(cfg, paths, inputs)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
