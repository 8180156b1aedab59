"""Token files seen by the sampler: O(1) metadata at start-up, memory maps on first use.

`read_file_meta` validates one PREFIX.bin/.idx pair from a fixed number of bytes: the .idx
header, its last sequence length and pointer (token count = last pointer / itemsize + last
length) and both file sizes, so 2,419 files open in a fraction of a second. Whatever the
header promises is checked against the sizes on disk, so a truncated file or a wrong magic
is an error before training starts, never a silently wrong sample.

`TokenFile` maps the arrays lazily (plain ndarray views over `mmap`, cheap to slice) when a
sample first touches the file.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from scifm.core.errors import ScifmError
from scifm.tokens.format import DTYPE_CODES, HEADER, HEADER_SIZE, MAGIC, VERSION, prefix_paths

_TOKENIZE_HINT = "re-run `scifm tokenize` for it"
STARTS_CHUNK_BYTES = 1 << 26  # pointer bytes read per pread when listing window starts


@dataclass(frozen=True)
class TokenFileMeta:
    prefix: str
    bin_path: Path
    idx_path: Path
    dtype: np.dtype
    num_docs: int
    """Sequences in the file (Megatron's GPT dataset samples from sequences, one per doc)."""
    num_tokens: int
    tokenizer_sha256: str | None
    """From PREFIX.manifest.json when `scifm tokenize` wrote one; None for foreign files."""
    vocab_size: int | None


def _read_at(handle, offset: int, size: int, path: Path) -> bytes:
    data = os.pread(handle.fileno(), size, offset)
    if len(data) != size:
        raise ScifmError(f"{path}: truncated at byte {offset}; {_TOKENIZE_HINT}")
    return data


def _header(path: Path, handle) -> tuple[np.dtype, int, int]:
    found = os.fstat(handle.fileno()).st_size
    if found < HEADER_SIZE:
        raise ScifmError(
            f"{path}: truncated ({found} bytes, header needs {HEADER_SIZE}); {_TOKENIZE_HINT}"
        )
    magic, version, code, num_seqs, num_doc_idx = HEADER.unpack(_read_at(handle, 0, 34, path))
    if magic != MAGIC:
        raise ScifmError(f"{path}: not a Megatron index (bad magic {magic!r}); {_TOKENIZE_HINT}")
    if version != VERSION or code not in DTYPE_CODES:
        raise ScifmError(
            f"{path}: unsupported version {version} or dtype code {code}; {_TOKENIZE_HINT}"
        )
    expected = HEADER_SIZE + 12 * num_seqs + 8 * num_doc_idx
    if found != expected:
        what = "truncated" if found < expected else "size mismatch"
        raise ScifmError(
            f"{path}: {what}: expected {expected} bytes, found {found}; {_TOKENIZE_HINT}"
        )
    return DTYPE_CODES[code], num_seqs, num_doc_idx


def _manifest_tokenizer(bin_path: Path) -> tuple[str | None, int | None]:
    manifest = bin_path.with_suffix(".manifest.json")
    if not manifest.is_file():
        return None, None
    try:
        tokenizer = json.loads(manifest.read_text()).get("tokenizer") or {}
    except (OSError, json.JSONDecodeError) as err:
        raise ScifmError(f"{manifest}: unreadable manifest ({err}); {_TOKENIZE_HINT}") from err
    return tokenizer.get("sha256"), tokenizer.get("vocab_size")


def read_file_meta(prefix: str | os.PathLike[str]) -> TokenFileMeta:
    """Validate one .bin/.idx pair and count its tokens, reading O(1) bytes."""
    bin_path, idx_path = prefix_paths(prefix)
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise ScifmError(f"{path}: not found; tokenize the corpus or fix the mixture path")
    with open(idx_path, "rb") as handle:
        dtype, num_seqs, _ = _header(idx_path, handle)
        num_tokens = 0
        if num_seqs:
            last_size = np.frombuffer(_read_at(handle, 34 + 4 * (num_seqs - 1), 4, idx_path), "<i4")
            offset = 34 + 4 * num_seqs + 8 * (num_seqs - 1)
            last_pointer = np.frombuffer(_read_at(handle, offset, 8, idx_path), "<i8")
            num_tokens = int(last_pointer[0]) // dtype.itemsize + int(last_size[0])
    found = bin_path.stat().st_size
    if found != num_tokens * dtype.itemsize:
        what = "truncated" if found < num_tokens * dtype.itemsize else "size mismatch"
        raise ScifmError(
            f"{bin_path}: {what}: the .idx promises {num_tokens} tokens of {dtype} "
            f"({num_tokens * dtype.itemsize} bytes), found {found}; {_TOKENIZE_HINT}"
        )
    sha, vocab = _manifest_tokenizer(bin_path)
    prefix_text = str(bin_path.with_suffix(""))
    return TokenFileMeta(prefix_text, bin_path, idx_path, dtype, num_seqs, num_tokens, sha, vocab)


def _map(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return b""
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mapped, "madvise"):  # samples read scattered pages: no read-ahead around them
        mapped.madvise(mmap.MADV_RANDOM)
    return mapped


class TokenFile:
    """Lazily memory-mapped arrays of one file: sizes, pointers (in tokens) and tokens."""

    def __init__(self, meta: TokenFileMeta) -> None:
        self.meta = meta

    @cached_property
    def _index(self) -> mmap.mmap | bytes:
        return _map(self.meta.idx_path)

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.frombuffer(self._index, "<i4", count=self.meta.num_docs, offset=HEADER_SIZE)

    @cached_property
    def byte_pointers(self) -> np.ndarray:
        offset = HEADER_SIZE + 4 * self.meta.num_docs
        return np.frombuffer(self._index, "<i8", count=self.meta.num_docs, offset=offset)

    def token_start(self, doc: int) -> int:
        """Token offset of document `doc` in the file (doc == num_docs: the end)."""
        if doc >= self.meta.num_docs:
            return self.meta.num_tokens
        return int(self.byte_pointers[doc]) // self.meta.dtype.itemsize

    def window_starts(self, window: int, docs: int) -> list[int]:
        """Token offset of every `window`-th document among the first `docs` (cached).

        Read with sequential `pread`s of the pointer array on the file's first use: one
        pass at disk speed, nothing left mapped (so no resident pages), and a plain list
        that `bisect` searches in a fraction of a microsecond.
        """
        key = (window, docs)
        cache = self.__dict__.setdefault("_window_starts", {})
        if key not in cache:
            cache[key] = self._read_window_starts(window, docs)
        return cache[key]

    def _read_window_starts(self, window: int, docs: int) -> list[int]:
        chunk_docs = max(window, (STARTS_CHUNK_BYTES // 8) // window * window)
        first_pointer = HEADER_SIZE + 4 * self.meta.num_docs
        starts: list[int] = []
        with open(self.meta.idx_path, "rb") as handle:
            for lo in range(0, docs, chunk_docs):
                count = min(chunk_docs, docs - lo)
                raw = _read_at(handle, first_pointer + 8 * lo, 8 * count, self.meta.idx_path)
                pointers = np.frombuffer(raw, "<i8")[::window]
                starts += (pointers // self.meta.dtype.itemsize).tolist()
        return starts

    def release(self) -> None:
        """Unmap the pages read so far (they stay in the page cache): bounds resident memory."""
        for name in ("_index", "_bin"):
            mapped = self.__dict__.get(name)
            if isinstance(mapped, mmap.mmap) and hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED)

    def doc_at(self, token: int) -> int:
        """The document containing token offset `token` (the last one starting at or before)."""
        byte = token * self.meta.dtype.itemsize
        return int(np.searchsorted(self.byte_pointers, byte, side="right")) - 1

    @cached_property
    def _bin(self) -> mmap.mmap | bytes:
        return _map(self.meta.bin_path)

    @cached_property
    def tokens(self) -> np.ndarray:
        return np.frombuffer(self._bin, self.meta.dtype.newbyteorder("<"))
