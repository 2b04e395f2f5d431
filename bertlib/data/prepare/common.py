"""What the stages of ``prepare-data`` share: the layout versions, the worker start-up, settings keys,
atomic ``.npy`` and JSON reads, and the bounded, ordered pool map."""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from pathlib import Path

import numpy as np

from bertlib.core.files import temp_path

EXTRACT_VERSION = 4  # bump when the cleaning/splitting rules change (invalidates .corpus caches)
SHARD_LAYOUT = 2  # bump when shard contents change for the same settings (2: instances dealt to all shards)
CHUNK_CHARS = 1 << 18  # documents are sent to workers in chunks of about this many characters

#: per worker process: what its tasks load once (tokenizer, memory-mapped corpus)
WORKER_CACHE: dict = {}


def worker_init() -> None:
    """Initializer of the pool's (spawned) worker processes."""
    # one thread per worker process: parallelism comes from the processes
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


def save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = temp_path(path, ".npy")  # np.save keeps a name ending in .npy
    np.save(tmp, arr)
    os.replace(tmp, path)


def read_json(path: Path):
    """The JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def settings_key(obj) -> str:
    """sha256 of ``obj`` as sorted JSON: the key a stage's output is reused under."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def ordered_map(pool, fn, items, max_in_flight: int):
    """``pool.map`` that keeps at most ``max_in_flight`` tasks queued (inputs may be huge streams)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= max_in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def chunks(docs, size_of):
    """``docs`` in lists of about :data:`CHUNK_CHARS` characters (``size_of(doc)`` each)."""
    chunk, chars = [], 0
    for d in docs:
        chunk.append(d)
        chars += size_of(d)
        if chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk
