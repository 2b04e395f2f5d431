"""Run under ``horovodrun -np 2``: train the tiny model with accumulation 4 (rank r reads shard r, so the
ranks see different data) once per case of ``CASES`` — where the gradients are clipped (``grad_clip``),
with and without XLA, and with float16 allreduce compression — and save each rank's final weights as
``{case}-rank{r}.npz`` in OUT_DIR. ``tests/train/test_grad_clip.py`` compares them with numpy.

usage: python tests/train/hvd_clip_worker.py DATA_DIR OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
from train_helpers import train_tiny

from bertlib.core import lean_imports
from bertlib.train import distributed

BATCH, STEPS, ACCUMULATION, CLIP, LR = 2, 4, 4, 0.5, 1e-2
#: case name → (grad_clip, XLA, allreduce compression)
#: each way runs once with XLA and once without, one of the two with compression
CASES = {
    "global_mean-xla": ("global_mean", True, "none"),
    "per_rank_sum-noxla": ("per_rank_sum", False, "none"),
    "per_rank_sum-xla-fp16": ("per_rank_sum", True, "fp16"),
    "global_mean-noxla-fp16": ("global_mean", False, "fp16"),
}


def main(data_dir: str, out_dir: str) -> None:
    rank, world, _ = distributed.init(threads_per_process=1)
    assert world == 2, f"expected 2 Horovod processes, got {world}"
    for case, (grad_clip, jit, compression) in CASES.items():
        weights = train_tiny(
            data_dir,
            BATCH,
            STEPS,
            rank=rank,
            world=world,
            accumulation=ACCUMULATION,
            jit_compile=jit,
            lr=LR,
            max_grad_norm=CLIP,
            grad_clip=grad_clip,
            compression=compression,
        )
        np.savez(Path(out_dir) / f"{case}-rank{rank}.npz", **{k.replace("/", "|"): v for k, v in weights.items()})


if __name__ == "__main__":
    lean_imports.install()  # as bertlib's commands run
    main(sys.argv[1], sys.argv[2])
