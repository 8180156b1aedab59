"""The byte-level fast path gives exactly the ids of Hugging Face `tokenizers`, on any text."""

from __future__ import annotations

import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, normalizers, pre_tokenizers

from scifm.tokens import bytelevel
from scifm.tokens.bytelevel import ByteLevelEncoder, bytes_encoder, fast_path_problem
from scifm.tokens.tokenizer import Tokenizer

# Characters that exercise every branch of the split: contractions, the optional leading
# space, whitespace runs before words, digits, marks, non-ASCII letters/digits/spaces.
TRICKY = [*"ab sdt're'vml'\n\t\r\x0b\x0c  09.,;(é中١\u0301\u00a0\u3000\u2028😀", "<|eos|>"]


def hf_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.backend.encode_batch(texts, add_special_tokens=False)]


def as_ids(data: bytes, typecode: str = "H") -> list[int]:
    return array.array(typecode, data).tolist()


@pytest.fixture(scope="module")
def fast(tokenizer: Tokenizer) -> ByteLevelEncoder:
    return ByteLevelEncoder(tokenizer.backend, "uint16")


def test_supported_and_exact_on_probes_and_real_text(
    tokenizer: Tokenizer, fast: ByteLevelEncoder, texts: list[str]
) -> None:
    assert fast_path_problem(tokenizer.backend) is None and fast.check() == []
    assert [as_ids(b) for b in fast.encode_batch(texts)] == hf_ids(tokenizer, texts)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_any_unicode_text(tokenizer: Tokenizer, fast: ByteLevelEncoder, text: str) -> None:
    assert as_ids(fast.encode(text)) == hf_ids(tokenizer, [text])[0]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), max_size=40).map("".join))
def test_split_edge_cases(tokenizer: Tokenizer, fast: ByteLevelEncoder, text: str) -> None:
    assert as_ids(fast.encode(text)) == hf_ids(tokenizer, [text])[0]


def test_full_cache_is_emptied_and_stays_exact(
    tokenizer: Tokenizer, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bytelevel, "CACHE_ENTRIES", 8)
    small = ByteLevelEncoder(tokenizer.backend, "int32")
    assert [as_ids(b, "i") for b in small.encode_batch(texts[:20])] == hf_ids(tokenizer, texts[:20])
    assert len(small._pieces) <= 8


def _variant(tokenizer: Tokenizer, tmp_path: Path, change) -> Tokenizer:
    """A copy of the tokenizer with one pipeline change, reloaded from its own file."""
    path = tmp_path / "variant.json"
    tokenizer.backend.save(str(path))
    changed = Tokenizer.load(path)
    change(changed.backend)
    changed.backend.save(str(path))
    return Tokenizer.load(path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda b: setattr(b, "normalizer", normalizers.NFKC()), "normalizer"),
        (lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)),
         "pre-tokenizer"),
        (lambda b: b.add_tokens([AddedToken("qq", special=False)]), "non-special added"),
        (lambda b: b.enable_truncation(8), "truncates"),
    ],
)  # fmt: skip
def test_other_pipelines_fall_back_to_tokenizers(
    tokenizer: Tokenizer, tmp_path: Path, texts: list[str], change, problem: str
) -> None:
    variant = _variant(tokenizer, tmp_path, change)
    assert problem in (fast_path_problem(variant.backend) or "")
    encode, path = bytes_encoder(variant.backend, "uint16")
    assert path.startswith("tokenizers (") and problem in path
    sample = [*texts[:5], "qq ﬁ é"]
    expected = [e.ids for e in variant.backend.encode_batch_fast(sample, add_special_tokens=False)]
    assert [as_ids(b) for b in encode(sample)] == expected


def test_tokenizer_bytes_encoder_is_the_same_either_way(
    tokenizer: Tokenizer, texts: list[str]
) -> None:
    fast_bytes = tokenizer.bytes_encoder("uint16")(texts)
    assert fast_bytes == tokenizer.bytes_encoder("uint16", fast=False)(texts)
    assert [as_ids(b) for b in fast_bytes] == tokenizer.encode_batch(texts)
