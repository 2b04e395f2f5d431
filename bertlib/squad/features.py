"""Examples → model features: WordPiece tokens, document windows, answer spans (stage 2 of
:mod:`bertlib.squad`, the rules of the original BERT ``run_squad.py``).

Each word of ``doc_tokens`` is WordPiece-tokenized (``tok_to_orig_index``, ``orig_to_tok_index``),
the answer span is tightened by :func:`improve_answer_span`, the question is cut to
``max_query_length`` tokens, and a long document is covered by windows (:func:`doc_spans`) of at
most ``max_seq_length - len(query) - 3`` tokens starting every ``doc_stride`` tokens. Each window is
one :class:`SquadFeature` ``[CLS] query [SEP] window [SEP]`` padded to ``max_seq_length`` (S); a
token's "max context" window (:func:`is_max_context`) is the one where it has the most context on
both sides. Training positions point at the answer tokens, or at ``[CLS]`` (0) when the question is
impossible or the answer is not inside the window. The fields are listed in
:mod:`bertlib.squad.cache` (the record layout).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from bertlib.core.errors import ConfigError
from bertlib.squad.reading import SquadExample

UNIQUE_ID_BASE = 1000000000


@dataclasses.dataclass
class SquadFeature:
    """One window of one example; the sequence fields are ``max_seq_length`` (S) long. The fields' meaning
    is the record layout in :mod:`bertlib.squad.cache`."""

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
            if list(doc_ids[new_start : new_end + 1]) == answer_ids:
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


def convert_examples_to_features(
    examples: Sequence[SquadExample],
    tokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    is_training: bool,
) -> list[SquadFeature]:
    """Examples → windowed, padded features, one per window of every example in example order, each
    sequence field ``max_seq_length`` (S) long (``tokenizer``: :func:`bertlib.data.tokenization.load_wordpiece`)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ConfigError("the vocabulary has no [CLS] or [SEP] token")
    queries = tokenizer.encode_batch([ex.question_text for ex in examples], add_special_tokens=False)
    docs = tokenizer.encode_batch(
        [(ex.doc_tokens or [""]) for ex in examples], is_pretokenized=True, add_special_tokens=False
    )
    answers = (
        tokenizer.encode_batch([ex.orig_answer_text for ex in examples], add_special_tokens=False)
        if is_training
        else [None] * len(examples)
    )
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
            tok_end = (
                orig_to_tok_index[ex.end_position + 1] - 1
                if ex.end_position < len(ex.doc_tokens) - 1
                else len(all_doc_ids) - 1
            )
            tok_start, tok_end = improve_answer_span(all_doc_ids, tok_start, tok_end, a_enc.ids)
        max_tokens_for_doc = max_seq_length - len(query_ids) - 3
        if max_tokens_for_doc < 1:
            raise ConfigError(
                f"max_seq_length {max_seq_length} leaves no room for the document after the "
                f"{len(query_ids)}-token question {ex.qas_id!r} (lower max_query_length)"
            )
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
                unique_id=UNIQUE_ID_BASE + len(features),
                example_index=ex_index,
                doc_span_index=span_index,
                input_ids=input_ids + [0] * pad,
                input_mask=input_mask + [0] * pad,
                segment_ids=segment_ids + [0] * pad,
                token_to_orig=token_to_orig + [-1] * pad,
                token_is_max_context=max_ctx + [0] * pad,
                is_impossible=bool(ex.is_impossible),
            )
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
