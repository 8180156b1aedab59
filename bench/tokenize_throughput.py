"""Tokenization throughput: `scifm tokenize` end to end against two references, one run.

Measured on the embedded demo corpora (built into a temporary directory):
- scifm: JSONL shards -> batched encode -> .bin/.idx + manifest (`stages.tokenize_corpus`);
- per_document: the structure of Megatron's preprocess_data.py worker, one encode and one
  .bin write per document, followed by the same .idx (a reference written here);
- encode_only: HF `tokenizers` encode_batch on the same texts, writing nothing (the floor).

Prints one JSON object: MB/s of each, and `ratio` = scifm / per_document.
Usage: python bench/tokenize_throughput.py [--mb-per-corpus 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SCIFM_PROGRESS", "0")

from scifm.curate.demo import DemoCorpusConfig, build_demo_corpora
from scifm.curate.jsonl import list_corpus_files, read_documents
from scifm.stages import tokenize_corpus, tokenizer_train
from scifm.tokens.format import write_index
from scifm.tokens.tokenizer import Tokenizer, TokenizerConfig
from scifm.tokens.writer import TokenizeConfig


def _per_document(texts: list[str], tokenizer: Tokenizer, prefix: Path) -> None:
    sizes = []
    with open(prefix.with_suffix(".bin"), "wb") as handle:
        for text in texts:
            ids = np.asarray([*tokenizer.encode(text), tokenizer.eos_id], dtype=np.uint16)
            handle.write(ids.tobytes())
            sizes.append(len(ids))
    doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
    write_index(prefix.with_suffix(".idx"), np.asarray(sizes, np.int32), doc_idx, np.uint16)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb-per-corpus", type=float, default=3.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scifm-bench-"))
    cfg = DemoCorpusConfig(max_bytes_per_corpus=int(args.mb_per_corpus * 1e6))
    build_demo_corpora(cfg, root / "corpora")
    corpora = [root / "corpora" / name for name in cfg.corpora]
    tokenizer = tokenizer_train(TokenizerConfig(vocab_size=4096), corpora, root / "tok.json")
    files = [f for c in corpora for f in list_corpus_files(c)]
    texts = [d.text for f in files for d in read_documents(f)]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    ours = _timed(lambda: tokenize_corpus(TokenizeConfig(), corpora, root / "tok.json",
                                          root / "scifm"))  # fmt: skip
    per_doc = _timed(lambda: _per_document(texts, tokenizer, root / "perdoc"))
    encode = _timed(lambda: tokenizer.encode_batch(texts))
    same = (root / "scifm.bin").read_bytes() == (root / "perdoc.bin").read_bytes()
    print(json.dumps({
        "megabytes": round(megabytes, 2), "documents": len(texts),
        "scifm_mb_per_s": round(megabytes / ours, 2),
        "per_document_mb_per_s": round(megabytes / per_doc, 2),
        "encode_only_mb_per_s": round(megabytes / encode, 2),
        "ratio": round(per_doc / ours, 2), "identical_bin": same, "cpus": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
