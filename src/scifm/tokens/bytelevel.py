"""Exact fast encoding for GPT-2 style byte-level BPE: regex pieces -> cached token bytes.

Why: Hugging Face `tokenizers` spends about a microsecond per token on work tokenization
does not need here (offset alignments, an `Encoding` object per document, per-token
strings). A byte-level BPE encodes each pre-token (a piece cut out by the GPT-2 regex)
independently of its neighbours, so the ids of a text are the concatenation of the ids of its
pieces. Natural text repeats the same pieces over and over, so a dict from piece to its ids
(kept as the little-endian bytes of the .bin dtype) turns encoding into one regex scan,
dict lookups and one `bytes.join`: several times less CPU per byte, same ids.

Exactness, by construction and checked:
- used only for the pipeline this is exact for (`fast_path_problem` says why not otherwise):
  no normalizer, a `ByteLevel(add_prefix_space=False, use_regex=True)` pre-tokenizer, a BPE
  model without dropout, no post-processor that edits ids, no truncation or padding, and only
  special added tokens (which `Tokenizer` encodes as plain text);
- the split uses the GPT-2 pattern with every character class computed from the tokenizer's
  own pre-tokenizer: each ASCII character's class (letter, digit, space, other) is asked of
  it once, and a non-ASCII character is asked of it the first time it is met, then stands in
  the regex as an ASCII character of the same class. So Unicode property tables, which differ
  between regex engines and Unicode versions, never decide a split;
- each new piece is encoded by the tokenizer's own BPE model (`model.tokenize`);
- `check` compares the result with `tokenizers` on probe texts at load time; on any
  difference the caller falls back to `tokenizers` (see `Tokenizer.bytes_encoder`).
"""

from __future__ import annotations

import array
import re
import sys
from collections.abc import Callable, Sequence

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, processors

CACHE_ENTRIES = 1 << 18
"""Pieces remembered per encoder (~40 MB); the cache is emptied when full (Zipf: the
frequent pieces are back within a few documents)."""

LETTER, DIGIT, SPACE, OTHER = "a", "0", "\t", "!"
"""ASCII stand-ins of the four classes the GPT-2 regex tells apart (' ' is special on its
own; the letter is none of the contraction letters s t r e v m l d)."""

PROBES = (
    "".join(chr(i) for i in range(128)) + " " + "".join(chr(i) + " x" for i in range(128)),
    "I'm sure it's what they'll say: we've, you're, he'd, 'S, 'T, don''t, rock'n'roll.",
    "  leading\tand\n\ntrailing   \n  x \r\n\x0b\x0c y\u00a0z\u3000w\u2028v   ",
    "def f(x):\n    return x**2  # 3.14e-10, 1,000,000 and 0x1F\n\n\n",
    "café naïve Ωmega ∑∞ ≤ 中文字符 日本語のテキスト 한국어 Привет мир عربى ١٢٣ ५६",
    "e\u0301 a\u0308 ﬁ ℕ ² ½ Ⅷ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀👍🏽 👩‍🔬 \u200b\u200d \ufeff\U0010fffd",
    "<|eos|> <|bos|> <|endoftext|> </s> <s> [EOS]",
)


def bytes_to_unicode() -> list[str]:
    """The byte-level alphabet: byte b is written as character [b] of this list.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, DEL,
    ...) get the characters 256, 257, ... in byte order, as GPT-2 defined it.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: list[str] = [""] * 256
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


TYPECODES = {"uint8": "B", "int8": "b", "uint16": "H", "int16": "h", "int32": "i",
             "uint32": "I", "int64": "q", "uint64": "Q"}  # fmt: skip
"""numpy dtype name -> `array` type code (numpy stays out of the tokenize workers)."""


def id_bytes(ids: Sequence[int], typecode: str) -> bytes:
    """Token ids as the little-endian bytes of `typecode` (.bin bytes)."""
    packed = array.array(typecode, ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _typecode(dtype: str) -> str:
    if dtype not in TYPECODES:
        raise ValueError(f"token ids cannot be stored as {dtype}")
    return TYPECODES[dtype]


def fast_path_problem(backend: HFTokenizer) -> str | None:
    """Why the fast path would not be exact for `backend`; None when it is supported."""
    pre = backend.pre_tokenizer
    if backend.normalizer is not None:
        return "the tokenizer has a normalizer"
    if not isinstance(pre, pre_tokenizers.ByteLevel) or pre.add_prefix_space or not pre.use_regex:
        return "the pre-tokenizer is not ByteLevel(add_prefix_space=False, use_regex=True)"
    if not isinstance(backend.model, models.BPE) or backend.model.dropout:
        return "the model is not a BPE without dropout"
    post = backend.post_processor
    if post is not None and not isinstance(post, processors.ByteLevel):
        return "the post-processor may add or change ids"
    if backend.truncation is not None or backend.padding is not None:
        return "the tokenizer truncates or pads"
    if not all(token.special for token in backend.get_added_tokens_decoder().values()):
        return "the tokenizer has non-special added tokens"
    return None


class _Classes(dict[int, int]):
    """str.translate table: ASCII stays, other characters become their class's stand-in."""

    def __init__(self, classify: Callable[[str], str]) -> None:
        super().__init__((i, i) for i in range(128))
        self._classify = classify

    def __missing__(self, codepoint: int) -> int:
        stand_in = ord(self._classify(chr(codepoint)))
        self[codepoint] = stand_in
        return stand_in


class _PieceCache(dict[str, bytes]):
    """piece -> bytes of its ids; a miss runs the tokenizer's BPE model on the piece."""

    def __init__(self, encode_piece: Callable[[str], bytes]) -> None:
        super().__init__()
        self._encode_piece = encode_piece

    def __missing__(self, piece: str) -> bytes:
        if len(self) >= CACHE_ENTRIES:
            self.clear()
        data = self._encode_piece(piece)
        self[piece] = data
        return data


class ByteLevelEncoder:
    """Encode texts to .bin bytes with the ids `backend` gives, without its per-token costs."""

    def __init__(self, backend: HFTokenizer, dtype: str) -> None:
        problem = fast_path_problem(backend)
        if problem is not None:
            raise ValueError(f"no exact byte-level fast path: {problem}")
        self.backend = backend
        self.dtype = dtype
        self._alphabet = dict(enumerate(bytes_to_unicode()))  # a str.translate table
        self._typecode = _typecode(self.dtype)
        self._split = backend.pre_tokenizer.pre_tokenize_str
        self._model = backend.model
        self._findall = self._pattern().findall
        self._classes = _Classes(self._classify)
        self._pieces = _PieceCache(self._encode_piece)

    def _classify(self, char: str) -> str:
        """The regex class of one character, as the tokenizer's own pre-tokenizer sees it."""
        for stand_in in (LETTER, DIGIT, OTHER):
            if len(self._split(stand_in + char)) == 1:
                return stand_in
        return SPACE

    def _pattern(self) -> re.Pattern[str]:
        """The GPT-2 split pattern over ASCII classes measured on the tokenizer itself."""
        ascii_chars = [chr(i) for i in range(128)]
        classes = {c: self._classify(c) for c in ascii_chars}
        if [classes[c] for c in (LETTER, DIGIT, OTHER, SPACE, " ")] != [
            LETTER, DIGIT, OTHER, SPACE, SPACE,
        ]:  # fmt: skip
            raise ValueError("the pre-tokenizer does not split like GPT-2's regex")
        letters, digits, spaces = (
            re.escape("".join(c for c in ascii_chars if classes[c] == kind))
            for kind in (LETTER, DIGIT, SPACE)
        )
        return re.compile(
            rf"'(?:s|t|re|ve|m|ll|d)| ?(?:[{letters}]+|[{digits}]+|[^{spaces}{letters}{digits}]+)"
            rf"|[{spaces}]+(?![^{spaces}])|[{spaces}]+"
        )

    def _encode_piece(self, piece: str) -> bytes:
        mapped = piece.encode("utf-8").decode("latin-1").translate(self._alphabet)
        return id_bytes([token.id for token in self._model.tokenize(mapped)], self._typecode)

    def encode(self, text: str) -> bytes:
        """The ids of `text` as little-endian bytes of the dtype (no special tokens added)."""
        if text.isascii():
            return b"".join(map(self._pieces.__getitem__, self._findall(text)))
        shadow = text.translate(self._classes)
        pieces, start = [], 0
        for piece in self._findall(shadow):
            end = start + len(piece)
            pieces.append(text[start:end])
            start = end
        return b"".join(map(self._pieces.__getitem__, pieces))

    def encode_batch(self, texts: Sequence[str]) -> list[bytes]:
        return [self.encode(text) for text in texts]

    def check(self, texts: Sequence[str] = PROBES) -> list[int]:
        """Indices of `texts` whose ids differ from `tokenizers` (empty: the path is exact)."""
        expected = self.backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [
            i
            for i, (text, encoding) in enumerate(zip(texts, expected, strict=True))
            if self.encode(text) != id_bytes(encoding.ids, self._typecode)
        ]


Encode = Callable[[Sequence[str]], list[bytes]]


def bytes_encoder(backend: HFTokenizer, dtype: str, fast: bool = True) -> tuple[Encode, str]:
    """texts -> each text's ids as little-endian bytes of `dtype` (a numpy dtype name such as
    "uint16"), and a description of the path taken.

    The fast path when `fast`, supported and agreeing with `tokenizers` on the probe texts;
    else `encode_batch_fast` (the path's description then says why).
    """
    reason = fast_path_problem(backend) if fast else "tokenize.encoder is hf"
    if reason is None:
        try:
            encoder = ByteLevelEncoder(backend, dtype)
            differ = encoder.check()
        except ValueError as err:
            reason = str(err)
        else:
            if not differ:
                return encoder.encode_batch, "byte-level fast path"
            reason = f"the fast path differs from tokenizers on probe texts {differ}"
    typecode = _typecode(dtype)

    def encode(texts: Sequence[str]) -> list[bytes]:
        encodings = backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [id_bytes(e.ids, typecode) for e in encodings]

    return encode, f"tokenizers ({reason})"
