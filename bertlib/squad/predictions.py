"""Logits → answers (stage 3 of :mod:`bertlib.squad`, the rules of the original BERT
``run_squad.py``).

For every example the ``n_best_size`` best start and end logits of every window are paired into
valid spans (inside the document part, start at a max-context token, end ≥ start, at most
``max_answer_length`` tokens), ranked by start + end logit, and mapped back to the original text
with :func:`get_final_text`. v2.0 compares the best null score (CLS start + end, lowest over
windows) with the best non-null span: ``null − best > null_score_diff_threshold`` predicts "".
:func:`write_predictions` writes ``predictions.json``, ``nbest_predictions.json`` and
``null_odds.json``. :func:`reference_v1_scores` scores v1.1 logits as the reference's evaluation did.
"""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertlib.squad.metrics import evaluate_v2
from bertlib.squad.reading import SquadExample

#: how aws-samples/deep-learning-models scored SQuAD v1.1 (``albert/run_squad_evaluation.py``: the v2
#: reader, l. 46, ``compute_predictions_logits(..., version_2_with_negative=True,
#: null_score_diff_threshold=0.0)``, l. 91–105, then ``squad_evaluate``, the v2.0 rules, l. 107)
REFERENCE_V1_METHOD = (
    "v2-style post-processing as aws-samples' run_squad_evaluation.py: a v1.1 question is answered '' when "
    "its null score beats the best span (threshold 0), scored by the v2.0 rules"
)

#: null_odds value for a question whose windows hold no valid answer span (it must predict "")
NO_SPAN_NULL_ODDS = 1e6


def _best_indexes(logits: np.ndarray, n_best_size: int) -> list[int]:
    """Indices of the ``n_best_size`` largest logits, best first (stable for ties)."""
    return [int(i) for i in np.argsort(-np.asarray(logits), kind="stable")[:n_best_size]]


def _softmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    m = max(scores)
    exps = [math.exp(s - m) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def get_final_text(pred_text: str, orig_text: str, tokenizer) -> str:
    """Project the normalized prediction ``pred_text`` onto the original words ``orig_text``.

    ``orig_text`` is run through the tokenizer's normalizer and pre-tokenizer (BERT's basic
    tokenization); where ``pred_text`` occurs in that, the character positions are mapped back
    through the space-free versions of both strings. If the lengths without spaces differ (e.g.
    accents were stripped) or ``pred_text`` is not found, the whole ``orig_text`` is returned —
    the heuristic of run_squad. (:func:`final_text_span` gives the same text as a slice of ``orig_text``.)
    """
    start, end = final_text_span(pred_text, orig_text, tokenizer)
    return orig_text[start:end]


def final_text_span(pred_text: str, orig_text: str, tokenizer) -> tuple[int, int]:
    """``(start, end)``: :func:`get_final_text`'s answer is ``orig_text[start:end]``."""

    def strip_spaces(text):
        ns_chars, ns_to_s = [], {}
        for i, c in enumerate(text):
            if c == " ":
                continue
            ns_to_s[len(ns_chars)] = i
            ns_chars.append(c)
        return "".join(ns_chars), ns_to_s

    whole = (0, len(orig_text))
    normalized = tokenizer.normalizer.normalize_str(orig_text) if tokenizer.normalizer else orig_text
    tok_text = " ".join(p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    start = tok_text.find(pred_text)
    if start == -1:
        return whole
    end = start + len(pred_text) - 1
    orig_ns, orig_ns_to_s = strip_spaces(orig_text)
    tok_ns, tok_ns_to_s = strip_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return whole
    tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
    if start not in tok_s_to_ns or end not in tok_s_to_ns:
        return whole
    return orig_ns_to_s[tok_s_to_ns[start]], orig_ns_to_s[tok_s_to_ns[end]] + 1


def postprocess(
    examples: Sequence[SquadExample],
    features: dict[str, np.ndarray],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    tokenizer,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
    with_spans: bool = False,
) -> tuple[dict, dict, dict]:
    """Logits of every feature → (predictions, nbest, null_odds), all keyed by question id.

    ``features``: :func:`bertlib.squad.cache.read_features` output ([N, S] / [N] arrays); ``start_logits`` /
    ``end_logits``: [N, S] float, row i belonging to feature i. ``null_odds`` (v2.0 only) is
    ``null score − best non-null score`` per question (run_squad's ``scores_diff_json``).
    ``with_spans``: every non-null n-best entry also says where its text is in the example's words:
    ``word_start`` / ``word_end`` (indices of ``doc_tokens``, inclusive) and ``text_start`` /
    ``text_end``, its slice of ``" ".join(doc_tokens[word_start:word_end + 1])``
    (:mod:`bertlib.squad.answer` maps them to characters of the context).
    """
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for row, ex_index in enumerate(features["example_index"]):
        by_example[int(ex_index)].append(row)
    predictions, all_nbest, null_odds = {}, {}, {}
    for ex_index, ex in enumerate(examples):
        rows = sorted(by_example.get(ex_index, []), key=lambda r: features["doc_span_index"][r])
        prelim = []  # (score, row, start, end, start_logit, end_logit)
        score_null, null_row, null_start, null_end = math.inf, None, 0.0, 0.0
        for row in rows:
            s_log, e_log = start_logits[row], end_logits[row]
            to_orig, max_ctx = features["token_to_orig"][row], features["token_is_max_context"][row]
            if version_2_with_negative:
                feature_null = float(s_log[0] + e_log[0])
                if feature_null < score_null:
                    score_null, null_row, null_start, null_end = feature_null, row, float(s_log[0]), float(e_log[0])
            for s in _best_indexes(s_log, n_best_size):
                if to_orig[s] < 0 or not max_ctx[s]:
                    continue
                for e in _best_indexes(e_log, n_best_size):
                    if to_orig[e] < 0 or e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append((float(s_log[s] + e_log[e]), row, s, e, float(s_log[s]), float(e_log[e])))
        if version_2_with_negative and null_row is not None:
            prelim.append((null_start + null_end, null_row, 0, 0, null_start, null_end))
        prelim.sort(key=lambda p: p[0], reverse=True)
        seen, nbest = set(), []
        for _, row, s, e, sl, el in prelim:
            if len(nbest) >= n_best_size:
                break
            if s > 0:
                tok_text = " ".join(tokenizer.id_to_token(int(t)) for t in features["input_ids"][row][s : e + 1])
                tok_text = " ".join(tok_text.replace(" ##", "").replace("##", "").strip().split())
                w0, w1 = int(features["token_to_orig"][row][s]), int(features["token_to_orig"][row][e])
                orig_text = " ".join(ex.doc_tokens[w0 : w1 + 1])
                t0, t1 = final_text_span(tok_text, orig_text, tokenizer)
                text = orig_text[t0:t1]
                if text in seen:
                    continue
                span = {"word_start": w0, "word_end": w1, "text_start": t0, "text_end": t1}
            else:
                text, span = "", {}
            seen.add(text)
            nbest.append((text, sl, el, span))
        if version_2_with_negative and "" not in seen:
            nbest.append(("", null_start, null_end, {}))
        if not nbest:
            nbest.append(("empty", 0.0, 0.0, {}))
        probs = _softmax([sl + el for _, sl, el, _ in nbest])
        all_nbest[ex.qas_id] = [
            {"text": t, "probability": p, "start_logit": sl, "end_logit": el, **(span if with_spans else {})}
            for (t, sl, el, span), p in zip(nbest, probs)
        ]
        best_non_null = next(((t, sl, el) for t, sl, el, _ in nbest if t), None)
        if not version_2_with_negative:
            predictions[ex.qas_id] = nbest[0][0]
        elif best_non_null is None:
            null_odds[ex.qas_id] = NO_SPAN_NULL_ODDS
            predictions[ex.qas_id] = ""
        else:
            diff = score_null - best_non_null[1] - best_non_null[2]
            null_odds[ex.qas_id] = diff
            predictions[ex.qas_id] = "" if diff > null_score_diff_threshold else best_non_null[0]
    return predictions, all_nbest, null_odds


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON via a temp name + rename."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
    return path


def write_predictions(out_dir: str | os.PathLike, predictions: dict, nbest: dict, null_odds: dict) -> dict:
    """Write ``predictions.json``, ``nbest_predictions.json`` and ``null_odds.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "predictions": write_json(out / "predictions.json", predictions),
        "nbest": write_json(out / "nbest_predictions.json", nbest),
        "null_odds": write_json(out / "null_odds.json", null_odds),
    }


def reference_v1_scores(
    dataset_json: dict,
    examples: Sequence[SquadExample],
    features: dict[str, np.ndarray],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    tokenizer,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    source: str = "dataset",
) -> tuple[dict, dict]:
    """The score the reference's evaluation gives v1.1 logits ([N, S], as :func:`postprocess`):
    null answers allowed at threshold 0 (:data:`REFERENCE_V1_METHOD`). Returns ``(predictions,
    {"exact", "f1", "total", "null_answers", "median_null_odds", "method"})`` — not the official v1.1
    score; ``median_null_odds`` is the median over questions of null score − best span score (> 0: most
    questions answered "")."""
    predictions, _, null_odds = postprocess(
        examples,
        features,
        start_logits,
        end_logits,
        tokenizer,
        n_best_size=n_best_size,
        max_answer_length=max_answer_length,
        version_2_with_negative=True,
        null_score_diff_threshold=0.0,
    )
    scores = evaluate_v2(dataset_json, predictions, source=source)
    return predictions, {
        "exact": scores["exact"],
        "f1": scores["f1"],
        "total": scores["total"],
        "null_answers": sum(1 for p in predictions.values() if p == ""),
        "median_null_odds": float(np.median(list(null_odds.values()))),
        "method": REFERENCE_V1_METHOD,
    }
