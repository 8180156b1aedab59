"""Shared fixture of the trainer tests: a tiny token corpus with learnable structure."""

from __future__ import annotations

import numpy as np
import pytest

from scifm.data import CorpusSource, DataConfig
from scifm.tokens.writer import IndexedWriter


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DataConfig:
    """A corpus with learnable structure: repeated arithmetic progressions."""
    root = tmp_path_factory.mktemp("tokens")
    with IndexedWriter(root / "seq", np.uint16) as writer:
        for start in range(200):
            writer.add_document([(start + 3 * i) % 60 + 2 for i in range(40)] + [1])
    return DataConfig(corpora=[CorpusSource(name="seq", prefixes=[str(root / "seq")],
                                            weight=1.0)], seq_len=32)  # fmt: skip
