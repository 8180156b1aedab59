"""Fixtures shared with the convert tests."""

from tests.unit.convert.conftest import tokenizer  # noqa: F401
