"""WordPiece tokenization (BERT's), built on the Rust ``tokenizers`` library.

The pipeline is exactly BERT's ``FullTokenizer``: ``BertNormalizer`` (clean control characters,
space out CJK characters, optional lowercasing and accent stripping) → ``BertPreTokenizer`` (split on
whitespace and punctuation) → greedy longest-match-first ``WordPiece`` (``##`` continuation prefix,
``[UNK]`` for words longer than :data:`MAX_INPUT_CHARS_PER_WORD` = 200 characters or with no match).
There is no post-processor: ``tokenizer.encode(text).ids`` holds no ``[CLS]``/``[SEP]``; example
builders add them.

A vocabulary is identified by :func:`bertlib.core.vocab.vocab_info` (sha256 of the file, entry count, casing). Datasets
record it in their manifest, models carry their ``vocab.txt``; :func:`bertlib.core.vocab.check_vocab_compatible` refuses
a mismatch with one line that says which side differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from bertlib.core.errors import ConfigError
from bertlib.core.files import write_text
from bertlib.core.vocab import effective_strip_accents, read_vocab

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: a word of more characters (Unicode code points, not bytes) is one ``[UNK]``: the default of
#: Google's ``WordpieceTokenizer``, which its ``FullTokenizer`` uses
MAX_INPUT_CHARS_PER_WORD = 200


def _bert_pipeline(tok, lowercase: bool, strip_accents: bool | None):
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=effective_strip_accents(lowercase, strip_accents),
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
    return write_text(out, "".join(t + "\n" for t in tokens))
