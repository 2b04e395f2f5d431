"""Run under ``horovodrun -np 2``: train the tiny model with Horovod averaging (XLA-compiled gradients,
allreduce outside) and, as a control, with the allreduce replaced by the identity (no XLA, to save
compile time); the ranks start from different random weights (the broadcast must fix that); each rank saves ``{mode}-rank{r}.npz`` in OUT_DIR.
Then, with dropout on, the per-step losses of identical weights on an identical batch
(``train_helpers.dropout_losses``, again from seeds that differ by rank) → ``dropout-rank{r}.npy``.

usage: python tests/train/hvd_worker.py DATA_DIR OUT_DIR PER_RANK_BATCH STEPS
"""

import sys
from pathlib import Path

import numpy as np
from train_helpers import dropout_losses, train_tiny

from bertlib.core import lean_imports
from bertlib.train import distributed


def main(data_dir: str, out_dir: str, batch: int, steps: int) -> None:
    rank, world, _ = distributed.init(threads_per_process=1)
    assert world == 2, f"expected 2 Horovod processes, got {world}"
    for mode, allreduce, jit in (("allreduce", None, True), ("control", lambda xs: list(xs), False)):
        # each rank initializes differently (seed 7 + rank): only the start-of-training broadcast from
        # rank 0 makes them agree, and rank 0's seed-7 start is the one-process reference's
        weights = train_tiny(
            data_dir, batch, steps, rank=rank, world=world, allreduce=allreduce, jit_compile=jit, seed=7 + rank
        )
        np.savez(Path(out_dir) / f"{mode}-rank{rank}.npz", **{k.replace("/", "|"): v for k, v in weights.items()})
    np.save(Path(out_dir) / f"dropout-rank{rank}.npy", dropout_losses(data_dir, seed=7 + rank))


if __name__ == "__main__":
    lean_imports.install()  # as bertlib's commands run
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
