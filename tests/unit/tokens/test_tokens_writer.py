"""IndexedWriter round-trips any documents, is atomic, and tokenize_texts counts what it writes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scifm.core.errors import ScifmError
from scifm.tokens.format import IndexedTokens
from scifm.tokens.writer import IndexedWriter, TokenizeConfig, tokenize_texts, write_manifest


class Silent:
    def advance(self, amount: float = 1) -> None:
        pass


class CharTokenizer:
    """Stand-in tokenizer: one id per character (ord + 3), eos id 1; enough for the writer."""

    def __init__(self, vocab_size: int = 1000, eos_id: int = 1) -> None:
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.path = Path("char-tokenizer.json")
        self.sha256 = "0" * 64
        self.batches: list[int] = []

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.batches.append(len(texts))
        return [[ord(c) + 3 for c in text] for text in texts]


def read_all(prefix: Path) -> list[list[int]]:
    tokens = IndexedTokens(prefix)
    return [tokens[i].tolist() for i in range(len(tokens))]


@settings(max_examples=30, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(0, 65_535), max_size=40), max_size=25),
    buffer_tokens=st.integers(1, 64),
)
def test_round_trip_property(docs: list[list[int]], buffer_tokens: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "p"
        with IndexedWriter(prefix, np.uint16, buffer_tokens=buffer_tokens) as writer:
            for doc in docs:
                writer.add_document(np.array(doc, dtype=np.int64) if len(doc) % 2 else doc)
        assert writer.num_documents == len(docs) and writer.num_tokens == sum(map(len, docs))
        assert read_all(prefix) == docs
        assert IndexedTokens(prefix).doc_idx.tolist() == list(range(len(docs) + 1))


def test_nothing_left_behind_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), IndexedWriter(tmp_path / "x", "uint16") as w:
        w.add_document([1, 2, 3])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_pair(tmp_path: Path) -> None:
    with IndexedWriter(tmp_path / "x", "uint16") as writer:
        writer.add_document([9, 8])
    with pytest.raises(ScifmError), IndexedWriter(tmp_path / "x", "uint16") as writer:
        writer.add_document([70_000])
    assert read_all(tmp_path / "x") == [[9, 8]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "x.idx"]


@pytest.mark.parametrize("bad", [[-1], [65_536], [[1, 2]], [1.5]])
def test_ids_that_do_not_fit_are_rejected(tmp_path: Path, bad: list) -> None:
    with pytest.raises(ScifmError, match=r"x\.bin"), IndexedWriter(tmp_path / "x", "u2") as w:
        w.add_document(bad)


def test_float_dtype_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ScifmError, match="integers"):
        IndexedWriter(tmp_path / "x", np.float32)
    with pytest.raises(ScifmError, match="not storable"):
        IndexedWriter(tmp_path / "x", np.uint32)


def test_tokenize_texts_appends_eod_and_counts(tmp_path: Path) -> None:
    tokenizer = CharTokenizer()
    texts = ["ab", "", "xyz", "q"]
    stats = tokenize_texts(texts, tokenizer, tmp_path / "c", batch_size=3, progress=Silent())
    assert stats == {"documents": 4, "tokens": 6 + 4, "dtype": "uint16"}
    assert tokenizer.batches == [3, 1]
    expected = [[ord(c) + 3 for c in t] + [1] for t in texts]
    assert read_all(tmp_path / "c") == expected


def test_tokenize_texts_accepts_documents_and_no_eod(tmp_path: Path) -> None:
    class Doc:
        def __init__(self, text: str) -> None:
            self.id, self.text, self.metadata = "d", text, {}

    docs = [Doc("hi"), "yo"]
    stats = tokenize_texts(docs, CharTokenizer(), tmp_path / "d", append_eod=False, progress=None)
    assert stats["tokens"] == 4 and read_all(tmp_path / "d")[0] == [ord("h") + 3, ord("i") + 3]


def test_tokenize_texts_uses_int32_for_big_vocab(tmp_path: Path) -> None:
    tokenizer = CharTokenizer(vocab_size=70_000, eos_id=69_999)
    stats = tokenize_texts(["a"], tokenizer, tmp_path / "b", progress=Silent())
    assert stats["dtype"] == "int32"
    assert read_all(tmp_path / "b") == [[ord("a") + 3, 69_999]]


def test_manifest_records_counts_and_hashes(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"text": "ab"}\n')
    stats = {"documents": 1, "tokens": 3, "dtype": "uint16"}
    path = write_manifest(tmp_path / "m", stats, CharTokenizer(), [source])
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert path == tmp_path / "m.manifest.json"
    assert manifest["documents"] == 1 and manifest["tokens"] == 3 and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["sha256"] == "0" * 64
    # sha256 of the 15 bytes above, computed independently with `sha256sum`.
    assert manifest["inputs"] == [
        {
            "path": str(source),
            "sha256": "3d67ebb1efa9a1c76754b4cbdc5a9f882fccb323f5e441cc6c4ae55428891281",
        }
    ]


def test_tokenize_config_validates() -> None:
    assert TokenizeConfig().batch_size == 1000
    with pytest.raises(ScifmError, match="batch_size"):
        TokenizeConfig.from_dict({"batch_size": 0})
