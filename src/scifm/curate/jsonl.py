"""Strict JSONL corpus files: read Documents line by line, write them atomically.

A corpus is one or more `.jsonl` or `.jsonl.gz` files, one JSON object per line. Reading is
strict on purpose: a blank line, bad UTF-8, malformed JSON or a record without usable text
is almost always a broken export, and silently skipping it would hide lost data. Each such
problem stops the read with one `ScifmError` line naming the file, the line and the fix.
Lines are read as bytes and decoded one by one, so bad UTF-8 is located exactly.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path
from scifm.curate.document import Document

SUFFIXES = (".jsonl", ".jsonl.gz")


def read_documents(path: str | os.PathLike[str], text_field: str = "text") -> Iterator[Document]:
    """Yield one Document per line of a `.jsonl` or `.jsonl.gz` file, failing on any bad line."""
    file = Path(path)
    for number, line in _lines(file):
        where = f"{file}:{number}"
        record = _parse_line(line, where, first=number == 1)
        yield Document.from_record(record, text_field=text_field, where=where)


def write_documents(path: str | os.PathLike[str], docs: Iterable[Document]) -> int:
    """Write `docs` as JSONL (gzip when the name ends in .gz), atomically; returns the count."""
    final = Path(path)
    count = 0
    with atomic_path(final) as tmp, open(tmp, "wb") as raw, _encoder(raw, final) as out:
        for doc in docs:
            out.write(doc.to_json().encode("utf-8") + b"\n")
            count += 1
    return count


def list_corpus_files(path: str | os.PathLike[str]) -> list[Path]:
    """A corpus file itself, or the sorted `*.jsonl` / `*.jsonl.gz` files of a directory."""
    root = Path(path)
    if root.is_file():
        if not root.name.endswith(SUFFIXES):
            raise ScifmError(
                f"{root}: not a corpus file; expected a name ending in .jsonl or .jsonl.gz"
            )
        return [root]
    if not root.is_dir():
        raise ScifmError(f"corpus not found: {root} (pass a .jsonl file or a directory of them)")
    files = sorted(
        p for p in root.iterdir() if p.is_file() and p.name.endswith(SUFFIXES) and p.name[0] != "."
    )
    if not files:
        raise ScifmError(f"{root}: no .jsonl or .jsonl.gz files in this directory")
    return files


def _lines(file: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the newline); gzip errors become one ScifmError."""
    handle = _open_read(file)
    number = 0
    try:
        with handle:
            for number, raw in enumerate(handle, start=1):
                yield number, raw.rstrip(b"\n")
    except (OSError, EOFError, zlib.error) as err:
        raise ScifmError(
            f"{file}:{number + 1}: cannot read the file ({err}); check that it is complete "
            "and, for .gz, a valid gzip stream"
        ) from None


def _open_read(file: Path) -> IO[bytes]:
    if file.name.endswith(".zst"):
        raise ScifmError(f"{file}: zstd is not supported yet; decompress it (zstd -d) first")
    if not file.exists():
        raise ScifmError(f"corpus file not found: {file} (check the path)")
    if not file.is_file():
        raise ScifmError(f"{file}: not a file; pass a .jsonl or .jsonl.gz file")
    if file.name.endswith(".gz"):
        return gzip.open(file, "rb")
    return open(file, "rb")


def _encoder(raw: IO[bytes], final: Path) -> contextlib.AbstractContextManager[IO[bytes]]:
    """`raw` itself, or a gzip stream over it with no name or time in the header (reproducible)."""
    if final.name.endswith(".gz"):
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    return contextlib.nullcontext(raw)


def _parse_line(raw: bytes, where: str, first: bool) -> object:
    """Decode and parse one line; every failure names the problem and how to fix it."""
    if not raw.strip():
        raise ScifmError(f"{where}: empty line; remove blank lines (one JSON object per line)")
    try:
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as err:
        raise ScifmError(
            f"{where}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "re-encode the file as UTF-8"
        ) from None
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ScifmError(
            f"{where}: malformed JSON at column {err.colno}: {err.msg}; "
            "each line must be one complete JSON object"
        ) from None
    except RecursionError:
        raise ScifmError(f"{where}: JSON nested too deeply to read; flatten the record") from None
