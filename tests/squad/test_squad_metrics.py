"""squad-eval against hand-computed EM/F1 (the official scripts' rules), on made-up and real questions.

Every expected number is worked out by hand in the comments from the documented rules:
normalize = lowercase, then drop ASCII punctuation, then drop whole-word a/an/the, collapse whitespace;
F1 over token bags; max over golds; v1.1: a missing prediction scores 0; v2.0: it is skipped.
"""

import json
import subprocess
import sys

import pytest

from bertlib.squad import metrics as sm


def _dataset(version, questions):
    """questions: list of (qid, [gold texts]) on one dummy paragraph."""
    v2 = version.startswith("v2")
    qas = [
        {
            "id": q,
            "question": "?",
            "answers": [{"text": t, "answer_start": 0} for t in golds],
            **({"is_impossible": not golds} if v2 else {}),
        }
        for q, golds in questions
    ]
    return {"version": version, "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}


def test_normalize_answer_rules():
    # "'" and "," are ASCII punctuation, the em dash is not; "The"/"an" go as whole words
    assert sm.normalize_answer("The  Cat's  hat, an apple\u2014") == "cats hat apple\u2014"
    assert sm.normalize_answer("theater") == "theater"  # "the" only as a whole word
    assert sm.normalize_answer("A.") == ""  # "a." -> "a" -> article removed
    assert sm.normalize_answer("Hello\tWORLD \n") == "hello world"


def test_v1_hand_computed():
    data = _dataset(
        "1.1",
        [
            ("q1", ["The Eiffel Tower"]),  # pred "eiffel tower": both -> "eiffel tower": EM 1, F1 1
            ("q2", ["Denver Broncos", "The Broncos"]),  # pred "the Denver Broncos!" -> "denver broncos": EM 1
            ("q3", ["an apple a day"]),  # gold "apple day" vs "apple pie": 1 common, P=R=1/2, F1 .5
            ("q4", ["1,000 years"]),  # "1000 years" vs "1000 years ago": P=2/3 R=1 F1=.8
            ("q5", ["anything"]),  # no prediction: 0, but counted in the denominator
            ("q6", ["red car", "a big red car"]),  # pred "big red": F1 .5 vs "red car", .8 vs "big red car"
        ],
    )
    preds = {
        "q1": "eiffel tower",
        "q2": "the Denver Broncos!",
        "q3": "apple pie",
        "q4": "1000 years ago",
        "q6": "big red",
    }
    out = sm.evaluate(data, preds)
    assert list(out) == ["exact_match", "f1"]
    assert out["exact_match"] == pytest.approx(100 * 2 / 6)
    assert out["f1"] == pytest.approx(100 * (1 + 1 + 0.5 + 0.8 + 0 + 0.8) / 6)


def test_v1_empty_prediction_scores_zero():
    # v1.1 has no "both empty" rule: an empty prediction shares no token with anything
    data = _dataset("1.1", [("q", ["The"])])
    assert sm.evaluate(data, {"q": ""}) == {"exact_match": 100.0, "f1": 0.0}  # EM: "" == "" after norm


V2_QUESTIONS = [
    ("a1", ["Paris"]),  # pred "Paris": EM 1, F1 1
    ("a2", ["red blue green"]),  # pred "red blue": EM 0, F1 = 2*(1*2/3)/(1+2/3) = .8
    ("n1", []),  # unanswerable, pred "": EM 1, F1 1 (both empty)
    ("n2", []),  # unanswerable, pred "something": 0, 0
    ("a3", ["x y"]),  # no prediction: skipped everywhere
    ("a4", ["the", "London"]),  # gold "the" normalizes to "" and is dropped -> golds ["London"];
]  # pred "": 0, 0 (were "the" kept, "" vs "" would score 1)
V2_PREDS = {"a1": "Paris", "a2": "red blue", "n1": "", "n2": "something", "a4": ""}
V2_NA = {"a1": 0.1, "a4": 0.2, "a3": 0.5, "a2": 0.6, "n1": 0.9, "n2": 0.95}


def test_v2_hand_computed_without_na_probs(capsys):
    out = sm.evaluate(_dataset("v2.0", V2_QUESTIONS), V2_PREDS)
    assert "Missing prediction for a3" in capsys.readouterr().err
    assert list(out) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
    ]
    # scored: a1 (1, 1), a2 (0, .8), n1 (1, 1), n2 (0, 0), a4 (0, 0)
    assert out["total"] == 5
    assert out["exact"] == pytest.approx(40.0) and out["f1"] == pytest.approx(100 * 2.8 / 5)
    assert out["HasAns_total"] == 3 and out["NoAns_total"] == 2
    assert out["HasAns_exact"] == pytest.approx(100 / 3) and out["HasAns_f1"] == pytest.approx(100 * 1.8 / 3)
    assert out["NoAns_exact"] == pytest.approx(50.0) and out["NoAns_f1"] == pytest.approx(50.0)


def test_v2_threshold_and_best_threshold_sweep():
    data = _dataset("v2.0", V2_QUESTIONS)
    out = sm.evaluate(data, V2_PREDS, na_probs=V2_NA, na_prob_thresh=0.5)
    # na_prob > .5 -> predicted unanswerable: a2 (.6, answerable) -> 0; n1 (.9) -> 1; n2 (.95) -> 1
    # exact = f1 = a1 1 + a2 0 + n1 1 + n2 1 + a4 0 = 3 / 5
    assert out["exact"] == pytest.approx(60.0) and out["f1"] == pytest.approx(60.0)
    assert out["HasAns_exact"] == pytest.approx(100 / 3) and out["NoAns_f1"] == pytest.approx(100.0)
    assert list(out)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    # sweep: start at #unanswerable questions = 2, walk na-probs ascending (a3 unscored, skipped):
    # exact: a1 +1 -> 3 (best, .1); a4 +0; a2 +0; n1 (pred "") +0; n2 (pred non-empty) -1 -> 2
    assert out["best_exact"] == pytest.approx(100 * 3 / 5) and out["best_exact_thresh"] == 0.1
    # f1: a1 +1 -> 3 (.1); a4 +0; a2 +.8 -> 3.8 (best, .6); n1 +0; n2 -1 -> 2.8
    assert out["best_f1"] == pytest.approx(100 * 3.8 / 5) and out["best_f1_thresh"] == 0.6
    # the default threshold 1.0 never predicts "no answer": same splits as without na-probs
    plain = sm.evaluate(data, V2_PREDS, na_probs=V2_NA)
    assert plain["exact"] == pytest.approx(40.0) and plain["f1"] == pytest.approx(56.0)


FIXTURE_PREDS = {
    # gold "Saint Bernadette Soubirous": 2 of 3 tokens, P=1 R=2/3 -> F1 .8, EM 0
    "5733be284776f41900661182": "Bernadette Soubirous",
    # gold "a golden statue of the Virgin Mary" -> "golden statue of virgin mary": EM 1
    "5733be284776f4190066117e": "golden statue of Virgin Mary",
    "5733b1da4776f41900661068": "1882",  # EM 1
    # gold "Father Julius Nieuwl" vs "Julius Nieuwland": 1 common, P=1/2 R=1/3 -> F1 .4
    "5733b1da4776f4190066106b": "Julius Nieuwland",
    # "5733b1da4776f41900661067" (an early wind tunnel): no prediction -> 0
}


def test_real_squad_fixture(squad_fixture):
    data = json.loads(squad_fixture.read_text())
    out = sm.evaluate(data, FIXTURE_PREDS)
    assert out["exact_match"] == pytest.approx(100 * 2 / 5)
    assert out["f1"] == pytest.approx(100 * (0.8 + 1 + 1 + 0.4 + 0) / 5)


def _cli(args, env):
    return subprocess.run(
        [sys.executable, "-m", "bertlib", "squad-eval", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_prints_official_json(tmp_path, squad_fixture, subprocess_env):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(FIXTURE_PREDS))
    r = _cli([squad_fixture, pred], subprocess_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1  # v1.1 prints json.dumps(result) on one line
    assert list(json.loads(r.stdout)) == ["exact_match", "f1"]
    assert "Unanswered question 5733b1da4776f41900661067 will receive score 0." in r.stderr

    data2, preds2, na = tmp_path / "v2.json", tmp_path / "p2.json", tmp_path / "na.json"
    data2.write_text(json.dumps(_dataset("v2.0", V2_QUESTIONS)))
    preds2.write_text(json.dumps(V2_PREDS))
    na.write_text(json.dumps(V2_NA))
    r = _cli([data2, preds2, "--na-prob-file", na, "--na-prob-thresh", "0.5"], subprocess_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "best_exact",
        "best_exact_thresh",
        "best_f1",
        "best_f1_thresh",
    ]
    assert out["exact"] == pytest.approx(60.0) and out["best_f1_thresh"] == 0.6


def test_cli_malformed_json_is_one_line(tmp_path, squad_fixture, subprocess_env):
    bad = tmp_path / "broken.json"
    bad.write_text('{"q": "answer"')  # truncated
    r = _cli([squad_fixture, bad], subprocess_env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.json" in lines[0] and "not valid JSON" in lines[0]
    r = _cli([bad, bad], subprocess_env)
    assert r.returncode == 2 and "broken.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    weird = tmp_path / "weird.json"
    weird.write_text(json.dumps({"version": "3.0", "data": []}))
    good = tmp_path / "good.json"
    good.write_text("{}")
    r = _cli([weird, good], subprocess_env)
    assert r.returncode == 2 and "unknown SQuAD version '3.0'" in r.stderr


def test_v2_all_predicted_threshold_equality_and_unbeaten_sweep(capsys):
    data = _dataset(
        "v2.0",
        [
            ("a1", ["Paris"]),  # pred "Paris": EM 1, F1 1
            ("a2", ["red blue green"]),  # pred "blue": EM 0, P=1 R=1/3 -> F1 2*(1/3)/(4/3) = .5
            ("n1", []),  # pred "": EM 1, F1 1
            ("n2", []),  # pred "London": 0, 0
            ("n3", []),  # pred "x": 0, 0
        ],
    )
    preds = {"a1": "Paris", "a2": "blue", "n1": "", "n2": "London", "n3": "x"}
    na = {"n2": 0.2, "a1": 0.3, "n3": 0.4, "a2": 0.5, "n1": 0.9}
    out = sm.evaluate(data, preds, na_probs=na, na_prob_thresh=0.5)
    assert capsys.readouterr().err == ""  # every question has a prediction
    # only n1 (.9) is > .5 -> no-answer -> 1 (unchanged); a2 (.5 == thresh) keeps its raw F1 .5
    assert out["total"] == 5
    assert out["exact"] == pytest.approx(100 * 2 / 5)  # a1 1 + n1 1
    assert out["f1"] == pytest.approx(100 * 2.5 / 5)  # a1 1 + a2 .5 + n1 1 (">=" would give 40)
    assert out["HasAns_total"] == 2 and out["HasAns_exact"] == pytest.approx(50.0)  # a1 1, a2 0
    assert out["HasAns_f1"] == pytest.approx(75.0)  # (1 + .5) / 2
    assert out["NoAns_total"] == 3 and out["NoAns_exact"] == pytest.approx(100 / 3)  # n1 only
    assert out["NoAns_f1"] == pytest.approx(100 / 3)
    # sweep from #NoAns = 3, na-probs ascending: n2 -1 -> 2; a1 +1 -> 3 (tie, not >); n3 -1 -> 2;
    # a2 +0 (EM) / +.5 (F1) -> 2 / 2.5; n1 (pred "") +0. Never above 3: best 3/5, threshold stays 0.0
    assert (out["best_exact"], out["best_exact_thresh"]) == (pytest.approx(60.0), 0.0)
    assert (out["best_f1"], out["best_f1_thresh"]) == (pytest.approx(60.0), 0.0)
    # thresh .4 == n3's na-prob: n3 is NOT no-answer (stays 0); a2 (.5 > .4) -> 0; n1 -> 1
    out = sm.evaluate(data, preds, na_probs=na, na_prob_thresh=0.4)
    assert out["NoAns_exact"] == pytest.approx(100 / 3)  # n1 only (">=" would count n3: 200/3)
    assert out["f1"] == pytest.approx(100 * 2 / 5)  # a1 1 + n1 1; a2's .5 is lost
