"""Byte-level BPE tokenizer: train one on a corpus, or load any Hugging Face tokenizer.json.

Training uses Hugging Face `tokenizers` with a GPT-2 style byte-level BPE: every byte is in
the initial alphabet, so any text encodes without unknown tokens and decodes back exactly.
The special tokens (bos, eos, pad) come first, with ids 0, 1, 2. The result is one
`tokenizer.json`, written atomically, that `transformers` and other tools load as is.

`Tokenizer` wraps a loaded file with what the other stages need: plain-list `encode`,
`decode`, the vocabulary size, the special ids and the file's sha256 (recorded in token
manifests and checkpoints so a mismatch is caught). Special-token strings that occur inside
document text are encoded as ordinary text, so data can never inject an end-of-document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path, sha256_file
from scifm.core.logging import get_logger
from scifm.core.progress import track
from scifm.tokens.bytelevel import bytes_encoder

PathLike = str | os.PathLike[str]
BYTE_ALPHABET_SIZE = 256
log = get_logger(__name__)

# Names that common tokenizer.json files give their special tokens, most specific first.
KNOWN_SPECIALS: dict[str, tuple[str, ...]] = {
    "eos": ("<|eos|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|end|>", "[EOS]"),
    "bos": ("<|bos|>", "<|begin_of_text|>", "<|startoftext|>", "<s>", "<bos>", "[BOS]"),
    "pad": ("<|pad|>", "<pad>", "[PAD]", "<|padding|>", "<|finetune_right_pad_id|>"),
}
# Fallback: a special token whose lowercased name contains one of these words.
SPECIAL_HINTS: dict[str, tuple[str, ...]] = {
    "eos": ("eos", "endoftext", "end_of_text"),
    "bos": ("bos", "begin", "startoftext"),
    "pad": ("pad",),
}


class TokenizerConfig(Config):
    vocab_size: int = 4096
    """Vocabulary size to train, including the 256 byte tokens and the special tokens."""
    min_frequency: int = Field(default=2, ge=0)
    """A pair must occur at least this often in the training text to be merged."""
    bos_token: str = Field(default="<|bos|>", min_length=1)
    """Beginning-of-sequence token (id 0)."""
    eos_token: str = Field(default="<|eos|>", min_length=1)
    """End-of-document token (id 1), appended after every document when tokenizing."""
    pad_token: str = Field(default="<|pad|>", min_length=1)
    """Padding token (id 2)."""
    max_train_bytes: int | None = Field(default=None, gt=0)
    """Cap on the UTF-8 bytes of text fed to the trainer; None reads all of it."""

    @property
    def special_tokens(self) -> list[str]:
        """Special tokens in id order: bos, eos, pad."""
        return [self.bos_token, self.eos_token, self.pad_token]

    @model_validator(mode="after")
    def _check_vocab(self) -> Self:
        specials = self.special_tokens
        if len(set(specials)) != len(specials):
            raise ValueError(f"bos, eos and pad tokens must differ, got {specials}")
        minimum = BYTE_ALPHABET_SIZE + len(specials)
        if self.vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be at least {minimum} (256 bytes + {len(specials)} special "
                f"tokens), got {self.vocab_size}"
            )
        return self


class Tokenizer:
    """A loaded tokenizer.json with list-based encode/decode, special ids and a content hash."""

    def __init__(self, backend: HFTokenizer, path: Path, specials: dict[str, str] | None = None):
        self.backend = backend
        self.backend.encode_special_tokens = True  # special strings in text stay plain text
        self.path = path
        self.sha256 = sha256_file(path)
        self._names = specials or {}

    @classmethod
    def load(cls, path: PathLike) -> Tokenizer:
        """Load a tokenizer.json (or a directory holding one); ScifmError if missing or invalid."""
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise ScifmError(
                f"{file}: tokenizer file not found; train one with `scifm tokenizer` or fix "
                "the path"
            )
        try:
            backend = HFTokenizer.from_file(str(file))
        except Exception as err:  # tokenizers raises plain Exception for every parse error
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ScifmError(f"{file}: not a valid tokenizer.json ({reason})") from None
        return cls(backend, file, _configured_specials(file.parent / "tokenizer_config.json"))

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the model's embedding needs at least this)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        """End-of-document id; ScifmError when the tokenizer has no recognisable one."""
        found = self._special_id("eos")
        if found is None:
            raise ScifmError(
                f"{self.path}: no end-of-text token found (looked for "
                f"{', '.join(KNOWN_SPECIALS['eos'])}); add one as a special token"
            )
        return found

    @property
    def bos_id(self) -> int:
        """Beginning-of-sequence id, or the eos id when the tokenizer has none (as GPT-2)."""
        found = self._special_id("bos")
        return self.eos_id if found is None else found

    @property
    def pad_id(self) -> int:
        """Padding id, or the eos id when the tokenizer has none."""
        found = self._special_id("pad")
        return self.eos_id if found is None else found

    def _special_id(self, role: str) -> int | None:
        named = self._names.get(role)
        candidates = ((named,) if named else ()) + KNOWN_SPECIALS[role]
        for name in candidates:
            found = self.backend.token_to_id(name)
            if found is not None:
                return found
        for token_id, token in sorted(self.backend.get_added_tokens_decoder().items()):
            lowered = token.content.lower()
            if token.special and any(hint in lowered for hint in SPECIAL_HINTS[role]):
                return token_id
        return None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (encoded in parallel by the Rust backend)."""
        encodings = self.backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def bytes_encoder(
        self, dtype: npt.DTypeLike, fast: bool = True
    ) -> Callable[[Sequence[str]], list[bytes]]:
        """A function from texts to each text's ids as little-endian bytes of `dtype`.

        These are the bytes a .bin holds. With `fast`, the exact byte-level fast path
        (`scifm.tokens.bytelevel`) is used when this tokenizer supports it and agrees with
        `tokenizers` on the probe texts; otherwise `encode_batch`. The ids are the same.
        """
        encode, path = bytes_encoder(self.backend, str(np.dtype(dtype)), fast)
        log.debug("%s: encoding with %s", self.path, path)
        return encode

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are kept, so an EOD shows up as its name."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def _configured_specials(config_path: Path) -> dict[str, str]:
    """bos/eos/pad names from a Hugging Face tokenizer_config.json next to the file, if any."""
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    names = {}
    for role in ("bos", "eos", "pad"):
        value: Any = data.get(f"{role}_token") if isinstance(data, dict) else None
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value:
            names[role] = value
    return names


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """`vocab_size` rounded up to a multiple of `multiple` (faster embedding matmuls)."""
    if vocab_size <= 0 or multiple <= 0:
        raise ValueError(f"need positive vocab_size and multiple, got {vocab_size}, {multiple}")
    return -(-vocab_size // multiple) * multiple


def build_trainer(cfg: TokenizerConfig) -> tuple[HFTokenizer, trainers.BpeTrainer]:
    """An empty byte-level BPE and its trainer, configured from `cfg`."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=cfg.special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return backend, trainer


def capped_texts(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    """`texts` until `max_bytes` UTF-8 bytes have been yielded (the last one cut to fit)."""
    remaining = max_bytes
    for text in texts:
        if remaining is None:
            yield text
            continue
        data = text.encode("utf-8")
        if len(data) >= remaining:
            yield data[:remaining].decode("utf-8", errors="ignore")
            return
        remaining -= len(data)
        yield text


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], out_path: PathLike) -> Tokenizer:
    """Train a byte-level BPE on `texts` and save it atomically as `out_path` (tokenizer.json)."""
    backend, trainer = build_trainer(cfg)
    seen = {"texts": 0}

    def counted(bar: Any) -> Iterator[str]:
        for text in capped_texts(texts, cfg.max_train_bytes):
            seen["texts"] += 1
            bar.advance(1)
            yield text

    with track(None, "train tokenizer (documents read)") as bar:
        backend.train_from_iterator(counted(bar), trainer)
    if seen["texts"] == 0:
        raise ScifmError("no text to train the tokenizer on: the input corpora are empty")
    _check_special_ids(backend, cfg.special_tokens)
    with atomic_path(out_path) as tmp:
        backend.save(str(tmp))
    return Tokenizer(HFTokenizer.from_file(str(out_path)), Path(out_path), _roles(cfg))


def _roles(cfg: TokenizerConfig) -> dict[str, str]:
    return {"bos": cfg.bos_token, "eos": cfg.eos_token, "pad": cfg.pad_token}


def _check_special_ids(backend: HFTokenizer, specials: list[str]) -> None:
    ids = [backend.token_to_id(token) for token in specials]
    if ids != list(range(len(specials))):
        raise RuntimeError(f"special tokens {specials} got ids {ids}, expected 0..{len(ids) - 1}")
