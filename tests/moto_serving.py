"""A moto server on a free port of 127.0.0.1, for as long as a ``with`` block (``tests/conftest.py``'s
``moto_endpoint``, ``tests/launch/moto_job_states.py``'s)."""

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path


@contextlib.contextmanager
def serving(command: list[str], log_path: Path, env: dict | None = None, start_seconds: float = 60):
    """Run ``command -H 127.0.0.1 -p PORT`` on a free port (its output in ``log_path``), wait until it
    accepts connections (bounded: ``start_seconds``), yield ``http://127.0.0.1:PORT``, kill it at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            deadline = time.time() + start_seconds
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(
                            f"{Path(command[-1]).name} did not start (exit code {proc.poll()}, log {log_path})"
                        )
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait(timeout=10)
