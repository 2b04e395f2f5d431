"""Stage 2 of ``prepare-data``: the WordPiece vocab — the given ``vocab_file`` (checked by
:func:`bertlib.data.prepare.sources.validate`) or one trained on stage 1's sentences into
``<output_dir>/vocab.txt``, reused while the sentences and settings are the same."""

from __future__ import annotations

from pathlib import Path

from bertlib.core.files import sha256_file, write_json
from bertlib.data.prepare.common import read_json, settings_key
from bertlib.data.prepare.sources import Plan
from bertlib.data.tokenization import train_wordpiece


def vocab_file(plan: Plan) -> Path:
    """Stage 2: the vocab file to tokenize with (absolute path)."""
    cfg = plan.cfg
    if cfg.vocab_file:
        return Path(cfg.vocab_file).resolve()
    path = plan.out / "vocab.txt"
    marker = plan.corpus_dir / "vocab.json"
    key = settings_key(
        {"extract": plan.extract_key, "size": cfg.vocab_size, "lower": cfg.do_lower_case, "strip": cfg.strip_accents}
    )
    done = read_json(marker)
    if done and done.get("key") == key and path.is_file() and sha256_file(path) == done.get("sha256"):
        return path.resolve()
    lines = (line.rstrip("\n") for line in open(plan.corpus_dir / "sentences.txt", encoding="utf-8"))
    train_wordpiece((line for line in lines if line), cfg.vocab_size, cfg.do_lower_case, cfg.strip_accents, path)
    write_json(marker, {"key": key, "sha256": sha256_file(path)})
    return path.resolve()
