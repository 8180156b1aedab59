"""The code version recorded in checkpoints: the package version plus, from a git checkout,
the commit (and `-dirty` when files differ from it), so a run can be traced to its code."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import scifm


@functools.cache
def code_version() -> str:
    source = Path(scifm.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=source, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return scifm.__version__
    return f"{scifm.__version__}+g{commit}" if commit else scifm.__version__
