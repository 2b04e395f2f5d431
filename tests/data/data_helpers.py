"""Independent references for the data tests: a raw reading of the dump (regex + ElementTree, not
bertlib's reader), BERT's published tokenization rules, and the official example-creation loop."""

from __future__ import annotations

import bz2
import random
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def raw_pages(dump: Path) -> list[dict]:
    """Every <page> of the dump: title, ns, redirect flag, wikitext."""
    pages = []
    with bz2.open(dump) as f:
        for _, el in ET.iterparse(f):
            if el.tag.rsplit("}", 1)[-1] != "page":
                continue
            get = {c.tag.rsplit("}", 1)[-1]: c for c in el.iter()}
            pages.append(
                {
                    "title": get["title"].text,
                    "ns": get["ns"].text,
                    "redirect": "redirect" in get,
                    "text": get["text"].text or "",
                }
            )
            el.clear()
    return pages


def alnum(text: str) -> str:
    """Lowercased, accent-stripped, only [0-9a-z]: comparable across markup and WordPiece spacing."""
    ascii_ = unicodedata.normalize("NFD", text.lower()).encode("ascii", "ignore").decode()  # drops accents
    return re.sub(r"[^0-9a-z]", "", ascii_)


def wordpieces_to_words(pieces: list[str]) -> list[str]:
    words: list[str] = []
    for p in pieces:
        if p.startswith("##") and words:
            words[-1] += p[2:]
        else:
            words.append(p)
    return words


# -- BERT's tokenization rules (google-research/bert tokenization.py), restated ----------------------


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def reference_wordpiece(text: str, vocab: set[str], lowercase: bool = True) -> list[str]:
    """Basic tokenizer (clean, lowercase + strip accents, split whitespace/punctuation) + greedy
    longest-match-first WordPiece, as in BERT's FullTokenizer (CJK handling omitted: ASCII-ish text)."""
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if not (ord(ch) in (0, 0xFFFD) or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"))
    )
    out = []
    for word in text.split():
        if lowercase:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        pieces, cur = [], ""
        for ch in word:
            if _is_punct(ch):
                if cur:
                    pieces.append(cur)
                pieces.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            pieces.append(cur)
        for tok in pieces:
            if len(tok) > 200:  # WordpieceTokenizer's max_input_chars_per_word (characters)
                out.append("[UNK]")
                continue
            sub, start, bad = [], 0, False
            while start < len(tok):
                end, found = len(tok), None
                while start < end:
                    cand = ("##" if start else "") + tok[start:end]
                    if cand in vocab:
                        found = cand
                        break
                    end -= 1
                if found is None:
                    bad = True
                    break
                sub.append(found)
                start = end
            out.extend(["[UNK]"] if bad else sub)
    return out


# -- the official create_instances_from_document loop (segment logic), restated ------------------------


def reference_instances(
    docs: list[list[int]], di: int, max_seq_length: int, short_seq_prob: float, rng: random.Random
) -> list[tuple[int, int, bool]]:
    """(len A, len B, is_random_next) before truncation; ``docs`` = sentence lengths per document."""
    document = docs[di]
    target = max_seq_length - 3
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_seq_length - 3)
    out, chunk, cur, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        cur += document[i]
        if i == len(document) - 1 or cur >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            la = sum(chunk[:a_end])
            if len(chunk) == 1 or rng.random() < 0.5:
                for _ in range(10):
                    rdi = rng.randint(0, len(docs) - 1)
                    if rdi != di:
                        break
                rd = docs[rdi]
                lb = 0
                for j in range(rng.randint(0, len(rd) - 1), len(rd)):
                    lb += rd[j]
                    if lb >= target - la:
                        break
                out.append((la, lb, True))
                i -= len(chunk) - a_end
            else:
                out.append((la, sum(chunk[a_end:]), False))
            chunk, cur = [], 0
        i += 1
    return out


def run_prepare(config: dict, tmp: Path, env: dict, *extra: str, timeout: float = 300):
    """``python -m bertlib prepare-data --config <yaml>`` in a subprocess; returns CompletedProcess."""
    import yaml

    path = tmp / f"cfg-{abs(hash(str(sorted(config.items())))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "bertlib", "prepare-data", "--config", str(path), "--no-progress", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def example_parts(ids: np.ndarray, length: int, cls: int, sep: int) -> tuple[np.ndarray, np.ndarray]:
    """Split one ``[CLS] A [SEP] B [SEP]`` row (real part of length ``length``) into A, B."""
    assert ids[0] == cls and ids[length - 1] == sep
    seps = np.flatnonzero(ids[:length] == sep)
    return ids[1 : seps[0]], ids[seps[0] + 1 : length - 1]
