"""Byte-level BPE trained on real text (stdlib docstrings) round-trips exactly; load is strict."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from scifm.core.errors import ScifmError
from scifm.tokens.format import IndexedTokens
from scifm.tokens.tokenizer import (
    Tokenizer,
    TokenizerConfig,
    capped_texts,
    padded_vocab_size,
    train_tokenizer,
)
from scifm.tokens.writer import tokenize_texts

VOCAB = 400


@pytest.fixture(scope="module")
def corpus(docstring_texts) -> list[str]:
    return docstring_texts(json, re)


@pytest.fixture(scope="module")
def trained(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return train_tokenizer(TokenizerConfig(vocab_size=VOCAB), corpus, out)


def test_special_tokens_come_first(trained: Tokenizer) -> None:
    assert [trained.backend.id_to_token(i) for i in range(3)] == ["<|bos|>", "<|eos|>", "<|pad|>"]
    assert (trained.bos_id, trained.eos_id, trained.pad_id) == (0, 1, 2)
    assert trained.vocab_size == VOCAB


def test_real_text_round_trips_and_compresses(trained: Tokenizer, corpus: list[str]) -> None:
    encoded = trained.encode_batch(corpus)
    assert [trained.decode(ids) for ids in encoded] == corpus
    assert encoded[0] == trained.encode(corpus[0])
    num_bytes = sum(len(t.encode("utf-8")) for t in corpus)
    assert sum(map(len, encoded)) < 0.7 * num_bytes  # merges were learned


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_round_trips(trained: Tokenizer, text: str) -> None:
    ids = trained.encode(text)
    assert all(3 <= i < VOCAB for i in ids)  # no special id ever comes out of plain text
    assert trained.decode(ids) == text


def test_special_strings_in_text_stay_text(trained: Tokenizer) -> None:
    ids = trained.encode("end <|eos|> here")
    assert trained.eos_id not in ids and trained.decode(ids) == "end <|eos|> here"
    assert trained.decode([*trained.encode("a"), trained.eos_id]) == "a<|eos|>"


def test_saved_file_loads_identically(trained: Tokenizer, corpus: list[str]) -> None:
    loaded = Tokenizer.load(trained.path.parent)  # a directory holding tokenizer.json
    assert loaded.path == trained.path
    assert loaded.sha256 == hashlib.sha256(trained.path.read_bytes()).hexdigest()
    assert loaded.sha256 == trained.sha256
    assert loaded.encode(corpus[1]) == trained.encode(corpus[1])
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (0, 1, 2)


def test_load_missing_or_garbage_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScifmError, match=r"absent\.json: tokenizer file not found"):
        Tokenizer.load(tmp_path / "absent.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\x01 not json")
    with pytest.raises(ScifmError, match=r"garbage\.json: not a valid tokenizer\.json"):
        Tokenizer.load(garbage)
    garbage.write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(ScifmError, match=r"not a valid tokenizer\.json"):
        Tokenizer.load(garbage)


def bare_tokenizer(path: Path, specials: list[str]) -> Path:
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.add_tokens(["a", "b"])
    backend.add_special_tokens(specials)
    backend.save(str(path))
    return path


def test_common_special_names_are_recognised(tmp_path: Path) -> None:
    gpt2 = Tokenizer.load(bare_tokenizer(tmp_path / "gpt2.json", ["<|endoftext|>"]))
    assert gpt2.eos_id == 2 and gpt2.bos_id == 2 and gpt2.pad_id == 2
    llama = Tokenizer.load(bare_tokenizer(tmp_path / "llama.json", ["<s>", "</s>", "<pad>"]))
    assert (llama.bos_id, llama.eos_id, llama.pad_id) == (2, 3, 4)
    custom = Tokenizer.load(bare_tokenizer(tmp_path / "custom.json", ["[MY_EOS]"]))
    assert custom.eos_id == 2


def test_tokenizer_config_json_names_win(tmp_path: Path) -> None:
    directory = tmp_path / "hf"
    directory.mkdir()
    bare_tokenizer(directory / "tokenizer.json", ["<|endoftext|>", "<|stop|>"])
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|stop|>"}))
    assert Tokenizer.load(directory).eos_id == 3


def test_missing_eos_is_a_clear_error(tmp_path: Path) -> None:
    plain = Tokenizer.load(bare_tokenizer(tmp_path / "plain.json", []))
    with pytest.raises(ScifmError, match=r"plain\.json: no end-of-text token found"):
        _ = plain.eos_id


def test_tokenize_texts_with_real_tokenizer(
    trained: Tokenizer, corpus: list[str], tmp_path: Path
) -> None:
    texts = corpus[:12]
    stats = tokenize_texts(texts, trained, tmp_path / "t", batch_size=5)
    expected = [[*trained.encode(t), trained.eos_id] for t in texts]
    assert stats == {"documents": 12, "tokens": sum(map(len, expected)), "dtype": "uint16"}
    tokens = IndexedTokens(tmp_path / "t")
    assert [tokens[i].tolist() for i in range(len(tokens))] == expected
    assert trained.decode(tokens[0]) == texts[0] + "<|eos|>"


def test_config_validation() -> None:
    assert TokenizerConfig(vocab_size=259).vocab_size == 259
    with pytest.raises(ScifmError, match="vocab_size must be at least 259"):
        TokenizerConfig.from_dict({"vocab_size": 258})
    with pytest.raises(ScifmError, match="must differ"):
        TokenizerConfig.from_dict({"pad_token": "<|eos|>"})
    with pytest.raises(ScifmError, match="max_train_bytes"):
        TokenizerConfig.from_dict({"max_train_bytes": 0})


def test_train_bytes_cap_and_empty_corpus(tmp_path: Path, corpus: list[str]) -> None:
    assert list(capped_texts(["abc", "déf", "zz"], 5)) == ["abc", "d"]
    assert list(capped_texts(["abc"], None)) == ["abc"]
    with pytest.raises(ScifmError, match="no text"):
        train_tokenizer(TokenizerConfig(), [], tmp_path / "empty.json")
    assert not (tmp_path / "empty.json").exists()
    capped = TokenizerConfig(vocab_size=VOCAB, max_train_bytes=200)
    small = train_tokenizer(capped, corpus, tmp_path / "small.json")
    assert small.vocab_size < VOCAB  # 200 bytes cannot yield 141 merges


def test_padded_vocab_size() -> None:
    assert [padded_vocab_size(v) for v in (1, 64, 65, 400)] == [64, 64, 128, 448]
    assert padded_vocab_size(400, multiple=128) == 512
