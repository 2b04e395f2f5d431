"""One data preparation shared by several machines (``num_hosts`` / ``host_index``, or an MPI world).

Every shard is a pure function of the settings, the corpus and the document groups, so host ``h`` of
``N`` can write exactly the shards ``i`` (in the order of :func:`bertlib.data.prepare.shards.shard_tasks`:
phase, split, shard number) with ``i mod N = h`` and get the same bytes a single machine writes. Each
host makes the corpus (extract, vocab, tokenize) and the document groups' instances itself: they are needed
whole by every shard, and repeating them costs less than moving them (see ``bertlib estimate`` for
the projection of each stage).

Two ways to meet at the end:

- **MPI** (a SageMaker job started by ``bertlib launch prepare-data``: one rank per instance, each
  writing into its own ``/opt/ml/checkpoints``, which SageMaker syncs into one S3 prefix): the hosts
  exchange their shards' done-markers with an ``allgather``; host 0 writes the manifests.
- **Shared storage** (explicit ``num_hosts`` / ``host_index``, runs on one file system): every host
  reads the markers from the disk after its share; the one that finds every shard finished writes
  the manifests (if two do so at once they write the same bytes, each through a rename).

A lock file per share (``.prepare-host-<h>-of-<N>.lock``, ``flock``) refuses a second run of the
same share on the same storage; runs on different shares never delete each other's files (temporary
files are named per host and process, :mod:`bertlib.core.files`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from bertlib.core.errors import ConfigError


@dataclass(frozen=True)
class HostShare:
    """Host ``index`` of ``count``; ``mpi``: the hosts are the ranks of an MPI world."""

    index: int = 0
    count: int = 1
    mpi: bool = False

    def owns(self, task_number: int) -> bool:
        return task_number % self.count == self.index

    @property
    def leader(self) -> bool:
        return self.index == 0

    def allgather(self, obj) -> list:
        """``[obj of host 0, obj of host 1, ...]`` over MPI; ``[obj]`` without MPI."""
        if not self.mpi:
            return [obj]
        from mpi4py import MPI

        return MPI.COMM_WORLD.allgather(obj)


def mpi_world() -> tuple[int, int]:
    """``(rank, size)`` of the Open MPI world this process was started in (``(0, 1)`` outside mpirun)."""
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")), int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))


def host_share(num_hosts: int | None, host_index: int | None) -> HostShare:
    """The share of this process: explicit ``num_hosts`` / ``host_index`` (shared storage), else the
    MPI world (one rank per host), else the whole job."""
    rank, size = mpi_world()
    if num_hosts is None:
        if host_index is not None:
            raise ConfigError(f"host_index={host_index} needs num_hosts")
        return HostShare(rank, size, mpi=True) if size > 1 else HostShare()
    index = 0 if host_index is None else host_index
    if not 0 <= index < num_hosts:
        raise ConfigError(f"host_index={index}: expected 0 <= host_index < num_hosts={num_hosts}")
    if size > 1:
        raise ConfigError(
            f"num_hosts={num_hosts} with mpirun (world size {size}): under MPI the hosts are "
            "the ranks; leave num_hosts and host_index unset"
        )
    return HostShare(index, num_hosts, mpi=False)


@contextlib.contextmanager
def share_lock(folder: Path, share: HostShare):
    """Hold ``folder/.prepare-host-<h>-of-<N>.lock`` for the block; a second holder is refused with
    one line (a run of the same share is already writing into ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".prepare-host-{share.index}-of-{share.count}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(
                f"{path}: {holder} is preparing host {share.index}'s share of {folder} "
                f"({share.count} host(s)); wait for it to finish or use another output_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        try:
            yield path
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
