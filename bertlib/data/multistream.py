"""Wikimedia's multistream dumps, read in parallel: each worker decompresses and parses a byte range.

``pages-articles-multistream.xml.bz2`` (whole, or split into ``...-multistreamN.xml-pAAApBBB.bz2``
part files) is a concatenation of independent bz2 streams: the first holds the XML header (the
``<mediawiki>`` start tag and ``<siteinfo>``), each of the next holds 100 whole ``<page>`` elements,
the last the closing ``</mediawiki>``. Any stream can be decompressed on its own, so the reading that
used to run in the main process (bz2 + XML at one core's speed, the bound of the whole extract stage
beyond ~4 workers) is split into byte ranges, one task each:

- A file is cut into fixed ranges of :data:`RANGE_BYTES` (no I/O: only its size is needed). A worker
  takes the streams that *start* in its range: it scans the range for the bytes that open a stream
  (``BZh1``–``BZh9`` followed by the 48-bit magic of a first block, or of an empty stream's end) and
  takes the first candidate that decompresses as a whole stream (a false match inside compressed
  data fails the block CRCs); from there every stream ends exactly where the next begins
  (``unused_data``), so it follows the chain, past the end of its range if the last stream extends
  beyond it. Each stream's text, wrapped in the dump's own ``<mediawiki ...>`` start tag (same XML
  namespace and declaration as the serial reader sees), is parsed whole and its pages go through
  the same rules as the serial reader (:func:`bertlib.data.corpus.page_document`).
- The main process checks that the ranges tile the file: each range's first stream starts where the
  previous range's chain ended, the first at 0, the last ending at the file's end. A stream that
  does not decompress is either found mid-chain by the worker or shows up here as a gap; both give
  one line naming the file and the stream's byte offset. Results are taken in range order, so the
  documents come out in dump order and a ``max_documents`` cut falls exactly where the serial
  reader's does.

Why scan instead of reading the ``-index.txt.bz2`` that Wikimedia publishes next to the dump (lines
``offset:page_id:title``, offsets at stream starts)? The index would have to be downloaded too (a
source URL names one file), and for the full English dump it is ~250 MB of bz2 with ~24M lines
that the main process would decompress before any work starts (tens of seconds of exactly the
serial reading this removes); the scan costs a worker one search of at most one stream's bytes per
range, and the tiling check gives the guarantee the index would (no stream skipped or read twice).

A file qualifies when its first stream is a small MediaWiki header without any ``<page>``: that is
Wikimedia's layout, and it tells it apart from bz2 files made by parallel compressors (pbzip2 cuts
streams every 900 kB, mid-page) — those, single-stream dumps (the non-multistream part files, the
demo's slice) and plain XML are read by the serial reader. A qualifying file whose stream does not
hold whole pages is refused with the stream's offset rather than misread.
"""

from __future__ import annotations

import bz2
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, NamedTuple

from bertlib.core.errors import ConfigError
from bertlib.data.corpus import RawDocument, _local, page_document

#: bytes of compressed input per task (~11 streams of the English dump: ~1,100 pages, ~300 articles)
RANGE_BYTES = 1 << 20
#: a stream that decompresses to more than this is refused (Wikimedia's 100-page streams are far smaller)
MAX_STREAM_BYTES = 1 << 28
_HEADER_BYTES = 1 << 20  # a first stream larger than this is not a header: not the multistream layout
_STREAM_START = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
_ROOT_START = re.compile(rb"<mediawiki\b[^>]*>")
_READ = 1 << 16


class StreamRange(NamedTuple):
    """One task: the bz2 streams of ``path`` that start in ``[start, stop)``. ``size`` is the file's
    size, ``prefix`` the dump's XML up to its ``<mediawiki ...>`` start tag, ``limit`` the most
    documents worth reading (``max_documents``: the range never needs more)."""

    path: str
    start: int
    stop: int
    size: int
    prefix: bytes
    limit: int | None


def _decompress_stream(f, offset: int, max_bytes: int) -> tuple[bytes, int] | None:
    """The bz2 stream starting at ``offset`` of the open file ``f``: ``(data, end offset)``, or None if
    it decompresses to more than ``max_bytes``. OSError/EOFError if the bytes there are not one
    whole bz2 stream."""
    f.seek(offset)
    d = bz2.BZ2Decompressor()
    parts, size, pos = [], 0, offset
    while not d.eof:
        chunk = f.read(_READ)
        if not chunk:
            raise EOFError("compressed data ends before the end of the stream")
        pos += len(chunk)
        parts.append(d.decompress(chunk))
        size += len(parts[-1])
        if size > max_bytes:
            return None
    return b"".join(parts), pos - len(d.unused_data)


def multistream_prefix(path: str | Path) -> bytes | None:
    """The dump's XML up to and including its ``<mediawiki ...>`` start tag if ``path`` has Wikimedia's
    multistream layout (a first bz2 stream holding only the header, more streams after it), else None."""
    if not str(path).endswith(".bz2"):
        return None
    with open(path, "rb") as f:
        try:
            first = _decompress_stream(f, 0, _HEADER_BYTES)
        except (OSError, EOFError):
            return None
        if first is None:
            return None
        header, end = first
        f.seek(end)
        root = _ROOT_START.search(header)
        if root is None or b"<page>" in header or not _STREAM_START.match(f.read(10)):
            return None
    return header[: root.end()]


def stream_ranges(path: str | Path, limit: int | None = None) -> list[StreamRange] | None:
    """The tasks that read ``path`` in parallel, in file order, or None if it is not a multistream dump."""
    prefix = multistream_prefix(path)
    if prefix is None:
        return None
    size = Path(path).stat().st_size
    return [
        StreamRange(str(path), start, min(start + RANGE_BYTES, size), size, prefix, limit)
        for start in range(0, size, RANGE_BYTES)
    ]


def corrupt_stream(path: str, offset: int, reason) -> ConfigError:
    """The one-line error for a bz2 stream that cannot be read."""
    return ConfigError(f"{path}: corrupt bz2 stream at byte offset {offset} ({reason})")


def _stream_candidates(f, start: int, stop: int) -> Iterator[int]:
    """Offsets in ``[start, stop)`` where the bytes that open a bz2 stream are found (unverified)."""
    pos = start
    while pos < stop:
        f.seek(pos)
        window = f.read(_READ + 9)  # a match beginning in the last 9 bytes is found by the next window
        for m in _STREAM_START.finditer(window):
            if m.start() < _READ and pos + m.start() < stop:
                yield pos + m.start()
        if len(window) <= _READ:
            return
        pos += _READ


class RangeReader:
    """The documents of one :class:`StreamRange`, read in a worker. Iterate once; afterwards
    ``first`` is the offset of its first stream (None if no stream starts in the range) and ``end``
    where its last one ended (None if iteration stopped at ``limit``). ``stats`` gets ``read_s``
    (CPU seconds decompressing + parsing), ``documents``, ``pages``, ``input_bytes`` (bz2) and ``xml_bytes``."""

    def __init__(self, task: StreamRange, stats: dict):
        self.task, self.stats = task, stats
        self.first: int | None = None
        self.end: int | None = None

    def __iter__(self) -> Iterator[RawDocument]:
        task, remaining = self.task, self.task.limit
        with open(task.path, "rb") as f:
            t = time.thread_time()
            offset, stream = self._first_stream(f)
            self.first = offset
            while stream is not None:
                data, end = stream
                docs = self._documents(offset, data, end)
                self._count(time.thread_time() - t, len(docs), end - offset, len(data))
                if remaining is not None:
                    docs, remaining = docs[:remaining], remaining - min(remaining, len(docs))
                yield from docs
                if remaining == 0:
                    return
                offset, stream = end, None
                if end < task.stop and end < task.size:
                    t = time.thread_time()
                    stream = self._stream_at(f, end)
            self.end = offset

    def _first_stream(self, f) -> tuple[int | None, tuple[bytes, int] | None]:
        """The first offset in the range where a whole stream decompresses, and that stream."""
        for offset in _stream_candidates(f, self.task.start, self.task.stop):
            try:
                stream = _decompress_stream(f, offset, MAX_STREAM_BYTES)
            except (OSError, EOFError):
                continue  # a false match, or a corrupt stream (the main process's tiling check reports it)
            if stream is None:
                raise self._too_large(offset)
            return offset, stream
        return None, None

    def _stream_at(self, f, offset: int) -> tuple[bytes, int]:
        """The stream that must start at ``offset`` (where the previous one ended)."""
        try:
            stream = _decompress_stream(f, offset, MAX_STREAM_BYTES)
        except (OSError, EOFError) as e:
            raise corrupt_stream(self.task.path, offset, e) from None
        if stream is None:
            raise self._too_large(offset)
        return stream

    def _too_large(self, offset: int) -> ConfigError:
        return ConfigError(
            f"{self.task.path}: the bz2 stream at byte offset {offset} decompresses to more than "
            f"{MAX_STREAM_BYTES >> 20} MiB (not a Wikimedia multistream dump)"
        )

    def _documents(self, offset: int, data: bytes, end: int) -> list[RawDocument]:
        """The articles of one stream's pages. The stream must hold whole ``<page>`` elements: only the
        file's first stream may hold something else before them (the header), only its last
        ``</mediawiki>`` after them."""
        task = self.task
        first, last = data.find(b"<page>"), data.rfind(b"</page>")
        if first < 0 and last < 0:  # no page: the header, or the closing tag
            head, body, tail = (data, b"", b"") if offset == 0 else (b"", b"", data)
        elif 0 <= first < last:
            last += len(b"</page>")
            head, body, tail = data[:first], data[first:last], data[last:]
        else:
            head, body, tail = b"", b"", b"<page> unclosed"
        if (offset > 0 and head.strip()) or (
            tail.strip() and not (tail.strip() == b"</mediawiki>" and end == task.size)
        ):
            raise ConfigError(
                f"{task.path}: the bz2 stream at byte offset {offset} does not hold whole <page> "
                f"elements (a Wikimedia multistream dump's streams do)"
            )
        if end == task.size and tail.strip() != b"</mediawiki>":
            raise ConfigError(
                f"{task.path}: the dump ends without </mediawiki> (its bz2 stream at byte offset "
                f"{offset} is the last; truncated?)"
            )
        if not body:
            return []
        self.stats["pages"] = self.stats.get("pages", 0) + body.count(b"<page>")
        try:
            root = ET.fromstring(task.prefix + body + b"</mediawiki>")
        except ET.ParseError as e:
            raise ConfigError(f"{task.path}: bad XML in the bz2 stream at byte offset {offset} ({e})") from None
        pages = (page_document(el) for el in root.iter() if _local(el.tag) == "page")
        return [doc for doc in pages if doc is not None]

    def _count(self, seconds: float, documents: int, input_bytes: int, xml_bytes: int) -> None:
        for key, value in (
            ("read_s", seconds),
            ("documents", documents),
            ("input_bytes", input_bytes),
            ("xml_bytes", xml_bytes),
        ):
            self.stats[key] = self.stats.get(key, 0) + value


class TilingCheck:
    """Main-process check, fed every range's result in order, that the streams the workers read tile
    each file: a range's first stream starts where the previous range's chain ended (0 for a file's
    first range), and a file's last chain ends at its end. Raises the one-line corrupt-stream error
    at the first gap (the reason is found by decompressing there again)."""

    def __init__(self):
        self.expected = 0

    def __call__(self, task: StreamRange, first: int | None, end: int | None) -> None:
        if task.start == 0:
            self.expected = 0
        if first is not None:
            if first != self.expected:
                self._fail(task.path, self.expected)
            self.expected = end
            if end is None:  # the range stopped at max_documents: the reading ends in it
                return
        if task.stop == task.size and self.expected != task.size:
            self._fail(task.path, self.expected)

    @staticmethod
    def _fail(path: str, offset: int):
        with open(path, "rb") as f:
            try:
                stream = _decompress_stream(f, offset, MAX_STREAM_BYTES)
                reason = (
                    "the next range does not continue there"
                    if stream
                    else f"decompresses to more than {MAX_STREAM_BYTES >> 20} MiB"
                )
            except (OSError, EOFError) as e:
                reason = str(e)
        raise corrupt_stream(path, offset, reason)
