"""Rank-aware logging: rank 0 logs INFO through rich; other ranks only warnings, prefixed.

Every module asks `get_logger(__name__)`; `setup_logging(rank)` is called once per process.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

_ROOT = "scifm"
console = Console(stderr=False, highlight=False)


def setup_logging(rank: int = 0, level: int = logging.INFO) -> None:
    root = logging.getLogger(_ROOT)
    root.handlers.clear()
    root.propagate = False
    if rank == 0:
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, show_time=False, markup=False
        )
        root.setLevel(level)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(message)s"))
        root.setLevel(max(level, logging.WARNING))
    root.addHandler(handler)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")
