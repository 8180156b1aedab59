"""Small real token files for the data tests: written with the project's writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scifm.tokens.writer import IndexedWriter

EOD = 1


def write_corpus_file(prefix: Path, docs: list[list[int]], dtype=np.uint16) -> str:
    with IndexedWriter(prefix, dtype) as writer:
        for doc in docs:
            writer.add_document(doc)
    return str(prefix)


def make_corpora(root: Path, files_per_corpus=(2, 1, 3), docs_per_file=40, seed=0,
                 max_doc=30) -> dict[str, list[str]]:  # fmt: skip
    """Corpus i's token ids lie in [1000 i + 3, 1000 i + 500), so a sample shows its corpus."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, files in enumerate(files_per_corpus):
        name = "abcdefgh"[c]
        prefixes = []
        for f in range(files):
            docs = [[*(rng.integers(3, 500, rng.integers(1, max_doc)) + 1000 * c), EOD]
                    for _ in range(docs_per_file)]  # fmt: skip
            prefixes.append(write_corpus_file(root / f"{name}{f}", docs))
        out[name] = prefixes
    return out


@pytest.fixture
def corpora(tmp_path) -> dict[str, list[str]]:
    return make_corpora(tmp_path)
