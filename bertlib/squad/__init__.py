"""SQuAD v1.1 / v2.0 in one package: reading the official JSON, model features, the feature cache,
turning logits into answers, the official evaluation, the finetuning job and a synthetic smoke set.

The stages follow the original BERT ``run_squad.py`` (same rules, same names), one module each:

==================================  =======================================================================
module                              what it does
==================================  =======================================================================
:mod:`bertlib.squad.reading`        JSON → :class:`SquadExample` s (:func:`read_squad_examples`):
                                    whitespace ``doc_tokens``, the gold answer as a word span;
                                    mismatched / malformed questions counted in a :class:`ReadReport`
:mod:`bertlib.squad.features`       examples → :class:`SquadFeature` s
                                    (:func:`convert_examples_to_features`): WordPiece tokens, windows
                                    of ``[CLS] query [SEP] window [SEP]`` (S = max_seq_length),
                                    answer positions, max-context flags
:mod:`bertlib.squad.cache`          features ↔ one TFRecord + ``.json`` sidecar keyed by input file,
                                    vocabulary and settings (:func:`load_or_build_features`); the
                                    record layout; ``tf.data`` batches of int32 [B, S] / [B]
                                    (:func:`squad_dataset`) or whole arrays [N, S] / [N]
                                    (:func:`read_features`)
:mod:`bertlib.squad.predictions`    start/end logits [N, S] → predictions, n-best lists and v2.0
                                    null odds (:func:`postprocess`); ``predictions.json``,
                                    ``nbest_predictions.json``, ``null_odds.json``
                                    (:func:`write_predictions`)
:mod:`bertlib.squad.metrics`        the official v1.1 / v2.0 evaluation (``bertlib squad-eval``);
                                    imports nothing of bertlib but :mod:`bertlib.core`
:mod:`bertlib.squad.finetune`       ``bertlib squad``: parse and check config, SQuAD files and tokenizer
                                    (no TensorFlow), then run :mod:`bertlib.squad.finetune_run`
:mod:`bertlib.squad.finetune_run`   the TensorFlow side: BertQA, the loss, Trainer.fit, prediction
:mod:`bertlib.squad.smoke`          a synthetic SQuAD-format smoke set from Wikipedia sentences
==================================  =======================================================================

The public names of the four stages are importable from here (``from bertlib.squad import ...``);
they are resolved lazily, so that importing the package (e.g. for ``bertlib squad-eval``) loads
nothing but the module asked for.
"""

import importlib

_EXPORTS = {
    **dict.fromkeys(
        ["ReadReport", "SquadExample", "is_whitespace", "load_squad_json", "read_squad_examples", "split_context"],
        "bertlib.squad.reading",
    ),
    **dict.fromkeys(
        [
            "UNIQUE_ID_BASE",
            "SquadFeature",
            "convert_examples_to_features",
            "doc_spans",
            "improve_answer_span",
            "is_max_context",
        ],
        "bertlib.squad.features",
    ),
    **dict.fromkeys(
        [
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
        ],
        "bertlib.squad.cache",
    ),
    **dict.fromkeys(
        [
            "NO_SPAN_NULL_ODDS",
            "REFERENCE_V1_METHOD",
            "get_final_text",
            "postprocess",
            "reference_v1_scores",
            "write_json",
            "write_predictions",
        ],
        "bertlib.squad.predictions",
    ),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bertlib.squad' has no attribute {name!r}")
