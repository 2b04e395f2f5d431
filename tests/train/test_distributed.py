"""Horovod data parallelism: 2 ranks × batch b == 1 process × batch 2b (real horovodrun, Gloo)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_helpers import dropout_losses, train_tiny, write_dataset

from bertlib.core.errors import ConfigError
from bertlib.launch.local import under_horovodrun
from bertlib.train import distributed

# trains models (in-process or in subprocesses): `make test-fast` leaves this module out
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
STEPS, PER_RANK_BATCH = 3, 2


def run_group(cmd, env, timeout):
    """Run ``cmd`` in its own process group; kill the whole group on timeout (no horovodrun leftovers)."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[0]} timed out:\n{out[-3000:]}")
    return proc.returncode, out


def load(path: Path) -> dict:
    with np.load(path) as z:
        return {k.replace("|", "/"): z[k] for k in z.files}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, subprocess_env):
    """``hvd_worker.py`` under ``horovodrun -np 2`` (Gloo): its data dir and output dir."""
    tmp = tmp_path_factory.mktemp("hvd")
    # 2 files: rank r reads file r; one process interleaves both, so each step sees the same 2b examples
    data = write_dataset(tmp / "data", n=32, num_files=2)
    out = tmp / "out"
    out.mkdir()
    env = dict(subprocess_env, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    rc, log = run_group(
        under_horovodrun(
            [sys.executable, str(HERE / "hvd_worker.py"), str(data), str(out), str(PER_RANK_BATCH), str(STEPS)], 2
        ),
        env,
        timeout=400,
    )
    assert rc == 0, log[-3000:]
    return data, out


def test_two_ranks_match_one_process_on_the_concatenated_batch(two_rank_run):
    data, out = two_rank_run
    rank0, rank1 = load(out / "allreduce-rank0.npz"), load(out / "allreduce-rank1.npz")
    reference = train_tiny(data, 2 * PER_RANK_BATCH, STEPS, jit_compile=False)

    assert max_diff(rank0, rank1) == 0.0  # identical averaged gradients → identical weights
    assert max_diff(rank0, reference) < 1e-5
    control0, control1 = load(out / "control-rank0.npz"), load(out / "control-rank1.npz")
    assert max_diff(control0, reference) > 1e-3  # without the allreduce each rank sees half the data
    assert max_diff(control0, control1) > 1e-3


def test_each_rank_draws_its_own_dropout_masks_and_one_process_repeats_its_own(two_rank_run):
    """Same weights (broadcast), same batch, learning rate 0: the loss depends only on the dropout
    masks. Ranks whose masks were alike (one broadcast RNG state) would report equal losses."""
    data, out = two_rank_run
    (*rank0, plain0), (*rank1, plain1) = np.load(out / "dropout-rank0.npy"), np.load(out / "dropout-rank1.npy")
    assert plain0 == plain1 and len(rank0) == len(rank1) == 3  # without dropout: the same weights
    assert all(abs(a - b) > 1e-6 for a, b in zip(rank0, rank1)), (rank0, rank1)  # per rank, at every step
    assert len(set(rank0)) == len(rank0)  # and new masks every step
    once, twice = dropout_losses(data), dropout_losses(data)  # one process, same seed
    # rtol 1e-6: CI saw the last bits differ between two runs in one process; other masks move it ~1e-3
    np.testing.assert_allclose(once, twice, rtol=1e-6)
    assert len(set(once[:-1].tolist())) == len(once) - 1
    np.testing.assert_allclose(
        dropout_losses(data, jit_compile=True), dropout_losses(data, jit_compile=True), rtol=1e-6
    )


def test_more_processes_without_a_launcher_is_a_clear_error():
    with pytest.raises(ConfigError, match="horovodrun -np 2"):
        distributed.check_world_size(2, env={})
    with pytest.raises(ConfigError, match="launcher started 4"):
        distributed.check_world_size(2, env={"HOROVOD_SIZE": "4"})
    assert distributed.check_world_size(1, env={"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert distributed.check_world_size(1, env={}) == 1


def test_two_processes_without_horovod_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)  # import fails as if not installed
    monkeypatch.setattr(distributed, "_state", dict(distributed._state, initialized=False))
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes requested but Horovod is not importable"):
        distributed.init()
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    assert distributed.init() == (0, 1, 0)  # one process runs without it


def test_each_rank_of_a_launch_gets_its_own_gpu():
    # No GPU here: this checks the environment each rank hands to TensorFlow (CUDA_VISIBLE_DEVICES),
    # which is what decides the device on a p3dn/p4d host.
    env = {"OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "5"}
    assert distributed.pin_gpu(env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    env = {"HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,6"}
    assert distributed.pin_gpu(env) == "6"  # the local rank's entry of the list
    env = {"HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "3"}
    assert distributed.pin_gpu(env) is None and env["CUDA_VISIBLE_DEVICES"] == "3"  # already pinned
    env = {}
    assert distributed.pin_gpu(env) is None and "CUDA_VISIBLE_DEVICES" not in env  # one process: all GPUs
    with pytest.raises(ConfigError, match="local rank 2 but CUDA_VISIBLE_DEVICES lists 2"):
        distributed.pin_gpu({"HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "2", "CUDA_VISIBLE_DEVICES": "0,1"})


def test_launcher_rank_from_the_environment():
    assert distributed.launcher_rank({}) == 0
    assert distributed.launcher_rank({"HOROVOD_RANK": "3"}) == 3
    assert distributed.launcher_rank({"OMPI_COMM_WORLD_RANK": "17"}) == 17
