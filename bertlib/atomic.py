"""Files that are never read half-written: write under a temporary name, then rename.

A temporary name says who is writing it — ``.<name>.tmp-<host>-<pid><suffix>`` — so that a run can
delete the leftovers of its own interrupted predecessors (same host, process gone) without touching
the files another run, on this or another machine sharing the storage, is writing right now.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

_TMP = re.compile(r"^\..+\.tmp-(?P<host>[^.]+)-(?P<pid>\d+)(\.[A-Za-z0-9]+)?$")


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """Where ``path`` is written before the rename: ``.<name>.tmp-<host>-<pid><suffix>`` beside it
    (``suffix`` keeps an extension a writer insists on, e.g. ``.npy`` for ``np.save``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{_host()}-{os.getpid()}{suffix}")


def is_stale(tmp: str | os.PathLike) -> bool:
    """True for a temporary file (named by :func:`temp_path`) that this machine's processes left
    behind: written on this host by a process that no longer runs. Another host's file, or one still
    being written, is never stale."""
    m = _TMP.match(Path(tmp).name)
    if not m or m["host"] != _host():
        return False
    pid = int(m["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale(folder: str | os.PathLike) -> int:
    """Delete the stale temporary files (:func:`is_stale`) in ``folder``; return how many."""
    folder = Path(folder)
    removed = 0
    for tmp in folder.glob(".*.tmp-*") if folder.is_dir() else []:
        if is_stale(tmp):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    path = Path(path)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1, default=str) -> Path:
    """Write ``obj`` as JSON (plus a newline) to ``path`` atomically."""
    return write_bytes(path, (json.dumps(obj, indent=indent, default=default) + "\n").encode())
