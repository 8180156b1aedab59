"""Curation: turn raw corpora into clean `Document` JSONL shards.

Everything downstream (tokenizer training, tokenization) reads the shards this package
writes, so the record type and the file format live here, in one place:

  document.py   `Document` (id, text, metadata) and validation of one JSON record
  jsonl.py      strict `.jsonl` / `.jsonl.gz` reading, atomic writing, corpus file listing
  demo.py       the embedded demo corpora, built offline from installed packages' docstrings

This package imports nothing from scifm beyond `scifm.config` and `scifm.core`.
"""

from scifm.curate.demo import KNOWN_CORPORA, DemoCorpusConfig, build_demo_corpora
from scifm.curate.document import Document
from scifm.curate.jsonl import list_corpus_files, read_documents, write_documents

__all__ = [
    "KNOWN_CORPORA",
    "DemoCorpusConfig",
    "Document",
    "build_demo_corpora",
    "list_corpus_files",
    "read_documents",
    "write_documents",
]
