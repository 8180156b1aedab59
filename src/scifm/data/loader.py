"""The rank-sharded, stateful torch pipeline over the blended sampler.

Global batch g is global samples [g*B, (g+1)*B). Data-parallel rank r of R takes the
contiguous slice [g*B + r*B/R, g*B + (r+1)*B/R) and reads it in micro-batches, so the rank
slices of a batch are disjoint and cover it, whatever R is. The whole position of the
pipeline is one number, `consumed_samples` (global, at a batch boundary): `state_dict()`
returns it and a loader built from it yields exactly the batches an uninterrupted run would
have seen next, at any world size that divides B.

Reading happens in `torch.utils.data` workers (each opens its own memory maps) with pinned
memory for accelerators; each micro-batch is fetched in one vectorised call
(`Dataset.__getitems__`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scifm.core.errors import ScifmError
from scifm.data.mixture import DataConfig
from scifm.data.sampler import BlendedSampler


class BlendedDataset(Dataset):
    """Map-style dataset: index = global sample number; the sampler is opened per process."""

    def __init__(self, cfg: DataConfig, vocab_size: int | None, doc_starts: bool = False,
                 blend_batch: int = 1) -> None:  # fmt: skip
        self.cfg, self.vocab_size, self.doc_starts = cfg, vocab_size, doc_starts
        self.blend_batch = blend_batch
        self._sampler: BlendedSampler | None = None

    @property
    def sampler(self) -> BlendedSampler:
        if self._sampler is None:
            self._sampler = BlendedSampler.from_config(self.cfg, self.vocab_size,
                                                       self.blend_batch)  # fmt: skip
        return self._sampler

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sampler": None}  # workers open their own maps

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([n])

    def __getitems__(self, numbers: list[int]) -> dict[str, torch.Tensor]:
        found = self.sampler.samples(np.asarray(numbers, dtype=np.int64), self.doc_starts)
        if self.doc_starts:
            tokens, starts = found
            return {"tokens": torch.from_numpy(tokens), "doc_starts": torch.from_numpy(starts)}
        return {"tokens": torch.from_numpy(found)}


class RankBatches(Sampler[list[int]]):
    """Micro-batches of global sample numbers for one data-parallel rank, from a position."""

    def __init__(self, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1,
                 consumed_samples: int = 0, total_samples: int | None = None) -> None:  # fmt: skip
        if micro_batch <= 0 or world <= 0 or not 0 <= rank < world:
            raise ScifmError(
                f"data-parallel rank {rank} of {world} with micro-batch {micro_batch}: need "
                "0 <= rank < world and a positive micro-batch"
            )
        per_rank, rest = divmod(global_batch, world)
        if rest or per_rank % micro_batch:
            raise ScifmError(
                f"global batch {global_batch} must split into {world} data-parallel ranks "
                f"of whole micro-batches of {micro_batch}"
            )
        if consumed_samples % global_batch:
            raise ScifmError(
                f"consumed_samples={consumed_samples} is not a multiple of the global batch "
                f"{global_batch}; resume at a global batch boundary"
            )
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.rank, self.per_rank = rank, per_rank
        self.start, self.total = consumed_samples, total_samples

    def __iter__(self) -> Iterator[list[int]]:
        first = self.start
        while self.total is None or first < self.total:
            lo = first + self.rank * self.per_rank
            for micro in range(lo, lo + self.per_rank, self.micro_batch):
                yield list(range(micro, micro + self.micro_batch))
            first += self.global_batch

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("an endless stream has no length")
        batches = max(0, -(-(self.total - self.start) // self.global_batch))
        return batches * self.per_rank // self.micro_batch


def _worker_message(text: str) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker."""
    marker = "ScifmError: "
    return text[text.rindex(marker) + len(marker) :].strip() if marker in text else text


def _collated(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # __getitems__ already returns the stacked micro-batch


class TokenLoader:
    """Iterates micro-batches ({"tokens": int64 [micro, seq_len + 1]}) and tracks its position."""

    def __init__(self, cfg: DataConfig, global_batch: int, micro_batch: int, *, rank: int = 0,
                 world: int = 1, consumed_samples: int = 0, vocab_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, doc_starts: bool = False,
                 total_samples: int | None = None) -> None:  # fmt: skip
        self.dataset = BlendedDataset(cfg, vocab_size, doc_starts, blend_batch=global_batch)
        self.global_batch, self.world = global_batch, world
        self._batches = RankBatches(global_batch, micro_batch, rank, world, consumed_samples,
                                    total_samples)  # fmt: skip
        self._micro_per_batch = self._batches.per_rank // micro_batch
        self._start = consumed_samples
        self._yielded = 0
        self._loader = DataLoader(
            self.dataset,
            batch_sampler=self._batches,
            num_workers=num_workers,
            pin_memory=pin_memory,
            collate_fn=_collated,
            persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None,
        )
        self._iterator: Iterator[dict[str, torch.Tensor]] | None = None

    @property
    def sampler(self) -> BlendedSampler:
        return self.dataset.sampler

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        try:
            batch = next(self._iterator)
        except ScifmError as err:  # from a worker: torch prepends its traceback
            raise ScifmError(_worker_message(str(err))) from None
        self._yielded += 1
        return batch

    @property
    def consumed_samples(self) -> int:
        """Global samples of the completed global batches this rank has read."""
        return self._start + (self._yielded // self._micro_per_batch) * self.global_batch

    def state_dict(self) -> dict[str, int]:
        return {"consumed_samples": self.consumed_samples}
