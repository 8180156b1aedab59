"""A small byte-level BPE trained on the standard library's json docs, for export tests."""

from __future__ import annotations

import json

import pytest

from scifm.tokens.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer

PROMPTS = ["The eigenvalues of a matrix", "Compute the integral of x**2", "import numpy as np"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    texts = [json.__doc__ or "", json.dumps.__doc__ or "", *PROMPTS]
    train_tokenizer(TokenizerConfig(vocab_size=400, min_frequency=1), texts, path)
    return Tokenizer.load(path)
