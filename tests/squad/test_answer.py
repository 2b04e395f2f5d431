"""Asking the finetuned SQuAD model (bertlib.squad.answer): the answers equal the run's own
predictions.json, the character span is the answer's, the HTML escapes the context and marks exactly
the predicted characters."""

import json
from html.parser import HTMLParser

import pytest

from bertlib.core.errors import ConfigError
from bertlib.squad import answer as qa_answer
from bertlib.squad.reading import split_context


class _Marks(HTMLParser):
    """The text of the page (entities resolved) and the text inside each <mark>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.marks, self._in_mark, self.tags = "", [], False, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "mark":
            self._in_mark = True
            self.marks.append("")

    def handle_endtag(self, tag):
        if tag == "mark":
            self._in_mark = False

    def handle_data(self, data):
        self.text += data
        if self._in_mark:
            self.marks[-1] += data


def _parse(html):
    p = _Marks()
    p.feed(html)
    return p


def test_highlight_escapes_and_marks_exactly_the_span():
    context = 'Tom & "Jerry" <b>ran</b> in 1940.'
    start = context.index("<b>ran</b>")
    end = start + len("<b>ran</b>")
    html = qa_answer.highlight(context, start, end)
    parsed = _parse(html)
    assert parsed.text == context  # escaped: the page shows the context, character for character
    assert parsed.marks == ["<b>ran</b>"] and parsed.tags == ["mark"]  # no tag of the context became a tag
    assert _parse(qa_answer.highlight(context, None, None)).marks == []


def test_answer_html_rows():
    context = 'Tom & "Jerry" <b>ran</b> in 1940.'
    ans = qa_answer.Answer("Who <ran>?", "1940", context.index("1940"), context.index("1940") + 4, 0.5)
    parsed = _parse(qa_answer.answer_html([(ans, context, ["1940", "1940", "in 1940"])]))
    assert parsed.marks == ["1940"]
    assert "Who <ran>?" in parsed.text and "1940 | in 1940" in parsed.text and "p = 0.500" in parsed.text
    assert "no answer" in _parse(qa_answer.answer_html([(qa_answer.Answer("q", "", None, None, 0.9), "c", [])])).text


@pytest.mark.parametrize(
    "context, words, text",
    [
        ("The  war\tended in (1945) .", (4, 4), "1945"),  # inside a word, after double spaces and a tab
        ("a  b   c d", (0, 2), "a b c"),  # across words: the joined text has single spaces
        ("x\u202fyear 1066 ok", (2, 2), "1066"),  # U+202F is whitespace for SQuAD
    ],
)
def test_context_span_maps_joined_words_to_context_chars(context, words, text):
    doc_tokens, _ = split_context(context)
    joined = " ".join(doc_tokens[words[0] : words[1] + 1])
    t0 = joined.index(text)
    start, end = qa_answer.context_span(context, words[0], words[1], t0, t0 + len(text))
    assert " ".join(context[start:end].split()) == text
    assert context[start] == text[0] and context[end - 1] == text[-1]


# ------------------------------------------------------------------------------ a finetuned run


@pytest.fixture
def finetuned(finetuned_v1):
    """The run dir of the shared v1.1 finetune (tests/squad/conftest.py)."""
    return finetuned_v1[0]


@pytest.mark.slow
def test_answers_equal_the_runs_predictions(finetuned, smoke_dir):
    """Every dev question, asked through bertlib.squad.answer with the run's export, gets the answer of
    the run's predictions.json (written by the training job's own prediction path)."""
    export = finetuned / "export"
    assert sorted(p.name for p in export.iterdir()) == [
        "bert_config.json",
        "bert_model.ckpt.data-00000-of-00001",
        "bert_model.ckpt.index",
        "hf",
        "squad_answer.json",
        "vocab.txt",
        "vocab_info.json",
    ]
    official = json.loads((finetuned / "predictions.json").read_text())
    dev = json.loads((smoke_dir / "smoke-v1.1-dev.json").read_text())
    qa = qa_answer.load_qa_model(finetuned)  # a run dir: its export/
    questions = qa_answer.dev_questions(dev, 1000)
    assert len(questions) == len(official) >= 50
    answers = qa_answer.answer_questions(qa, questions)
    assert {q["id"]: a.text for q, a in zip(questions, answers)} == official
    assert len({a.text for a in answers}) > 1  # not one constant answer
    for q, a in zip(questions, answers):
        # the span is the answer's characters (the context's own spacing between words)
        assert " ".join(q["context"][a.start : a.end].split()) == " ".join(a.text.split())
        assert 0 < a.score <= 1
    # one question at a time (the notebook's question/context parameters) gives the same
    for q, a in list(zip(questions, answers))[:3]:
        one = qa_answer.answer(qa, q["question"], q["context"])
        assert (one.text, one.start, one.end) == (a.text, a.start, a.end)
        assert one.score == pytest.approx(a.score, abs=1e-6)


@pytest.mark.slow
def test_bad_questions_and_exports(finetuned, tmp_path):
    qa = qa_answer.load_qa_model(finetuned / "export")
    with pytest.raises(ConfigError, match=r"^question: expected a non-empty string \(got 5\)$"):
        qa_answer.answer(qa, 5, "some context")
    with pytest.raises(ConfigError, match=r"^context: expected a non-empty string \(got '  '\)$"):
        qa_answer.answer(qa, "what?", "  ")
    with pytest.raises(ConfigError, match="not a finetuned SQuAD export"):
        qa_answer.load_qa_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such SQuAD run"):
        qa_answer.load_qa_model(tmp_path / "missing")
