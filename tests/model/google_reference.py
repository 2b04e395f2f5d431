"""The variable names of google-research/bert, written out from its modeling.py / run_pretraining.py
(the reference the model and checkpoint tests compare against)."""


def google_names(layers):
    """The variable names of google-research/bert modeling.py + run_pretraining.py, written out."""
    names = [
        "bert/embeddings/word_embeddings",
        "bert/embeddings/token_type_embeddings",
        "bert/embeddings/position_embeddings",
        "bert/embeddings/LayerNorm/gamma",
        "bert/embeddings/LayerNorm/beta",
        "bert/pooler/dense/kernel",
        "bert/pooler/dense/bias",
        "cls/predictions/transform/dense/kernel",
        "cls/predictions/transform/dense/bias",
        "cls/predictions/transform/LayerNorm/gamma",
        "cls/predictions/transform/LayerNorm/beta",
        "cls/predictions/output_bias",
        "cls/seq_relationship/output_weights",
        "cls/seq_relationship/output_bias",
    ]
    for n in range(layers):
        p = f"bert/encoder/layer_{n}/"
        for sub in (
            "attention/self/query",
            "attention/self/key",
            "attention/self/value",
            "attention/output/dense",
            "intermediate/dense",
            "output/dense",
        ):
            names += [p + sub + "/kernel", p + sub + "/bias"]
        for sub in ("attention/output/LayerNorm", "output/LayerNorm"):
            names += [p + sub + "/gamma", p + sub + "/beta"]
    return names
