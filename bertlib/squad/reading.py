"""Reading the official SQuAD v1.1 / v2.0 JSON into :class:`SquadExample` s (stage 1 of
:mod:`bertlib.squad`, the rules of the original BERT ``run_squad.py``).

A context is split on whitespace into ``doc_tokens`` (:func:`split_context`);
``char_to_word_offset`` maps every character to its word, so a gold answer's ``answer_start``
becomes a word span. Training uses the first gold answer; v2.0 ``is_impossible`` questions have no
span. Questions whose ``answer_start`` does not point at their ``text`` in the context, and
malformed question entries, are skipped with a count (:class:`ReadReport`) and one message, never
a crash.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from bertlib.core.assets import fetch_url
from bertlib.core.errors import SquadDataError
from bertlib.squad.metrics import read_json, squad_version


@dataclasses.dataclass
class SquadExample:
    """One question on one context. ``start_position``/``end_position`` index ``doc_tokens`` (-1: none)."""

    qas_id: str
    question_text: str
    doc_tokens: list[str]
    orig_answer_text: str = ""
    start_position: int = -1
    end_position: int = -1
    is_impossible: bool = False


@dataclasses.dataclass
class ReadReport:
    """What reading a SQuAD file kept and skipped."""

    source: str
    version: str
    questions: int = 0
    kept: int = 0
    impossible: int = 0
    answer_mismatch: list[str] = dataclasses.field(default_factory=list)
    malformed: list[str] = dataclasses.field(default_factory=list)

    def message(self) -> str | None:
        """One line describing the skipped questions, or None if nothing was skipped."""
        parts = []
        if self.answer_mismatch:
            parts.append(
                f"{len(self.answer_mismatch)} whose answer_start does not match the context "
                f"(e.g. {self.answer_mismatch[0]})"
            )
        if self.malformed:
            parts.append(f"{len(self.malformed)} malformed (e.g. {self.malformed[0]})")
        if not parts:
            return None
        return f"{self.source}: skipped {' and '.join(parts)} of {self.questions} questions"

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "version": self.version,
            "questions": self.questions,
            "kept": self.kept,
            "impossible": self.impossible,
            "answer_mismatch": len(self.answer_mismatch),
            "malformed": len(self.malformed),
        }


def is_whitespace(c: str) -> bool:
    """run_squad's whitespace: space, tab, CR, LF and NARROW NO-BREAK SPACE (U+202F)."""
    return c in " \t\r\n" or ord(c) == 0x202F


def split_context(text: str) -> tuple[list[str], list[int]]:
    """Context → (whitespace-separated ``doc_tokens``, ``char_to_word_offset`` [len(text)])."""
    doc_tokens: list[str] = []
    char_to_word_offset: list[int] = []
    prev_is_whitespace = True
    for c in text:
        if is_whitespace(c):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                doc_tokens.append(c)
            else:
                doc_tokens[-1] += c
            prev_is_whitespace = False
        char_to_word_offset.append(len(doc_tokens) - 1)
    return doc_tokens, char_to_word_offset


def load_squad_json(path_or_url: str, sha256: str | None = None) -> tuple[dict, str, Path]:
    """Read a SQuAD JSON from a path or URL (downloaded once, checksum-verified) → (json, version,
    local path).

    ``version`` is ``"1.1"`` or ``"2.0"`` (see :func:`bertlib.squad.metrics.squad_version`).
    """
    path = fetch_url(path_or_url, sha256=sha256)
    data = read_json(path, "SQuAD file")
    if not isinstance(data.get("data"), list):
        raise SquadDataError(f"{path_or_url}: not a SQuAD file (no 'data' list)")
    return data, squad_version(data, str(path_or_url)), path


def read_squad_examples(
    path_or_url: str,
    is_training: bool,
    version_2_with_negative: bool,
    sha256: str | None = None,
    dataset: dict | None = None,
) -> tuple[list[SquadExample], ReadReport]:
    """Read a SQuAD file into examples (file order) and a :class:`ReadReport`.

    ``is_training``: keep only questions with a usable answer span (the first gold answer) or, with
    ``version_2_with_negative``, impossible ones; mismatched or malformed questions are skipped and
    counted. For prediction every well-formed question is kept (answers are not needed).
    ``dataset``: an already loaded JSON (then ``path_or_url`` only names it in messages).
    """
    if dataset is None:
        dataset, version, _ = load_squad_json(path_or_url, sha256)
    else:
        version = squad_version(dataset, path_or_url)
    report = ReadReport(source=str(path_or_url), version=version)
    examples: list[SquadExample] = []
    for ai, article in enumerate(dataset["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise SquadDataError(f"{path_or_url}: data[{ai}] has no 'paragraphs' list")
        for pi, paragraph in enumerate(paragraphs):
            context, qas = (
                (paragraph.get("context"), paragraph.get("qas")) if isinstance(paragraph, dict) else (None, None)
            )
            if not isinstance(context, str) or not isinstance(qas, list):
                raise SquadDataError(f"{path_or_url}: data[{ai}].paragraphs[{pi}] needs 'context' and 'qas'")
            doc_tokens, char_to_word = split_context(context)
            for qi, qa in enumerate(qas):
                report.questions += 1
                ex = _read_question(
                    qa,
                    context,
                    doc_tokens,
                    char_to_word,
                    is_training,
                    version_2_with_negative,
                    report,
                    f"data[{ai}].paragraphs[{pi}].qas[{qi}]",
                )
                if ex is not None:
                    examples.append(ex)
                    report.kept += 1
                    report.impossible += int(ex.is_impossible)
    msg = report.message()
    if msg:
        print(f"warning: {msg}", file=sys.stderr)
    if not examples:
        raise SquadDataError(
            f"{path_or_url}: no usable question ({report.questions} read)" + (f"; {msg}" if msg else "")
        )
    return examples, report


def _read_question(
    qa: Any,
    context: str,
    doc_tokens: list[str],
    char_to_word: list[int],
    is_training: bool,
    v2: bool,
    report: ReadReport,
    where: str,
) -> SquadExample | None:
    if (
        not isinstance(qa, dict)
        or not isinstance(qa.get("question"), str)
        or "id" not in qa
        or not isinstance(qa.get("answers", []), list)
    ):
        report.malformed.append(where)
        return None
    qid = str(qa["id"])
    answers = qa.get("answers", [])
    is_impossible = bool(qa.get("is_impossible", False)) if v2 else False
    ex = SquadExample(qas_id=qid, question_text=qa["question"], doc_tokens=doc_tokens, is_impossible=is_impossible)
    if not is_training:
        return ex
    if is_impossible:
        return ex
    if not answers:
        # v1.1 training needs a span; an answerless question counts as impossible only for v2.0
        if v2:
            ex.is_impossible = True
            return ex
        report.malformed.append(f"{qid} (no answer)")
        return None
    answer = answers[0]
    try:
        text, start = answer["text"], int(answer["answer_start"])
    except (KeyError, TypeError, ValueError):
        report.malformed.append(f"{qid} (answer needs 'text' and 'answer_start')")
        return None
    if not text or start < 0 or context[start : start + len(text)] != text:
        report.answer_mismatch.append(f"{qid}: {text!r} at {start}")
        return None
    ex.orig_answer_text = text
    ex.start_position = char_to_word[start]
    ex.end_position = char_to_word[start + len(text) - 1]
    return ex
