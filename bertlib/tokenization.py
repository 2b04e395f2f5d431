"""WordPiece tokenization (BERT's), built on the Rust ``tokenizers`` library.

The pipeline is exactly BERT's ``FullTokenizer``: ``BertNormalizer`` (clean control characters,
space out CJK characters, optional lowercasing and accent stripping) → ``BertPreTokenizer`` (split on
whitespace and punctuation) → greedy longest-match-first ``WordPiece`` (``##`` continuation prefix,
``[UNK]`` for words longer than :data:`MAX_INPUT_CHARS_PER_WORD` = 200 characters or with no match).
There is no post-processor: ``tokenizer.encode(text).ids`` holds no ``[CLS]``/``[SEP]``; example
builders add them.

A vocabulary is identified by :func:`vocab_info` (sha256 of the file, entry count, casing). Datasets
record it in their manifest, models carry their ``vocab.txt``; :func:`check_vocab_compatible` refuses
a mismatch with one line that says which side differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from bertlib.errors import ConfigError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: a word of more characters (Unicode code points, not bytes) is one ``[UNK]``: the default of
#: Google's ``WordpieceTokenizer``, which its ``FullTokenizer`` uses
MAX_INPUT_CHARS_PER_WORD = 200


def _effective_strip_accents(lowercase: bool, strip_accents: bool | None) -> bool:
    """BERT's rule: accents are stripped when lowercasing unless said otherwise."""
    return bool(lowercase) if strip_accents is None else bool(strip_accents)


def _bert_pipeline(tok, lowercase: bool, strip_accents: bool | None):
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=_effective_strip_accents(lowercase, strip_accents),
        lowercase=bool(lowercase),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def load_wordpiece(vocab_file: str | os.PathLike, lowercase: bool, strip_accents: bool | None = None):
    """A ``tokenizers.Tokenizer`` doing BERT's WordPiece with ``vocab_file`` (one token per line).

    ``encode(text).ids`` → list[int] of WordPiece ids (no special tokens added);
    ``encode_batch(texts)`` does the same for many texts in parallel (Rust threads).
    """
    from tokenizers import Tokenizer, models

    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocab file not found")
    vocab = read_vocab(path)
    if "[UNK]" not in vocab:
        raise ConfigError(f"{path}: not a WordPiece vocab (no [UNK] entry)")
    model = models.WordPiece(
        vocab={t: i for i, t in enumerate(vocab)},
        unk_token="[UNK]",
        max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
        continuing_subword_prefix="##",
    )
    return _bert_pipeline(Tokenizer(model), lowercase, strip_accents)


def read_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """Vocab entries in id order (line i = id i), as BERT's ``load_vocab`` reads them."""
    with open(vocab_file, encoding="utf-8") as f:
        return [line.rstrip("\n").strip() for line in f]


def train_wordpiece(
    texts_iter: Iterable[str], vocab_size: int, lowercase: bool, strip_accents: bool | None, out_path: str | os.PathLike
) -> Path:
    """Train a WordPiece vocab of up to ``vocab_size`` entries on ``texts_iter``; write ``out_path``.

    The special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` take ids 0-4. The file is written to a
    temporary name and renamed, so ``out_path`` is either absent or complete.
    """
    from tokenizers import Tokenizer, models, trainers

    tok = _bert_pipeline(
        Tokenizer(
            models.WordPiece(
                unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD, continuing_subword_prefix="##"
            )
        ),
        lowercase,
        strip_accents,
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##", show_progress=False
    )
    tok.train_from_iterator(texts_iter, trainer=trainer)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from bertlib.files import write_text

    return write_text(out, "".join(t + "\n" for t in tokens))


def vocab_info(vocab_file: str | os.PathLike, lowercase: bool, strip_accents: bool | None = None) -> dict:
    """Identity of a tokenizer: ``{sha256, size, lowercase, strip_accents}`` (accents resolved)."""
    from bertlib.files import sha256_file

    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocab file not found")
    return {
        "sha256": sha256_file(path),
        "size": len(read_vocab(path)),
        "lowercase": bool(lowercase),
        "strip_accents": _effective_strip_accents(lowercase, strip_accents),
    }


def check_vocab_compatible(expected: dict, actual: dict, what_expected: str, what_actual: str) -> None:
    """Raise :class:`ConfigError` if two :func:`vocab_info` dicts disagree; keys missing or None are
    not compared. E.g. ``check_vocab_compatible(model_info, manifest["vocab"], "the model vocab",
    "phase1/manifest.json: data")`` → ``phase1/manifest.json: data was tokenized with lowercase=False
    but the model vocab expects lowercase=True``.
    """

    def known(key):
        return expected.get(key) is not None and actual.get(key) is not None

    problems = []
    if (known("sha256") and expected["sha256"] != actual["sha256"]) or (
        known("size") and expected["size"] != actual["size"]
    ):
        problems.append(
            f"uses vocab sha256 {str(actual.get('sha256'))[:12]}… ({actual.get('size')} entries) "
            f"but {what_expected} has sha256 {str(expected.get('sha256'))[:12]}… "
            f"({expected.get('size')} entries)"
        )
    for key in ("lowercase", "strip_accents"):
        if known(key) and bool(expected[key]) != bool(actual[key]):
            problems.append(f"was tokenized with {key}={actual[key]} but {what_expected} expects {key}={expected[key]}")
    if problems:
        raise ConfigError(f"{what_actual} " + "; and ".join(problems))


def check_vocab_casing(vocab_file: str | os.PathLike, lowercase: bool) -> None:
    """Refuse a vocab whose entries contradict ``lowercase`` (a cased vocab with a lowercasing
    tokenizer loses every capitalized entry; an uncased vocab without lowercasing turns every
    capitalized word into [UNK]). A vocab is "cased" when over 1% of its non-bracketed entries hold
    an uppercase letter (bert-base-cased: ~14%; bert-base-uncased: 2 entries of 30522)."""
    entries = [t for t in read_vocab(vocab_file) if t and not (t.startswith("[") and t.endswith("]"))]
    upper = sum(any(c.isupper() for c in t) for t in entries)
    cased = upper > 0.01 * max(len(entries), 1)
    if cased and lowercase:
        raise ConfigError(
            f"{vocab_file}: vocab is cased ({upper} entries with capitals) but "
            f"do_lower_case is true; use an uncased vocab or set do_lower_case: false"
        )
    if not cased and not lowercase:
        raise ConfigError(
            f"{vocab_file}: vocab is uncased (no capitalized entries) but do_lower_case "
            f"is false; set do_lower_case: true or use a cased vocab"
        )
