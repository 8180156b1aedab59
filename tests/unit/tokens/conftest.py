"""Shared fixtures for the tokenize tests: real text and a small byte-level BPE trained on it."""

from __future__ import annotations

import inspect
import json
import re
import textwrap

import pytest

from scifm.tokens.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer


def docstrings(*modules: object) -> list[str]:
    """Docstrings of each module and its public members: real text, not written here."""
    texts = []
    for module in modules:
        members = [module, *(v for k, v in vars(module).items() if not k.startswith("_"))]
        texts += [doc for doc in map(inspect.getdoc, members) if doc]
    return list(dict.fromkeys(texts))


@pytest.fixture(scope="session")
def docstring_texts():
    """`docstrings` as a fixture, for test modules that pick their own modules."""
    return docstrings


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return docstrings(json, re, textwrap)


@pytest.fixture(scope="session")
def tokenizer(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    out = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    return train_tokenizer(TokenizerConfig(vocab_size=500), texts, out)
