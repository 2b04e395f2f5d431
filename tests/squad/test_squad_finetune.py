"""End to end: ``bertlib squad`` finetunes, predicts and evaluates; Horovod; bad input is one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bertlib_cli import run_bertlib

from bertlib.core.errors import run_guarded
from bertlib.launch.local import under_horovodrun
from bertlib.squad import finetune as squad_train
from bertlib.squad import finetune_run
from bertlib.squad.metrics import f1_score
from bertlib.squad.smoke import NOTE

# trains models (in-process or in subprocesses): `make test-fast` leaves this module out
pytestmark = pytest.mark.slow


def _questions(dataset) -> list[dict]:
    data = json.loads(Path(dataset).read_text())
    return [qa for article in data["data"] for para in article["paragraphs"] for qa in para["qas"]]


def _eval_cli(dataset, run_dir, env, *extra):
    r = run_bertlib("squad-eval", dataset, Path(run_dir) / "predictions.json", *extra, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_smoke_set_is_labelled_synthetic(smoke_dir):
    for name in ("smoke-v1.1-train.json", "smoke-v2.0-dev.json"):
        data = json.loads((smoke_dir / name).read_text())
        assert data["version"].endswith("-bertlib-synthetic") and data["bertlib_note"] == NOTE
        assert "SYNTHETIC" in NOTE and "Not SQuAD" in NOTE
        for qa in (qa for p in data["data"][0]["paragraphs"] for qa in p["qas"]):
            for a in qa["answers"]:  # answers are real spans of the real sentences
                ctx = next(p["context"] for p in data["data"][0]["paragraphs"] if qa in p["qas"])
                assert ctx[a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
                assert "what year" in qa["question"]
    v2 = json.loads((smoke_dir / "smoke-v2.0-dev.json").read_text())
    flags = [qa["is_impossible"] for p in v2["data"][0]["paragraphs"] for qa in p["qas"]]
    assert 0 < sum(flags) < len(flags)


def test_tiny_finetune_beats_untrained_head(tiny_config, smoke_dir, subprocess_env, tmp_path, finetuned_v1):
    dev = smoke_dir / "smoke-v1.1-dev.json"
    # the untrained head: the same seed (same initial weights), one step at a negligible learning rate
    untrained = tiny_config(total_steps=1, warmup_steps=0, learning_rate=1e-12, run_dir=str(tmp_path / "untrained"))
    before = run_bertlib("squad", "--config", untrained, env=subprocess_env, timeout=300)
    assert before.returncode == 0, before.stderr[-2000:]
    trained, stdout = finetuned_v1  # the same config, 60 steps at the configured learning rate
    f1_before = _eval_cli(dev, tmp_path / "untrained", subprocess_env)["f1"]
    scored = _eval_cli(dev, trained, subprocess_env)
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["f1"] == pytest.approx(scored["f1"]) and summary["exact_match"] == pytest.approx(
        scored["exact_match"]
    )
    assert summary["dataset_note"] == NOTE and summary["squad_version"] == "1.1"
    print(f"smoke dev F1: untrained head {f1_before:.2f} -> after 60 steps {scored['f1']:.2f}")
    assert scored["f1"] > f1_before + 15, (f1_before, scored)
    eval_lines = [line for line in stdout.splitlines() if " eval " in line]
    assert eval_lines == [f"[bertlib] phase=squadv1 eval exact_match={scored['exact_match']:.6g} f1={scored['f1']:.6g}"]
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [20, 40, 60] and metrics[-1]["loss"] < metrics[0]["loss"]
    nbest = json.loads((trained / "nbest_predictions.json").read_text())
    assert all(1 <= len(v) <= 20 for v in nbest.values())
    # the same logits as the reference scored v1.1: each answer is the official one or "" (a null score won)
    official = json.loads((trained / "predictions.json").read_text())
    theirs = json.loads((trained / "predictions_reference_scoring.json").read_text())
    ref = summary["reference_scoring"]
    assert theirs.keys() == official.keys() and all(theirs[q] in ("", official[q]) for q in official)
    assert ref["null_answers"] == sum(1 for q in official if theirs[q] == "" != official[q])
    golds = {qa["id"]: [a["text"] for a in qa["answers"]] for qa in _questions(dev)}
    f1 = [0.0 if theirs[q] == "" else max(f1_score(official[q], g) for g in golds[q]) for q in golds]
    assert ref["f1"] == pytest.approx(100 * sum(f1) / len(f1))
    print(f"smoke dev v1.1 F1: official {scored['f1']:.2f}, as the reference scored it {ref['f1']:.2f}")


def test_two_rank_horovod_finetune_v2(tiny_config, smoke_dir, subprocess_env, tmp_path):
    run_dir = tmp_path / "hvd"
    cfg = tiny_config(
        "2.0",
        total_steps=6,
        warmup_steps=2,
        log_frequency=3,
        per_gpu_batch_size=8,
        run_dir=str(run_dir),
    )
    r = subprocess.run(
        under_horovodrun([sys.executable, "-m", "bertlib", "squad", "--config", str(cfg)], 2),
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=400,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch_size"] == 16 and summary["steps_run"] == 6
    assert r.stdout.count("phase=squadv2 eval") == 1  # only rank 0 evaluates and logs
    # the v2.0 evaluation of the run is the official one with null_odds.json as na-prob file
    scored = _eval_cli(
        smoke_dir / "smoke-v2.0-dev.json", run_dir, subprocess_env, "--na-prob-file", run_dir / "null_odds.json"
    )
    assert list(scored) == list(summary["eval"])
    assert all(summary["eval"][k] == pytest.approx(v) for k, v in scored.items())
    assert summary["NoAns_total"] + summary["HasAns_total"] == summary["total"]


def _one_line_error(argv, capsys):
    code = run_guarded(squad_train.main, [str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_bad_inputs_fail_with_one_line(tiny_config, tmp_path, bert_vocab, capsys):
    bad = tmp_path / "broken-train.json"
    bad.write_text('{"version": "1.1", "data": [')
    assert "broken-train.json: SQuAD file is not valid JSON" in _one_line_error(
        ["--config", tiny_config(), "--train_file", bad], capsys
    )
    assert "squad_version is squadv2" in _one_line_error(["--config", tiny_config(squad_version="squadv2")], capsys)
    assert "no_such.json" in _one_line_error(
        ["--config", tiny_config(), "--predict_file", tmp_path / "no_such.json"], capsys
    )
    # a Google-style checkpoint folder whose name says "cased": asking for lowercasing is refused
    ckpt = tmp_path / "cased_L-2_H-128_A-2"
    ckpt.mkdir()
    (ckpt / "bert_config.json").write_text(
        json.dumps(
            {
                "vocab_size": 30522,
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 512,
            }
        )
    )
    (ckpt / "bert_model.ckpt.index").write_bytes(b"")
    (ckpt / "vocab.txt").write_bytes(Path(bert_vocab).read_bytes())
    err = _one_line_error(["--config", tiny_config(load_from="checkpoint", checkpoint_path=str(ckpt))], capsys)
    assert "lowercase=True" in err and "lowercase=False" in err and str(ckpt) in err
    # a vocab file other than the checkpoint's
    other = tmp_path / "other_vocab.txt"
    other.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    err = _one_line_error(
        [
            "--config",
            tiny_config(load_from="checkpoint", checkpoint_path=str(ckpt), do_lower_case=False, vocab_file=str(other)),
        ],
        capsys,
    )
    assert "vocab sha256" in err and "7 entries" in err and "30522 entries" in err


def test_squad_loss_is_the_references_masked_cross_entropy():
    """squad_loss against a numpy restatement of the reference's loss_fn (aws-samples
    deep-learning-models albert/run_squad.py): logits of padding set to -100, softmax CE of start and
    end, averaged over the batch, halved."""
    import numpy as np

    rng = np.random.default_rng(0)
    B, S = 3, 7
    start, end = rng.normal(size=(B, S)) * 3, rng.normal(size=(B, S)) * 3
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    sp, ep = np.array([3, 0, 1]), np.array([5, 3, 1])

    def ce(logits, pos):
        z = np.where(mask == 1, logits, -100.0)
        logp = z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
        return -logp[np.arange(B), pos].mean()

    want = (ce(start, sp) + ce(end, ep)) / 2
    got = finetune_run.squad_loss(
        {"start_logits": start.astype("float32"), "end_logits": end.astype("float32")},
        {"input_mask": mask, "start_positions": sp[:, None], "end_positions": ep[:, None]},
    )
    np.testing.assert_allclose(float(got["loss"]), want, rtol=1e-5)
    # the padding really is excluded: a softmax over all S positions (Google's) gives another value
    mask[:] = 1
    assert abs((ce(start, sp) + ce(end, ep)) / 2 - want) > 1e-3
