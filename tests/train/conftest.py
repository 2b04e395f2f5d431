"""Fixtures of the training tests: a small synthetic prepared dataset (see ``synthetic.py``)."""

from pathlib import Path

import pytest
from train_helpers import write_dataset


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")
