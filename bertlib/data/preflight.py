"""Disk preflight for ``bertlib prepare-data``: estimate the space a run needs, print it, and stop with
one line when a disk lacks it — before any download or extraction.

The run keeps, at its peak (just before the manifests are written): the downloaded source (in the
download cache), the extracted text (``.corpus/sentences.txt``), the tokenized corpus (int32 tokens +
int64 sentence/document offsets), and for every phase its TFRecord shards plus the instance files
(``[N, 5]`` int64 per example, deleted once the manifest is written). Each part is modelled from the
source size with ratios measured on this machine (below); a part already on disk (a resumed run)
needs only what it lacks.

Measured on 2026-12-02 from ``runs/demo/data`` — the real Wikipedia slice of the gensim 4.4.0 wheel
(1,695,871 bytes bz2, 6,089,746 bytes of XML, 98 articles) prepared with the bert-base-uncased vocab,
dupe_factor 5, phases 128/20 and 512/80: 2,846,169 bytes of text, 596,728 tokens, 31,833 + 10,665
examples in 26,445,718 + 28,511,924 bytes of TFRecords. Checked against a second run of the same text
as a plain-text source at 64/10 and 256/40 (dupe 2): the row model below is within 3 % of the
measured bytes per row and 2.5 % of the measured rows there.

The full dump differs: the slice is the dump's first pages (long, well-kept articles), while the
whole dump averages half as much text per compressed byte (the reference's ~3.5B WordPiece tokens
from ~20 GB of bz2, against the slice's 0.35 tokens per byte). A Wikipedia bz2 source above
:data:`WHOLE_DUMP_MIN_BYTES` (the dump or a large part of it) is modelled with the whole dump's
ratio; with it, the reference settings need ~0.4 TB (the issue's ~350 GB, measured elsewhere).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from bertlib.core.assets import download_path, remote_size
from bertlib.core.config import DataConfig
from bertlib.core.errors import ConfigError
from bertlib.core.log import get_logger
from bertlib.data.corpus import source_format
from bertlib.data.pretraining import CORPUS_FILES

_log = get_logger(__name__)

#: bytes of extracted text (sentences.txt) per source byte, by (source format, bz2-compressed):
#: the slice's bz2 dump and its XML; plain text passes through unchanged (sentences.txt as a text
#: source gave the identical 2,846,169 bytes), a bz2 text file at the ratio bz2 -9 reaches on it (3.454)
TEXT_PER_SOURCE_BYTE = {
    ("wikipedia", True): 2_846_169 / 1_695_871,
    ("wikipedia", False): 2_846_169 / 6_089_746,
    ("text", True): 3.454,
    ("text", False): 1.0,
}
TEXT_BYTES_PER_TOKEN = 2_846_169 / 596_728  # 4.77 bytes of cleaned text per WordPiece token
#: text per bz2 byte of the whole English Wikipedia dump: ~3.5e9 tokens from ~20e9 bytes (0.84, half the slice's)
WHOLE_DUMP_TEXT_PER_BZ2_BYTE = 3.5e9 / 20e9 * TEXT_BYTES_PER_TOKEN
WHOLE_DUMP_MIN_BYTES = 1_000_000_000
CORPUS_BYTES_PER_TOKEN = (2_386_912 + 187_120 + 792) / 596_728  # int32 token + offsets (25.5 tokens/sentence)
INSTANCE_BYTES_PER_ROW = 5 * 8  # the [N, 5] int64 instance files kept until the manifest is written
#: TFRecord bytes per example = ROW_FIXED_BYTES + ROW_SLOT_BYTES * (S + P), S = max_seq_length and
#: P = max_predictions_per_seq: the line through the two demo phases (830.76 B at 128/20, 2673.41 B at 512/80)
ROW_SLOT_BYTES = (28_511_924 / 10_665 - 26_445_718 / 31_833) / ((512 + 80) - (128 + 20))
ROW_FIXED_BYTES = 26_445_718 / 31_833 - ROW_SLOT_BYTES * (128 + 20)
#: corpus tokens per example / S falls with S (padding after short documents, random-next B segments
#: drawn from other documents): linear in log2(S) through the demo phases (0.7322 at 128, 0.5464 at 512)
_COVER_128, _COVER_512 = 596_728 * 5 / 31_833 / 128, 596_728 * 5 / 10_665 / 512


def coverage(max_seq_length: int) -> float:
    """Corpus tokens per example, as a fraction of ``max_seq_length`` (clamped to [0.25, 1])."""
    c = _COVER_128 + (_COVER_512 - _COVER_128) * (math.log2(max_seq_length) - 7) / 2
    return min(1.0, max(0.25, c))


def source_kind(source: str, declared: str = "auto") -> tuple[str, bool]:
    """``(format, bz2)`` of a source: the declared format, else sniffed from a local file, else guessed
    from a URL's name (``.xml`` in it = a MediaWiki dump)."""
    compressed = source.endswith(".bz2")
    if declared != "auto":
        return declared, compressed
    if "://" not in source and Path(source).is_file():
        try:
            return source_format(source), compressed
        except (OSError, EOFError, UnicodeDecodeError):  # unreadable: the validation that follows says so
            pass
    return ("wikipedia" if ".xml" in source.rsplit("/", 1)[-1] else "text"), compressed


def text_per_source_byte(kind: tuple[str, bool], size: int) -> float:
    """Bytes of extracted text per source byte for a source of ``kind`` (format, bz2) and ``size``
    bytes: the slice's ratios, the whole dump's for a Wikipedia bz2 of at least ``WHOLE_DUMP_MIN_BYTES``."""
    if kind == ("wikipedia", True) and size >= WHOLE_DUMP_MIN_BYTES:
        return WHOLE_DUMP_TEXT_PER_BZ2_BYTE
    return TEXT_PER_SOURCE_BYTE[kind]


def disk_need(cfg: DataConfig, source_bytes: dict[str, int], hosts: int = 1) -> dict[str, int]:
    """Bytes each part of a run from scratch writes, from the sources' sizes (source → bytes):
    ``text``, ``corpus`` and per phase its instance files (``"<phase> instances"``, in ``work_dir``)
    and its TFRecords (``"<phase>"``, in ``output_dir``; one host's share of ``hosts``). An upper
    bound when ``max_documents`` is set; packed or unmasked records (``pack_sequences``,
    ``dynamic_masking``) are smaller than the unpacked, masked rows modelled here."""
    text = sum(n * text_per_source_byte(source_kind(s, cfg.source_format), n) for s, n in source_bytes.items())
    tokens = text / TEXT_BYTES_PER_TOKEN
    need = {"text": int(text), "corpus": int(tokens * CORPUS_BYTES_PER_TOKEN)}
    for p in cfg.phases:
        s = p.max_seq_length
        rows = cfg.dupe_factor * tokens / (coverage(s) * s)
        row_bytes = ROW_FIXED_BYTES + ROW_SLOT_BYTES * (s + p.max_predictions_per_seq)
        need[f"{p.name} instances"] = int(rows * INSTANCE_BYTES_PER_ROW)
        need[p.name] = int(rows * row_bytes / hosts)
    return need


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where its bytes will land)."""
    while not path.exists():
        path = path.parent
    return path


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def _left(cfg: DataConfig, need: dict[str, int]) -> dict[str, int]:
    """What each part still needs: nothing for a finished stage (its marker: ``.corpus/extract.json``,
    ``.corpus/tokenize.json``, ``<phase>/manifest.json``), else the estimate less the bytes of it
    already written (a resumed run's shards and instance files)."""

    out, work = Path(cfg.output_dir), Path(cfg.work_dir or cfg.output_dir)
    corpus = work / ".corpus"
    done = {
        "text": corpus / "extract.json",
        "corpus": corpus / "tokenize.json",
        **{k: out / p.name / "manifest.json" for p in cfg.phases for k in (p.name, f"{p.name} instances")},
    }
    have = {
        "text": _size([corpus / "sentences.txt"]),
        "corpus": _size(corpus / f for f in CORPUS_FILES),
        **{p.name: _size((out / p.name).glob("*.tfrecord")) for p in cfg.phases},
        **{f"{p.name} instances": _size((work / p.name).glob(".progress/*.npy")) for p in cfg.phases},
    }
    return {k: 0 if done[k].is_file() else max(0, v - have[k]) for k, v in need.items()}


def _location(cfg: DataConfig, part: str) -> Path:
    """Where a part of :func:`disk_need` is written: the records in ``output_dir``, the rest in ``work_dir``."""
    return Path(cfg.output_dir) if part in {p.name for p in cfg.phases} else Path(cfg.work_dir or cfg.output_dir)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_disk(cfg: DataConfig, hosts: int = 1) -> dict | None:
    """Estimate the disk ``cfg`` needs (on one host of ``hosts``), print it, and raise ConfigError
    (one line: the location, the need, the free space) when a disk lacks it. Sources still to
    download count on the download cache's disk. Returns ``{location: {"need": bytes, "free": bytes, "parts": {...}}}``, or None when
    a URL's size cannot be had (no Content-Length): then a note is printed and nothing is checked."""

    source_bytes, downloads = {}, {}
    for s in cfg.sources:
        if "://" in s:
            dest = download_path(s, cfg.cache_dir)
            size = dest.stat().st_size if dest.is_file() else remote_size(s)
            if size is None:
                _log.info(f"preflight: the size of {s} is unknown (no Content-Length); disk check skipped")
                return None
            if not dest.is_file():
                downloads[s] = (dest, size - _size([dest.with_name(dest.name + ".part")]))
        elif Path(s).is_file():
            size = Path(s).stat().st_size
        else:
            continue  # a missing source is named by the validation that follows
        source_bytes[s] = size
    parts = _left(cfg, disk_need(cfg, source_bytes, hosts))
    # bytes by disk: output and work locations, and the download cache's when a source is still to be fetched
    wanted = [(_location(cfg, k), k, v) for k, v in parts.items()]
    wanted += [(dest.parent, "download", left) for dest, left in downloads.values()]
    report: dict = {}
    for where, part, n in wanted:
        anchor = _existing(where.resolve())
        dev = os.stat(anchor).st_dev
        entry = report.setdefault(dev, {"location": where, "anchor": anchor, "need": 0, "parts": {}})
        entry["need"] += n
        entry["parts"][part] = entry["parts"].get(part, 0) + n
    result = {}
    for entry in report.values():
        free = shutil.disk_usage(entry["anchor"]).free
        detail = ", ".join(f"{k} {gb(v)}" for k, v in entry["parts"].items())
        _log.info(f"preflight: {entry['location']} needs ~{gb(entry['need'])} ({detail}); {gb(free)} free")
        if entry["need"] > free:
            raise ConfigError(
                f"{entry['location']}: not enough disk space: prepare-data needs "
                f"~{gb(entry['need'])} there ({detail}), {gb(free)} free"
            )
        result[str(entry["location"])] = {"need": entry["need"], "free": free, "parts": entry["parts"]}
    return result
