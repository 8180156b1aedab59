"""Write token files: documents -> one PREFIX.bin/.idx pair (+ a manifest), atomically.

`IndexedWriter` appends one sequence per document (Megatron's GPT dataset treats each
sequence as a document, so the document index is simply 0..N). Token ids are buffered and
written to temporary siblings; both files are renamed into place only when the `with` block
ends without error (.bin first, then .idx), so a crash never leaves a half-written pair that
looks complete. `tokenize_texts` drives it from an iterable of texts with a `Tokenizer`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path, sha256_file, write_json
from scifm.core.progress import track
from scifm.tokens.format import dtype_code, dtype_for_vocab, prefix_paths, write_index_to

if TYPE_CHECKING:
    from scifm.curate.document import Document
    from scifm.tokens.tokenizer import Tokenizer

PathLike = str | os.PathLike[str]
BUFFER_TOKENS = 1 << 20
MAX_SEQUENCE_TOKENS = int(np.iinfo(np.int32).max)


class TokenizeConfig(Config):
    text_field: str = Field(default="text", min_length=1)
    """JSONL field or Parquet column holding each document's text."""
    append_eod: bool = True
    """Append the tokenizer's end-of-document (eos) id after every document."""
    batch_size: int = Field(default=1000, gt=0)
    """Documents encoded per call to the tokenizer."""
    workers: int = Field(default=1, ge=0)
    """Tokenizer processes per launched rank; 1 runs in-process, 0 uses every core."""
    shard_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    """Plain .jsonl/.txt files larger than this are split into newline-aligned shards of
    about this many bytes (and Parquet files into groups of row groups); each shard is one
    unit of parallel work and of resume."""
    txt_documents: Literal["file", "line", "paragraph"] = "file"
    """What one document is in a .txt input: the whole file, each non-empty line, or each
    paragraph (lines up to a blank line)."""
    encoder: Literal["auto", "hf"] = "auto"
    """auto: the exact byte-level BPE fast path when the tokenizer is GPT-2 style (checked
    against Hugging Face `tokenizers` when loaded), else `tokenizers`; hf: always `tokenizers`.
    Both give the same ids."""


class IndexedWriter:
    """Context manager writing PREFIX.bin/.idx: one `add_document` call per sequence."""

    def __init__(self, prefix: PathLike, dtype: npt.DTypeLike, buffer_tokens: int = BUFFER_TOKENS):
        self.bin_path, self.idx_path = prefix_paths(prefix)
        self.dtype = np.dtype(dtype)
        dtype_code(self.dtype)  # ScifmError for a dtype the format cannot store
        if self.dtype.kind not in "iu":
            raise ScifmError(f"token ids are integers; {self.dtype} cannot hold them")
        self._info = np.iinfo(self.dtype)
        self._buffer_tokens = buffer_tokens
        self._stack: contextlib.ExitStack | None = None
        self._handle: BinaryIO | None = None
        self._idx_tmp: Path | None = None
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0
        self._size_chunks: list[np.ndarray] = []
        self._pending_sizes: list[int] = []
        self.num_documents = 0
        self.num_tokens = 0

    def __enter__(self) -> Self:
        stack = contextlib.ExitStack()
        # Entered idx first so that on success the .bin is renamed first, the .idx last.
        self._idx_tmp = stack.enter_context(atomic_path(self.idx_path))
        bin_tmp = stack.enter_context(atomic_path(self.bin_path))
        self._handle = stack.enter_context(open(bin_tmp, "wb"))
        self._stack = stack
        return self

    def add_document(self, ids: Sequence[int] | np.ndarray) -> None:
        """Append one sequence of token ids (may be empty)."""
        if self._handle is None:
            raise RuntimeError("IndexedWriter.add_document called outside its `with` block")
        array = self._checked(ids)
        self._pending.append(array)
        self._pending_sizes.append(len(array))
        self._pending_tokens += len(array)
        self.num_documents += 1
        self.num_tokens += len(array)
        if self._pending_tokens >= self._buffer_tokens:
            self._flush()

    def _checked(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        array = np.asarray(ids)
        if array.size == 0:
            return np.zeros(0, dtype=self.dtype)
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise ScifmError(
                f"{self.bin_path}: a document must be a flat sequence of integer token ids, "
                f"got an array of {array.dtype} with shape {array.shape}"
            )
        low, high = int(array.min()), int(array.max())
        if low < self._info.min or high > self._info.max:
            raise ScifmError(
                f"{self.bin_path}: token ids [{low}, {high}] do not fit {self.dtype} "
                f"([{self._info.min}, {self._info.max}]); the tokenizer vocabulary is too "
                "large for this dtype"
            )
        if len(array) > MAX_SEQUENCE_TOKENS:
            raise ScifmError(f"{self.bin_path}: a document of {len(array)} tokens exceeds 2**31-1")
        return array.astype(self.dtype.newbyteorder("<"), copy=False)

    def _flush(self) -> None:
        if self._pending:
            assert self._handle is not None
            self._handle.write(np.concatenate(self._pending).tobytes())
        if self._pending_sizes:
            self._size_chunks.append(np.asarray(self._pending_sizes, dtype=np.int32))
        self._pending, self._pending_sizes, self._pending_tokens = [], [], 0

    def _finish(self) -> None:
        assert self._handle is not None and self._idx_tmp is not None
        self._flush()
        self._handle.close()
        sizes = np.concatenate([np.zeros(0, np.int32), *self._size_chunks])
        doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
        with open(self._idx_tmp, "wb") as handle:
            write_index_to(handle, sizes, doc_idx, self.dtype)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._stack = self._stack, None
        assert stack is not None
        try:
            if exc_type is None:
                self._finish()
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)
            raise
        finally:
            self._handle = None
        return bool(stack.__exit__(exc_type, exc, tb))


def _text_of(item: str | Document) -> str:
    if isinstance(item, str):
        return item
    text = getattr(item, "text", None)
    if not isinstance(text, str):
        raise ScifmError(f"expected a text or a Document with a `text` string, got {item!r:.80}")
    return text


def _batches(texts: Iterable[str | Document], batch_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in texts:
        batch.append(_text_of(item))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_texts(
    texts: Iterable[str | Document],
    tokenizer: Tokenizer,
    prefix: PathLike,
    append_eod: bool = True,
    batch_size: int = 1000,
    progress: Any = None,
) -> dict[str, Any]:
    """Encode each text as one sequence (+ EOD) into PREFIX.bin/.idx; return the counts.

    `progress` is anything with `advance(n)` (advanced by documents); None shows a bar.
    """
    if batch_size <= 0:
        raise ScifmError(f"batch_size must be positive, got {batch_size}")
    eod = [tokenizer.eos_id] if append_eod else []
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    with contextlib.ExitStack() as stack:
        if progress is None:
            progress = stack.enter_context(track(None, f"tokenize {Path(prefix).name}"))
        writer = stack.enter_context(IndexedWriter(prefix, dtype))
        for batch in _batches(texts, batch_size):
            for ids in tokenizer.encode_batch(batch):
                writer.add_document([*ids, *eod])
            progress.advance(len(batch))
    return {"documents": writer.num_documents, "tokens": writer.num_tokens, "dtype": str(dtype)}


def manifest_path(prefix: PathLike) -> Path:
    """PREFIX.manifest.json, next to PREFIX.bin and PREFIX.idx."""
    bin_path, _ = prefix_paths(prefix)
    return bin_path.with_suffix(".manifest.json")


def rejects_path(prefix: PathLike) -> Path:
    """PREFIX.rejects.jsonl: one JSON line per input record left out, with the reason."""
    bin_path, _ = prefix_paths(prefix)
    return bin_path.with_suffix(".rejects.jsonl")


def write_manifest(
    prefix: PathLike,
    stats: dict[str, Any],
    tokenizer: Tokenizer,
    inputs: Sequence[PathLike | Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Record counts, dtype and the hashes of the tokenizer and every input; returns the path.

    An input given as a mapping is recorded as is (path, bytes, sha256, counts ...); `extra`
    adds top-level fields (rejects, the tokenize config).
    """
    bin_path, idx_path = prefix_paths(prefix)
    manifest = {
        "format": "megatron-mmidx",
        "version": 1,
        "bin": bin_path.name,
        "idx": idx_path.name,
        "documents": int(stats["documents"]),
        "tokens": int(stats["tokens"]),
        "dtype": str(stats["dtype"]),
        "tokenizer": {
            "path": str(tokenizer.path),
            "sha256": tokenizer.sha256,
            "vocab_size": tokenizer.vocab_size,
        },
        "inputs": [_input_entry(p) for p in inputs],
        **(extra or {}),
    }
    path = manifest_path(prefix)
    write_json(path, manifest)
    return path


def _input_entry(source: PathLike | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    return {"path": str(source), "sha256": sha256_file(source)}
