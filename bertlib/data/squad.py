"""SQuAD v1.1 / v2.0: reading the official JSON, model features, and turning logits into answers.

The three stages follow the original BERT ``run_squad.py`` (same rules, same names):

1. :func:`read_squad_examples` — a context is split on whitespace into ``doc_tokens``;
   ``char_to_word_offset`` maps every character to its word, so a gold answer's ``answer_start``
   becomes a word span. Training uses the first gold answer; v2.0 ``is_impossible`` questions
   have no span. Questions whose ``answer_start`` does not point at their ``text`` in the context,
   and malformed question entries, are skipped with a count and one message (never a crash).
2. :func:`convert_examples_to_features` — each word is WordPiece-tokenized (``tok_to_orig_index``,
   ``orig_to_tok_index``), the answer span is tightened by :func:`improve_answer_span`, the
   question is cut to ``max_query_length`` tokens, and a long document is covered by windows of at
   most ``max_seq_length - len(query) - 3`` tokens starting every ``doc_stride`` tokens. Each window
   is one feature ``[CLS] query [SEP] window [SEP]``; a token's "max context" window is the one where
   it has the most context on both sides. Training positions point at the answer tokens, or at
   ``[CLS]`` (0) when the question is impossible or the answer is not inside the window.
3. :func:`write_predictions` — for every example the ``n_best_size`` best start and end logits of
   every window are paired into valid spans (inside the document part, start at a max-context
   token, end ≥ start, at most ``max_answer_length`` tokens), ranked by start + end logit, mapped back
   to the original text with :func:`get_final_text`; v2.0 compares the best null score (CLS start +
   end, lowest over windows) with the best non-null span: ``null − best > null_score_diff_threshold``
   predicts "". Writes ``predictions.json``, ``nbest_predictions.json`` and ``null_odds.json``.

Features are cached as one uncompressed TFRecord (plus a ``.json`` sidecar) whose name carries a
hash of the input file, the settings and the vocabulary's sha256 (:func:`load_or_build_features`).

Feature record (S = max_seq_length):

=====================  ======  ===  ======================================================
feature                dtype   shp  meaning
=====================  ======  ===  ======================================================
unique_ids             int64   [1]  1000000000 + running index (as in run_squad)
example_index          int64   [1]  index of the example in the read order
doc_span_index         int64   [1]  which window of the example
input_ids              int64   [S]  ``[CLS] query [SEP] window [SEP]`` ids, 0-padded
input_mask             int64   [S]  1 for real tokens
segment_ids            int64   [S]  0 for ``[CLS] query [SEP]``, 1 for ``window [SEP]``
start_positions        int64   [1]  training target (0 = CLS: impossible / not in window)
end_positions          int64   [1]  training target
is_impossible          int64   [1]  1 if the question has no answer (or not in this window)
token_to_orig          int64   [S]  word index in ``doc_tokens`` for window tokens, else -1
token_is_max_context   int64   [S]  1 if this window is the token's max-context window
=====================  ======  ===  ======================================================
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bertlib.errors import ConfigError, SquadDataError

FEATURE_FORMAT = "bertlib-squad-features/1"
UNIQUE_ID_BASE = 1000000000
SEQ_FEATURES = ("input_ids", "input_mask", "segment_ids", "token_to_orig", "token_is_max_context")
SCALAR_FEATURES = ("unique_ids", "example_index", "doc_span_index", "start_positions", "end_positions",
                   "is_impossible")
#: null_odds value for a question whose windows hold no valid answer span (it must predict "")
NO_SPAN_NULL_ODDS = 1e6


# ----------------------------------------------------------------------------- reading
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
            parts.append(f"{len(self.answer_mismatch)} whose answer_start does not match the context "
                         f"(e.g. {self.answer_mismatch[0]})")
        if self.malformed:
            parts.append(f"{len(self.malformed)} malformed (e.g. {self.malformed[0]})")
        if not parts:
            return None
        return f"{self.source}: skipped {' and '.join(parts)} of {self.questions} questions"

    def as_dict(self) -> dict:
        return {"source": self.source, "version": self.version, "questions": self.questions,
                "kept": self.kept, "impossible": self.impossible,
                "answer_mismatch": len(self.answer_mismatch), "malformed": len(self.malformed)}


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

    ``version`` is ``"1.1"`` or ``"2.0"`` (see :func:`bertlib.eval.squad_metrics.squad_version`).
    """
    from bertlib.assets import fetch_url
    from bertlib.eval.squad_metrics import read_json, squad_version

    path = fetch_url(path_or_url, sha256=sha256)
    data = read_json(path, "SQuAD file")
    if not isinstance(data.get("data"), list):
        raise SquadDataError(f"{path_or_url}: not a SQuAD file (no 'data' list)")
    return data, squad_version(data, str(path_or_url)), path


def read_squad_examples(path_or_url: str, is_training: bool, version_2_with_negative: bool,
                        sha256: str | None = None, dataset: dict | None = None,
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
        from bertlib.eval.squad_metrics import squad_version

        version = squad_version(dataset, path_or_url)
    report = ReadReport(source=str(path_or_url), version=version)
    examples: list[SquadExample] = []
    for ai, article in enumerate(dataset["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise SquadDataError(f"{path_or_url}: data[{ai}] has no 'paragraphs' list")
        for pi, paragraph in enumerate(paragraphs):
            context, qas = (paragraph.get("context"), paragraph.get("qas")) if isinstance(paragraph, dict) \
                else (None, None)
            if not isinstance(context, str) or not isinstance(qas, list):
                raise SquadDataError(f"{path_or_url}: data[{ai}].paragraphs[{pi}] needs 'context' and 'qas'")
            doc_tokens, char_to_word = split_context(context)
            for qi, qa in enumerate(qas):
                report.questions += 1
                ex = _read_question(qa, context, doc_tokens, char_to_word, is_training,
                                    version_2_with_negative, report, f"data[{ai}].paragraphs[{pi}].qas[{qi}]")
                if ex is not None:
                    examples.append(ex)
                    report.kept += 1
                    report.impossible += int(ex.is_impossible)
    msg = report.message()
    if msg:
        print(f"warning: {msg}", file=sys.stderr)
    if not examples:
        raise SquadDataError(f"{path_or_url}: no usable question ({report.questions} read)"
                             + (f"; {msg}" if msg else ""))
    return examples, report


def _read_question(qa: Any, context: str, doc_tokens: list[str], char_to_word: list[int], is_training: bool,
                   v2: bool, report: ReadReport, where: str) -> SquadExample | None:
    if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa \
            or not isinstance(qa.get("answers", []), list):
        report.malformed.append(where)
        return None
    qid = str(qa["id"])
    answers = qa.get("answers", [])
    is_impossible = bool(qa.get("is_impossible", False)) if v2 else False
    ex = SquadExample(qas_id=qid, question_text=qa["question"], doc_tokens=doc_tokens,
                      is_impossible=is_impossible)
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
    if not text or start < 0 or context[start:start + len(text)] != text:
        report.answer_mismatch.append(f"{qid}: {text!r} at {start}")
        return None
    ex.orig_answer_text = text
    ex.start_position = char_to_word[start]
    ex.end_position = char_to_word[start + len(text) - 1]
    return ex


# ----------------------------------------------------------------------------- features
@dataclasses.dataclass
class SquadFeature:
    """One window of one example; see the module docstring for the fields' meaning."""

    unique_id: int
    example_index: int
    doc_span_index: int
    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    token_to_orig: list[int]
    token_is_max_context: list[int]
    start_position: int = 0
    end_position: int = 0
    is_impossible: bool = False


def improve_answer_span(doc_ids: Sequence[int], start: int, end: int, answer_ids: Sequence[int]) -> tuple[int, int]:
    """The smallest sub-span of ``doc_ids[start:end+1]`` whose WordPiece ids equal the tokenized answer.

    E.g. the answer "1895" in the word "(1895)" (tokens ``( 1895 )``) becomes just ``1895``;
    if no sub-span matches, the input span is kept.
    """
    answer_ids = list(answer_ids)
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if list(doc_ids[new_start:new_end + 1]) == answer_ids:
                return new_start, new_end
    return start, end


def doc_spans(num_doc_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """Windows ``(start, length)`` covering ``num_doc_tokens``: each at most ``max_tokens_for_doc``
    long, the next one starting ``min(length, doc_stride)`` later, the last one reaching the end."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < num_doc_tokens:
        length = min(num_doc_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == num_doc_tokens:
            break
        start += min(length, doc_stride)
    return spans


def is_max_context(spans: Sequence[tuple[int, int]], cur_span_index: int, position: int) -> bool:
    """True if window ``cur_span_index`` is where token ``position`` has the most context:
    score = min(left context, right context) + 0.01 × window length, first best wins."""
    best_score, best_index = None, None
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, i
    return cur_span_index == best_index


def convert_examples_to_features(examples: Sequence[SquadExample], tokenizer, max_seq_length: int,
                                 doc_stride: int, max_query_length: int, is_training: bool) -> list[SquadFeature]:
    """Examples → windowed, padded features (``tokenizer``: :func:`bertlib.tokenization.load_wordpiece`)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ConfigError("the vocabulary has no [CLS] or [SEP] token")
    queries = tokenizer.encode_batch([ex.question_text for ex in examples], add_special_tokens=False)
    docs = tokenizer.encode_batch([(ex.doc_tokens or [""]) for ex in examples], is_pretokenized=True,
                                  add_special_tokens=False)
    answers = tokenizer.encode_batch([ex.orig_answer_text for ex in examples], add_special_tokens=False) \
        if is_training else [None] * len(examples)
    features: list[SquadFeature] = []
    for ex_index, (ex, q_enc, d_enc, a_enc) in enumerate(zip(examples, queries, docs, answers)):
        query_ids = q_enc.ids[:max_query_length]
        all_doc_ids = d_enc.ids
        tok_to_orig_index = list(d_enc.word_ids)  # word of every sub-token (non-decreasing)
        # orig_to_tok_index[i] = number of sub-tokens of the words before i = first sub-token of word i
        orig_to_tok_index, t = [], 0
        for i in range(len(ex.doc_tokens)):
            orig_to_tok_index.append(t)
            while t < len(tok_to_orig_index) and tok_to_orig_index[t] == i:
                t += 1
        tok_start = tok_end = -1
        if is_training and not ex.is_impossible:
            tok_start = orig_to_tok_index[ex.start_position]
            tok_end = (orig_to_tok_index[ex.end_position + 1] - 1 if ex.end_position < len(ex.doc_tokens) - 1
                       else len(all_doc_ids) - 1)
            tok_start, tok_end = improve_answer_span(all_doc_ids, tok_start, tok_end, a_enc.ids)
        max_tokens_for_doc = max_seq_length - len(query_ids) - 3
        if max_tokens_for_doc < 1:
            raise ConfigError(f"max_seq_length {max_seq_length} leaves no room for the document after the "
                              f"{len(query_ids)}-token question {ex.qas_id!r} (lower max_query_length)")
        spans = doc_spans(len(all_doc_ids), max_tokens_for_doc, doc_stride)
        for span_index, (span_start, span_len) in enumerate(spans):
            input_ids = [cls_id] + query_ids + [sep_id]
            segment_ids = [0] * len(input_ids)
            token_to_orig = [-1] * len(input_ids)
            max_ctx = [0] * len(input_ids)
            for i in range(span_start, span_start + span_len):
                token_to_orig.append(tok_to_orig_index[i])
                max_ctx.append(int(is_max_context(spans, span_index, i)))
                input_ids.append(all_doc_ids[i])
                segment_ids.append(1)
            input_ids.append(sep_id)
            segment_ids.append(1)
            token_to_orig.append(-1)
            max_ctx.append(0)
            input_mask = [1] * len(input_ids)
            pad = max_seq_length - len(input_ids)
            feat = SquadFeature(
                unique_id=UNIQUE_ID_BASE + len(features), example_index=ex_index, doc_span_index=span_index,
                input_ids=input_ids + [0] * pad, input_mask=input_mask + [0] * pad,
                segment_ids=segment_ids + [0] * pad, token_to_orig=token_to_orig + [-1] * pad,
                token_is_max_context=max_ctx + [0] * pad, is_impossible=bool(ex.is_impossible))
            if is_training and not ex.is_impossible:
                span_end = span_start + span_len - 1
                if span_start <= tok_start and tok_end <= span_end:
                    offset = len(query_ids) + 2
                    feat.start_position = tok_start - span_start + offset
                    feat.end_position = tok_end - span_start + offset
                else:
                    feat.is_impossible = True  # the answer is outside this window: target CLS
            features.append(feat)
    return features


# ----------------------------------------------------------------------------- feature cache
def features_key(source_sha256: str, vocab: dict, settings: dict) -> str:
    """16-hex key of everything the features depend on: input file, vocabulary, settings."""
    blob = json.dumps({"format": FEATURE_FORMAT, "source": source_sha256, "vocab": vocab, "settings": settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_features(path: str | os.PathLike, features: Iterable[SquadFeature]) -> int:
    """Write features as one TFRecord via a temp name + rename; returns the count."""
    import tensorflow as tf

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    with tf.io.TFRecordWriter(str(tmp)) as w:
        for f in features:
            feats = {
                "unique_ids": ints([f.unique_id]), "example_index": ints([f.example_index]),
                "doc_span_index": ints([f.doc_span_index]), "input_ids": ints(f.input_ids),
                "input_mask": ints(f.input_mask), "segment_ids": ints(f.segment_ids),
                "start_positions": ints([f.start_position]), "end_positions": ints([f.end_position]),
                "is_impossible": ints([int(f.is_impossible)]), "token_to_orig": ints(f.token_to_orig),
                "token_is_max_context": ints(f.token_is_max_context)}
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
            n += 1
    os.replace(tmp, path)
    return n


def feature_spec(max_seq_length: int) -> dict:
    """``tf.io.parse_example`` spec of a feature record."""
    import tensorflow as tf

    spec = {k: tf.io.FixedLenFeature([max_seq_length], tf.int64) for k in SEQ_FEATURES}
    spec.update({k: tf.io.FixedLenFeature([1], tf.int64) for k in SCALAR_FEATURES})
    return spec


def parse_features(serialized, max_seq_length: int) -> dict:
    """Serialized records [B] → dict of int32 tensors: sequence features [B, S], scalars [B]."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(max_seq_length))
    return {k: tf.cast(v if k in SEQ_FEATURES else tf.squeeze(v, -1), tf.int32) for k, v in parsed.items()}


def read_features(path: str | os.PathLike, max_seq_length: int) -> dict[str, np.ndarray]:
    """All records of a feature file → dict of numpy int32 arrays ([N, S] or [N])."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path)).batch(4096).map(lambda s: parse_features(s, max_seq_length))
    parts = list(ds.as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_or_build_features(examples: Sequence[SquadExample], tokenizer, source_sha256: str, vocab: dict,
                           cache_dir: str | os.PathLike, name: str, max_seq_length: int, doc_stride: int,
                           max_query_length: int, is_training: bool) -> tuple[Path, dict]:
    """Cached feature file for these examples and settings → (tfrecord path, sidecar info).

    The cache name is ``{name}-{train|predict}-{key}.tfrecord`` with ``key`` =
    :func:`features_key`; the sidecar ``.json`` (written last) records settings and counts, so a
    present sidecar means a complete record file.
    """
    settings = {"max_seq_length": max_seq_length, "doc_stride": doc_stride,
                "max_query_length": max_query_length, "is_training": is_training}
    key = features_key(source_sha256, vocab, settings)
    cache = Path(cache_dir)
    stem = f"{name}-{'train' if is_training else 'predict'}-{key}"
    rec, side = cache / f"{stem}.tfrecord", cache / f"{stem}.json"
    if side.is_file() and rec.is_file():
        return rec, json.loads(side.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    feats = convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length,
                                         is_training)
    n = write_features(rec, feats)
    info = {"format": FEATURE_FORMAT, "source_sha256": source_sha256, "vocab": vocab, "settings": settings,
            "examples": len(examples), "features": n,
            "impossible_features": sum(int(f.is_impossible) for f in feats)}
    tmp = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, side)
    return rec, info


def squad_dataset(path: str | os.PathLike, batch_size: int, max_seq_length: int, training: bool,
                  rank: int = 0, world: int = 1, seed: int = 0, shuffle_buffer: int = 10000):
    """tf.data batches of parsed features (dict of int32 [B, S] / [B]).

    Training: the records are sharded by ``rank`` of ``world``, shuffled, repeated, and the last
    partial batch dropped. Prediction: every record once, in file order, last batch kept.
    """
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path))
    if training:
        ds = ds.shard(world, rank).shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.map(lambda s: parse_features(s, max_seq_length),
                  num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- predictions
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
    the heuristic of run_squad.
    """
    def strip_spaces(text):
        ns_chars, ns_to_s = [], {}
        for i, c in enumerate(text):
            if c == " ":
                continue
            ns_to_s[len(ns_chars)] = i
            ns_chars.append(c)
        return "".join(ns_chars), ns_to_s

    normalized = tokenizer.normalizer.normalize_str(orig_text) if tokenizer.normalizer else orig_text
    tok_text = " ".join(p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1
    orig_ns, orig_ns_to_s = strip_spaces(orig_text)
    tok_ns, tok_ns_to_s = strip_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return orig_text
    tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
    if start not in tok_s_to_ns or end not in tok_s_to_ns:
        return orig_text
    return orig_text[orig_ns_to_s[tok_s_to_ns[start]]:orig_ns_to_s[tok_s_to_ns[end]] + 1]


def postprocess(examples: Sequence[SquadExample], features: dict[str, np.ndarray], start_logits: np.ndarray,
                end_logits: np.ndarray, tokenizer, n_best_size: int = 20, max_answer_length: int = 30,
                version_2_with_negative: bool = False, null_score_diff_threshold: float = 0.0,
                ) -> tuple[dict, dict, dict]:
    """Logits of every feature → (predictions, nbest, null_odds), all keyed by question id.

    ``features``: :func:`read_features` output ([N, S] / [N] arrays); ``start_logits`` /
    ``end_logits``: [N, S] float, row i belonging to feature i. ``null_odds`` (v2.0 only) is
    ``null score − best non-null score`` per question (run_squad's ``scores_diff_json``).
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
                tok_text = " ".join(tokenizer.id_to_token(int(t)) for t in features["input_ids"][row][s:e + 1])
                tok_text = " ".join(tok_text.replace(" ##", "").replace("##", "").strip().split())
                orig_text = " ".join(ex.doc_tokens[features["token_to_orig"][row][s]:
                                                   features["token_to_orig"][row][e] + 1])
                text = get_final_text(tok_text, orig_text, tokenizer)
                if text in seen:
                    continue
            else:
                text = ""
            seen.add(text)
            nbest.append((text, sl, el))
        if version_2_with_negative and "" not in seen:
            nbest.append(("", null_start, null_end))
        if not nbest:
            nbest.append(("empty", 0.0, 0.0))
        probs = _softmax([sl + el for _, sl, el in nbest])
        all_nbest[ex.qas_id] = [{"text": t, "probability": p, "start_logit": sl, "end_logit": el}
                                for (t, sl, el), p in zip(nbest, probs)]
        best_non_null = next(((t, sl, el) for t, sl, el in nbest if t), None)
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
    return {"predictions": write_json(out / "predictions.json", predictions),
            "nbest": write_json(out / "nbest_predictions.json", nbest),
            "null_odds": write_json(out / "null_odds.json", null_odds)}
