"""Training curves of a run, drawn from RUN/metrics.jsonl into one PNG (RUN/loss.png).

Panels: loss, throughput (tokens/s), learning rate and gradient norm, each against tokens
seen (steps, for records without `tokens_seen`). A panel whose key no record has (runs
written by older versions) is left out; the grid has two columns and as many rows as the
panels need, each panel 5 x 4 inches at 100 dpi (four panels: 1000 x 800 pixels).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import EngFormatter

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path
from scifm.train.metrics import read_metrics

DPI = 100
PANEL_INCHES = (5.0, 4.0)
# (record key, y label, title, colour, y axis from zero)
PANELS = (
    ("loss", "training loss (nats/token)", "loss", "tab:blue", False),
    ("tokens_per_s", "tokens/s", "throughput", "tab:green", True),
    ("lr", "learning rate", "learning rate", "tab:orange", True),
    ("grad_norm", "global gradient norm", "gradient norm", "tab:red", False),
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if _number(value) else None


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's curves into `out` (default RUN/loss.png); returns the PNG path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ScifmError(f"{run}: not a directory; pass a run directory (train.out_dir)")
    records = read_metrics(run / "metrics.jsonl")
    if not records:
        raise ScifmError(f"{run}: no metrics.jsonl records to plot (is this a run directory?)")
    x_key = "tokens_seen" if any(_number(r.get("tokens_seen")) for r in records) else "step"
    panels = [p for p in PANELS if any(_number(r.get(p[0])) for r in records)]
    if not panels:
        keys = ", ".join(p[0] for p in PANELS)
        raise ScifmError(f"{run}/metrics.jsonl: no records with any of {keys} to plot")
    target = Path(out) if out else run / "loss.png"
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    width, height = PANEL_INCHES
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    try:
        for axis, (key, ylabel, title, colour, from_zero) in zip(axes.flat, panels, strict=False):
            points = [(_float(r, x_key), _float(r, key)) for r in records]
            xs = [x for x, y in points if x is not None and y is not None]
            ys = [y for x, y in points if x is not None and y is not None]
            axis.plot(xs, ys, marker="." if len(xs) <= 200 else None, color=colour)
            axis.set(xlabel=x_key.replace("_", " "), ylabel=ylabel, title=title)
            axis.xaxis.set_major_formatter(EngFormatter())
            if from_zero and ys and max(ys) > 0:
                axis.set_ylim(0, 1.08 * max(ys))
            axis.grid(alpha=0.3)
        for axis in list(axes.flat)[len(panels) :]:
            axis.set_visible(False)
        fig.suptitle(run.resolve().name)
        fig.tight_layout()
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return target
