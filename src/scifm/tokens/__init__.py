"""Tokens stage: a byte-level BPE tokenizer and Megatron-compatible .bin/.idx token files.

`tokenizer` trains or loads a tokenizer.json; `writer` turns documents into one
PREFIX.bin/.idx pair (one sequence per document, EOD appended) plus a manifest of counts and
hashes; `format` is the byte layout and the memory-mapped reader `IndexedTokens` that the
data stage samples from.
"""

from scifm.tokens.format import (
    DTYPE_CODES,
    MAGIC,
    VERSION,
    IndexArrays,
    IndexedTokens,
    dtype_for_vocab,
    prefix_paths,
    read_index,
    write_index,
)
from scifm.tokens.tokenizer import Tokenizer, TokenizerConfig, padded_vocab_size, train_tokenizer
from scifm.tokens.writer import IndexedWriter, TokenizeConfig, tokenize_texts, write_manifest

__all__ = [
    "DTYPE_CODES",
    "MAGIC",
    "VERSION",
    "IndexArrays",
    "IndexedTokens",
    "IndexedWriter",
    "TokenizeConfig",
    "Tokenizer",
    "TokenizerConfig",
    "dtype_for_vocab",
    "padded_vocab_size",
    "prefix_paths",
    "read_index",
    "tokenize_texts",
    "train_tokenizer",
    "write_index",
    "write_manifest",
]
