"""Tokens stage: a byte-level BPE tokenizer and Megatron-compatible .bin/.idx token files.

`tokenizer` trains or loads a tokenizer.json; `pipeline` is `scifm tokenize` (inputs read by
`readers`, cut into shards run in parallel by `shard`, encoded exactly and fast by
`bytelevel`, merged into one PREFIX.bin/.idx plus a manifest and a rejects file); `writer`
writes a pair from texts in one process; `format` is the byte layout and the memory-mapped
reader `IndexedTokens` that the data stage samples from.

Names are imported on first use: tokenize's worker processes import only `shard` and what it
needs, and so start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DTYPE_CODES": "format",
    "MAGIC": "format",
    "VERSION": "format",
    "IndexArrays": "format",
    "IndexedTokens": "format",
    "dtype_for_vocab": "format",
    "prefix_paths": "format",
    "read_index": "format",
    "write_index": "format",
    "Tokenizer": "tokenizer",
    "TokenizerConfig": "tokenizer",
    "padded_vocab_size": "tokenizer",
    "train_tokenizer": "tokenizer",
    "IndexedWriter": "writer",
    "TokenizeConfig": "writer",
    "tokenize_texts": "writer",
    "write_manifest": "writer",
    "tokenize_files": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
