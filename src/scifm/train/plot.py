"""Loss and throughput curves of a run, drawn from metrics.jsonl to a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path
from scifm.train.metrics import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss and tokens/s against tokens seen; returns the PNG path."""
    run = Path(run_dir)
    records = read_metrics(run / "metrics.jsonl")
    if not records:
        raise ScifmError(f"{run}: no metrics.jsonl records to plot (is this a run directory?)")
    target = Path(out) if out else run / "loss.png"
    tokens = [r["tokens_seen"] for r in records]
    fig, (ax_loss, ax_speed) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(tokens, [r["loss"] for r in records], marker=".")
    ax_loss.set(xlabel="tokens seen", ylabel="training loss (nats/token)", title="loss")
    ax_speed.plot(tokens, [r["tokens_per_s"] for r in records], marker=".", color="tab:green")
    ax_speed.set(xlabel="tokens seen", ylabel="tokens/s", title="throughput")
    for axis in (ax_loss, ax_speed):
        axis.grid(alpha=0.3)
    fig.suptitle(run.name)
    fig.tight_layout()
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return target
