"""Raw sources → documents → sentences.

Two kinds of source, streamed (never loaded whole), several at once:

- a MediaWiki XML dump (``*.xml`` or ``*.xml.bz2``): ``<page>`` elements are read one at a time with
  ``iterparse`` and cleared; redirects, disambiguation pages and non-article namespaces (``ns != 0``)
  are dropped; the wikitext is parsed with ``mwparserfromhell`` and rendered with ``strip_code`` after
  templates, tables, references, files/images, categories and interlanguage links are cut out of
  the parse tree; headings become paragraph breaks.
- plain text: one document per blank-line-separated block (``text_doc_mode="blank_line"``, Google's
  input format) or one document per file (``"file"``).

A source is a local path or an ``http(s)://``/``s3://`` URL (downloaded once by
:func:`bertlib.core.assets.fetch_url`, checksum-verified when one is given). Sentences are split with
``blingfire`` (a compiled model shipped in the wheel; nothing is downloaded at run time).

The two halves are separate so that the reading (:func:`iter_raw_documents`) can run in one process
and the expensive cleaning (:func:`document_sentences`) in worker processes. A Wikimedia multistream
dump is read by the workers themselves, a byte range each (:mod:`bertlib.data.multistream`), with the
same per-page rules (:func:`page_document`).
"""

from __future__ import annotations

import bz2
import contextlib
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, NamedTuple

from bertlib.core.assets import fetch_url
from bertlib.core.errors import ConfigError

#: Wikilink namespaces whose links are not prose (the image/file caption syntax would leak otherwise).
_DROP_LINK_PREFIXES = ("file", "image", "media", "category")
#: Tags whose contents are not prose: references, tables, galleries, math, code, ...
_DROP_TAGS = frozenset(
    {
        "ref",
        "references",
        "table",
        "gallery",
        "math",
        "chem",
        "timeline",
        "imagemap",
        "score",
        "syntaxhighlight",
        "source",
        "pre",
        "code",
        "graph",
        "templatedata",
        "categorytree",
        "inputbox",
        "hiero",
        "noinclude",
        "includeonly",
        "mapframe",
    }
)
#: disambiguation templates: {{Disambiguation}}, {{Disambig}}, {{Dab}}, {{Hndis}}, {{Geodis}},
#: {{Numberdis}}, {{Mathdab}} and the "... disambiguation" family ({{Human name disambiguation}} ...)
_DISAMBIGUATION = re.compile(
    r"\{\{\s*(?:[\w -]*disambiguation|disambig|disamb|dab|hndis|geodis|numberdis|"
    r"mathdab)\s*[|}]",
    re.IGNORECASE,
)
_INTERLANGUAGE = re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\u00a0]+")
# References and comments are cut by regex before parsing: they are never prose, they are a third of
# a long article's wikitext (parsing time halves), and an unbalanced quote inside a <ref> makes the
# parser give up on the surrounding paragraph. (A self-closing <ref .../> is matched first.)
_REFS_AND_COMMENTS = re.compile(r"<!--.*?-->|<ref[^>]*/>|<ref(?:\s[^>]*)?>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
# Templates and tables are never prose either (``_prune`` drops them): innermost ``{{...}}`` / ``{|...|}``
# spans without a blank line are cut by regex too, repeatedly (nesting), each replaced by a space so
# that neighbouring text and quote markup stay apart. Parsing time halves again; what is left
# unbalanced (stray braces, blank lines inside a template) is still the parser's job.
_INNER_TEMPLATE = re.compile(r"\{\{(?:(?!\{\{|\}\}|\n\n).)*\}\}", re.DOTALL)
_INNER_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}|\n\n).)*\|\}", re.DOTALL)
# What the parser leaves when it gives up on a construct (nested links in a caption): leftover tags
# are unwrapped, quote runs dropped, and a line that still holds link/template brackets is dropped.
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_LEFTOVER_QUOTES = re.compile(r"'{2,}")  # unbalanced italic/bold quote runs
_LEFTOVER_MARKUP = ("[[", "]]", "{{", "}}", "{|", "|}")


class RawDocument(NamedTuple):
    """One unparsed document: ``kind`` is ``"wikitext"`` or ``"text"``."""

    kind: str
    title: str
    text: str


def source_format(path: str | Path, declared: str = "auto") -> str:
    """``"wikipedia"`` or ``"text"``: the declared format, or sniffed (a MediaWiki dump starts with
    ``<mediawiki``, possibly after an XML declaration)."""
    if declared != "auto":
        return declared
    with _open_text(Path(path)) as f:
        head = f.read(4096).lstrip()
    return "wikipedia" if head.startswith("<?xml") or head.startswith("<mediawiki") else "text"


def _open_text(path: Path):
    if str(path).endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def is_disambiguation(title: str, wikitext: str) -> bool:
    """Wikipedia's disambiguation pages: a ``(disambiguation)`` title or a disambiguation template."""
    return title.endswith("(disambiguation)") or bool(_DISAMBIGUATION.search(wikitext))


def page_document(page: ET.Element) -> RawDocument | None:
    """The article of one parsed ``<page>`` element; ``None`` for a redirect, a disambiguation page or
    a page outside the article namespace."""
    title, ns, text, redirect = "", None, "", False
    for child in page.iter():
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            ns = (child.text or "").strip()
        elif name == "redirect":
            redirect = True
        elif name == "text":
            text = child.text or ""
    if ns != "0" or redirect or text.lstrip().lower().startswith("#redirect"):
        return None
    if is_disambiguation(title, text):
        return None
    return RawDocument("wikitext", title, text)


def iter_wikipedia(path: str | Path, stats: dict | None = None) -> Iterator[RawDocument]:
    """Articles of a MediaWiki XML dump (plain or bz2), streamed, in dump order. With ``stats``, adds
    the pages parsed and the bytes read (``input_bytes``: of the file, ``xml_bytes``: decompressed)."""
    path = Path(path)
    with open(path, "rb") as raw, bz2.BZ2File(raw) if str(path).endswith(".bz2") else contextlib.nullcontext(raw) as f:
        read = [0, 0]  # input and XML bytes already added to stats

        def count(pages: int) -> None:
            now = [raw.tell(), f.tell()]
            stats["pages"] = stats.get("pages", 0) + pages
            stats["input_bytes"] = stats.get("input_bytes", 0) + now[0] - read[0]
            stats["xml_bytes"] = stats.get("xml_bytes", 0) + now[1] - read[1]
            read[:] = now

        context = ET.iterparse(f, events=("start", "end"))
        _, root = next(context)
        for event, elem in context:
            if event != "end" or _local(elem.tag) != "page":
                continue
            doc = page_document(elem)
            root.clear()  # drop the finished page (and its predecessors) from memory
            if stats is not None:
                count(1)
            if doc is not None:
                yield doc
        if stats is not None:
            count(0)


def iter_text(path: str | Path, doc_mode: str = "blank_line") -> Iterator[RawDocument]:
    """Documents of a plain-text file: blank-line-separated blocks, or the whole file."""
    path = Path(path)
    with _open_text(path) as f:
        if doc_mode == "file":
            text = f.read()
            if text.strip():
                yield RawDocument("text", path.name, text)
            return
        lines: list[str] = []
        for line in f:
            if line.strip():
                lines.append(line)
            elif lines:
                yield RawDocument("text", path.name, "".join(lines))
                lines = []
        if lines:
            yield RawDocument("text", path.name, "".join(lines))


def resolve_source(source: str, sha256: str | None = None, cache_dir: str | None = None) -> Path:
    """A local path (checked to exist) or a downloaded, cached, checksum-verified URL."""

    return fetch_url(source, sha256=sha256, cache_dir=cache_dir)


def iter_raw_documents(
    paths: list[Path],
    fmt: str = "auto",
    doc_mode: str = "blank_line",
    max_documents: int | None = None,
    stats: dict | None = None,
) -> Iterator[RawDocument]:
    """All documents of all (already resolved) sources, in order, up to ``max_documents``. With
    ``stats``, adds the CPU seconds spent reading (``read_s``: this generator's own, not its
    consumer's), the documents yielded and, for dumps, what :func:`iter_wikipedia` counts."""
    n = 0
    t = time.thread_time()
    for path in paths:
        try:
            kind = source_format(path, fmt)
            docs = iter_wikipedia(path, stats) if kind == "wikipedia" else iter_text(path, doc_mode)
            for doc in docs:
                if max_documents is not None and n >= max_documents:
                    return
                n += 1
                if stats is not None:
                    stats["read_s"] = stats.get("read_s", 0.0) + time.thread_time() - t
                    stats["documents"] = stats.get("documents", 0) + 1
                yield doc
                t = time.thread_time()
        except (ET.ParseError, OSError, EOFError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read source ({e})") from None
    if stats is not None:
        stats["read_s"] = stats.get("read_s", 0.0) + time.thread_time() - t


def _prune(code) -> None:
    """Cut non-prose nodes out of a parsed wikitext tree, in place; headings → paragraph breaks."""
    from mwparserfromhell.nodes import Comment, ExternalLink, Heading, Tag, Template, Text, Wikilink

    kept = []
    for node in code.nodes:
        if isinstance(node, (Template, Comment)):
            continue
        if isinstance(node, Heading):
            kept.append(Text("\n\n"))
            continue
        if isinstance(node, Wikilink):
            title = str(node.title).strip()
            if title.split(":", 1)[0].strip().lower() in _DROP_LINK_PREFIXES or (
                ":" in title and _INTERLANGUAGE.match(title)
            ):
                continue
            _prune(node.title)
            if node.text is not None:
                _prune(node.text)
        elif isinstance(node, Tag):
            if str(node.tag).strip().lower() in _DROP_TAGS:
                continue
            if node.contents is not None:
                _prune(node.contents)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _prune(node.title)
        kept.append(node)
    code.nodes[:] = kept


def _precut(wikitext: str) -> str:
    """Cut references, comments, templates and tables out of raw wikitext (see the regexes above)."""
    text = _REFS_AND_COMMENTS.sub("", wikitext)
    for pattern in (_INNER_TEMPLATE, _INNER_TABLE):
        n = 1
        while n:
            text, n = pattern.subn(" ", text)
    return text


def clean_wikitext(wikitext: str) -> list[str]:
    """Wikitext → prose paragraphs (markup, templates, tables, refs, files, categories removed)."""
    import mwparserfromhell  # 'local' extra (data preparation only), absent in a SageMaker Studio kernel

    code = mwparserfromhell.parse(_precut(wikitext))
    _prune(code)
    text = code.strip_code(normalize=True, collapse=True)
    text = _LEFTOVER_QUOTES.sub("", _LEFTOVER_TAG.sub("", text))
    return [p for p in _paragraphs(text) if not any(m in p for m in _LEFTOVER_MARKUP)]


def _paragraphs(text: str) -> list[str]:
    """Lines of text, whitespace-normalized, empty ones and markup leftovers dropped."""
    out = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        # leftovers of unbalanced markup, table rows and behaviour switches are not prose
        if not line or line.startswith(("{|", "|", "!", "__")) or line in ("}}", "|}"):
            continue
        out.append(line)
    return out


def split_sentences(paragraphs: list[str]) -> list[str]:
    """Paragraphs → sentences (blingfire's rule-based splitter; each paragraph split separately)."""
    from blingfire import text_to_sentences  # 'local' extra, as mwparserfromhell

    out = []
    for p in paragraphs:
        out.extend(s.strip() for s in text_to_sentences(p).split("\n") if s.strip())
    return out


def document_sentences(doc: RawDocument, stats: dict | None = None) -> list[str]:
    """One raw document → its sentences (empty list if nothing prose-like remains). With ``stats``,
    adds the CPU seconds spent cleaning (``clean_s``) and splitting (``split_s``)."""
    t0 = time.thread_time()
    paragraphs = clean_wikitext(doc.text) if doc.kind == "wikitext" else _paragraphs(doc.text)
    t1 = time.thread_time()
    sentences = split_sentences(paragraphs)
    if stats is not None:
        stats["clean_s"] = stats.get("clean_s", 0.0) + t1 - t0
        stats["split_s"] = stats.get("split_s", 0.0) + time.thread_time() - t1
    return sentences
