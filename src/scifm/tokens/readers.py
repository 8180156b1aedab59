"""Tokenize inputs: find the files, cut them into shards, and read each shard's documents.

Formats (by file name): JSON lines (`.jsonl`, `.ndjson`, and `.json.gz`/`.json.zst`, which
datasets use for JSON lines), plain text (`.txt`), each optionally compressed (`.gz`,
`.zst`), and Parquet (`.parquet`, the text column read batch by batch). A directory stands
for its supported files, recursively, in sorted order (hidden names skipped).

A shard is one unit of parallel work and of resume: a whole file, a newline-aligned byte
range of a large plain `.jsonl`/`.txt` (line documents) file, or a run of Parquet row
groups. `plan_shards` depends only on the files and the config, never on how many processes
run, so the merged output is the same for any number of workers or ranks.

Reading a shard yields texts and `Reject`s. A bad record (blank line, invalid UTF-8,
malformed JSON, not an object, text field missing / not a string / empty, a lone surrogate)
is a Reject with its line or row and the run goes on; a file that cannot be read at all is
a ScifmError.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import itertools
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from scifm.core.errors import ScifmError

PathLike = str | os.PathLike[str]
CHUNK_BYTES = 1 << 22
EXCERPT_CHARS = 120
EXTRA_HINT = "install the data extra: pip install 'scifm[data]'"
KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".parquet": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SUPPORTED = ".jsonl, .ndjson, .txt (each also .gz or .zst), .json.gz, .json.zst, .parquet"


@dataclass(frozen=True)
class Reject:
    """A record left out, and why: `position` is its 1-based line (or 0-based Parquet row)."""

    reason: str
    position: int
    excerpt: str
    detail: str = ""


def input_format(path: Path) -> tuple[str, str] | None:
    """(kind, compression) of a supported file name, e.g. ('jsonl', 'zstd'); else None."""
    name = path.name.lower()
    compression = ""
    for suffix, codec in COMPRESSIONS.items():
        if name.endswith(suffix):
            name, compression = name[: -len(suffix)], codec
            break
    for suffix, kind in KINDS.items():
        if name.endswith(suffix) and not (kind == "parquet" and compression):
            return kind, compression
    if compression and name.endswith(".json"):
        return "jsonl", compression
    return None


def expand_inputs(inputs: Sequence[PathLike]) -> list[Path]:
    """Every input file: files as given, directories as their supported files, sorted."""
    if not inputs:
        raise ScifmError(f"no inputs given: pass files ({SUPPORTED}) or directories of them")
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(_directory_files(path))
        elif path.is_file():
            if input_format(path) is None:
                raise ScifmError(f"{path}: unsupported input file type; supported: {SUPPORTED}")
            files.append(path)
        else:
            raise ScifmError(f"input not found: {path} (pass a file or a directory)")
    return files


def _directory_files(root: Path) -> list[Path]:
    found = sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and input_format(path) is not None
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not found:
        raise ScifmError(f"{root}: no input files in this directory (supported: {SUPPORTED})")
    return found


@dataclass(frozen=True)
class Shard:
    """One unit of work: bytes [start, stop) of a file, or Parquet row groups [start, stop)."""

    index: int
    path: str
    kind: str
    compression: str
    start: int
    stop: int
    size: int
    """Input bytes this shard covers (compressed bytes for Parquet), for progress and balance."""
    file_bytes: int
    mtime_ns: int
    first_row: int = 0
    """Parquet: the file row number of the shard's first row."""
    file_index: int = 0
    """Position of the shard's file among the inputs (a file may be given twice)."""

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"

    @property
    def whole_file(self) -> bool:
        return self.kind != "parquet" and self.start == 0 and self.stop == self.file_bytes

    def identity(self) -> dict[str, Any]:
        """What a completion marker must match for the shard to be skipped on resume."""
        return {
            "input": os.path.abspath(self.path),
            "kind": self.kind,
            "compression": self.compression,
            "start": self.start,
            "stop": self.stop,
            "file_bytes": self.file_bytes,
            "mtime_ns": self.mtime_ns,
        }


def plan_shards(
    files: Sequence[Path], shard_bytes: int, txt_documents: str, text_field: str
) -> list[Shard]:
    """The shards of `files`, in order; depends only on the files and these settings."""
    shards: list[Shard] = []
    for file_index, path in enumerate(files):
        kind, compression = input_format(path) or ("", "")
        stat = path.stat()
        if kind == "parquet":
            ranges = _parquet_ranges(path, shard_bytes, text_field)
        elif compression or (kind == "text" and txt_documents != "line"):
            ranges = [(0, stat.st_size, stat.st_size, 0)]
        else:
            bounds = _line_boundaries(path, stat.st_size, shard_bytes)
            ranges = [(a, b, b - a, 0) for a, b in itertools.pairwise(bounds)]
        for start, stop, size, first_row in ranges:
            where = (start, stop, size, stat.st_size, stat.st_mtime_ns, first_row, file_index)
            shards.append(Shard(len(shards), str(path), kind, compression, *where))
    return shards


def _line_boundaries(path: Path, size: int, shard_bytes: int) -> list[int]:
    """0, then the first line start at or after each multiple of shard_bytes, then size."""
    bounds = [0]
    with open(path, "rb") as handle:
        target = shard_bytes
        while target < size:
            start = _next_line_start(handle, target)
            if start is None or start >= size:
                break
            bounds.append(start)
            target = (start // shard_bytes + 1) * shard_bytes
    bounds.append(size)
    return bounds


def _next_line_start(handle: IO[bytes], target: int) -> int | None:
    """The first offset >= target that starts a line (follows a newline); None at EOF."""
    position = target - 1
    handle.seek(position)
    while chunk := handle.read(1 << 16):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(chunk)
    return None


def _parquet_ranges(
    path: Path, shard_bytes: int, text_field: str
) -> list[tuple[int, int, int, int]]:
    """(first row group, stop row group, compressed text bytes, first row) per shard."""
    parquet = _import_parquet()
    try:
        metadata = parquet.ParquetFile(path).metadata
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a broken file
        raise ScifmError(f"{path}: cannot read Parquet metadata ({err})") from None
    column = _text_column_index(path, metadata.schema.to_arrow_schema(), text_field)
    ranges, start, size, first_row, row = [], 0, 0, 0, 0
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group)
        size += chunk.column(column).total_compressed_size
        row += chunk.num_rows
        if size >= shard_bytes or group == metadata.num_row_groups - 1:
            ranges.append((start, group + 1, size, first_row))
            start, size, first_row = group + 1, 0, row
    return ranges


def _text_column_index(path: Path, schema: Any, text_field: str) -> int:
    import pyarrow as pa

    if text_field not in schema.names:
        columns = ", ".join(schema.names[:8])
        raise ScifmError(
            f"{path}: no column {text_field!r} (columns: {columns}); set tokenize.text_field"
        )
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):  # fmt: skip
        raise ScifmError(f"{path}: column {text_field!r} holds {kind}, not text")
    return schema.get_field_index(text_field)


def _import_parquet() -> Any:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ScifmError(f"reading Parquet needs pyarrow; {EXTRA_HINT}") from None
    return parquet


class _CountingReader:
    """Reads bytes [start, stop) of a file (to its end when stop is None), hashing them."""

    def __init__(self, handle: IO[bytes], start: int, stop: int | None) -> None:
        handle.seek(start)
        self._handle = handle
        self._left = None if stop is None else stop - start
        self.digest = hashlib.sha256()
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        if self._left is not None:
            size = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self.digest.update(data)
        self.consumed += len(data)
        if self._left is not None:
            self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK_BYTES):
            pass


class ShardReader:
    """Iterate a shard's documents (str) and rejects (Reject); counts and hash as it goes."""

    def __init__(self, shard: Shard, text_field: str, txt_documents: str) -> None:
        self.shard = shard
        self.text_field = text_field
        self.txt_documents = txt_documents
        self.positions = 0
        """Lines (rows for Parquet) read so far."""
        self._raw: _CountingReader | None = None
        self._parquet_digest = hashlib.sha256()

    @property
    def consumed(self) -> int:
        """Input bytes read so far (compressed bytes for compressed files)."""
        return self._raw.consumed if self._raw is not None else 0

    @property
    def sha256(self) -> str:
        """sha256 of the shard's bytes; for Parquet, of its text values (length-prefixed)."""
        digest = self._parquet_digest if self._raw is None else self._raw.digest
        return digest.hexdigest()

    def __iter__(self) -> Iterator[str | Reject]:
        if self.shard.kind == "parquet":
            yield from self._parquet()
            return
        with open(self.shard.path, "rb") as handle:
            stop = None if self.shard.compression else self.shard.stop
            self._raw = _CountingReader(handle, self.shard.start, stop)
            stream, errors = _decompressed(self._raw, self.shard)
            try:
                yield from self._records(stream)
                self._raw.drain()
            except errors as err:
                raise ScifmError(
                    f"{self.shard.path}: cannot read the file after line {self.positions} "
                    f"({err}); check that it is complete and a valid "
                    f"{self.shard.compression or 'uncompressed'} file"
                ) from None

    def _records(self, stream: IO[bytes]) -> Iterator[str | Reject]:
        if self.shard.kind == "jsonl":
            return self._jsonl(self._lines(stream))
        if self.txt_documents == "line":
            return self._text_lines(self._lines(stream))
        if self.txt_documents == "paragraph":
            return self._paragraphs(self._lines(stream))
        return self._text_file(stream)

    def _lines(self, stream: IO[bytes]) -> Iterator[bytes]:
        """Lines without their newline (a UTF-8 BOM dropped from a file's first line)."""
        lines = self._split_lines(stream)
        if self.shard.start == 0:
            first = next(lines, None)
            if first is None:
                return
            yield first.removeprefix(codecs.BOM_UTF8)
        yield from lines

    def _split_lines(self, stream: IO[bytes]) -> Iterator[bytes]:
        pending: list[bytes] = []  # a line longer than a chunk is joined once, at its end
        while chunk := stream.read(CHUNK_BYTES):
            if b"\n" not in chunk:
                pending.append(chunk)
                continue
            lines = chunk.split(b"\n")
            if pending:
                lines[0] = b"".join([*pending, lines[0]])
            pending = [lines.pop()]
            for line in lines:
                self.positions += 1  # the line number of the line being yielded
                yield line
        tail = b"".join(pending)
        if tail:
            self.positions += 1
            yield tail

    def _jsonl(self, lines: Iterator[bytes]) -> Iterator[str | Reject]:
        field = self.text_field
        for raw in lines:
            if not raw.strip():
                yield Reject("blank_line", self.positions, "")
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                yield _bad_utf8(raw, err.start, self.positions)
                continue
            except (ValueError, RecursionError) as err:
                yield Reject("malformed_json", self.positions, _excerpt(raw), _short(err))
                continue
            if type(record) is not dict:
                detail = f"a JSON {_JSON_TYPES.get(type(record), 'value')}"
                yield Reject("not_an_object", self.positions, _excerpt(raw), detail)
                continue
            text = record.get(field, _MISSING)
            if type(text) is str and text and not text.isspace():
                if (b"\\ud" in raw or b"\\uD" in raw) and not _encodable(text):
                    yield Reject("invalid_unicode", self.positions, _excerpt(raw),
                                 "a lone surrogate escape")  # fmt: skip
                    continue
                yield text
            else:
                yield _bad_text(text, field, self.positions, _excerpt(raw))

    def _text_lines(self, lines: Iterator[bytes]) -> Iterator[str | Reject]:
        for raw in lines:
            if not raw.strip():
                continue
            try:
                yield raw.decode("utf-8").removesuffix("\r")
            except UnicodeDecodeError as err:
                yield _bad_utf8(raw, err.start, self.positions)

    def _paragraphs(self, lines: Iterator[bytes]) -> Iterator[str | Reject]:
        paragraph: list[str] = []
        bad = False
        for raw in itertools.chain(lines, [b""]):  # the empty line ends the last paragraph
            if raw.strip():
                try:
                    paragraph.append(raw.decode("utf-8").removesuffix("\r"))
                except UnicodeDecodeError as err:
                    if not bad:
                        yield _bad_utf8(raw, err.start, self.positions)
                    bad = True
                continue
            if paragraph and not bad:
                yield "\n".join(paragraph)
            paragraph, bad = [], False

    def _text_file(self, stream: IO[bytes]) -> Iterator[str | Reject]:
        data = b"".join(iter(lambda: stream.read(CHUNK_BYTES), b""))
        self.positions = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            start = data.rfind(b"\n", 0, err.start) + 1
            end = data.find(b"\n", err.start)
            line = data.count(b"\n", 0, err.start) + 1
            yield _bad_utf8(data[start : len(data) if end < 0 else end], err.start - start, line)
            return
        if not text or text.isspace():
            yield Reject("empty_text", 1, "", "the file has no text")
            return
        yield text

    def _parquet(self) -> Iterator[str | Reject]:
        parquet = _import_parquet()
        shard, digest = self.shard, self._parquet_digest
        row = shard.first_row
        batches = parquet.ParquetFile(shard.path).iter_batches(
            batch_size=1024, row_groups=range(shard.start, shard.stop),
            columns=[self.text_field], use_threads=False,
        )  # fmt: skip
        for batch in batches:
            for value in batch.column(0).to_pylist():
                self.positions += 1
                item = _parquet_value(value, row)
                if isinstance(item, str):
                    data = item.encode("utf-8")
                    digest.update(len(data).to_bytes(8, "little") + data)
                yield item
                row += 1


_MISSING = object()
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}  # fmt: skip


def _parquet_value(value: object, row: int) -> str | Reject:
    if value is None:
        return Reject("not_a_string", row, "", "null")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return _bad_utf8(value, err.start, row)
    assert isinstance(value, str)
    if not value or value.isspace():
        return Reject("empty_text", row, _excerpt(value))
    return value


def _bad_text(text: object, field: str, position: int, excerpt: str) -> Reject:
    if text is _MISSING:
        return Reject("missing_field", position, excerpt, f"no {field!r}")
    if not isinstance(text, str):
        kind = _JSON_TYPES.get(type(text), "an object")
        return Reject("not_a_string", position, excerpt, f"{field!r} is {kind}")
    return Reject("empty_text", position, excerpt, f"{field!r} is empty or blank")


def _bad_utf8(raw: bytes, start: int, position: int) -> Reject:
    detail = f"byte 0x{raw[start]:02x} at column {start + 1}"
    return Reject("invalid_utf8", position, _excerpt(raw), detail)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _excerpt(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return raw[:EXCERPT_CHARS].encode("utf-8", "replace").decode("utf-8")


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:EXCERPT_CHARS] if str(err) else type(err).__name__


def _decompressed(
    raw: _CountingReader, shard: Shard
) -> tuple[IO[bytes], tuple[type[BaseException], ...]]:
    """The shard's byte stream, and the exceptions that mean the file is damaged."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
    if shard.compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb"), errors  # type: ignore[arg-type]
    if shard.compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ScifmError(f"{shard.path}: reading .zst needs zstandard; {EXTRA_HINT}") from None
        return _ZstdFrames(raw, zstandard), (*errors, zstandard.ZstdError)
    return raw, errors  # type: ignore[return-value]


class _ZstdFrames:
    """Decompress every zstd frame of `raw` in turn; a truncated last frame is an error.

    (zstandard's own stream reader returns a cut-off file's bytes as if it were complete.)
    """

    def __init__(self, raw: _CountingReader, zstandard: Any) -> None:
        self._raw = raw
        self._zstandard = zstandard
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._inside = False

    def read(self, size: int = -1) -> bytes:
        """Some decompressed bytes (however many one input chunk gives); b"" at the end."""
        while data := self._raw.read(CHUNK_BYTES):
            if out := self._feed(data):
                return out
        if self._inside:
            raise self._zstandard.ZstdError("truncated: the last frame is incomplete")
        return b""

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._frame.decompress(data))
            self._inside = not self._frame.eof
            data = b"" if self._inside else self._frame.unused_data
            if not self._inside:
                self._frame = self._zstandard.ZstdDecompressor().decompressobj()
        return b"".join(out)
