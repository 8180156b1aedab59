"""Parallelism applied from outside a plain model: layout config, device mesh, FSDP2/HSDP."""

from scifm.parallel.config import ParallelConfig

__all__ = ["ParallelConfig"]
