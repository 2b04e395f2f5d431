"""Fixtures of the SQuAD tests: a small synthetic smoke set, a tiny-model finetune config and one
finetuned run."""

import pytest
import yaml
from bertlib_cli import run_bertlib


@pytest.fixture(scope="session")
def smoke_dir(made_once, wiki_slice):
    """The four smoke files (v1.1/v2.0 × train/dev), small: 400 train and 80 dev questions."""
    from bertlib.squad.smoke import build_smoke_sets

    def make(folder):
        build_smoke_sets(folder, source=wiki_slice, max_train=400, max_dev=80, context_sentences=3, max_documents=40)

    return made_once("smoke", make)


@pytest.fixture(scope="session")
def squad_values(smoke_dir, bert_vocab):
    """``squad_values(work, version="1.1", **overrides)``: a tiny-model SQuAD config (dict) for the smoke set,
    its run and cache folders under ``work``."""

    def make(work, version="1.1", **overrides):
        values = dict(
            model_size="tiny",
            per_gpu_batch_size=16,
            max_seq_length=128,
            doc_stride=64,
            max_query_length=32,
            learning_rate=1e-3,
            warmup_steps=6,
            total_steps=60,
            log_frequency=20,
            skip_xla=True,
            squad_version="squadv2" if version == "2.0" else "squadv1",
            train_file=str(smoke_dir / f"smoke-v{version}-train.json"),
            predict_file=str(smoke_dir / f"smoke-v{version}-dev.json"),
            vocab_file=str(bert_vocab),
            do_lower_case=True,
            run_dir=str(work / "run"),
            cache_dir=str(work / "cache"),
            seed=7,
        )
        return {**values, **overrides}

    return make


@pytest.fixture(scope="session")
def finetuned_v1(squad_values, subprocess_env, made_once):
    """(run dir, stdout) of `bertlib squad` (its own process) finetuning a tiny model for
    ``squad_values``' 60 steps on the v1.1 smoke set: export, predictions and scores, shared by the
    finetune and answer tests (made once per test run)."""

    def make(work):
        cfg = work / "squad.yaml"
        cfg.write_text(yaml.safe_dump(squad_values(work)))
        r = run_bertlib("squad", "--config", cfg, env=subprocess_env)
        assert r.returncode == 0, r.stderr[-3000:]
        (work / "stdout.txt").write_text(r.stdout)

    work = made_once("finetuned-v1", make)
    return work / "run", (work / "stdout.txt").read_text()


@pytest.fixture
def tiny_config(tmp_path, squad_values):
    """Write a tiny-model SQuAD config for the smoke set; ``tiny_config(**overrides) -> path``."""

    def make(version="1.1", **overrides):
        path = tmp_path / f"squad-{len(list(tmp_path.glob('squad-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(squad_values(tmp_path, version, **overrides)))
        return path

    return make
