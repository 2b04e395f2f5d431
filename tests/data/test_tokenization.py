"""WordPiece against BERT's published tokenization rules; vocab identity and compatibility checks."""

import pytest
from data_helpers import reference_wordpiece

from bertlib.core.errors import ConfigError
from bertlib.core.vocab import check_vocab_casing, check_vocab_compatible, read_vocab, vocab_info
from bertlib.data.corpus import document_sentences, iter_raw_documents
from bertlib.data.tokenization import load_wordpiece, train_wordpiece


def test_wordpiece_matches_bert_rules_on_real_sentences(wiki_slice, bert_vocab):
    tok = load_wordpiece(bert_vocab, lowercase=True)
    vocab = set(read_vocab(bert_vocab))
    docs = iter_raw_documents([wiki_slice], max_documents=6)
    sentences = [s for d in docs for s in document_sentences(d)][:600]
    sentences = [s for s in sentences if all(ord(c) < 0x2E80 for c in s)]  # the reference skips CJK spacing
    assert len(sentences) > 500
    for enc, s in zip(tok.encode_batch(sentences, add_special_tokens=False), sentences):
        assert enc.tokens == reference_wordpiece(s, vocab), s
    # no special tokens are added; ids are vocab line numbers
    enc = tok.encode("Anarchism is a political philosophy.")
    lines = read_vocab(bert_vocab)
    assert [lines[i] for i in enc.ids] == ["ana", "##rch", "##ism", "is", "a", "political", "philosophy", "."]


def test_long_words_follow_googles_200_character_limit(bert_vocab):
    # Google's WordpieceTokenizer (max_input_chars_per_word=200, the FullTokenizer's): a word of more
    # than 200 characters is one [UNK]; a shorter one goes through greedy longest-match-first. Greek
    # alpha is 2 bytes in UTF-8, so 150 of them (300 bytes) also tell characters from bytes.
    vocab = read_vocab(bert_vocab)
    assert {"α", "##α"} <= set(vocab) and not {"αα", "##αα"} & set(vocab)
    tok = load_wordpiece(bert_vocab, lowercase=True)
    for n, expected in ((150, ["α"] + ["##α"] * 149), (200, ["α"] + ["##α"] * 199), (201, ["[UNK]"])):
        word = "α" * n
        assert tok.encode(f"x {word} y").tokens == ["x", *expected, "y"], n
        assert reference_wordpiece(f"x {word} y", set(vocab)) == ["x", *expected, "y"]
    word = "unaffable" * 20 + "ly"  # 182 characters of real pieces
    assert tok.encode(word).tokens == reference_wordpiece(word, set(vocab)) != ["[UNK]"]
    assert tok.encode(word + "x" * 19).tokens == ["[UNK]"]


def test_lowercase_false_keeps_case_and_accents(bert_vocab):
    cased = load_wordpiece(bert_vocab, lowercase=False)
    uncased = load_wordpiece(bert_vocab, lowercase=True)
    assert uncased.encode("Café").tokens == ["cafe"]
    assert cased.encode("Café").tokens == ["[UNK]"]  # uncased vocab has no "Café"
    assert load_wordpiece(bert_vocab, lowercase=True, strip_accents=False).encode("café").tokens != ["cafe"]


def test_vocab_info_and_compatibility(bert_vocab, tmp_path):
    info = vocab_info(bert_vocab, lowercase=True)
    assert info == {
        "sha256": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        "size": 30522,
        "lowercase": True,
        "strip_accents": True,
    }
    check_vocab_compatible(info, dict(info), "the model vocab", "data")
    with pytest.raises(ConfigError) as e:
        check_vocab_compatible(info, dict(info, lowercase=False), "the model vocab", "phase1/manifest.json: data")
    assert str(e.value) == (
        "phase1/manifest.json: data was tokenized with lowercase=False but the model vocab expects lowercase=True"
    )
    other = tmp_path / "vocab.txt"
    other.write_text("".join(t + "\n" for t in read_vocab(bert_vocab)[:-1]))
    with pytest.raises(
        ConfigError,
        match=r"data uses vocab sha256 .*30521 entries.* but the model vocab has "
        r"sha256 07eced375cec.*30522 entries",
    ):
        check_vocab_compatible(info, vocab_info(other, True), "the model vocab", "data")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        vocab_info(tmp_path / "missing.txt", True)


def test_casing_check_refuses_contradictions(bert_vocab, tmp_path):
    check_vocab_casing(bert_vocab, lowercase=True)
    with pytest.raises(ConfigError, match="vocab is uncased .* but do_lower_case is false"):
        check_vocab_casing(bert_vocab, lowercase=False)
    cased = tmp_path / "cased.txt"
    cased.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nThe\nthe\nParis\n##s\nLondon\n")
    with pytest.raises(ConfigError, match="vocab is cased .* but do_lower_case is true"):
        check_vocab_casing(cased, lowercase=True)
    check_vocab_casing(cased, lowercase=False)


def test_train_wordpiece(wiki_slice, tmp_path):
    docs = iter_raw_documents([wiki_slice], max_documents=5)
    sentences = [s for d in docs for s in document_sentences(d)]
    path = train_wordpiece(iter(sentences), 1000, True, None, tmp_path / "v" / "vocab.txt")
    vocab = read_vocab(path)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 200 < len(vocab) <= 1000 and len(set(vocab)) == len(vocab)
    assert not any(c.isupper() for t in vocab[5:] for c in t)
    assert any(t.startswith("##") for t in vocab)
    tok = load_wordpiece(path, lowercase=True)
    ids = [i for e in tok.encode_batch(sentences[:200]) for i in e.ids]
    assert ids.count(1) / len(ids) < 0.01  # [UNK] is rare on the text it was trained on
