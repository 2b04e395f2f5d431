"""Container entry script of a SageMaker job started by :mod:`bertlib.launch.sagemaker`
(``pretrain``, ``squad``, ``prepare-data`` or ``canary``).

The SDK's MPI driver runs, on every rank, ``python -m mpi4py bertlib/launch/sm_entry.py --key value ...``
from the uploaded code channel, which holds a copy of the ``bertlib`` package as it was when the job
was launched. This script puts that copy first on ``sys.path`` and calls ``bertlib $BERTLIB_JOB --key
value ...`` — the same entry point as a local run.

The ``--key value`` pairs are taken from ``/opt/ml/input/config/hyperparameters.json``, the file
SageMaker writes on every host from the request, rather than from the driver's command line: on the
way there the driver decodes each value as JSON and its ``sm_training.env`` passes them through
shell single quotes, which turns the string ``'true'`` into the boolean ``true``. Outside a
SageMaker container (no such file) the command line is used.

One container-side step: a ``--checkpoint_path`` that names a ``.tar.gz`` (a previous job's
``model.tar.gz``, delivered by the ``init`` channel) is unpacked once per host and replaced by the
unpacked folder, so that phase 2 / SQuAD load phase 1 / phase 2 exports straight from S3.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Run as a script from the uploaded code channel: that copy of bertlib (as it was at launch) comes
# before any installed one, so the job runs the code that launched it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bertlib.core.commands import run_command  # noqa: E402
from bertlib.core.errors import print_error  # noqa: E402
from bertlib.launch.results import extract_tar_gz  # noqa: E402

UNPACK_ROOT = Path(os.environ.get("BERTLIB_UNPACK_DIR", "/tmp/bertlib-init"))
HYPERPARAMETERS_JSON = Path("/opt/ml/input/config/hyperparameters.json")


def hyperparameter_args(argv: list[str], path: Path = HYPERPARAMETERS_JSON) -> list[str]:
    """``--key value`` pairs from SageMaker's ``hyperparameters.json`` (string values, exactly as sent in
    the request), or ``argv`` when there is no such file."""
    if not path.is_file():
        return list(argv)
    values = json.loads(path.read_text())
    return [arg for key, value in values.items() for arg in (f"--{key}", str(value))]


def unpack_archive(archive: str | os.PathLike, root: Path = UNPACK_ROOT) -> Path:
    """Extract ``archive`` into ``root/<name>`` once, safely under concurrent ranks on one host.

    Every rank extracts into its own temporary folder and renames it into place; the first rename
    wins and the others discard their copy, so no rank ever reads a half-written folder.
    """
    archive = Path(archive)
    target = root / archive.name.removesuffix(".tar.gz")
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    extract_tar_gz(archive, tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another rank got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def rewrite_args(argv: list[str], root: Path = UNPACK_ROOT) -> list[str]:
    """Replace a ``--checkpoint_path X.tar.gz`` value by the folder it unpacks to (under ``root``)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--checkpoint_path" and out[i + 1].endswith(".tar.gz") and Path(out[i + 1]).is_file():
            out[i + 1] = str(unpack_archive(out[i + 1], root))
    return out


def main(argv: list[str]) -> int:
    job = os.environ.get("BERTLIB_JOB")
    if job not in ("pretrain", "squad", "prepare-data", "canary"):
        print_error(f"BERTLIB_JOB must be 'pretrain', 'squad', 'prepare-data' or 'canary', got {job!r}")
        return 2
    return run_command(job, rewrite_args(hyperparameter_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
