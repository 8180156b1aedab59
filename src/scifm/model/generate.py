"""Greedy decoding for one prompt: simple and exact, for samples and smoke tests.

No KV cache: every step reruns the model on the whole (truncated) context, which costs
O(new_tokens * context) forward passes' worth of work. Fine for a few dozen tokens from a
small model; `scifm.serve` is where a cached, batched engine belongs.
"""

from __future__ import annotations

import torch
from torch import nn


def greedy_generate(
    model: nn.Module, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None = None
) -> list[int]:
    """Append the most likely token `max_new_tokens` times; return only the new tokens.

    The context fed to the model is the last `model.cfg.max_seq_len` tokens. Padded
    vocabulary rows (ids >= `vocab_size`) are never chosen. Generation stops early after
    producing `eos_id`, which is not included in the result. The model's train/eval mode is
    left as it is (Llama has no dropout).
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; greedy generation needs at least one token")
    cfg = model.cfg
    device = next(model.parameters()).device
    tokens = list(prompt_ids)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            context = torch.tensor([tokens[-cfg.max_seq_len :]], dtype=torch.long, device=device)
            logits = model(context)[0, -1, : cfg.vocab_size]
            next_id = int(logits.argmax())
            if eos_id is not None and next_id == eos_id:
                break
            tokens.append(next_id)
            new.append(next_id)
    return new
