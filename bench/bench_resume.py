"""Resume start-up at a late data position: skipping the consumed records vs restoring the saved iterator.

A resumed run has to put each rank's input pipeline where the checkpoint left it. Skipping
(``data_fn(position)``: ``ds.skip``) reads every consumed record again through the file interleave
and the shuffle buffer; restoring the ``tf.data`` iterator state that every rank saves next to the
model checkpoint (``bertlib.train.checkpointing.InputCheckpoints``) reads none of them. This times
both through the Trainer's own code (``Trainer._input_iterator``, which the resume in ``fit`` calls)
on real records (the Wikipedia slice prepared at sequence length 128 / 20 predictions, cached in
``--work``, as ``bench_scaling.py``), from building the pipeline to the first batch, at a few data
positions, 1 TF thread. It checks that both paths deliver the same next batches, and prints the size
of the saved state (dominated by the shuffle buffer's records).

usage: python bench/bench_resume.py [--records 1000 100000 300000] [--per_gpu_batch_size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--records",
        type=int,
        nargs="+",
        default=[1000, 100000, 300000],
        help="data positions to resume at, in records per rank",
    )
    ap.add_argument("--per_gpu_batch_size", type=int, default=32)
    ap.add_argument("--shuffle_buffer", type=int, default=10000)
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_resume"))
    args = ap.parse_args(argv)

    import numpy as np
    from bench_scaling import prepared_data

    from bertlib.data.pipeline import pretraining_dataset
    from bertlib.model import BertConfig, BertPretrainer, pretraining_losses
    from bertlib.optim import Lamb
    from bertlib.train.loop import Trainer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = prepared_data(work)
    b = args.per_gpu_batch_size

    def data_fn(skip: int):
        return pretraining_dataset(
            data,
            "train",
            b,
            128,
            20,
            shuffle=True,
            seed=12345,
            shuffle_buffer=args.shuffle_buffer,
            skip_batches=skip,
            checksums=False,
        )

    def first_batches(position: int, ckpt: Path):
        """(seconds from building the pipeline to the first batch, iterator, its first 2 batches)."""
        model = BertPretrainer(BertConfig.from_preset("tiny", 30522))
        trainer = Trainer(
            model, pretraining_losses, Lamb(), lambda step: 1e-3, total_steps=position + 10, checkpoint_dir=ckpt
        )
        trainer.step.assign(position)
        trainer.data_position.assign(position)
        t0 = time.perf_counter()
        it = trainer._input_iterator(data_fn)
        first = next(it)
        seconds = time.perf_counter() - t0
        return seconds, trainer, it, [first["input_ids"].numpy(), next(it)["input_ids"].numpy()]

    print(
        f"bench_resume: seq=128 per-rank batch={b} shuffle_buffer={args.shuffle_buffer} threads=1 "
        f"loadavg={os.getloadavg()[0]:.2f}"
    )
    print(f"{'records':>9} {'skip_s':>8} {'restore_s':>9} {'ratio':>7} {'state_MB':>8}")
    for records in args.records:
        position = records // b
        ckpt = work / f"ckpt-{position}"
        shutil.rmtree(ckpt, ignore_errors=True)
        # skip path (no saved state yet); its iterator, 2 batches on, saves its state as step position + 2
        skip_s, trainer, it, _ = first_batches(position, ckpt)
        state = trainer.inputs.save(it, position + 2)
        size = sum(p.stat().st_size for p in state.parent.glob(state.name + ".*"))
        reference = [next(it)["input_ids"].numpy() for _ in range(2)]
        # restore path: a fresh trainer at step position + 2 continues from the saved state
        restore_s, _, _, restored = first_batches(position + 2, ckpt)
        assert all(np.array_equal(x, y) for x, y in zip(restored, reference)), "restored batches differ"
        print(f"{position * b:>9} {skip_s:>8.2f} {restore_s:>9.2f} {skip_s / restore_s:>6.1f}x {size / 1e6:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
