"""`scifm demo`: every stage end to end on the embedded demo corpora, in a few minutes on CPU.

corpora (docstrings of installed packages) -> byte-level BPE tokenizer -> one .bin/.idx per
corpus -> weighted mixture -> a ~5M-parameter Llama trained in one process -> checkpoint ->
greedy samples -> a Hugging Face export checked against `transformers` -> OUT/report.json,
OUT/metrics.jsonl, OUT/loss.png and a summary table.

Each data stage records the config it ran with (OUT/.stages/NAME.json) and is skipped when
run again with the same config, so an interrupted demo resumes where it stopped; training
resumes from its latest checkpoint. Later stages of the project add themselves here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from scifm.checkpoint import list_checkpoints
from scifm.core.io import sha256_file, write_json, write_text
from scifm.core.logging import get_logger, output
from scifm.curate.demo import build_demo_corpora
from scifm.data.mixture import DataConfig
from scifm.model import ModelConfig
from scifm.recipe import Recipe
from scifm.stages import (
    generate_samples,
    inspect_mixture,
    load_trained_model,
    tokenize_corpus,
    tokenizer_train,
)
from scifm.tokens.tokenizer import Tokenizer
from scifm.tokens.writer import manifest_path
from scifm.train import TrainResult, train
from scifm.train.plot import plot_run

log = get_logger(__name__)


class DemoPaths:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.corpora = out / "data" / "corpora"
        self.tokenizer = out / "data" / "tokenizer" / "tokenizer.json"
        self.tokens = out / "data" / "tokens"
        self.mixture = out / "data" / "mixture.txt"
        self.stamps = out / ".stages"

    def prefix(self, corpus: str) -> Path:
        return self.tokens / corpus


def _run_stage(paths: DemoPaths, name: str, config: Any, done: Path, work: Callable[[], Any]):
    """Run `work` unless `done` exists and was made with the same config (resume)."""
    stamp = paths.stamps / f"{name}.json"
    if done.exists() and stamp.is_file() and json.loads(stamp.read_text()) == config:
        log.info("%s: up to date (%s), skipped", name, done)
        return
    log.info("%s ...", name)
    work()
    write_json(stamp, config)


def _data_stages(recipe: Recipe, paths: DemoPaths) -> list[str]:
    names = list(recipe.corpus.corpora)
    manifest = paths.corpora / "manifest.json"
    _run_stage(paths, "corpora", recipe.corpus.to_dict(), manifest,
               lambda: build_demo_corpora(recipe.corpus, paths.corpora))  # fmt: skip
    corpus_dirs = [paths.corpora / name for name in names]
    corpora_hash = sha256_file(manifest)  # upstream changes invalidate what follows
    _run_stage(paths, "tokenizer", {**recipe.tokenizer.to_dict(), "corpora": corpora_hash},
               paths.tokenizer,
               lambda: tokenizer_train(recipe.tokenizer, corpus_dirs, paths.tokenizer))  # fmt: skip
    tokenizer_hash = Tokenizer.load(paths.tokenizer).sha256
    for name in names:
        prefix = paths.prefix(name)
        config = {**recipe.tokenize.to_dict(), "tokenizer": tokenizer_hash,
                  "corpora": corpora_hash}  # fmt: skip
        _run_stage(paths, f"tokenize-{name}", config, manifest_path(prefix),
                   lambda n=name, p=prefix: tokenize_corpus(
                       recipe.tokenize, [paths.corpora / n], paths.tokenizer, p))  # fmt: skip
    return names


def demo_mixture(recipe: Recipe, paths: DemoPaths, names: list[str]) -> DataConfig:
    """Write the demo's mixture file (AuroraGPT form) and point the data section at it."""
    lines = ["# weight prefix corpus (prefixes relative to this file)"]
    lines += [f"{recipe.demo.weights[n]} tokens/{n} {n}" for n in names
              if recipe.demo.weights.get(n, 0) > 0]  # fmt: skip
    write_text(paths.mixture, "\n".join(lines) + "\n")
    update = {"mixture": str(paths.mixture), "corpora": [], "tokenizer": str(paths.tokenizer)}
    return DataConfig.from_dict({**recipe.data.to_dict(), **update}, source="demo data")


def demo_model(recipe: Recipe, tokenizer: Tokenizer) -> ModelConfig:
    return ModelConfig.from_dict({**recipe.model.to_dict(), "vocab_size": tokenizer.vocab_size})


def run_demo(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Run every stage into `out`; returns the report (also written to OUT/report.json)."""
    paths = DemoPaths(out)
    names = _data_stages(recipe, paths)
    tokenizer = Tokenizer.load(paths.tokenizer)
    data_cfg = demo_mixture(recipe, paths, names)
    model_cfg = demo_model(recipe, tokenizer)
    train_cfg = recipe.train.model_copy(update={"out_dir": str(out)})
    log.info("train: %s", out)
    result = train(model_cfg, data_cfg, train_cfg, {"tokenizer_sha256": tokenizer.sha256})
    model = load_trained_model(out, model_cfg)
    samples = generate_samples(model, tokenizer, recipe.demo.prompts, recipe.demo.max_new_tokens)
    plot = plot_run(out)
    mixture = inspect_mixture(data_cfg, result.tokens_seen)
    report = _report(result, mixture, samples, plot)
    report.update(_checkpoint_summary(out))
    report.update(_export_and_verify(out, paths, recipe))
    report.update(_evaluate(out, recipe))
    write_json(out / "report.json", report)
    _print_summary(report)
    return report


def _report(result: TrainResult, mixture: dict, samples: list, plot: Path) -> dict:
    return {
        "first_loss": round(result.first_loss, 4),
        "last_loss": round(result.last_loss, 4),
        "loss_drop": round(result.first_loss - result.last_loss, 4),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "num_params": result.num_params,
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "train_seconds": round(result.elapsed_s, 1),
        "mixture": {
            row["corpus"]: {k: row[k] for k in ("weight", "tokens", "epochs")}
            for row in mixture["corpora"]
        },
        "checkpoint": str(result.checkpoint),
        "loss_plot": str(plot),
        "samples": samples,
    }


def _checkpoint_summary(out: Path) -> dict[str, Any]:
    """What retention kept, the size of one checkpoint, and the steps the anomaly policy
    handled (0 in a healthy run)."""
    kept = list_checkpoints(out)
    final = kept[-1].metadata
    return {
        "checkpoints_kept": ", ".join(c.path.name for c in kept),
        "checkpoint_mb": round(sum(final["files"].values()) / 2**20, 1),
        "bad_steps": final["bad_steps"],
    }


def _export_and_verify(out: Path, paths: DemoPaths, recipe: Recipe) -> dict[str, Any]:
    """The model as a Hugging Face directory, checked against transformers by numbers."""
    from scifm.convert.export import export_hf

    hf_dir = export_hf(out, out / "hf", paths.tokenizer)
    try:
        import transformers  # noqa: F401 - only to know whether verify can run
    except ImportError:
        return {"hf_export": str(hf_dir), "export_verify": "skipped: pip install 'scifm[test]'"}
    from scifm.convert.verify import verify_export

    check = verify_export(hf_dir, recipe.demo.prompts, recipe.demo.max_new_tokens)
    verdict = (f"identical (max |logit diff| {check['max_abs_diff']:.1e}, greedy agreement "
               f"{check['greedy_agreement']:.0%})")  # fmt: skip
    return {"hf_export": str(hf_dir), "export_verify": verdict}


def _evaluate(out: Path, recipe: Recipe) -> dict[str, Any]:
    """Held-out perplexity per corpus and science benchmarks, 0-shot (`scifm eval`)."""
    from scifm.stages import evaluate_model

    if not recipe.demo.eval_tasks:
        return {}
    log.info("eval: %s", ", ".join(recipe.demo.eval_tasks))
    result = evaluate_model(out, recipe.demo.eval_tasks, out=out / "eval",
                            limit=recipe.demo.eval_limit, contamination=True)  # fmt: skip
    summary: dict[str, Any] = {"eval": result["out"]}
    for row in result["heldout"]:
        summary[f"bpb_{row['corpus']}"] = row.get("bits_per_byte")
    for task in result["tasks"]:
        verdict = "near chance" if task["near_chance"] else "above chance"
        if task["acc"] < task["chance"] and not task["near_chance"]:
            verdict = "below chance"
        summary[f"{task['name']}_acc"] = (f"{task['acc']:.3f} ± {task['acc_stderr']:.3f} "
                                          f"({verdict}: {task['chance']:.2f})")  # fmt: skip
    for row in (result["contamination"] or {}).get("tasks", []):
        summary[f"{row['task']}_contaminated"] = (f"{row['flagged']} of {row['checkable']} "
                                                  "checkable questions")  # fmt: skip
    return summary


def _print_summary(report: dict[str, Any]) -> None:
    table = Table(title="scifm demo", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("num_params", "steps", "tokens_seen", "first_loss", "last_loss",
                "tokens_per_s", "train_seconds", "checkpoint", "checkpoints_kept",
                "checkpoint_mb", "bad_steps", "loss_plot", "hf_export",
                "export_verify"):  # fmt: skip
        table.add_row(key, str(report[key]))
    for key in report:
        if key == "eval" or key.startswith("bpb_") or key.endswith(("_acc", "_contaminated")):
            table.add_row(key, str(report[key]))
    output.print(table)
    mixture = Table(title="data mixture (implicit blended sampler)")
    for column in ("corpus", "weight", "tokens", "epochs seen"):
        mixture.add_column(column, justify="left" if column == "corpus" else "right")
    for name, row in report["mixture"].items():
        mixture.add_row(name, str(row["weight"]), f"{row['tokens']:,}", str(row["epochs"]))
    output.print(mixture)
    for sample in report["samples"]:
        output.print(f"{sample['prompt']} -> {sample['completion']!r}", markup=False)
