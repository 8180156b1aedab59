"""Rank-aware logging: rank 0 logs INFO through rich; other ranks only warnings, prefixed.

Every module asks `get_logger(__name__)`; `setup_logging()` is called once per process and
takes the rank from the launcher. Logs and progress go to stderr, results to stdout.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from scifm.core.dist import detect_launch

_ROOT = "scifm"
console = Console(stderr=True, highlight=False)
"""Logs and progress bars: stderr, so a command's result on stdout stays clean."""
output = Console(stderr=False, highlight=False, soft_wrap=True)
"""A command's result (JSON, tables, printed configs)."""


def setup_logging(rank: int | None = None, level: int = logging.INFO) -> None:
    rank = detect_launch().rank if rank is None else rank
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
