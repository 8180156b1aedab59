"""The .bin/.idx token file format: the single source of truth for its bytes.

Token files are byte-compatible with Megatron-LM's `MMapIndexedDataset`, so corpora
tokenized here can be read by Megatron and the other way round. A corpus is a pair:

    PREFIX.bin   token ids of every sequence back to back, no header
    PREFIX.idx   header + sequence lengths + byte offsets + document index

.idx layout (all integers little-endian; offset 34 is not aligned, hence `np.frombuffer`):

    offset    size   field
    0         9      magic b"MMIDIDX\\x00\\x00"
    9         8 <Q   version = 1
    17        1 <B   dtype code of the token ids (see DTYPE_CODES)
    18        8 <Q   N = number of sequences
    26        8 <Q   D = number of document boundaries (documents + 1)
    34        4*N    int32 sequence lengths in tokens
    34+4N     8*N    int64 byte offset of each sequence in .bin (exclusive cumsum * itemsize)
    34+12N    8*D    int64 sequence index where each document starts; first 0, last N

Readers memory-map both files and return zero-copy views. Every way a pair can be broken
(wrong magic, unknown version or dtype, truncation, a .bin that does not match its .idx)
becomes one `ScifmError` naming the file, because the fix is always to re-run tokenize.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float64),
    7: np.dtype(np.float32),
    8: np.dtype(np.uint16),
}
CODE_FOR_DTYPE: dict[np.dtype, int] = {dtype: code for code, dtype in DTYPE_CODES.items()}
"""The reverse of DTYPE_CODES: numpy dtype -> code stored at offset 17."""

HEADER = struct.Struct("<9sQBQQ")
HEADER_SIZE = HEADER.size  # 34 bytes: magic, version, dtype code, N, D
UINT16_VOCAB_LIMIT = 65500
"""Vocabularies below this size are stored as uint16, larger ones as int32 (as Megatron)."""

_SIZES = np.dtype("<i4")
_POINTERS = np.dtype("<i8")
_DOC_IDX = np.dtype("<i8")
PathLike = str | os.PathLike[str]


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The narrowest token dtype Megatron uses for a vocabulary of `vocab_size` ids."""
    if vocab_size <= 0:
        raise ScifmError(f"vocabulary size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size < UINT16_VOCAB_LIMIT else np.dtype(np.int32)


def dtype_code(dtype: npt.DTypeLike) -> int:
    """The format's code for `dtype`; ScifmError for a dtype the format cannot store."""
    resolved = np.dtype(dtype).newbyteorder("=")
    if resolved not in CODE_FOR_DTYPE:
        known = ", ".join(str(d) for d in DTYPE_CODES.values())
        raise ScifmError(
            f"token dtype {resolved} is not storable in .bin/.idx (use one of {known})"
        )
    return CODE_FOR_DTYPE[resolved]


def prefix_paths(prefix: PathLike) -> tuple[Path, Path]:
    """`data/wiki`, `data/wiki.bin` or `data/wiki.idx` -> (data/wiki.bin, data/wiki.idx)."""
    text = os.fspath(prefix)
    if text.endswith((".bin", ".idx")):
        text = text[: -len(".bin")]
    return Path(text + ".bin"), Path(text + ".idx")


def sequence_pointers(sizes: np.ndarray, itemsize: int) -> np.ndarray:
    """Byte offset of each sequence in .bin: exclusive cumulative sum of sizes * itemsize."""
    pointers = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(np.asarray(sizes[:-1], dtype=np.int64), out=pointers[1:])
    return pointers * itemsize


def write_index(
    path: PathLike, sizes: np.ndarray, doc_idx: np.ndarray, dtype: npt.DTypeLike
) -> None:
    """Write an .idx for sequences of `sizes` tokens of `dtype`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write_index_to(handle, sizes, doc_idx, dtype)


def write_index_to(
    handle: BinaryIO, sizes: np.ndarray, doc_idx: np.ndarray, dtype: npt.DTypeLike
) -> None:
    """Write the .idx bytes to an open binary file (no atomicity: the caller owns that)."""
    code = dtype_code(dtype)
    sizes = np.asarray(sizes)
    doc_idx = np.asarray(doc_idx)
    _check_index_arrays(sizes, doc_idx)
    pointers = sequence_pointers(sizes, DTYPE_CODES[code].itemsize)
    handle.write(HEADER.pack(MAGIC, VERSION, code, len(sizes), len(doc_idx)))
    handle.write(sizes.astype(_SIZES).tobytes())
    handle.write(pointers.astype(_POINTERS).tobytes())
    handle.write(doc_idx.astype(_DOC_IDX).tobytes())


def _check_index_arrays(sizes: np.ndarray, doc_idx: np.ndarray) -> None:
    if sizes.ndim != 1 or doc_idx.ndim != 1:
        raise ValueError("sizes and doc_idx must be one-dimensional")
    if len(sizes) and (sizes.min() < 0 or sizes.max() > np.iinfo(np.int32).max):
        raise ValueError("sequence sizes must lie in [0, 2**31 - 1]")
    if len(doc_idx) == 0 or doc_idx[0] != 0 or doc_idx[-1] != len(sizes):
        raise ValueError(f"doc_idx must start at 0 and end at the sequence count {len(sizes)}")
    if np.any(np.diff(doc_idx) < 0):
        raise ValueError("doc_idx must be non-decreasing")


@dataclass(frozen=True)
class IndexArrays:
    """The contents of an .idx: zero-copy, read-only views on a memory map of the file."""

    dtype: np.dtype
    """dtype of the token ids in the matching .bin."""
    sizes: np.ndarray
    """int32 [N]: tokens in each sequence."""
    pointers: np.ndarray
    """int64 [N]: byte offset of each sequence in .bin."""
    doc_idx: np.ndarray
    """int64 [D]: sequence index where each document starts; first 0, last N."""


def read_index(path: PathLike) -> IndexArrays:
    """Memory-map and validate an .idx; any defect is a ScifmError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ScifmError(f"{path}: index file not found; run `scifm tokenize` to create it")
    found = path.stat().st_size
    if found < HEADER_SIZE:
        raise ScifmError(f"{path}: truncated: expected at least {HEADER_SIZE} bytes, found {found}")
    with open(path, "rb") as handle:
        magic, version, code, num_seqs, num_docs = HEADER.unpack(handle.read(HEADER_SIZE))
    if magic != MAGIC:
        raise ScifmError(f"{path}: not a Megatron index (bad magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ScifmError(f"{path}: unsupported index version {version} (this reader knows 1)")
    if code not in DTYPE_CODES:
        raise ScifmError(f"{path}: unknown dtype code {code} (known: 1-8); the file is corrupt")
    expected = HEADER_SIZE + 12 * num_seqs + 8 * num_docs
    if found != expected:
        what = "truncated" if found < expected else "size mismatch"
        raise ScifmError(f"{path}: {what}: expected {expected} bytes, found {found}")
    return _map_arrays(path, DTYPE_CODES[code], num_seqs, num_docs)


def _map_arrays(path: Path, dtype: np.dtype, num_seqs: int, num_docs: int) -> IndexArrays:
    buffer = np.memmap(path, dtype=np.uint8, mode="r")
    offset = HEADER_SIZE
    sizes = np.frombuffer(buffer, _SIZES, count=num_seqs, offset=offset)
    offset += sizes.nbytes
    pointers = np.frombuffer(buffer, _POINTERS, count=num_seqs, offset=offset)
    offset += pointers.nbytes
    doc_idx = np.frombuffer(buffer, _DOC_IDX, count=num_docs, offset=offset)
    if num_docs == 0 or doc_idx[0] != 0 or doc_idx[-1] != num_seqs:
        raise ScifmError(
            f"{path}: corrupt document index (must run from 0 to {num_seqs}); re-run tokenize"
        )
    return IndexArrays(dtype=dtype, sizes=sizes, pointers=pointers, doc_idx=doc_idx)


class IndexedTokens:
    """Memory-mapped reader of one .bin/.idx pair: `tokens[i]` is sequence i, zero-copy."""

    def __init__(self, prefix: PathLike) -> None:
        self.bin_path, self.idx_path = prefix_paths(prefix)
        self.prefix = self.bin_path.with_suffix("")
        self._index = read_index(self.idx_path)
        self.num_tokens = int(self._index.sizes.sum(dtype=np.int64))
        self._check_pointers()
        self._tokens = self._map_bin()

    def _check_pointers(self) -> None:
        sizes, pointers = self._index.sizes, self._index.pointers
        if len(sizes) and int(pointers[-1]) != (self.num_tokens - int(sizes[-1])) * self.itemsize:
            raise ScifmError(
                f"{self.idx_path}: sequence offsets disagree with sequence sizes; the index is "
                "corrupt, re-run `scifm tokenize`"
            )

    def _map_bin(self) -> np.ndarray:
        if not self.bin_path.is_file():
            raise ScifmError(
                f"{self.prefix}: {self.bin_path.name} is missing next to {self.idx_path.name}; "
                "re-run `scifm tokenize`"
            )
        expected = self.num_tokens * self.itemsize
        found = self.bin_path.stat().st_size
        if found != expected:
            raise ScifmError(
                f"{self.prefix}: {self.bin_path.name} has {found} bytes but {self.idx_path.name} "
                f"describes {self.num_tokens} {self.dtype} tokens ({expected} bytes); the pair "
                "is inconsistent, re-run `scifm tokenize`"
            )
        little = self.dtype.newbyteorder("<")
        if expected == 0:
            return np.zeros(0, dtype=little)
        return np.frombuffer(np.memmap(self.bin_path, dtype=np.uint8, mode="r"), dtype=little)

    @property
    def dtype(self) -> np.dtype:
        return self._index.dtype

    @property
    def itemsize(self) -> int:
        return self._index.dtype.itemsize

    @property
    def sizes(self) -> np.ndarray:
        return self._index.sizes

    @property
    def pointers(self) -> np.ndarray:
        return self._index.pointers

    @property
    def doc_idx(self) -> np.ndarray:
        return self._index.doc_idx

    def __len__(self) -> int:
        return len(self._index.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens [offset, offset + length) of sequence i (to its end when length is None)."""
        i = self._check_position(i)
        size = int(self._index.sizes[i])
        length = size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(
                f"tokens [{offset}, {offset + length}) out of range for sequence {i} of "
                f"length {size}"
            )
        start = int(self._index.pointers[i]) // self.itemsize + offset
        return self._tokens[start : start + length]

    def _check_position(self, i: int) -> int:
        count = len(self)
        position = int(i) + count if int(i) < 0 else int(i)
        if not 0 <= position < count:
            raise IndexError(f"sequence {i} out of range for {count} sequences in {self.prefix}")
        return position

    def __repr__(self) -> str:
        return (
            f"IndexedTokens({str(self.prefix)!r}, sequences={len(self)}, "
            f"tokens={self.num_tokens}, dtype={self.dtype})"
        )
