"""Stage 3 of ``prepare-data``: workers WordPiece-encode stage 1's documents (``encode_batch``) into
one flat token array with sentence/document offsets (``.corpus/*.int64``,
:class:`~bertlib.data.pretraining.TokenizedCorpus`, memory-mapped by the next stages)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertlib.core.files import temp_path, write_json
from bertlib.core.progress import quiet_or_bar
from bertlib.data.prepare.common import WORKER_CACHE, chunks, ordered_map, read_json, settings_key
from bertlib.data.prepare.sources import Plan
from bertlib.data.pretraining import CORPUS_FILES, tokenize_documents
from bertlib.data.tokenization import MAX_INPUT_CHARS_PER_WORD, load_wordpiece


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer a worker loads (once per process)."""

    vocab_file: str
    lowercase: bool
    strip_accents: bool | None


def _tokenizer(spec: TokenizerSpec):
    if spec not in WORKER_CACHE:
        WORKER_CACHE[spec] = load_wordpiece(spec.vocab_file, spec.lowercase, spec.strip_accents)
    return WORKER_CACHE[spec]


def _tokenize_chunk(task: tuple[TokenizerSpec, list[list[str]]]):
    """Worker: one chunk of documents → :func:`~bertlib.data.pretraining.tokenize_documents`."""
    spec, docs = task
    return tokenize_documents(_tokenizer(spec), docs)


def read_sentence_docs(path: Path):
    """Documents of a ``sentences.txt`` (one sentence per line, blank line between documents)."""
    doc: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                doc.append(line)
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


def tokenize(plan: Plan, pool, workers: int, vocab_file: Path, vocab_sha: str, progress: bool) -> tuple[dict, bool]:
    """Stage 3: ``(tokenize.json's content: key and document/sentence/token counts, reused)``."""
    cfg, corpus_dir = plan.cfg, plan.corpus_dir
    key = settings_key(
        {
            "extract": plan.extract_key,
            "vocab": vocab_sha,
            "lower": cfg.do_lower_case,
            "strip": cfg.strip_accents,
            "max_chars": MAX_INPUT_CHARS_PER_WORD,
        }
    )
    marker = corpus_dir / "tokenize.json"
    done = read_json(marker)
    if done and done.get("key") == key and all((corpus_dir / f).is_file() for f in CORPUS_FILES):
        return done, True
    marker.unlink(missing_ok=True)
    tok_path = corpus_dir / CORPUS_FILES[0]
    tmp = temp_path(tok_path)
    sent_lens, doc_sents = [], []
    spec = TokenizerSpec(str(vocab_file), cfg.do_lower_case, cfg.strip_accents)
    tasks = (
        (spec, chunk) for chunk in chunks(read_sentence_docs(corpus_dir / "sentences.txt"), lambda d: sum(map(len, d)))
    )
    with open(tmp, "wb") as out, quiet_or_bar(progress, desc="tokenize", unit="doc") as bar:
        for tokens, lengths, per_doc in ordered_map(pool, _tokenize_chunk, tasks, 2 * workers + 1):
            out.write(np.ascontiguousarray(tokens, "<i4").tobytes())
            sent_lens.append(lengths)
            doc_sents.append(per_doc)
            bar.update(len(per_doc))
    os.replace(tmp, tok_path)
    sentence_starts = np.concatenate([[0], np.cumsum(np.concatenate(sent_lens))]).astype(np.int64)
    document_starts = np.concatenate([[0], np.cumsum(np.concatenate(doc_sents))]).astype(np.int64)
    for name, arr in zip(CORPUS_FILES[1:], (sentence_starts, document_starts)):
        p = corpus_dir / name
        t = temp_path(p)
        arr.tofile(t)
        os.replace(t, p)
    done = {
        "key": key,
        "documents": len(document_starts) - 1,
        "sentences": len(sentence_starts) - 1,
        "tokens": int(sentence_starts[-1]),
    }
    write_json(marker, done)
    return done, False
