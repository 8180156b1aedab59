"""Perplexity and bits per byte on the held-out split of each training corpus.

A run's data config (recorded in its checkpoints' metadata) holds out the last documents of
every corpus (`data.valid_fraction`); training never reads them. Here they are packed into
`seq_len`-token windows as training packs its samples, every token after a window's first
is predicted, and per corpus:

- `perplexity` = exp(mean negative log-likelihood per predicted token), in the model's own
  tokens, so only comparable between models with the same tokenizer;
- `bits_per_byte` = total negative log-likelihood / ln 2 / UTF-8 bytes of the predicted text,
  comparable across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scifm.core.errors import ScifmError
from scifm.data import BlendedSampler, DataConfig


@torch.no_grad()
def window_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> float:
    """Summed negative log-likelihood (nats) of tokens 1.. of each window [n, seq_len + 1]."""
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model(batch[:, :-1])[..., : model.cfg.vocab_size].float()
        total += float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(),
                                       reduction="sum"))  # fmt: skip
    return total


def heldout_perplexity(
    model: nn.Module, data: DataConfig, decode: Callable[[list[int]], str],
    max_windows: int = 64, batch_size: int = 8,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per corpus: windows and tokens scored, perplexity, bits per byte."""
    if data.valid_fraction <= 0:
        raise ScifmError("the run holds out no data (data.valid_fraction is 0): held-out "
                         "perplexity needs a run trained with data.valid_fraction > 0")  # fmt: skip
    if data.seq_len > model.cfg.max_seq_len:
        raise ScifmError(f"data.seq_len {data.seq_len} exceeds the model's max_seq_len "
                         f"{model.cfg.max_seq_len}")  # fmt: skip
    sampler = BlendedSampler.from_config(data)
    rows = []
    for corpus, name in enumerate(sampler.mixture.names):
        windows = torch.from_numpy(sampler.heldout_samples(corpus, max_windows))
        row: dict[str, Any] = {"corpus": name, "windows": len(windows),
                               "tokens": int(windows[:, 1:].numel())}  # fmt: skip
        if len(windows):
            nll = window_nll(model, windows, batch_size)
            text_bytes = len(decode(windows[:, 1:].flatten().tolist()).encode("utf-8"))
            row["perplexity"] = round(math.exp(nll / row["tokens"]), 4)
            row["bits_per_byte"] = round(nll / math.log(2) / max(1, text_bytes), 4)
        rows.append(row)
    return rows
