"""The prepared records feed the pretraining core: the input pipeline reads them, refuses a model
vocab of other casing, and ``bertlib pretrain`` trains a tiny model on them."""

import json
import math

import numpy as np
import pytest
import yaml
from bertlib_cli import run_bertlib

from bertlib.core.errors import DataError
from bertlib.core.vocab import vocab_info


def test_pipeline_reads_records_and_refuses_other_casing(prepared_dataset, bert_vocab):
    from bertlib.data.pipeline import pretraining_dataset

    phase = prepared_dataset / "phase1"
    batch = next(
        iter(
            pretraining_dataset(
                phase, "train", 8, 64, 10, shuffle=False, repeat=False, vocab=vocab_info(bert_vocab, lowercase=True)
            )
        )
    )
    assert batch["input_ids"].shape == (8, 64) and batch["masked_lm_weights"].shape == (8, 10)
    assert batch["next_sentence_labels"].shape == (8, 1)
    with pytest.raises(DataError, match="lowercase=True but the model vocab expects lowercase=False"):
        pretraining_dataset(phase, "train", 8, 64, 10, vocab=vocab_info(bert_vocab, lowercase=False))


@pytest.mark.slow
def test_tiny_model_trains_on_prepared_records(prepared_dataset, tmp_path, subprocess_env, bert_vocab):
    run = tmp_path / "run"
    cfg = {
        "data_dir": str(prepared_dataset / "phase1"),
        "run_dir": str(run),
        "model_size": "tiny",
        "per_gpu_batch_size": 16,
        "max_seq_length": 64,
        "max_predictions_per_seq": 10,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "total_steps": 6,
        "log_frequency": 3,
        "checkpoint_frequency": 6,
        "skip_xla": True,
        "shuffle_buffer": 100,
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # one TF thread (what `bertlib launch` sets for threads_per_process: 1)
    env = dict(
        subprocess_env,
        TF_CPP_MIN_LOG_LEVEL="3",
        BERTLIB_PROGRESS="0",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
    )
    proc = run_bertlib("pretrain", "--config", path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == [3, 6]
    for d in lines:
        assert all(np.isfinite(d[k]) for k in ("loss", "mlm_loss", "nsp_loss"))
    # an untrained model predicts ~uniformly: MLM loss near ln(vocab), NSP near ln 2
    assert abs(lines[0]["mlm_loss"] - math.log(30522)) < 1.5
    assert abs(lines[0]["nsp_loss"] - math.log(2)) < 0.35
    assert (run / "export" / "vocab.txt").read_bytes() == bert_vocab.read_bytes()
