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

A `BatchSchedule` may grow the global batch during training (Megatron's batch-size
ramp-up: from `start` by `increment` every `ramp_samples / increments` samples); the
position is still the one number `consumed_samples`, at a step boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class BatchSchedule:
    """Global batch size (samples) of the step that starts at `consumed_samples`.

    Without a ramp (`start` None) every step takes `final`. With one, the step starting at
    c < ramp_samples takes `start + increment * floor(c / (ramp_samples / increments))`,
    where increments = (final - start) / increment, and `final` from then on.
    """

    final: int
    start: int | None = None
    increment: int = 0
    ramp_samples: int = 0
    _ramp_steps: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.final <= 0:
            raise ScifmError(f"the global batch must be positive, got {self.final}")
        if self.start is None:
            return
        if not 0 < self.start < self.final or self.increment <= 0 or self.ramp_samples <= 0:
            raise ScifmError(
                f"batch ramp-up from {self.start} by {self.increment} over {self.ramp_samples} "
                f"samples to {self.final}: need 0 < start < final batch, increment > 0 and "
                "ramp_samples > 0"
            )
        if (self.final - self.start) % self.increment:
            raise ScifmError(
                f"batch ramp-up: final batch {self.final} - start {self.start} is not a "
                f"multiple of the increment {self.increment}; choose sizes that step evenly"
            )
        position = 0
        while position < self.ramp_samples:  # the step starts inside the ramp
            self._ramp_steps.append(position)
            position += self.size_at(position)
        self._ramp_steps.append(position)  # first step at the final size

    @property
    def sizes(self) -> list[int]:
        """Every global batch size the schedule uses."""
        if self.start is None:
            return [self.final]
        return list(range(self.start, self.final + 1, self.increment))

    def size_at(self, consumed_samples: int) -> int:
        if self.start is None or consumed_samples >= self.ramp_samples:
            return self.final
        increments = (self.final - self.start) // self.increment
        per_increment = self.ramp_samples / increments
        return self.start + self.increment * int(consumed_samples // per_increment)

    @property
    def ramp_steps(self) -> list[int]:
        """consumed_samples at the start of each ramp step, then of the first final-size step."""
        return list(self._ramp_steps)

    def position_after(self, steps: int) -> int:
        """consumed_samples after `steps` optimizer steps from the beginning."""
        ramp = self._ramp_steps
        if not ramp:
            return steps * self.final
        if steps < len(ramp):
            return ramp[steps]
        return ramp[-1] + (steps - len(ramp) + 1) * self.final

    def steps_before(self, consumed_samples: int) -> int | None:
        """The number of steps that end exactly at `consumed_samples`; None if none do."""
        ramp = self._ramp_steps
        if ramp and consumed_samples <= ramp[-1]:
            return ramp.index(consumed_samples) if consumed_samples in ramp else None
        base = ramp[-1] if ramp else 0
        steps, rest = divmod(consumed_samples - base, self.final)
        return None if rest else steps + (len(ramp) - 1 if ramp else 0)


class RankBatches(Sampler[list[int]]):
    """Micro-batches of global sample numbers for one data-parallel rank, from a position."""

    def __init__(self, global_batch: int | BatchSchedule, micro_batch: int, rank: int = 0,
                 world: int = 1, consumed_samples: int = 0,
                 total_samples: int | None = None) -> None:  # fmt: skip
        if micro_batch <= 0 or world <= 0 or not 0 <= rank < world:
            raise ScifmError(
                f"data-parallel rank {rank} of {world} with micro-batch {micro_batch}: need "
                "0 <= rank < world and a positive micro-batch"
            )
        schedule = global_batch if isinstance(global_batch, BatchSchedule) else None
        self.schedule = schedule or BatchSchedule(int(global_batch))
        for size in self.schedule.sizes:
            per_rank, rest = divmod(size, world)
            if rest or per_rank % micro_batch:
                raise ScifmError(
                    f"global batch {size} must split into {world} data-parallel ranks "
                    f"of whole micro-batches of {micro_batch}"
                )
        if self.schedule.steps_before(consumed_samples) is None:
            raise ScifmError(
                f"consumed_samples={consumed_samples} is not at a step boundary of the global "
                f"batch {self.schedule.final}; resume at a global batch boundary"
            )
        self.global_batch, self.micro_batch = self.schedule.final, micro_batch
        self.rank, self.world = rank, world
        self.per_rank = self.global_batch // world
        self.start, self.total = consumed_samples, total_samples

    def micro_batches_at(self, consumed_samples: int) -> int:
        """Micro-batches this rank reads in the step that starts at `consumed_samples`."""
        return self.schedule.size_at(consumed_samples) // self.world // self.micro_batch

    def __iter__(self) -> Iterator[list[int]]:
        first = self.start
        while self.total is None or first < self.total:
            size = self.schedule.size_at(first)
            per_rank = size // self.world
            lo = first + self.rank * per_rank
            for micro in range(lo, lo + per_rank, self.micro_batch):
                yield list(range(micro, micro + self.micro_batch))
            first += size

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("an endless stream has no length")
        count, first = 0, self.start
        while first < self.total:
            count += self.micro_batches_at(first)
            first += self.schedule.size_at(first)
        return count


def _worker_message(text: str) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker."""
    marker = "ScifmError: "
    return text[text.rindex(marker) + len(marker) :].strip() if marker in text else text


def _collated(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # __getitems__ already returns the stacked micro-batch


class TokenLoader:
    """Iterates micro-batches ({"tokens": int64 [micro, seq_len + 1]}) and tracks its position."""

    def __init__(self, cfg: DataConfig, global_batch: int | BatchSchedule, micro_batch: int, *,
                 rank: int = 0,
                 world: int = 1, consumed_samples: int = 0, vocab_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, doc_starts: bool = False,
                 total_samples: int | None = None) -> None:  # fmt: skip
        self._batches = RankBatches(global_batch, micro_batch, rank, world, consumed_samples,
                                    total_samples)  # fmt: skip
        self.global_batch, self.world = self._batches.global_batch, world
        self.dataset = BlendedDataset(cfg, vocab_size, doc_starts, blend_batch=self.global_batch)
        self._consumed = consumed_samples
        self._left_in_step = self._batches.micro_batches_at(consumed_samples)
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
        self._left_in_step -= 1
        if self._left_in_step == 0:  # this rank has read its slice of the step's global batch
            self._consumed += self._batches.schedule.size_at(self._consumed)
            self._left_in_step = self._batches.micro_batches_at(self._consumed)
        return batch

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of the next optimizer step (the rest of it, mid-step)."""
        return [next(self) for _ in range(self._left_in_step)]

    @property
    def batch_size(self) -> int:
        """Global batch (samples) of the next step."""
        return self._batches.schedule.size_at(self._consumed)

    @property
    def consumed_samples(self) -> int:
        """Global samples of the completed global batches this rank has read."""
        return self._consumed

    def state_dict(self) -> dict[str, int]:
        return {"consumed_samples": self.consumed_samples}
