"""Vocabulary identity: a WordPiece ``vocab.txt`` read in id order, its identity (sha256, size, casing)
and the checks that refuse a mismatch with one line saying which side differs.

Datasets record :func:`vocab_info` in their manifest and models carry it beside their ``vocab.txt``, so
the data side (:mod:`bertlib.data`) and the model side (:mod:`bertlib.model.checkpoints`) share this
one definition without knowing each other. Pure Python: no tokenizer library needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertlib.core.errors import ConfigError
from bertlib.core.files import sha256_file


def effective_strip_accents(lowercase: bool, strip_accents: bool | None) -> bool:
    """BERT's rule: accents are stripped when lowercasing unless said otherwise."""
    return bool(lowercase) if strip_accents is None else bool(strip_accents)


def read_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """Vocab entries in id order (line i = id i), as BERT's ``load_vocab`` reads them."""
    with open(vocab_file, encoding="utf-8") as f:
        return [line.rstrip("\n").strip() for line in f]


def vocab_info(vocab_file: str | os.PathLike, lowercase: bool, strip_accents: bool | None = None) -> dict:
    """Identity of a tokenizer: ``{sha256, size, lowercase, strip_accents}`` (accents resolved)."""
    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocab file not found")
    return {
        "sha256": sha256_file(path),
        "size": len(read_vocab(path)),
        "lowercase": bool(lowercase),
        "strip_accents": effective_strip_accents(lowercase, strip_accents),
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
