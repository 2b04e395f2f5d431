"""Parallel extraction from a Wikimedia multistream dump: the real Wikipedia slice re-compressed the
way Wikimedia publishes it (header stream, 10-page streams here so that there are many, footer
stream, ``-index.txt.bz2``) gives byte-identical ``sentences.txt`` to the serial reader on the same
XML as one bz2 stream, whatever the worker count, range size and ``max_documents``; a damaged
stream is named by file and byte offset."""

import bz2
import concurrent.futures as cf
import importlib.util
import multiprocessing
import shutil
from pathlib import Path

import pytest

from bertlib.core.config import build_config
from bertlib.core.errors import ConfigError
from bertlib.data import multistream
from bertlib.data.multistream import RangeReader, stream_ranges
from bertlib.data.prepare import prepare, worker_init
from bertlib.data.prepare.extract import extract_sentences
from bertlib.data.prepare.sources import validate

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_multistream", REPO / "bench" / "make_multistream.py")
make_multistream = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_multistream)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory, wiki_slice):
    """The slice's 206 pages as a multistream dump (23 streams) + index, and as one bz2 stream."""
    return make_multistream.write_multistream(wiki_slice, tmp_path_factory.mktemp("dumps"), pages_per_stream=10)


@pytest.fixture(scope="module")
def pools():
    """Worker pools of 1 and 2 spawned processes (as prepare makes them), shared by the tests."""
    ctx = multiprocessing.get_context("spawn")
    made = {n: cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=worker_init) for n in (1, 2)}
    yield made
    for pool in made.values():
        pool.shutdown()


def _config(source, out, bert_vocab, workers, max_documents=None, **extra):
    sources = source if isinstance(source, list) else [source]
    return build_config(
        "prepare-data",
        {
            "sources": [str(s) for s in sources],
            "output_dir": str(out),
            "vocab_file": str(bert_vocab),
            "do_lower_case": True,
            "num_workers": workers,
            "max_documents": max_documents,
            "num_shards": 1,
            "validation_shards": 0,
            "phases": [{"name": "phase1", "max_seq_length": 64, "max_predictions_per_seq": 10}],
            **extra,
        },
    )


def extract(source, out, bert_vocab, pools, workers, max_documents=None) -> tuple[bytes, dict]:
    """Stage 1 of prepare-data alone: ``sentences.txt`` and ``extract.json``'s content."""
    shutil.rmtree(out, ignore_errors=True)
    plan = validate(_config(source, out, bert_vocab, workers, max_documents))
    info, _ = extract_sentences(plan, pools[workers], workers, progress=False)
    return (Path(out) / ".corpus" / "sentences.txt").read_bytes(), info


@pytest.fixture(scope="module")
def serial(dumps, bert_vocab, pools, tmp_path_factory):
    """The reference: today's serial reader on the single-stream file (all documents, and the first 37)."""
    out = tmp_path_factory.mktemp("serial")
    return {n: extract(dumps["single"], out / str(n), bert_vocab, pools, 2, n) for n in (None, 37)}


def test_scan_finds_exactly_the_streams_of_the_index(dumps, monkeypatch):
    """Ranges smaller than any stream but the last: each stream is the first of its own range, so the
    offsets the workers' scan finds are all the stream starts — the index's offsets plus header and
    footer."""
    index = {int(line.split(b":", 1)[0]) for line in bz2.decompress(dumps["index"].read_bytes()).splitlines()}
    assert len(index) == 21  # 206 pages, 10 per stream
    assert min(b - a for a, b in zip(dumps["streams"], dumps["streams"][1:])) > 512
    monkeypatch.setattr(multistream, "RANGE_BYTES", 512)
    found, docs = [], []
    for task in stream_ranges(dumps["multistream"]):
        reader = RangeReader(task, {})
        docs += [d.title for d in reader]
        if reader.first is not None:
            found.append(reader.first)
    assert found == dumps["streams"] == sorted(index | {0, dumps["streams"][-1]})
    assert len(docs) == 98 and len(set(docs)) == 98


def test_single_stream_and_block_split_files_are_read_serially(wiki_slice, dumps, tmp_path):
    """The demo's slice (one stream) is not a multistream dump, nor is a file cut into streams in the
    middle of pages (as pbzip2 does): both go to the serial reader."""
    assert stream_ranges(wiki_slice) is None and stream_ranges(dumps["single"]) is None
    xml = bz2.decompress(dumps["single"].read_bytes())
    cut = tmp_path / "pbzip2-like.xml.bz2"
    cut.write_bytes(b"".join(bz2.compress(xml[i : i + 900_000]) for i in range(0, len(xml), 900_000)))
    assert stream_ranges(cut) is None


def test_streams_cutting_pages_are_refused(dumps, tmp_path):
    """Wikimedia's header stream, then streams cut every 200 kB of XML (mid-page): a stream that does
    not hold whole pages is refused with its offset, not misread."""
    xml = bz2.decompress(dumps["single"].read_bytes())
    header_end = xml.index(b"<page>")
    streams = [bz2.compress(xml[:header_end])] + [
        bz2.compress(xml[i : i + 200_000]) for i in range(header_end, len(xml), 200_000)
    ]
    bad = tmp_path / "cut-multistream.xml.bz2"
    bad.write_bytes(b"".join(streams))
    ranges = stream_ranges(bad)
    assert ranges is not None
    with pytest.raises(
        ConfigError,
        match=rf"{bad}: the bz2 stream at byte offset {len(streams[0])} does not "
        r"hold whole <page> elements",
    ):
        for task in ranges:
            list(RangeReader(task, {}))


@pytest.mark.parametrize("range_bytes", [65536, 1 << 20])
@pytest.mark.parametrize("workers", [1, 2])
def test_same_sentences_as_the_serial_reader(
    dumps, serial, bert_vocab, pools, tmp_path, monkeypatch, workers, range_bytes
):
    monkeypatch.setattr(multistream, "RANGE_BYTES", range_bytes)  # 30 ranges (some empty) / 2 ranges
    text, info = extract(dumps["multistream"], tmp_path / "out", bert_vocab, pools, workers)
    ref_text, ref_info = serial[None]
    assert text == ref_text
    assert {k: info[k] for k in ("raw_documents", "documents", "sentences", "words")} == {
        k: ref_info[k] for k in ("raw_documents", "documents", "sentences", "words")
    } and info["documents"] == 98
    assert info["rates"]["read_by"] == "workers" and ref_info["rates"]["read_by"] == "main process"
    read = info["rates"]["read"]
    assert read["pages_per_s"] > 0 and read["input_MB_per_s"] > 0 and info["rates"]["clean"]["docs_per_s"] > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_max_documents_cut_where_the_serial_reader_cuts(
    dumps, serial, bert_vocab, pools, tmp_path, monkeypatch, workers
):
    monkeypatch.setattr(multistream, "RANGE_BYTES", 65536)
    text, info = extract(dumps["multistream"], tmp_path / "out", bert_vocab, pools, workers, 37)
    assert text == serial[37][0] and info["raw_documents"] == 37
    assert text.count(b"\n\n") == 37 and serial[None][0].startswith(text)


def test_several_sources_cut_in_the_last(dumps, bert_vocab, pools, tmp_path, monkeypatch):
    """A multistream dump (read by the workers) then a text file (read by the main process), cut at
    max_documents inside the text file: the same bytes as with the single-stream dump first."""
    text = tmp_path / "more.txt"
    text.write_text("".join(f"Extra document {i}. It has two sentences.\n\n" for i in range(5)))
    monkeypatch.setattr(multistream, "RANGE_BYTES", 65536)
    got = extract([dumps["multistream"], text], tmp_path / "a", bert_vocab, pools, 2, 101)
    ref = extract([dumps["single"], text], tmp_path / "b", bert_vocab, pools, 2, 101)
    assert got[0] == ref[0] and got[1]["raw_documents"] == 101 and got[1]["rates"]["read_by"] == "both"
    assert got[0].endswith(b"Extra document 2.\nIt has two sentences.\n\n")


def test_without_the_index_file(dumps, serial, bert_vocab, pools, tmp_path, monkeypatch):
    """The index is not needed: the same dump alone, under another name, gives the same bytes."""
    alone = tmp_path / "enwiki-pages-articles-multistream.xml.bz2"
    shutil.copyfile(dumps["multistream"], alone)
    assert not list(tmp_path.glob("*index*"))
    monkeypatch.setattr(multistream, "RANGE_BYTES", 65536)
    assert extract(alone, tmp_path / "out", bert_vocab, pools, 2)[0] == serial[None][0]


@pytest.mark.parametrize(
    "damage,range_bytes",
    [
        ("corrupt", 4096),  # the damaged stream opens its range: found as a gap by the main process
        ("corrupt", 1 << 22),  # one range: found mid-chain by the worker
        ("truncated", 65536),  # the file ends inside the last page stream
    ],
)
def test_damaged_stream_is_one_line_naming_file_and_offset(
    dumps, bert_vocab, pools, tmp_path, monkeypatch, damage, range_bytes
):
    monkeypatch.setattr(multistream, "RANGE_BYTES", range_bytes)
    data = bytearray(dumps["multistream"].read_bytes())
    streams = dumps["streams"]
    k = 7 if damage == "corrupt" else len(streams) - 2
    offset = streams[k]
    bad = tmp_path / "damaged-multistream.xml.bz2"
    if damage == "corrupt":
        middle = (streams[k] + streams[k + 1]) // 2
        data[middle : middle + 64] = bytes(64)
    else:
        del data[(streams[k] + streams[k + 1]) // 2 :]
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        extract(bad, tmp_path / "out", bert_vocab, pools, 2)
    message = str(err.value)
    assert message.startswith(f"{bad}: corrupt bz2 stream at byte offset {offset} (") and "\n" not in message


def test_all_later_stages_identical(dumps, bert_vocab, tmp_path):
    """End to end (prepare-data, 2 workers, first 30 articles): the shards made from the multistream
    dump are the bytes of those made from the single-stream file."""
    shards = {}
    for name in ("single", "multistream"):
        cfg = _config(
            dumps[name],
            tmp_path / name,
            bert_vocab,
            2,
            30,
            dupe_factor=1,
            num_shards=2,
            validation_shards=1,
            validation_fraction=0.1,
        )
        summary = prepare(cfg, progress=False)
        assert summary["corpus"]["raw_documents"] == 30
        shards[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name / "phase1").glob("*.tfrecord"))}
    assert len(shards["single"]) == 3 and shards["multistream"] == shards["single"]
