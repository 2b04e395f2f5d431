"""Files that are never read half-written (write under a temporary name, then rename), and file checksums.

A temporary name says who is writing it — ``.<name>.tmp-<host>-<pid><suffix>`` — so that a run can
delete the leftovers of its own interrupted predecessors (same host, process gone) without touching
the files another run, on this or another machine sharing the storage, is writing right now.
"""

from __future__ import annotations

import hashlib
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
    """Write ``data`` to ``path`` atomically (parent folders made, temporary name, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def plain(value: Any) -> Any:
    """A value JSON can hold: numpy/TF scalars and arrays as Python numbers and lists (non-finite
    floats stay floats: JSON writes NaN/Infinity), JSON's own types as they are, anything else as
    its ``str``."""
    if value is None or isinstance(value, (str, int, float, list, tuple, dict)):
        return value
    if hasattr(value, "numpy"):
        value = value.numpy()
    for attr in ("tolist", "item"):
        if hasattr(value, attr):
            return getattr(value, attr)()
    return str(value)


def write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = False) -> Path:
    """Write ``obj`` to ``path`` atomically as bertlib writes every JSON file: indented by 2, a final
    newline, values JSON cannot hold made :func:`plain`."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=plain) + "\n")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (any ``hashlib`` algorithm), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    return file_digest(path, "sha256")
