"""Ask a finetuned SQuAD model a question: question + context → answer text, its characters in the
context, and its probability — the same path as the run's own prediction, and its HTML.

A SQuAD run exports its finetuned model (encoder + ``cls/squad`` head, Google names) to
``run_dir/export`` (under SageMaker ``SM_MODEL_DIR``, i.e. the job's ``model.tar.gz``) together with
``squad_answer.json``, the settings its predictions were made with (:func:`write_answer_settings`).
:func:`load_qa_model` reads that export (or a run dir holding it); :func:`answer` /
:func:`answer_examples` build the features with :func:`bertlib.squad.features.convert_examples_to_features`,
take the logits with the run's ``predict_logits`` and decode them with
:func:`bertlib.squad.predictions.postprocess` — so a dev question gets exactly the answer of the
run's ``predictions.json``. :func:`context_span` maps the answer back to characters of the context
and :func:`answer_html` shows it highlighted (escaped HTML, for a notebook and its rendered report).

Loading the model imports TensorFlow (the run's module, by name); nothing else here does.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertlib.core.errors import ConfigError
from bertlib.core.files import write_json
from bertlib.data.tokenization import load_wordpiece
from bertlib.model.checkpoints import load_weights, resolve_pretrained
from bertlib.squad.features import SquadFeature, convert_examples_to_features
from bertlib.squad.predictions import postprocess
from bertlib.squad.reading import SquadExample, is_whitespace, read_squad_examples

#: the settings file written beside the finetuned export
SETTINGS_NAME = "squad_answer.json"
#: the SquadConfig keys that decide a prediction
SETTING_KEYS = (
    "squad_version",
    "max_seq_length",
    "doc_stride",
    "max_query_length",
    "n_best_size",
    "max_answer_length",
    "null_score_diff_threshold",
    "predict_batch_size",
)
#: the TensorFlow side (``predict_logits``), imported by name when a model is loaded
RUN_MODULE = "bertlib.squad.finetune_run"
#: the QA model class (TensorFlow), imported by name
HEADS_MODULE = "bertlib.model.heads"


def write_answer_settings(export_dir: str | os.PathLike, cfg) -> Path:
    """Write ``squad_answer.json`` (the :data:`SETTING_KEYS` of the run's SquadConfig) into ``export_dir``."""
    return write_json(Path(export_dir) / SETTINGS_NAME, {k: getattr(cfg, k) for k in SETTING_KEYS})


@dataclasses.dataclass
class Answer:
    """One answer: ``text`` as ``predictions.json`` has it ("" = no answer, SQuAD v2.0), its characters
    ``context[start:end]`` (None for ""), and ``score`` = its n-best probability."""

    question: str
    text: str
    start: int | None
    end: int | None
    score: float
    null_odds: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class QAModel:
    """A loaded finetuned model: the Keras ``BertQA``, its tokenizer and its prediction settings."""

    model: Any
    tokenizer: Any
    settings: dict
    export_dir: Path

    @property
    def v2(self) -> bool:
        return self.settings["squad_version"] == "squadv2"


def find_export(path: str | os.PathLike) -> Path:
    """The finetuned export at ``path``: the export dir itself or a SQuAD run dir holding ``export/``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such SQuAD run or export")
    for cand in (p, p / "export"):
        if (cand / SETTINGS_NAME).is_file():
            return cand
    raise ConfigError(
        f"{p}: not a finetuned SQuAD export (no {SETTINGS_NAME} here or in export/; runs before this file "
        "existed have no QA export: rerun the SQuAD notebook)"
    )


def load_qa_model(path: str | os.PathLike) -> QAModel:
    """Load the finetuned QA model of a SQuAD run dir or export dir (imports TensorFlow)."""
    export = find_export(path)
    settings_file = export / SETTINGS_NAME
    try:
        settings = json.loads(settings_file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{settings_file}: not valid JSON ({e})") from None
    missing = [k for k in SETTING_KEYS if k not in settings]
    if missing:
        raise ConfigError(f"{settings_file}: missing {', '.join(missing)}")
    info = resolve_pretrained(export)
    if info.vocab_file is None or info.do_lower_case is None:
        raise ConfigError(f"{export}: the export has no vocab.txt / casing (vocab_info.json)")
    model = importlib.import_module(HEADS_MODULE).BertQA(info.config)
    load_weights(model, export, allow_missing=())  # the cls/squad head too
    return QAModel(model, load_wordpiece(info.vocab_file, info.do_lower_case), settings, export)


def feature_arrays(features: Sequence[SquadFeature]) -> dict[str, np.ndarray]:
    """Feature list → the arrays :func:`bertlib.squad.cache.read_features` gives ([N, S] / [N] int32)."""
    keys = ("input_ids", "input_mask", "segment_ids", "token_to_orig", "token_is_max_context")
    out = {k: np.array([getattr(f, k) for f in features], np.int32) for k in keys}
    out["example_index"] = np.array([f.example_index for f in features], np.int32)
    out["doc_span_index"] = np.array([f.doc_span_index for f in features], np.int32)
    return out


def answer_examples(qa: QAModel, examples: Sequence[SquadExample]) -> tuple[dict, dict, dict]:
    """``postprocess``'s ``(predictions, nbest, null_odds)`` for ``examples``, n-best entries with spans."""
    s = qa.settings
    features = convert_examples_to_features(
        examples, qa.tokenizer, s["max_seq_length"], s["doc_stride"], s["max_query_length"], is_training=False
    )
    arrays = feature_arrays(features)
    start_logits, end_logits = importlib.import_module(RUN_MODULE).predict_logits(
        qa.model, arrays, s["predict_batch_size"], False
    )
    return postprocess(
        examples,
        arrays,
        start_logits,
        end_logits,
        qa.tokenizer,
        n_best_size=s["n_best_size"],
        max_answer_length=s["max_answer_length"],
        version_2_with_negative=qa.v2,
        null_score_diff_threshold=s["null_score_diff_threshold"],
        with_spans=True,
    )


def context_span(context: str, word_start: int, word_end: int, text_start: int, text_end: int) -> tuple[int, int]:
    """Characters ``(start, end)`` of ``context`` holding the slice ``[text_start, text_end)`` of
    ``" ".join(words[word_start:word_end + 1])`` (``words``: the context split on whitespace as
    :func:`bertlib.squad.reading.split_context` splits it)."""
    word_chars = [
        i for i, c in enumerate(context) if not is_whitespace(c) and (i == 0 or is_whitespace(context[i - 1]))
    ]
    start = end = None
    pos = 0  # offset of the current word in the joined text
    for w in range(word_start, word_end + 1):
        first = word_chars[w]
        length = 0
        while first + length < len(context) and not is_whitespace(context[first + length]):
            length += 1
        if start is None and text_start < pos + length:
            start = first + max(text_start - pos, 0)
        if text_end <= pos + length:
            end = first + max(text_end - pos, 0)
            break
        pos += length + 1
    if start is None or end is None:
        raise ValueError(f"text span [{text_start}, {text_end}) is not inside words {word_start}..{word_end}")
    return start, end


def to_answer(question: str, context: str, qid: str, predictions: dict, nbest: dict, null_odds: dict) -> Answer:
    """The :class:`Answer` of question ``qid`` from :func:`answer_examples`' output."""
    text = predictions[qid]
    entry = next((e for e in nbest[qid] if e["text"] == text), nbest[qid][0])
    start = end = None
    if text and "word_start" in entry:
        start, end = context_span(
            context, entry["word_start"], entry["word_end"], entry["text_start"], entry["text_end"]
        )
    return Answer(question, text, start, end, float(entry["probability"]), null_odds.get(qid))


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: expected a non-empty string (got {value!r})")
    return value


def answer(qa: QAModel, question: str, context: str) -> Answer:
    """Answer ``question`` about ``context`` with the finetuned model."""
    question, context = _check_text(question, "question"), _check_text(context, "context")
    dataset = {
        "version": "2.0" if qa.v2 else "1.1",
        "data": [{"title": "", "paragraphs": [{"context": context, "qas": [{"id": "q", "question": question}]}]}],
    }
    examples, _ = read_squad_examples("question", is_training=False, version_2_with_negative=qa.v2, dataset=dataset)
    return to_answer(question, context, "q", *answer_examples(qa, examples))


def dev_questions(dataset: dict, count: int) -> list[dict]:
    """The first ``count`` questions of a SQuAD JSON: ``{"id", "question", "context", "answers"}``
    (``answers``: the gold texts; [] for an unanswerable v2.0 question)."""
    out = []
    for article in dataset["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                if len(out) == count:
                    return out
                golds = [a["text"] for a in qa.get("answers", [])]
                out.append(
                    {"id": str(qa["id"]), "question": qa["question"], "context": para["context"], "answers": golds}
                )
    return out


def answer_questions(qa: QAModel, questions: list[dict]) -> list[Answer]:
    """Answers of :func:`dev_questions` entries, in one batch of features."""
    dataset = {
        "version": "2.0" if qa.v2 else "1.1",
        "data": [
            {
                "title": "",
                "paragraphs": [
                    {"context": q["context"], "qas": [{"id": q["id"], "question": q["question"]}]} for q in questions
                ],
            }
        ],
    }
    examples, _ = read_squad_examples("questions", is_training=False, version_2_with_negative=qa.v2, dataset=dataset)
    outputs = answer_examples(qa, examples)
    return [to_answer(q["question"], q["context"], q["id"], *outputs) for q in questions]


# ---------------------------------------------------------------------------------------------- HTML

_MARK = '<mark style="background:#ffd54f;padding:0 1px">'


def highlight(context: str, start: int | None, end: int | None) -> str:
    """``context`` as escaped HTML with ``context[start:end]`` inside ``<mark>`` (no mark for None)."""
    if start is None or end is None:
        return html.escape(context)
    return (
        html.escape(context[:start]) + _MARK + html.escape(context[start:end]) + "</mark>" + html.escape(context[end:])
    )


def answer_html(rows: Sequence[tuple[Answer, str, list[str] | None]]) -> str:
    """An HTML table, one row per ``(answer, context, gold answers or None)``: the question, the context
    with the predicted span marked, the answer with its probability, and the gold answers."""
    body = []
    for ans, context, golds in rows:
        predicted = f"<b>{html.escape(ans.text)}</b>" if ans.text else "<i>no answer</i>"
        gold = (
            "—"
            if golds is None
            else ("<i>no answer</i>" if not golds else " | ".join(html.escape(g) for g in dict.fromkeys(golds)))
        )
        body.append(
            '<tr style="vertical-align:top">'
            f'<td style="text-align:left">{html.escape(ans.question)}</td>'
            f'<td style="text-align:left;max-width:40em">{highlight(context, ans.start, ans.end)}</td>'
            f'<td style="text-align:left">{predicted}<br><small>p = {ans.score:.3f}</small></td>'
            f'<td style="text-align:left">{gold}</td></tr>'
        )
    head = "".join(f'<th style="text-align:left">{h}</th>' for h in ("question", "context", "answer", "gold"))
    return f'<table class="bertlib-try-it"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
