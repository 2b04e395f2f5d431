"""A Wikimedia-style multistream dump (and its index) from a single-stream one, for tests and benchmarks.

Wikimedia's ``pages-articles-multistream.xml.bz2`` is the dump's XML cut into independent bz2 streams:
the header (``<mediawiki>`` start tag + ``<siteinfo>``), then 100 ``<page>`` elements per stream,
then ``</mediawiki>``; ``...-multistream-index.txt.bz2`` has one line ``offset:page_id:title`` per
page, the offset being its stream's. :func:`write_multistream` re-compresses a dump's pages that way
(``copies`` > 1 repeats the pages with distinct ids and titles, for volume) and writes the same XML
as one bz2 stream too, so the two layouts of identical content can be compared.

usage: python bench/make_multistream.py DUMP.xml.bz2 OUT_DIR [--pages-per-stream 100] [--copies 1]
"""

from __future__ import annotations

import argparse
import bz2
import re
import sys
from pathlib import Path

_PAGE = re.compile(rb"[ \t]*<page>.*?</page>\n?", re.DOTALL)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.DOTALL)
_ID = re.compile(rb"<id>(\d+)</id>")


def _copy(page: bytes, k: int) -> bytes:
    """Page ``page`` as copy ``k``: title prefixed (the end, e.g. "(disambiguation)", unchanged), id shifted."""
    if k == 0:
        return page
    page = _TITLE.sub(lambda m: b"<title>R%d %s</title>" % (k, m.group(1)), page, count=1)
    return _ID.sub(lambda m: b"<id>%d</id>" % (int(m.group(1)) + k * 10_000_000), page, count=1)


def write_multistream(dump: Path, out_dir: Path, pages_per_stream: int = 100, copies: int = 1) -> dict:
    """Write ``<out_dir>/pages-articles-multistream.xml.bz2``, its ``-index.txt.bz2`` and
    ``pages-articles.xml.bz2`` (the same XML, one stream). Returns their paths, the offsets of all
    streams (``"streams"``: header, page streams, footer) and the number of pages."""
    xml = bz2.decompress(Path(dump).read_bytes())
    pages = list(_PAGE.finditer(xml))
    header, footer = xml[: pages[0].start()], xml[pages[-1].end() :]
    body = [_copy(m.group(0), k) for k in range(copies) for m in pages]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "multistream": out_dir / "pages-articles-multistream.xml.bz2",
        "index": out_dir / "pages-articles-multistream-index.txt.bz2",
        "single": out_dir / "pages-articles.xml.bz2",
    }
    groups = [body[j : j + pages_per_stream] for j in range(0, len(body), pages_per_stream)]
    streams, index = [], []
    with open(paths["multistream"], "wb") as f:
        for data, group in [(header, [])] + [(b"".join(g), g) for g in groups] + [(footer, [])]:
            streams.append(f.tell())
            for page in group:
                index.append(b"%d:%s:%s\n" % (streams[-1], _ID.search(page).group(1), _TITLE.search(page).group(1)))
            f.write(bz2.compress(data, 9))
    paths["index"].write_bytes(bz2.compress(b"".join(index), 9))
    paths["single"].write_bytes(bz2.compress(header + b"".join(body) + footer, 9))
    return {**paths, "streams": streams, "pages": len(body)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dump", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--pages-per-stream", type=int, default=100)
    p.add_argument("--copies", type=int, default=1)
    a = p.parse_args()
    made = write_multistream(a.dump, a.out_dir, a.pages_per_stream, a.copies)
    print(
        f"{made['multistream']}: {made['pages']} pages in {len(made['streams'])} streams; index {made['index']}; "
        f"single stream {made['single']}"
    )
    sys.exit(0)
