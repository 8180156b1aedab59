"""Input readers: every format yields its documents; bad records become counted rejects."""

from __future__ import annotations

import gzip
import itertools
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from scifm.core.errors import ScifmError
from scifm.tokens.readers import Reject, ShardReader, expand_inputs, input_format, plan_shards

LINES = [{"text": "alpha beta"}, {"text": "gamma", "id": 7}, {"text": "δέλτα ε"}]


def _jsonl_bytes(records: list[object]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def read(path: Path, txt_documents: str = "file", shard_bytes: int = 1 << 30, field="text"):
    """(documents, rejects) of every shard of one file, in order."""
    documents, rejects = [], []
    for shard in plan_shards([path], shard_bytes, txt_documents, field):
        for item in ShardReader(shard, field, txt_documents):
            (documents if isinstance(item, str) else rejects).append(item)
    return documents, rejects


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("c.jsonl", bytes),
        ("c.ndjson", bytes),
        ("c.jsonl.gz", gzip.compress),
        ("c.json.gz", gzip.compress),
        ("c.jsonl.zst", zstandard.ZstdCompressor().compress),
    ],
)
def test_json_lines_in_every_compression(tmp_path: Path, name: str, compress) -> None:
    path = tmp_path / name
    path.write_bytes(compress(_jsonl_bytes(LINES)))
    assert read(path) == ([r["text"] for r in LINES], [])


def test_multi_frame_zstd_is_read_across_frames(tmp_path: Path) -> None:
    frames = [zstandard.ZstdCompressor().compress(_jsonl_bytes([r])) for r in LINES]
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(b"".join(frames))
    assert read(path)[0] == [r["text"] for r in LINES]


def test_parquet_string_and_binary_columns_with_rejects(tmp_path: Path) -> None:
    table = pa.table(
        {
            "text": ["one", None, "two", "   ", "three"],
            "raw": [b"x", b"\xff bad", b"y", b"z", b"w"],
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=2)
    documents, rejects = read(path)
    assert documents == ["one", "two", "three"]
    assert [(r.reason, r.position) for r in rejects] == [("not_a_string", 1), ("empty_text", 3)]
    documents, rejects = read(path, field="raw")
    assert documents == ["x", "y", "z", "w"]
    assert [(r.reason, r.position) for r in rejects] == [("invalid_utf8", 1)]


def test_parquet_row_groups_become_shards_with_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(10)]}), path, row_group_size=3)
    shards = plan_shards([path], 1, "file", "text")
    assert [(s.start, s.stop, s.first_row) for s in shards] == [
        (0, 1, 0), (1, 2, 3), (2, 3, 6), (3, 4, 9),
    ]  # fmt: skip
    assert read(path, shard_bytes=1)[0] == [f"doc {i}" for i in range(10)]


def test_parquet_without_the_column_or_with_numbers_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), path)
    with pytest.raises(ScifmError, match=r"no column 'text' \(columns: body, n\)"):
        plan_shards([path], 1 << 20, "file", "text")
    with pytest.raises(ScifmError, match="holds int64, not text"):
        plan_shards([path], 1 << 20, "file", "n")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("file", ["first line\nsecond\n\n\nthird para\r\n  \nlast"]),
        ("line", ["first line", "second", "third para", "last"]),
        ("paragraph", ["first line\nsecond", "third para", "last"]),
    ],
)
def test_text_documents_per_file_line_or_paragraph(tmp_path: Path, mode: str, expected) -> None:
    content = b"first line\nsecond\n\n\nthird para\r\n  \nlast"
    (tmp_path / "a.txt").write_bytes(content)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(content))
    assert read(tmp_path / "a.txt", mode) == (expected, [])
    assert read(tmp_path / "a.txt.gz", mode) == (expected, [])


def test_text_invalid_utf8_and_empty_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ok\nfine\ncaf\xe9\nafter\n")
    (tmp_path / "empty.txt").write_bytes(b" \n\n")
    assert [(r.reason, r.position) for r in read(tmp_path / "bad.txt")[1]] == [("invalid_utf8", 3)]
    documents, rejects = read(tmp_path / "bad.txt", "line")
    assert documents == ["ok", "fine", "after"] and rejects[0].position == 3
    documents, rejects = read(tmp_path / "bad.txt", "paragraph")
    assert documents == [] and [(r.reason, r.position) for r in rejects] == [("invalid_utf8", 3)]
    (tmp_path / "two.txt").write_bytes(b"first para\n\nsecond \xff\nstill second\n\nthird")
    documents, rejects = read(tmp_path / "two.txt", "paragraph")
    assert documents == ["first para", "third"] and rejects[0].position == 3
    (tmp_path / "end.txt").write_bytes(b"ok\nbad at the end \xff")
    assert [(r.position, r.excerpt) for r in read(tmp_path / "end.txt")[1]] == [
        (2, "bad at the end \ufffd")
    ]
    assert [r.reason for r in read(tmp_path / "empty.txt")[1]] == ["empty_text"]


def test_every_bad_record_is_a_reject_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"text": "good one"}\n'
        b"\n"  # 2 blank
        b'{"text": "caf\xe9"}\n'  # 3 invalid utf-8
        b'{"text": "unterminated\n'  # 4 malformed
        b'["a", "list"]\n'  # 5 not an object
        b'{"body": "no text"}\n'  # 6 missing field
        b'{"text": 42}\n'  # 7 not a string
        b'{"text": null}\n'  # 8 not a string (null)
        b'{"text": "  \\n "}\n'  # 9 empty
        b'{"text": "lone \\ud800 surrogate"}\n'  # 10 invalid unicode
        b'{"text": "good two"}'  # 11, no final newline
    )
    documents, rejects = read(path)
    assert documents == ["good one", "good two"]
    assert [(r.reason, r.position) for r in rejects] == [
        ("blank_line", 2), ("invalid_utf8", 3), ("malformed_json", 4), ("not_an_object", 5),
        ("missing_field", 6), ("not_a_string", 7), ("not_a_string", 8), ("empty_text", 9),
        ("invalid_unicode", 10),
    ]  # fmt: skip
    assert all(isinstance(r, Reject) for r in rejects)
    assert rejects[1].detail == "byte 0xe9 at column 14" and "caf" in rejects[1].excerpt
    assert rejects[4].detail == "no 'text'" and rejects[6].detail == "'text' is null"


def test_utf8_bom_on_the_first_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes(LINES))
    assert read(path) == ([r["text"] for r in LINES], [])


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl_bytes(LINES * 50))[:-30])
    with pytest.raises(ScifmError, match=r"cut\.jsonl\.gz: cannot read the file"):
        read(path)


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="ab \n", max_size=12), max_size=30),
    shard_bytes=st.integers(1, 40),
)
def test_line_shards_partition_the_file_at_line_starts(lines: list[str], shard_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.txt"
        data = "\n".join(lines).encode()
        path.write_bytes(data)
        shards = plan_shards([path], shard_bytes, "line", "text")
        assert shards[0].start == 0 and shards[-1].stop == len(data)
        for before, after in itertools.pairwise(shards):
            assert before.stop == after.start and data[after.start - 1 : after.start] == b"\n"
        assert read(path, "line", shard_bytes)[0] == read(path, "line")[0]


def test_directories_expand_to_sorted_supported_files(tmp_path: Path) -> None:
    for name in ["b/2.jsonl", "b/1.txt.zst", "a.parquet", ".hidden/x.jsonl", "notes.md",
                 "b/.tmp.jsonl", "c.json"]:  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in expand_inputs([tmp_path])]
    assert found == ["a.parquet", "b/1.txt.zst", "b/2.jsonl"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x.jsonl.gz", ("jsonl", "gzip")), ("x.TXT.zst", ("text", "zstd")),
     ("x.parquet", ("parquet", "")), ("x.json", None), ("x.parquet.gz", None), ("x.csv", None)],
)  # fmt: skip
def test_input_format_by_name(name: str, expected) -> None:
    assert input_format(Path(name)) == expected


def test_bad_inputs_are_errors(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScifmError, match=r"data\.csv: unsupported input file type"):
        expand_inputs([tmp_path / "data.csv"])
    with pytest.raises(ScifmError, match="input not found"):
        expand_inputs([tmp_path / "nope.jsonl"])
    with pytest.raises(ScifmError, match="no input files in this directory"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(ScifmError, match="no inputs given"):
        expand_inputs([])


@pytest.mark.parametrize("cut", [lambda d: d[:-9], lambda d: b"\x00" * 4 + d[4:]])
def test_truncated_or_corrupt_zstd_is_an_error_naming_the_file(tmp_path: Path, cut) -> None:
    path = tmp_path / "bad.jsonl.zst"
    frames = [zstandard.ZstdCompressor().compress(_jsonl_bytes(LINES * 20)) for _ in range(2)]
    path.write_bytes(frames[0] + cut(frames[1]))
    with pytest.raises(ScifmError, match=r"bad\.jsonl\.zst: cannot read the file after line"):
        read(path)


def test_lines_longer_than_a_read_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scifm.tokens import readers

    texts = ["x" * 50, "short", "y" * 23 + " z"]
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes([{"text": t} for t in texts]))
    for chunk in (1, 2, 7, 64):
        monkeypatch.setattr(readers, "CHUNK_BYTES", chunk)
        assert read(path) == (texts, [])
