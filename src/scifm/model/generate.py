"""Batched text generation with a KV cache: greedy, temperature, top-k, top-p, stop strings.

`generate(model, prompts, sampling)` left-pads the prompts to one batch, runs them through
the model once (prefill), then decodes one position per forward pass from the cache
(`scifm.model.kv_cache`). Each row stops at the end-of-text id, at a stop string, or after
`max_new_tokens`, and says which (`finish_reason` "stop" or "length", as in OpenAI's API).

Sampling applies, in order: temperature, top-k, then top-p (the smallest set of most
likely tokens whose probability reaches `top_p`), and draws from a generator seeded with
`seed`, so the same call gives the same tokens. Temperature 0 is greedy (argmax); padded
vocabulary rows (ids >= `vocab_size`) are never chosen.

Stop strings are checked on the decoded text of each row (a stop string can span tokens);
the text returned ends before the stop string, and its ids end with the token that
completed it. Decoding is given as a function, so this module needs no tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from scifm.config import Config
from scifm.model.kv_cache import KVCache

FinishReason = Literal["stop", "length"]


class SamplingConfig(Config):
    """How new tokens are chosen and when a row stops."""

    max_new_tokens: int = Field(default=64, gt=0)
    """Tokens generated per prompt at most."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Divides the logits before sampling; 0 is greedy decoding."""
    top_k: int = Field(default=0, ge=0)
    """Sample among the k most likely tokens only; 0 keeps them all."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: the fewest most likely tokens whose probabilities sum to top_p."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end a row's completion (not included in its text)."""
    seed: int = 0
    """Seed of the sampling generator."""


@dataclass
class Completion:
    """One prompt's new tokens, their text (when a decoder was given) and why it stopped."""

    ids: list[int]
    text: str | None
    finish_reason: FinishReason


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits [B, V] with the tokens top-k and top-p exclude set to -inf."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability of the more likely tokens
        drop = before >= top_p  # the most likely token is always kept (before = 0)
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def choose_next(logits: torch.Tensor, sampling: SamplingConfig,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """The next token of each row from logits [B, V] (float32 recommended)."""
    if sampling.temperature == 0.0:
        return logits.argmax(-1)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


class _Row:
    """The state of one prompt's completion while the batch decodes."""

    def __init__(self, sampling: SamplingConfig, eos_id: int | None,
                 decode: Callable[[list[int]], str] | None) -> None:  # fmt: skip
        self.sampling, self.eos_id, self.decode = sampling, eos_id, decode
        self.ids: list[int] = []
        self.finish: FinishReason | None = None
        self.text: str | None = None

    def add(self, token: int) -> None:
        if token == self.eos_id:
            self.finish = "stop"
            return
        self.ids.append(token)
        if self.sampling.stop and self.decode is not None:
            text = self.decode(self.ids)
            cuts = [text.find(s) for s in self.sampling.stop if s in text]
            if cuts:
                self.text, self.finish = text[: min(cuts)], "stop"
                return
        if len(self.ids) >= self.sampling.max_new_tokens:
            self.finish = "length"

    def result(self) -> Completion:
        text = self.text
        if text is None and self.decode is not None:
            text = self.decode(self.ids)
        return Completion(self.ids, text, self.finish or "length")


def _fit_prompts(prompts: Sequence[Sequence[int]], max_seq_len: int,
                 max_new_tokens: int) -> list[list[int]]:  # fmt: skip
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    room = max_seq_len - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                         f"max_seq_len={max_seq_len}")  # fmt: skip
    return [list(p)[-room:] for p in prompts]  # the most recent tokens are kept


@torch.no_grad()
def generate(model: nn.Module, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
             eos_id: int | None = None,
             decode: Callable[[list[int]], str] | None = None) -> list[Completion]:  # fmt: skip
    """Complete every prompt (token ids) together; one `Completion` per prompt, in order.

    Prompts longer than `max_seq_len - max_new_tokens` keep their last tokens. Stop strings
    need `decode`. The model's train/eval mode is left as it is (Llama has no dropout).
    """
    if sampling.stop and decode is None:
        raise ValueError("stop strings need a decode function to read the text")
    cfg = model.cfg
    fitted = _fit_prompts(prompts, cfg.max_seq_len, sampling.max_new_tokens)
    weight = next(model.parameters())
    longest = max(len(p) for p in fitted)
    pads = [longest - len(p) for p in fitted]
    tokens = torch.tensor([[0] * pad + p for pad, p in zip(pads, fitted, strict=True)],
                          dtype=torch.long, device=weight.device)  # fmt: skip
    cache = KVCache(cfg, pads, longest + sampling.max_new_tokens, device=weight.device,
                    dtype=weight.dtype)  # fmt: skip
    generator = torch.Generator(device=weight.device).manual_seed(sampling.seed)
    rows = [_Row(sampling, eos_id, decode) for _ in fitted]
    logits = model(tokens, cache=cache, num_logits=1)[:, -1, : cfg.vocab_size]
    while True:
        chosen = choose_next(logits.float(), sampling, generator)
        for row, token in zip(rows, chosen.tolist(), strict=True):
            if row.finish is None:
                row.add(token)
        if all(row.finish is not None for row in rows):
            break
        logits = model(chosen[:, None], cache=cache)[:, -1, : cfg.vocab_size]
    return [row.result() for row in rows]


def greedy_ids(model: nn.Module, prompt_ids: Sequence[int], max_new_tokens: int,
               eos_id: int | None = None) -> list[int]:  # fmt: skip
    """Greedy continuation of one prompt: its new token ids (without the end-of-text id)."""
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    return generate(model, [prompt_ids], sampling, eos_id)[0].ids
