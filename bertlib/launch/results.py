"""Bring a run's outputs home: an ``s3://`` URI → a local run directory, like a local run's.

A SageMaker job leaves ``metrics.jsonl``, ``summary.json``, ``config.yaml`` and ``tb/`` (everything
the entry point wrote to ``SM_OUTPUT_DATA_DIR``) in ``<output>/<job>/output/output.tar.gz``.
:func:`fetch_run` accepts that archive's URI, the job's prefix ``<output>/<job>``, or any S3 prefix
holding a run directory's files (e.g. one synced by hand), and returns a local folder with the same
layout as a local run, so :mod:`bertlib.report` reads both the same way. Local paths pass through.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from bertlib.core.assets import cache_root, fetch_url
from bertlib.core.errors import ConfigError
from bertlib.core.files import temp_path

RUN_FILES = ("metrics.jsonl", "summary.json")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ConfigError(f"{uri}: not an s3://bucket/prefix URI")
    return bucket, key


def _replace_dir(tmp: Path, dest: Path) -> Path:
    """Move the finished folder ``tmp`` to ``dest``, replacing an older copy without a gap in which
    ``dest`` is half-written."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def extract_tar_gz(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a ``.tar.gz`` into ``dest``, refusing members that would land outside it or are links.

    Python's ``filter="data"`` does this from 3.11.4 / 3.12; Debian bookworm's Python 3.11.2 (the
    local stand-in of the training image) lacks it, so the same rules are checked by hand there.
    """
    dest = Path(dest)
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()
        for member in tar.getmembers():
            if member.issym() or member.islnk() or not (root / member.name).resolve().is_relative_to(root):
                raise ConfigError(f"{archive}: member {member.name!r} would be extracted outside {dest}")
        tar.extractall(dest)


def _unpack(archive: Path) -> Path:
    """``.../output.tar.gz`` → sibling folder ``run/`` (extracted once, through a temp folder)."""
    dest = archive.parent / "run"
    if dest.is_dir():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=".run-", dir=archive.parent))
    extract_tar_gz(archive, tmp)
    return _replace_dir(tmp, dest)


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir else cache_root() / "runs"


def fetch_run(uri_or_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local run directory for ``uri_or_dir`` (local path, ``s3://…/output.tar.gz``, job prefix,
    or S3 run-directory prefix). S3 prefixes are downloaded afresh on every call (a running job's
    files change); archives are downloaded and unpacked once.

    Raises FileNotFoundError (local path missing) or ConfigError (nothing run-like at the URI).
    """
    text = str(uri_or_dir)
    if not text.startswith("s3://"):
        path = Path(text)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: run directory not found")
        return path
    root = _cache_dir(cache_dir)
    if text.endswith(".tar.gz"):
        return _unpack(fetch_url(text, cache_dir=root / "archives"))

    import boto3

    bucket, key = _split(text)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    s3 = boto3.client("s3")
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
        if not o["Key"].endswith("/")
    ]
    if prefix + "output/output.tar.gz" in keys:  # a SageMaker job's prefix
        return fetch_run(f"s3://{bucket}/{prefix}output/output.tar.gz", cache_dir)
    if not any(k[len(prefix) :] in RUN_FILES for k in keys):
        raise ConfigError(f"{text}: no bertlib run there (neither {' nor '.join(RUN_FILES)} nor output/output.tar.gz)")
    dest = root / "prefixes" / hashlib.sha256(text.rstrip("/").encode()).hexdigest()[:16]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".run-", dir=dest.parent))
    for k in keys:
        target = (tmp / k[len(prefix) :]).resolve()
        if not target.is_relative_to(tmp.resolve()):
            raise ConfigError(f"s3://{bucket}/{k}: key escapes the run directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, k, str(target))
    return _replace_dir(tmp, dest)


def fetch_manifests(datasets: dict[str, str], dest: str | os.PathLike) -> Path:
    """Download each dataset's ``manifest.json`` and ``vocab.txt`` (``datasets``: phase → S3 prefix)
    into ``dest/<phase>/`` — enough for :mod:`bertlib.data.summary`'s tables; the shards stay in S3.
    A local folder (a local-mode job's dataset) is copied from, or left as it is when it is ``dest/<phase>``."""
    dest, s3 = Path(dest), None
    for phase, uri in datasets.items():
        folder, local = dest / phase, not uri.startswith("s3://")
        if local and Path(uri).resolve() == folder.resolve():
            continue  # written in place
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("vocab.txt", "manifest.json"):  # the manifest last: it marks the folder complete
            tmp = temp_path(folder / name)
            if local:
                shutil.copyfile(Path(uri) / name, tmp)
            else:
                if s3 is None:
                    import boto3

                    s3 = boto3.client("s3")
                bucket, key = _split(uri.rstrip("/") + "/")
                s3.download_file(bucket, key + name, str(tmp))
            os.replace(tmp, folder / name)
    return dest
