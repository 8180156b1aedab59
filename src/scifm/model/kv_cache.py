"""Keys and values kept between forward passes, for incremental decoding.

Without a cache, generating n tokens reruns the model over the whole context n times. With
one, the prompt is run once (prefill) and each new token is a forward pass over one
position whose attention reads the keys and values stored so far.

A batch of prompts of different lengths is left-padded to a common length, so every row
appends its new token at the same column. Per row, position ids start at the first real
token (RoPE sees the same positions as for the prompt alone), and padding columns are
masked out of every real token's attention. A padding query attends to itself only, so
its (ignored) output stays finite.

The cache is passed to `Llama.forward(tokens, cache=...)`; without it the model computes
exactly as in training. `begin(new)` prepares the positions and mask of the next `new`
columns, each attention layer stores and reads its slice through `layer(i)`, and `end()`
advances the length.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from scifm.model.config import ModelConfig


class LayerCache:
    """One layer's view of a `KVCache`: stores new keys/values, returns all of them so far."""

    def __init__(self, cache: KVCache, index: int) -> None:
        self.cache, self.index = cache, index

    @property
    def mask(self) -> torch.Tensor | None:
        return self.cache.mask

    @property
    def causal(self) -> bool:
        return self.cache.causal

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys/values [B, kv_heads, T, head_dim] of the new columns -> those of every column."""
        start = self.cache.length
        end = start + keys.shape[2]
        stored_k, stored_v = self.cache.keys[self.index], self.cache.values[self.index]
        stored_k[:, :, start:end] = keys
        stored_v[:, :, start:end] = values
        return stored_k[:, :, :end], stored_v[:, :, :end]


class KVCache:
    """Every layer's keys and values for `batch` left-padded rows, up to `capacity` columns."""

    def __init__(self, cfg: ModelConfig, pad_lengths: list[int], capacity: int, *,
                 device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        if capacity > cfg.max_seq_len:
            raise ValueError(f"a cache of {capacity} positions exceeds max_seq_len="
                             f"{cfg.max_seq_len}")  # fmt: skip
        shape = (len(pad_lengths), cfg.kv_heads, capacity, cfg.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.capacity = capacity
        self.pad_lengths = torch.tensor(pad_lengths, dtype=torch.long, device=device)
        self.padded = any(pad_lengths)
        self.last_position = cfg.max_seq_len - 1
        self.length = 0
        self.mask: torch.Tensor | None = None
        self.causal = False

    def begin(self, new: int) -> torch.Tensor:
        """Prepare `new` columns: returns their position ids [B, new]; sets the mask."""
        start, end = self.length, self.length + new
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; {end} were asked for")
        device = self.pad_lengths.device
        rows = torch.arange(start, end, device=device)
        self.causal = not self.padded and start == 0 and new > 1
        self.mask = None
        if self.padded or (start > 0 and new > 1):
            cols = torch.arange(end, device=device)
            allowed = (cols[None, :] <= rows[:, None])[None] & (
                cols[None, None, :] >= self.pad_lengths[:, None, None])  # fmt: skip
            allowed |= (cols[None, :] == rows[:, None])[None]  # padding queries: themselves
            self.mask = allowed[:, None]  # [B, 1, new, end]
        # padding gets position 0; a row's right padding (a shorter continuation than its
        # batch's longest, when scoring) may run past the window: clamped, never read
        return (rows[None, :] - self.pad_lengths[:, None]).clamp(0, self.last_position)

    def select(self, rows: list[int], capacity: int | None = None) -> KVCache:
        """A new cache whose row i continues row `rows[i]` of this one (rows may repeat).

        For scoring several continuations of one shared context: the context is run once,
        then its keys and values are copied to one row per continuation.
        """
        index = torch.tensor(rows, dtype=torch.long, device=self.pad_lengths.device)
        chosen = copy.copy(self)
        chosen.capacity = capacity or self.capacity
        width = chosen.capacity - self.length
        chosen.keys, chosen.values = [
            [F.pad(t.index_select(0, index)[:, :, : self.length], (0, 0, 0, width)) for t in ts]
            for ts in (self.keys, self.values)
        ]  # fmt: skip
        chosen.pad_lengths = self.pad_lengths.index_select(0, index)
        chosen.padded = bool(chosen.pad_lengths.any())
        return chosen

    def layer(self, index: int) -> LayerCache:
        return LayerCache(self, index)

    def end(self, new: int) -> None:
        self.length += new
