"""The worked blending example in docs/architecture.md is what the code does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scifm.data.blend import WeightTree

DOCS = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


def test_architecture_blend_example_matches_the_code() -> None:
    corpus, index = WeightTree([0.5, 0.3, 0.2]).route(np.arange(10))
    text = DOCS.read_text()
    assert f"`{' '.join(map(str, corpus.tolist()))}`" in text
    assert f"`{' '.join(map(str, index.tolist()))}`" in text
