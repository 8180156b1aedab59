"""The .idx/.bin bytes match the Megatron layout in ARCHITECTURE.md, and broken pairs are named.

The expected bytes here are written from the spec by hand (literal byte strings and
`struct` at the documented offsets), never through `scifm.tokens.format` itself, so a change
to the format module that drifts from Megatron's layout fails these tests.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from scifm.core.errors import ScifmError
from scifm.tokens.format import (
    DTYPE_CODES,
    IndexedTokens,
    dtype_for_vocab,
    prefix_paths,
    read_index,
    write_index,
)
from scifm.tokens.writer import IndexedWriter

SPEC_CODES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64",
              7: "float32", 8: "uint16"}  # fmt: skip


def spec_read(prefix: Path) -> tuple[str, list[list[int]], np.ndarray]:
    """An independent reader written from the spec: (dtype name, sequences, doc_idx)."""
    data = prefix.with_suffix(".idx").read_bytes()
    assert data[0:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack_from("<Q", data, 9)
    (code,) = struct.unpack_from("<B", data, 17)
    (n,) = struct.unpack_from("<Q", data, 18)
    (d,) = struct.unpack_from("<Q", data, 26)
    assert version == 1 and len(data) == 34 + 12 * n + 8 * d
    sizes = np.frombuffer(data, "<i4", count=n, offset=34)
    pointers = np.frombuffer(data, "<i8", count=n, offset=34 + 4 * n)
    doc_idx = np.frombuffer(data, "<i8", count=d, offset=34 + 12 * n)
    dtype = np.dtype(SPEC_CODES[code]).newbyteorder("<")
    raw = prefix.with_suffix(".bin").read_bytes()
    seqs = [
        np.frombuffer(raw, dtype, count=int(size), offset=int(ptr)).tolist()
        for size, ptr in zip(sizes, pointers, strict=True)
    ]
    return SPEC_CODES[code], seqs, doc_idx


def write_docs(prefix: Path, docs: list[list[int]], dtype: str = "uint16") -> None:
    with IndexedWriter(prefix, dtype) as writer:
        for doc in docs:
            writer.add_document(doc)


def test_idx_bytes_match_the_spec_exactly(tmp_path: Path) -> None:
    prefix = tmp_path / "c"
    write_docs(prefix, [[5, 6], [], [7]])
    expected = (
        b"MMIDIDX\x00\x00"
        + b"\x01\x00\x00\x00\x00\x00\x00\x00"  # version 1
        + b"\x08"  # uint16
        + b"\x03\x00\x00\x00\x00\x00\x00\x00"  # N = 3 sequences
        + b"\x04\x00\x00\x00\x00\x00\x00\x00"  # D = 4
        + b"\x02\x00\x00\x00" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00"  # sizes int32
        + b"\x00" * 8 + b"\x04" + b"\x00" * 7 + b"\x04" + b"\x00" * 7  # byte offsets int64
        + b"".join(bytes([k]) + b"\x00" * 7 for k in range(4))  # doc_idx 0..3
    )  # fmt: skip
    assert (tmp_path / "c.idx").read_bytes() == expected
    assert (tmp_path / "c.bin").read_bytes() == b"\x05\x00\x06\x00\x07\x00"


def test_header_fields_at_documented_offsets(tmp_path: Path) -> None:
    sizes = np.array([3, 0, 2, 5], dtype=np.int32)
    write_index(tmp_path / "x.idx", sizes, np.array([0, 2, 4]), np.int32)
    data = (tmp_path / "x.idx").read_bytes()
    assert struct.unpack_from("<9sQBQQ", data, 0) == (b"MMIDIDX\x00\x00", 1, 4, 4, 3)
    assert struct.unpack_from("<4i", data, 34) == (3, 0, 2, 5)
    assert struct.unpack_from("<4q", data, 34 + 16) == (0, 12, 12, 20)  # int32: 4 bytes each
    assert struct.unpack_from("<3q", data, 34 + 48) == (0, 2, 4)
    assert len(data) == 34 + 12 * 4 + 8 * 3


def test_independent_reader_agrees_with_writer_and_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 65_000, int(rng.integers(0, 50))).tolist() for _ in range(40)]
    docs[3] = []
    write_docs(tmp_path / "r", docs)
    name, seqs, doc_idx = spec_read(tmp_path / "r")
    assert name == "uint16" and seqs == docs
    assert doc_idx.tolist() == list(range(len(docs) + 1))
    tokens = IndexedTokens(tmp_path / "r")
    assert len(tokens) == len(docs) and tokens.num_tokens == sum(map(len, docs))
    assert [tokens[i].tolist() for i in range(len(tokens))] == docs
    assert tokens.sizes.dtype == np.int32 and tokens.pointers.dtype == np.int64
    assert tokens.doc_idx.dtype == np.int64


def test_dtype_codes_match_megatron() -> None:
    assert {code: str(dtype) for code, dtype in DTYPE_CODES.items()} == SPEC_CODES


@pytest.mark.parametrize(
    ("vocab", "dtype"), [(1, np.uint16), (65_499, np.uint16), (65_500, np.int32), (10**6, np.int32)]
)
def test_dtype_for_vocab_boundary(vocab: int, dtype: type) -> None:
    assert dtype_for_vocab(vocab) == np.dtype(dtype)


def test_int32_tokens_round_trip(tmp_path: Path) -> None:
    docs = [[0, 65_535, 65_536, 128_255], [2**31 - 1]]
    write_docs(tmp_path / "big", docs, dtype=dtype_for_vocab(128_256))
    name, seqs, _ = spec_read(tmp_path / "big")
    assert name == "int32" and seqs == docs
    assert IndexedTokens(tmp_path / "big").dtype == np.int32


def test_get_is_a_zero_copy_window(tmp_path: Path) -> None:
    write_docs(tmp_path / "g", [[1, 2, 3], [4, 5, 6, 7]])
    tokens = IndexedTokens(tmp_path / "g.bin")
    window = tokens.get(1, offset=1, length=2)
    assert window.tolist() == [5, 6] and not window.flags.owndata
    assert tokens.get(1, offset=3).tolist() == [7] and tokens[-1].tolist() == [4, 5, 6, 7]
    with pytest.raises(IndexError):
        tokens.get(0, offset=2, length=2)
    with pytest.raises(IndexError):
        tokens[2]


def test_prefix_paths_accepts_suffixes(tmp_path: Path) -> None:
    expected = (tmp_path / "a.v1.bin", tmp_path / "a.v1.idx")
    for given in ("a.v1", "a.v1.bin", "a.v1.idx"):
        assert prefix_paths(tmp_path / given) == expected


def test_empty_corpus_round_trips(tmp_path: Path) -> None:
    write_docs(tmp_path / "e", [])
    tokens = IndexedTokens(tmp_path / "e")
    assert len(tokens) == 0 and tokens.num_tokens == 0 and tokens.doc_idx.tolist() == [0]


def test_bad_magic_is_named(tmp_path: Path) -> None:
    write_docs(tmp_path / "m", [[1]])
    idx = tmp_path / "m.idx"
    idx.write_bytes(b"NOTANIDX!" + idx.read_bytes()[9:])
    with pytest.raises(ScifmError, match=r"m\.idx: not a Megatron index \(bad magic"):
        read_index(idx)


def test_truncated_idx_is_named(tmp_path: Path) -> None:
    write_docs(tmp_path / "t", [[1, 2], [3]])
    idx = tmp_path / "t.idx"
    full = idx.read_bytes()
    idx.write_bytes(full[:-5])
    with pytest.raises(ScifmError, match=rf"t\.idx: truncated: expected {len(full)} bytes, found"):
        IndexedTokens(tmp_path / "t")
    idx.write_bytes(full[:20])
    with pytest.raises(ScifmError, match=r"t\.idx: truncated"):
        read_index(idx)


def test_unknown_dtype_code_is_rejected(tmp_path: Path) -> None:
    write_docs(tmp_path / "u", [[1]])
    idx = tmp_path / "u.idx"
    data = bytearray(idx.read_bytes())
    data[17] = 9
    idx.write_bytes(bytes(data))
    with pytest.raises(ScifmError, match="unknown dtype code 9"):
        read_index(idx)


def test_bin_size_mismatch_names_prefix(tmp_path: Path) -> None:
    write_docs(tmp_path / "s", [[1, 2, 3]])
    (tmp_path / "s.bin").write_bytes(b"\x01\x00\x02\x00")
    with pytest.raises(ScifmError, match=r"s: s\.bin has 4 bytes .* re-run `scifm tokenize`"):
        IndexedTokens(tmp_path / "s")
    (tmp_path / "s.bin").unlink()
    with pytest.raises(ScifmError, match=r"s\.bin is missing"):
        IndexedTokens(tmp_path / "s")


def test_missing_idx_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScifmError, match=r"nothing\.idx: index file not found"):
        IndexedTokens(tmp_path / "nothing")
