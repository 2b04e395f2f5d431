"""SQuAD v1.1 and v2.0 evaluation, reimplemented from the rules of the official scripts.

``bertlib squad-eval DATASET.json PREDICTIONS.json [--na-prob-file F] [--na-prob-thresh T]`` prints the
same JSON the official ``evaluate-v1.1.py`` / ``evaluate-v2.0.py`` print; the dataset's ``version``
field (``1.1`` or ``v2.0``, optionally followed by a suffix such as ``-bertlib-synthetic``) picks
the rules. No TensorFlow is imported here.

Rules shared by both versions:

- ``normalize_answer``: lowercase, drop every ASCII punctuation character (``string.punctuation``),
  replace the whole words ``a``/``an``/``the`` by a space, collapse whitespace.
- exact match (EM): normalized prediction == normalized gold.
- F1: over the bags (multisets) of normalized whitespace tokens of prediction and gold;
  precision = common / |pred|, recall = common / |gold|, F1 = 2PR / (P + R), 0 when nothing is common.
- A question scores the maximum over its gold answers.

v1.1: every question of the dataset counts in the denominator; a question without prediction
scores 0 (and a message names it). Output ``{"exact_match", "f1"}`` in percent.

v2.0: gold answers whose normalized text is empty are dropped, and a question left with no gold
answer is unanswerable, its only gold being ``""``. When either side normalizes to no tokens, EM
and F1 are 1 iff both do. Questions without a prediction are reported and skipped (they are in no
denominator). With ``na_probs`` (qid → probability of "no answer"), a question whose probability is
``> na_prob_thresh`` is treated as predicted unanswerable: it scores 1 if it is unanswerable, else 0.
Output keys, in order: ``exact, f1, total``, ``HasAns_exact, HasAns_f1, HasAns_total``,
``NoAns_exact, NoAns_f1, NoAns_total`` (each split only when the dataset has such questions), and
when an na-prob file is given ``best_exact, best_exact_thresh, best_f1, best_f1_thresh``: the sweep
of thresholds over the sorted na-probs that maximizes the score, starting from "everything
predicted unanswerable" (the official ``find_best_thresh``; its denominator is the number of scored
questions). Where the official v2.0 script crashes (a KeyError when a question of a HasAns/NoAns
split has no prediction), the split here covers the scored questions only.
"""

from __future__ import annotations

import collections
import json
import re
import string
import sys
from pathlib import Path
from typing import Any, Iterator

from bertlib.core.cli_schema import command, parse
from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError, run_guarded

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


# ----------------------------------------------------------------------------- answer scoring
def normalize_answer(s: str) -> str:
    """Lowercase, remove ASCII punctuation, remove the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def answer_tokens(s: str) -> list[str]:
    """The normalized whitespace tokens of ``s`` (``[]`` for an empty answer)."""
    return normalize_answer(s).split() if s else []


def exact_match(prediction: str, gold: str) -> int:
    """1 if the normalized strings are equal, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, empty_matches_empty: bool = True) -> float:
    """Token-bag F1 of two answers.

    ``empty_matches_empty`` (v2.0 rule): if either side has no normalized token, F1 is 1 iff both
    are empty. Without it (v1.1), an empty side simply shares no token and scores 0.
    """
    pred_toks, gold_toks = answer_tokens(prediction), answer_tokens(gold)
    if empty_matches_empty and (not pred_toks or not gold_toks):
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------- dataset access
def squad_version(dataset_json: dict, source: str = "dataset") -> str:
    """``"1.1"`` or ``"2.0"`` from the ``version`` field (``"1.1"``, ``"v2.0"``, ``"v2.0-..."``).

    A file without ``version`` (such as the allennlp fixture) is read as v1.1, with a note.
    """
    if "version" not in dataset_json:
        _warn(f"note: {source} has no 'version' field; using the v1.1 rules")
        return "1.1"
    raw = str(dataset_json["version"])
    m = re.match(r"^v?(1\.1|2\.0)(\b|$)", raw)
    if not m:
        raise ConfigError(f"{source}: unknown SQuAD version {raw!r} (expected '1.1' or 'v2.0')")
    return m.group(1)


def iter_questions(dataset_json: dict, source: str = "dataset") -> Iterator[tuple[str, list[str]]]:
    """Yield ``(qid, [gold answer texts])`` for every question of a SQuAD JSON, in file order."""
    try:
        for article in dataset_json["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    yield str(qa["id"]), [a["text"] for a in qa.get("answers", [])]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{source}: not a SQuAD dataset (missing or malformed {e})") from None


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


# ----------------------------------------------------------------------------- v1.1
def evaluate_v1(dataset_json: dict, predictions: dict[str, str], source: str = "dataset") -> dict:
    """Official v1.1 rules → ``{"exact_match": %, "f1": %}``; a missing prediction scores 0."""
    em = f1 = 0.0
    total = 0
    for qid, golds in iter_questions(dataset_json, source):
        total += 1
        if qid not in predictions:
            _warn(f"Unanswered question {qid} will receive score 0.")
            continue
        if not golds:
            raise ConfigError(f"{source}: question {qid} has no answers (v1.1 needs at least one)")
        pred = predictions[qid]
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(f1_score(pred, g, empty_matches_empty=False) for g in golds)
    if total == 0:
        raise ConfigError(f"{source}: the dataset has no questions")
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


# ----------------------------------------------------------------------------- v2.0
def raw_scores_v2(dataset_json: dict, predictions: dict[str, str], source: str = "dataset"):
    """Per-question EM and F1 before any no-answer threshold, plus ``qid → has answer``.

    Returns ``(exact: dict qid→int, f1: dict qid→float, has_ans: dict qid→bool)``; questions
    without a prediction are reported and absent from ``exact``/``f1``.
    """
    exact, f1, has_ans = {}, {}, {}
    for qid, golds in iter_questions(dataset_json, source):
        has_ans[qid] = bool(golds)
        golds = [g for g in golds if normalize_answer(g)] or [""]
        if qid not in predictions:
            _warn(f"Missing prediction for {qid}")
            continue
        pred = predictions[qid]
        exact[qid] = max(exact_match(pred, g) for g in golds)
        f1[qid] = max(f1_score(pred, g) for g in golds)
    return exact, f1, has_ans


def apply_no_answer_threshold(scores: dict, na_probs: dict, has_ans: dict, thresh: float) -> dict:
    """Questions with ``na_prob > thresh`` count as predicted unanswerable: 1.0 iff truly so."""
    return {qid: (float(not has_ans[qid]) if na_probs[qid] > thresh else s) for qid, s in scores.items()}


def _split(exact: dict, f1: dict, qids: list[str]) -> dict:
    n = len(qids)
    return {"exact": 100.0 * sum(exact[q] for q in qids) / n, "f1": 100.0 * sum(f1[q] for q in qids) / n, "total": n}


def best_threshold(predictions: dict, scores: dict, na_probs: dict, has_ans: dict) -> tuple[float, float]:
    """The official ``find_best_thresh`` sweep → ``(best score in %, its threshold)``.

    Start with every question predicted unanswerable (score = number of unanswerable questions),
    then walk the questions in increasing na-prob order, letting each one answer: an answerable
    one adds its score, an unanswerable one loses 1 if its prediction is non-empty. The best
    running total and the na-prob where it was reached are kept (ties keep the earlier one).
    """
    cur = best = float(sum(1 for v in has_ans.values() if not v))
    thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            cur += scores[qid]
        elif predictions[qid]:
            cur -= 1
        if cur > best:
            best, thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), thresh


def evaluate_v2(
    dataset_json: dict,
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    source: str = "dataset",
) -> dict:
    """Official v2.0 rules → ordered dict (see the module docstring for the keys)."""
    exact_raw, f1_raw, has_ans = raw_scores_v2(dataset_json, predictions, source)
    if not exact_raw:
        raise ConfigError(f"{source}: no question of the dataset has a prediction")
    probs = na_probs if na_probs is not None else {k: 0.0 for k in predictions}
    missing = [q for q in exact_raw if q not in probs]
    if missing:
        raise ConfigError(f"na-prob file: no probability for {len(missing)} question(s), e.g. {missing[0]}")
    exact = apply_no_answer_threshold(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = apply_no_answer_threshold(f1_raw, probs, has_ans, na_prob_thresh)
    out: dict[str, Any] = dict(_split(exact, f1, list(exact)))
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, v in has_ans.items() if v is want and q in exact]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _split(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = best_threshold(predictions, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = best_threshold(predictions, f1_raw, na_probs, has_ans)
    return out


def evaluate(
    dataset_json: dict,
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    source: str = "dataset",
) -> dict:
    """Evaluate ``predictions`` (qid → answer text) against a SQuAD JSON, by its ``version``.

    ``na_probs`` / ``na_prob_thresh`` apply to v2.0 only (as in the official scripts).
    """
    if squad_version(dataset_json, source) == "1.1":
        return evaluate_v1(dataset_json, predictions, source)
    return evaluate_v2(dataset_json, predictions, na_probs, na_prob_thresh, source)


# ----------------------------------------------------------------------------- CLI
def read_json(path: str | Path, what: str, expect: type = dict) -> Any:
    """Load a JSON file; a missing file, bad JSON or a wrong top-level type → one-line error."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: {what} is not valid JSON ({e})") from None
    if not isinstance(data, expect):
        raise ConfigError(f"{p}: {what} must be a JSON {expect.__name__}, got {type(data).__name__}")
    return data


def _check_mapping(data: dict, value_types: tuple, path: str, what: str) -> None:
    bad = next((k for k, v in data.items() if not isinstance(v, value_types) or isinstance(v, bool)), None)
    if bad is not None:
        raise ConfigError(f"{path}: {what} value for {bad!r} has type {type(data[bad]).__name__}")


def format_result(result: dict, version: str) -> str:
    """The official printing: v1.1 ``json.dumps(result)``, v2.0 ``json.dumps(result, indent=2)``."""
    return json.dumps(result) if version == "1.1" else json.dumps(result, indent=2)


def _eval_schema():
    """The arguments of ``bertlib squad-eval`` (its ``--help`` is generated from them); the options are
    the official scripts' (``--na-prob-file/-n``, ``--na-prob-thresh/-t``)."""
    from pydantic import BaseModel, ConfigDict, Field

    class SquadEvalArgs(BaseModel):
        """Official SQuAD v1.1 / v2.0 evaluation."""

        model_config = ConfigDict(extra="forbid")
        data_file: str = Field(
            ...,
            description="SQuAD dataset JSON (its 'version' picks v1.1 or v2.0 rules)",
            json_schema_extra={"cli": {"argument": True}},
        )
        pred_file: str = Field(
            ...,
            description="predictions JSON: {question id: answer text}",
            json_schema_extra={"cli": {"argument": True}},
        )
        na_prob_file: str | None = Field(
            None,
            description="v2.0: {question id: probability of no answer}",
            json_schema_extra={"cli": {"aliases": ["-n"]}},
        )
        na_prob_thresh: float = Field(
            1.0,
            description="v2.0: predict no answer when na_prob > this",
            json_schema_extra={"cli": {"aliases": ["-t"]}},
        )

    return SquadEvalArgs


def main(argv: list[str]) -> int:
    """``bertlib squad-eval DATASET.json PREDICTIONS.json [--na-prob-file F] [--na-prob-thresh T]``."""
    schema = _eval_schema()
    parsed = parse(command("bertlib squad-eval", schema, help=__doc__.splitlines()[0]), argv)
    if parsed is None:
        return 0
    args = build_config(schema, parsed.values, "command line")
    dataset = read_json(args.data_file, "SQuAD dataset")
    preds = read_json(args.pred_file, "predictions file")
    _check_mapping(preds, (str,), args.pred_file, "prediction")
    na_probs = None
    if args.na_prob_file:
        na_probs = read_json(args.na_prob_file, "na-prob file")
        _check_mapping(na_probs, (int, float), args.na_prob_file, "na-prob")
    version = squad_version(dataset, args.data_file)
    result = evaluate(dataset, preds, na_probs, args.na_prob_thresh, source=args.data_file)
    print(format_result(result, version))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
