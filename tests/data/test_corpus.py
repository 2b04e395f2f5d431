"""Reading sources: the real Wikipedia slice (counted independently from the raw XML), text files,
several inputs, URLs with checksums."""

import bz2
import functools
import http.server
import re
import threading

import pytest
from data_helpers import raw_pages

from bertlib.core.errors import ConfigError
from bertlib.data.corpus import document_sentences, iter_raw_documents, iter_text, resolve_source, source_format

MARKUP = re.compile(
    r"\[\[|\]\]|\{\{|\}\}|\{\||\|\}|<ref|</ref|&lt;|&gt;|&amp;|&quot;|'''|''|"
    r"\bthumb\||Category:|File:|Image:|^==|==$|<!--|__TOC__"
)


@pytest.fixture(scope="module")
def pages(wiki_slice):
    return raw_pages(wiki_slice)


@pytest.fixture(scope="module")
def docs(wiki_slice):
    return list(iter_raw_documents([wiki_slice]))


def test_article_count_matches_raw_dump(pages, docs):
    # independent count from the raw XML: articles = ns 0, not a redirect, not a disambiguation page
    assert len(pages) == 206
    redirects = [p for p in pages if p["redirect"]]
    non_articles = [p for p in pages if p["ns"] != "0"]
    # DESIGN.md: 99 (article-namespace) redirects + 1 non-article page (itself a redirect)
    assert len([p for p in redirects if p["ns"] == "0"]) == 99 and len(non_articles) == 1
    candidates = [p for p in pages if p["ns"] == "0" and not p["redirect"]]
    assert len(candidates) == 106  # DESIGN.md's count, before dropping disambiguation pages
    disamb = [
        p
        for p in candidates
        if "(disambiguation)" in p["title"]
        or re.search(r"\{\{\s*(disambiguation|disambig|geodis)\s*[|}]", p["text"], re.I)
    ]
    assert len(disamb) == 8
    expected = [p["title"] for p in candidates if p not in disamb]
    assert [d.title for d in docs] == expected
    assert len(docs) == 98
    redirect_titles = {p["title"] for p in redirects}
    assert not redirect_titles & {d.title for d in docs}


def test_markup_removed_and_prose_kept(docs, pages):
    raw = {p["title"]: p["text"] for p in pages}
    total_words = 0
    for doc in docs[:40]:
        sentences = document_sentences(doc)
        assert sentences, doc.title
        for s in sentences:
            assert not MARKUP.search(s), (doc.title, s)
            assert "\n" not in s and s == s.strip()
        total_words += sum(len(s.split()) for s in sentences)
        # every sentence's words come from the article's wikitext (order within the sentence kept)
        assert sentences[0].split()[0].strip("'\"(").lower() in raw[doc.title].lower()
    assert total_words > 100_000
    anarchism = document_sentences(docs[0])
    assert anarchism[0] == (
        "Anarchism is a political philosophy that advocates self-governed societies based on voluntary institutions."
    )
    # references/templates inside a sentence are gone, the prose around them is kept
    assert "Anarchism considers the state to be undesirable, unnecessary, and harmful." in anarchism


def test_text_sources_blank_line_and_file_modes_and_several_inputs(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("First doc line one. Still one.\nSecond line.\n\n\nSecond doc.\n")
    b = tmp_path / "b.txt.bz2"
    with bz2.open(b, "wt") as f:
        f.write("Third doc here.\n\nFourth doc.\n")
    assert source_format(a) == "text" and source_format(b) == "text"
    docs = list(iter_raw_documents([a, b], "auto", "blank_line"))
    assert [document_sentences(d) for d in docs] == [
        ["First doc line one.", "Still one.", "Second line."],
        ["Second doc."],
        ["Third doc here."],
        ["Fourth doc."],
    ]
    whole = list(iter_text(a, "file"))
    assert len(whole) == 1 and document_sentences(whole[0])[-1] == "Second doc."
    assert len(list(iter_raw_documents([a, b], max_documents=3))) == 3


def test_broken_dump_names_the_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<mediawiki><page><title>x</title><ns>0</ns><revision><text>unclosed")
    with pytest.raises(ConfigError, match="bad.xml: cannot read source"):
        list(iter_raw_documents([bad]))


def test_url_source_downloaded_once_with_checksum(tmp_path, wiki_slice):
    from bertlib.core.errors import AssetError
    from bertlib.core.files import sha256_file

    served = tmp_path / "srv"
    served.mkdir()
    (served / "slice.xml.bz2").write_bytes(wiki_slice.read_bytes())
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/slice.xml.bz2"
        good = sha256_file(wiki_slice)
        path = resolve_source(url, good, cache_dir=str(tmp_path / "cache"))
        assert sha256_file(path) == good and source_format(path) == "wikipedia"
        assert resolve_source(url, good, cache_dir=str(tmp_path / "cache")) == path
        assert requests == ["/slice.xml.bz2"]  # the second call read the cache
        with pytest.raises(AssetError, match="does not match"):
            resolve_source(url + "?x", "0" * 64, cache_dir=str(tmp_path / "cache2"))
    finally:
        server.shutdown()
    with pytest.raises(FileNotFoundError, match="nowhere.xml"):
        resolve_source(str(tmp_path / "nowhere.xml"))


def test_s3_source_downloaded_once_with_checksum(tmp_path, wiki_slice, aws_env):
    """An s3:// source through the real boto3 against moto_server on 127.0.0.1 (AWS itself is not
    reachable here): downloaded into the cache, checksum-verified, read from the cache afterwards."""
    import boto3

    from bertlib.core.errors import AssetError
    from bertlib.core.files import sha256_file

    s3 = boto3.client("s3")
    s3.upload_file(str(wiki_slice), aws_env["bucket"], "corpora/slice.xml.bz2")
    uri, good = f"s3://{aws_env['bucket']}/corpora/slice.xml.bz2", sha256_file(wiki_slice)
    path = resolve_source(uri, good, cache_dir=str(tmp_path / "cache"))
    assert sha256_file(path) == good and source_format(path) == "wikipedia"
    s3.delete_object(Bucket=aws_env["bucket"], Key="corpora/slice.xml.bz2")
    assert resolve_source(uri, good, cache_dir=str(tmp_path / "cache")) == path  # no second download
    s3.upload_file(str(wiki_slice), aws_env["bucket"], "corpora/other.xml.bz2")
    with pytest.raises(AssetError, match="does not match"):
        resolve_source(f"s3://{aws_env['bucket']}/corpora/other.xml.bz2", "0" * 64, cache_dir=str(tmp_path / "c2"))
