"""SQuAD v1.1 / v2.0: reading the official JSON, model features, the feature cache, and turning
logits into answers.

The stages follow the original BERT ``run_squad.py`` (same rules, same names), one module each:

=========================================  ================================================================
module                                     what it does
=========================================  ================================================================
:mod:`bertlib.data.squad.reading`          JSON → :class:`SquadExample` s (:func:`read_squad_examples`):
                                           whitespace ``doc_tokens``, the gold answer as a word span;
                                           mismatched / malformed questions counted in a :class:`ReadReport`
:mod:`bertlib.data.squad.features`         examples → :class:`SquadFeature` s
                                           (:func:`convert_examples_to_features`): WordPiece tokens, windows
                                           of ``[CLS] query [SEP] window [SEP]`` (S = max_seq_length),
                                           answer positions, max-context flags
:mod:`bertlib.data.squad.cache`            features ↔ one TFRecord + ``.json`` sidecar keyed by input file,
                                           vocabulary and settings (:func:`load_or_build_features`); the
                                           record layout; ``tf.data`` batches of int32 [B, S] / [B]
                                           (:func:`squad_dataset`) or whole arrays [N, S] / [N]
                                           (:func:`read_features`)
:mod:`bertlib.data.squad.predictions`      start/end logits [N, S] → predictions, n-best lists and v2.0
                                           null odds (:func:`postprocess`); ``predictions.json``,
                                           ``nbest_predictions.json``, ``null_odds.json``
                                           (:func:`write_predictions`)
=========================================  ================================================================

The public names of all four are importable from here (``from bertlib.data.squad import ...``).
"""

from bertlib.data.squad.cache import (
    FEATURE_FORMAT,
    SCALAR_FEATURES,
    SEQ_FEATURES,
    feature_spec,
    features_key,
    load_or_build_features,
    parse_features,
    read_features,
    squad_dataset,
    write_features,
)
from bertlib.data.squad.features import (
    UNIQUE_ID_BASE,
    SquadFeature,
    convert_examples_to_features,
    doc_spans,
    improve_answer_span,
    is_max_context,
)
from bertlib.data.squad.predictions import NO_SPAN_NULL_ODDS, get_final_text, postprocess, write_json, write_predictions
from bertlib.data.squad.reading import (
    ReadReport,
    SquadExample,
    is_whitespace,
    load_squad_json,
    read_squad_examples,
    split_context,
)

__all__ = [
    "ReadReport",
    "SquadExample",
    "is_whitespace",
    "load_squad_json",
    "read_squad_examples",
    "split_context",
    "UNIQUE_ID_BASE",
    "SquadFeature",
    "convert_examples_to_features",
    "doc_spans",
    "improve_answer_span",
    "is_max_context",
    "FEATURE_FORMAT",
    "SCALAR_FEATURES",
    "SEQ_FEATURES",
    "feature_spec",
    "features_key",
    "load_or_build_features",
    "parse_features",
    "read_features",
    "squad_dataset",
    "write_features",
    "NO_SPAN_NULL_ODDS",
    "get_final_text",
    "postprocess",
    "write_json",
    "write_predictions",
]
