"""Strict JSONL: every bad line stops the read with one line naming file, line and fix."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scifm.core.errors import ScifmError
from scifm.curate.document import Document
from scifm.curate.jsonl import list_corpus_files, read_documents, write_documents

GOOD = b'{"id": "a", "text": "first"}\n'


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        (GOOD + b"\n" + GOOD, 2, "empty line"),
        (GOOD + b"   \r\n", 2, "empty line"),
        (GOOD + b'{"text": "caf\xe9 broken"}\n', 2, "invalid UTF-8 (byte 0xe9 at column 14)"),
        (b'{"text": \xff}\n', 1, "re-encode the file as UTF-8"),
        (GOOD + GOOD + b'{"text": \n', 3, "malformed JSON at column"),
        (b'{"text": "a"} trailing\n', 1, "malformed JSON"),
        (b"[1, 2]\n", 1, "expected a JSON object, got array"),
        (b'"just text"\n', 1, "expected a JSON object, got string"),
        (GOOD + b'{"body": "x"}\n', 2, "missing text field 'text'"),
        (b'{"text": 5}\n', 1, "must be a string, got number"),
        (b'{"text": ""}\n', 1, "is empty"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, content: bytes, line: int, expected: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    with pytest.raises(ScifmError) as info:
        list(read_documents(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message and "\n" not in message


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(ScifmError, match="not found") as info:
        list(read_documents(tmp_path / "nope.jsonl"))
    assert str(tmp_path / "nope.jsonl") in str(info.value)
    with pytest.raises(ScifmError, match="not a file"):
        list(read_documents(tmp_path))


def test_reads_gzip_bom_and_crlf(tmp_path) -> None:
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(GOOD + '{"text": "δ ≤ ε"}\n'.encode()))
    assert [d.text for d in read_documents(gz)] == ["first", "δ ≤ ε"]
    plain = tmp_path / "b.jsonl"
    plain.write_bytes(b'\xef\xbb\xbf{"text": "bom"}\r\n{"text": "no final newline"}')
    docs = list(read_documents(plain))
    assert [d.text for d in docs] == ["bom", "no final newline"]
    assert docs[1].id == f"{plain}:2"


def test_truncated_gzip_is_one_error(tmp_path) -> None:
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(GOOD * 200)[:-30])
    with pytest.raises(ScifmError, match="cannot read the file") as info:
        list(read_documents(gz))
    assert str(gz) in str(info.value)


def test_text_field_option(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"content": "x", "lang": "en"}\n')
    (doc,) = read_documents(path, text_field="content")
    assert doc == Document(f"{path}:1", "x", {"lang": "en"})
    with pytest.raises(ScifmError, match=r"c\.jsonl:1: missing text field 'text'"):
        list(read_documents(path))


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_read_round_trip(tmp_path, name: str) -> None:
    docs = [Document("a", "x\ny", {"k": [1, "é"]}), Document("b", "a\u2028b\x85c\r\x00", {})]
    path = tmp_path / "sub" / name
    assert write_documents(path, iter(docs)) == 2
    assert list(read_documents(path)) == docs
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")


def test_gzip_output_is_deterministic(tmp_path) -> None:
    docs = [Document("a", "same bytes every time")]
    write_documents(tmp_path / "1.jsonl.gz", docs)
    write_documents(tmp_path / "2.jsonl.gz", docs)
    assert (tmp_path / "1.jsonl.gz").read_bytes() == (tmp_path / "2.jsonl.gz").read_bytes()


def test_write_failure_leaves_nothing(tmp_path) -> None:
    def docs():
        yield Document("a", "fine")
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_documents(tmp_path / "out.jsonl", docs())
    assert list(tmp_path.iterdir()) == []


def test_list_corpus_files(tmp_path) -> None:
    for name in ["b.jsonl", "a.jsonl.gz", "c.txt", ".hidden.jsonl", "d.json"]:
        (tmp_path / name).write_bytes(GOOD)
    (tmp_path / "sub.jsonl").mkdir()
    assert list_corpus_files(tmp_path) == [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"]
    assert list_corpus_files(tmp_path / "b.jsonl") == [tmp_path / "b.jsonl"]
    with pytest.raises(ScifmError, match="not a corpus file"):
        list_corpus_files(tmp_path / "c.txt")
    with pytest.raises(ScifmError, match="not found"):
        list_corpus_files(tmp_path / "missing")
    with pytest.raises(ScifmError, match=r"no \.jsonl or \.jsonl\.gz files"):
        list_corpus_files(tmp_path / "sub.jsonl")


texts = st.text(min_size=1).filter(str.strip)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(texts, texts), max_size=5))
def test_file_round_trip_any_text(pairs: list[tuple[str, str]]) -> None:
    docs = [Document(i, t, {"i": n}) for n, (i, t) in enumerate(pairs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        write_documents(path, docs)
        assert list(read_documents(path)) == docs
