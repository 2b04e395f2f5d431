"""``python -m bertlib SUBCOMMAND ...`` as its own process, the way the tests run the console script."""

import subprocess
import sys


def run_bertlib(*args, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``bertlib *args`` (each made a str) with ``env``; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bertlib", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
