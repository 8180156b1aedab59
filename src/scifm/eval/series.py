"""A run followed through training: every saved checkpoint evaluated, metrics against tokens.

AuroraGPT followed its models through training, the same prompt answered at step 7,000,
12,000 ... 40,000. `scifm eval --run RUN` evaluates each complete checkpoint of RUN with
the same tasks (their per-checkpoint results in `RUN/eval/step-N/`), generates greedy
answers to the same science prompts from each, and writes to `RUN/eval/series/`:

- `series.json`: per checkpoint, its step, tokens seen, every metric and the generations;
- `series.md`: one table row per checkpoint, then each prompt's answers in order;
- `series.png`: each metric against tokens seen (one panel per task's accuracy, one for the
  held-out bits per byte of every corpus).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import EngFormatter

from scifm.core.io import atomic_dir, write_json

DPI = 100
PANEL_INCHES = (5.0, 4.0)


def point_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers one checkpoint's evaluation contributes to the series."""
    metrics = {f"{t['name']}/acc": t["acc"] for t in result["tasks"]}
    metrics.update({f"{t['name']}/acc_norm": t["acc_norm"] for t in result["tasks"]})
    for row in result["heldout"]:
        if "bits_per_byte" in row:
            metrics[f"heldout/{row['corpus']}/bits_per_byte"] = row["bits_per_byte"]
    return metrics


def plot_series(points: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy per task and held-out bits per byte per corpus against tokens seen."""
    tokens = [p["tokens_seen"] for p in points]
    keys = {k for p in points for k in p["metrics"]}
    names = sorted(k.rsplit("/", 1)[0] for k in keys if k.endswith("/acc"))
    bpb = sorted(k for k in keys if k.endswith("bits_per_byte"))
    panels: list[tuple[str, list[str]]] = [(n, [f"{n}/acc", f"{n}/acc_norm"]) for n in names]
    if bpb:
        panels.append(("held-out bits per byte", bpb))
    cols = min(2, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows))  # fmt: skip
    for ax, (title, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            ys = [p["metrics"].get(key, math.nan) for p in points]
            ax.plot(tokens, ys, marker="o", label=key.replace("heldout/", ""))
        ax.set_title(title)
        ax.set_xlabel("tokens seen")
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_results(tasks: list[dict[str, Any]], path: Path) -> Path:
    """One evaluation at a glance: accuracy per task (with two standard errors) and its
    chance level against the number of shots (a single point per task at one shot count)."""
    names = sorted({t["name"] for t in tasks})
    fig, ax = plt.subplots(figsize=PANEL_INCHES)
    for name in names:
        rows = sorted((t for t in tasks if t["name"] == name), key=lambda t: t["num_fewshot"])
        shots = [t["num_fewshot"] for t in rows]
        line = ax.errorbar(shots, [t["acc"] for t in rows], marker="o", capsize=3,
                           yerr=[2 * t["acc_stderr"] for t in rows], label=name)  # fmt: skip
        ax.plot(shots, [t["chance"] for t in rows], linestyle="--", linewidth=1,
                color=line[0].get_color())  # fmt: skip
    ax.set_xlabel("shots")
    ax.set_ylabel("accuracy (dashed: chance)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def series_markdown(points: list[dict[str, Any]]) -> str:
    keys = sorted({k for p in points for k in p["metrics"]})
    lines = ["| step | tokens seen | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]  # fmt: skip
    for p in points:
        values = [f"{p['metrics'][k]:.4f}" if k in p["metrics"] else "-" for k in keys]
        lines.append(f"| {p['step']} | {p['tokens_seen']:,} | " + " | ".join(values) + " |")
    prompts = [g["prompt"] for g in points[0]["generations"]] if points else []
    for i, prompt in enumerate(prompts):
        lines += ["", f"**{prompt}**", ""]
        lines += [f"- step {p['step']}: {p['generations'][i]['completion']!r}" for p in points]
    return "\n".join(lines) + "\n"


def evaluate_series(checkpoints: list[Any], evaluate: Callable[[Path], dict[str, Any]],
                    generate: Callable[[Path], list[dict[str, str]]],
                    out: Path) -> dict[str, Any]:  # fmt: skip
    """Evaluate and sample every checkpoint (oldest first); write OUT/series.*."""
    points = []
    for found in checkpoints:
        result = evaluate(found.path)
        points.append({"step": found.step, "tokens_seen": found.metadata.get("tokens_seen", 0),
                       "checkpoint": str(found.path), "metrics": point_metrics(result),
                       "generations": generate(found.path)})  # fmt: skip
    with atomic_dir(out) as tmp:
        write_json(tmp / "series.json", {"points": points})
        (tmp / "series.md").write_text(series_markdown(points), encoding="utf-8")
        plot_series(points, tmp / "series.png")
    return {"out": str(out), "points": points}


def read_series(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "series.json").read_text())["points"]
