"""Tokenize one shard into the work directory: the part of `scifm tokenize` workers run.

A shard's output is PREFIX.work/<shard>.bin (token ids of its documents, each followed by the
EOD, back to back), <shard>.sizes (int32 little-endian: tokens per document),
<shard>.rejects.jsonl, and last the completion marker <shard>.done.json: counts, reject
counts, the input's identity (path, size, mtime, byte range) and hash, and the settings
(tokenizer sha256, dtype, EOD, text field ...). `read_marker` accepts a marker only when all
of that still matches and the files are whole, so a rerun redoes exactly the missing shards.

Kept free of torch, numpy, pydantic and rich: spawned worker processes import only this
module, its readers and encoder, and `tokenizers`, and so start in a fraction of a second.
"""

from __future__ import annotations

import array
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path, sha256_file, write_json
from scifm.tokens.bytelevel import TYPECODES, Encode, bytes_encoder, id_bytes
from scifm.tokens.readers import Reject, Shard, ShardReader

MARKER_VERSION = 1
_ENCODERS: dict[tuple[str, str, str, bool], Encode] = {}
_progress: Callable[[int], None] | None = None


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one run shares; sent to the worker processes."""

    work_dir: str
    tokenizer_path: str
    tokenizer_sha256: str
    dtype: str
    eod: int | None
    text_field: str
    txt_documents: str
    batch_size: int
    fast: bool

    def settings(self) -> dict[str, Any]:
        """Everything besides the input that decides a shard's output (markers must match)."""
        return {
            "tokenizer_sha256": self.tokenizer_sha256,
            "dtype": self.dtype,
            "eod": self.eod,
            "text_field": self.text_field,
            "txt_documents": self.txt_documents,
            "encoder": "auto" if self.fast else "hf",
        }

    def base(self, shard: Shard) -> Path:
        """PREFIX.work/<shard>: the shard's files are this plus .bin, .sizes, ..."""
        return Path(self.work_dir) / shard.name

    def bin(self, shard: Shard) -> Path:
        return self.base(shard).with_suffix(".bin")

    def sizes(self, shard: Shard) -> Path:
        return self.base(shard).with_suffix(".sizes")

    def rejects(self, shard: Shard) -> Path:
        return self.base(shard).with_suffix(".rejects.jsonl")

    def marker(self, shard: Shard) -> Path:
        return self.base(shard).with_suffix(".done.json")


def init_worker(threads: int, queue: Any) -> None:
    """Worker process setup: encoding threads, and progress reported through `queue`."""
    global _progress
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    if threads == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _progress = queue.put


def set_progress(report: Callable[[int], None] | None) -> None:
    """Where this process reports input bytes done (in-process runs: the progress bar)."""
    global _progress
    _progress = report


def _encoder(job: ShardJob) -> Encode:
    """This process's encoder for the job's tokenizer, loaded once per process."""
    key = (job.tokenizer_path, job.tokenizer_sha256, job.dtype, job.fast)
    if key not in _ENCODERS:
        if sha256_file(job.tokenizer_path) != job.tokenizer_sha256:
            raise ScifmError(f"{job.tokenizer_path} changed while tokenizing; rerun")
        backend = HFTokenizer.from_file(job.tokenizer_path)
        backend.encode_special_tokens = True  # as scifm.tokens.tokenizer.Tokenizer
        _ENCODERS[key] = bytes_encoder(backend, job.dtype, job.fast)[0]
    return _ENCODERS[key]


def run_shard(shard: Shard, job: ShardJob) -> dict[str, Any]:
    """Tokenize one shard into the work directory; the marker (returned) is written last."""
    encode = _encoder(job)
    typecode = TYPECODES[job.dtype]
    itemsize = array.array(typecode).itemsize
    eod = b"" if job.eod is None else id_bytes([job.eod], typecode)
    reader = ShardReader(shard, job.text_field, job.txt_documents)
    rejected: Counter[str] = Counter()
    sizes = array.array("i")
    reported = 0
    with (
        atomic_path(job.bin(shard)) as bin_tmp,
        open(bin_tmp, "wb") as out,
        atomic_path(job.rejects(shard)) as rejects_tmp,
        open(rejects_tmp, "w", encoding="utf-8") as rejects,
    ):
        batch: list[str] = []
        for item in reader:
            if type(item) is str:
                batch.append(item)
                if len(batch) == job.batch_size:
                    _write_batch(encode(batch), eod, itemsize, sizes, out)
                    batch.clear()
                    reported += _report(reader.consumed - reported)
            else:
                assert isinstance(item, Reject)
                rejected[item.reason] += 1
                rejects.write(_reject_line(shard, item))
        _write_batch(encode(batch), eod, itemsize, sizes, out)
    _write_sizes(job.sizes(shard), sizes)
    _report(shard.size - reported)
    marker = {
        "version": MARKER_VERSION,
        "shard": shard.identity(),
        "settings": job.settings(),
        "documents": len(sizes),
        "tokens": sum(sizes),
        "positions": reader.positions,
        "rejected": dict(sorted(rejected.items())),
        "sha256": reader.sha256,
    }
    write_json(job.marker(shard), marker)
    return marker


def _write_batch(
    encoded: list[bytes], eod: bytes, itemsize: int, sizes: array.array, out: Any
) -> None:
    """Append each document's token bytes and its EOD; record each document's length."""
    if not encoded:
        return
    out.write(eod.join(encoded) + eod)
    extra = len(eod) // itemsize
    try:
        sizes.extend(len(data) // itemsize + extra for data in encoded)
    except OverflowError:
        raise ScifmError("a document has more than 2**31-1 tokens; split it") from None


def _write_sizes(path: Path, sizes: array.array) -> None:
    """The int32 little-endian document lengths (the merge reads them with numpy)."""
    data = array.array(sizes.typecode, sizes)
    if sys.byteorder != "little":
        data.byteswap()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def _report(amount: int) -> int:
    if _progress is not None and amount:
        _progress(amount)
    return amount


def _reject_line(shard: Shard, reject: Reject) -> str:
    where = "row" if shard.kind == "parquet" else "line"
    record: dict[str, Any] = {"file": shard.path, where: reject.position, "reason": reject.reason}
    if reject.detail:
        record["detail"] = reject.detail
    record["excerpt"] = reject.excerpt
    return json.dumps(record, ensure_ascii=False) + "\n"


def read_marker(job: ShardJob, shard: Shard) -> dict[str, Any] | None:
    """The shard's completion marker when it matches this shard and job and its files are
    whole; None when the shard must be (re)done."""
    try:
        marker = json.loads(job.marker(shard).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("version") != MARKER_VERSION:
        return None
    if marker.get("shard") != shard.identity() or marker.get("settings") != job.settings():
        return None
    documents, tokens = marker.get("documents"), marker.get("tokens")
    if not isinstance(documents, int) or not isinstance(tokens, int):
        return None
    itemsize = array.array(TYPECODES[job.dtype]).itemsize
    whole = (
        _size(job.bin(shard)) == tokens * itemsize
        and _size(job.sizes(shard)) == 4 * documents
        and job.rejects(shard).is_file()
    )
    return marker if whole else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
