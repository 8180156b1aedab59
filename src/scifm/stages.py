"""Stage entry points: each reads the previous stage's artifact and writes its own.

These are the functions the CLI and the demo call. Each one is a thin composition of its
stage's package (`curate`, `tokens`, `data`, `model`, `train`, `checkpoint`), so a stage can
be run, tested or replaced from its input artifact alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scifm.checkpoint import latest_checkpoint, load_checkpoint
from scifm.convert.export import DTYPES as TORCH_DTYPES
from scifm.convert.load import load_model
from scifm.core.errors import ScifmError
from scifm.core.progress import track
from scifm.curate.jsonl import list_corpus_files, read_documents
from scifm.data import BlendedSampler, DataConfig
from scifm.data.mixture import mixture_table
from scifm.model import ModelConfig, build_model, count_params
from scifm.model.generate import SamplingConfig, generate
from scifm.model.llama import Llama, num_params
from scifm.tokens.format import IndexedTokens
from scifm.tokens.pipeline import tokenize_files
from scifm.tokens.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer
from scifm.tokens.writer import TokenizeConfig


def _texts(paths: Sequence[Path], text_field: str = "text") -> Iterator[str]:
    for path in paths:
        for document in read_documents(path, text_field=text_field):
            yield document.text


def corpus_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Every JSONL file named by `inputs` (files, or directories of shards), in order."""
    if not inputs:
        raise ScifmError("no input corpora given: pass JSONL files or directories of shards")
    return [f for item in inputs for f in list_corpus_files(Path(item))]


def tokenizer_train(cfg: TokenizerConfig, inputs: Sequence[str | Path], out: Path) -> Tokenizer:
    """Train a byte-level BPE on the text of every input corpus -> tokenizer.json."""
    files = corpus_files(inputs)
    return train_tokenizer(cfg, _texts(files), out)


def tokenize_corpus(
    cfg: TokenizeConfig, inputs: Sequence[str | Path], tokenizer_path: Path, prefix: Path
) -> dict[str, Any]:
    """Tokenize one corpus -> PREFIX.bin/.idx/.rejects.jsonl/.manifest.json; returns the stats.

    Inputs are JSONL, text or Parquet files (or directories of them); the work is sharded over
    `cfg.workers` processes and any launcher's ranks, and resumes after an interruption.
    """
    return tokenize_files(cfg, inputs, tokenizer_path, prefix)


def inspect_tokens(prefix: str, tokenizer_path: Path | None = None) -> dict[str, Any]:
    """Counts, dtype, length statistics and a decoded sample of one .bin/.idx pair."""
    indexed = IndexedTokens(prefix)
    sizes = np.asarray(indexed.sizes, dtype=np.int64)
    info: dict[str, Any] = {
        "prefix": str(prefix),
        "dtype": str(indexed.dtype),
        "sequences": len(indexed),
        "documents": len(indexed.doc_idx) - 1,
        "tokens": int(indexed.num_tokens),
    }
    if len(sizes):
        quantiles = np.percentile(sizes, [50, 90, 99])
        info["length"] = {
            "min": int(sizes.min()), "mean": round(float(sizes.mean()), 1),
            "p50": int(quantiles[0]), "p90": int(quantiles[1]), "p99": int(quantiles[2]),
            "max": int(sizes.max()),
        }  # fmt: skip
        first = [int(t) for t in indexed.get(0, 0, min(64, int(sizes[0])))]
        info["sample_ids"] = first
        if tokenizer_path is not None:
            info["sample_text"] = Tokenizer.load(tokenizer_path).decode(first)
    return info


def count_params_on_meta(cfg: ModelConfig) -> int:
    """Parameters of the model built on the meta device (no memory), checked against the formula."""
    with torch.device("meta"):
        model = Llama(cfg)
    counted = num_params(model)
    if counted != count_params(cfg):
        raise RuntimeError(f"parameter formula {count_params(cfg)} != module count {counted}")
    return counted


def load_trained_model(run_dir: Path, model_cfg: ModelConfig) -> torch.nn.Module:
    """The model weights of a run's latest checkpoint."""
    found = latest_checkpoint(run_dir)
    if found is None:
        raise ScifmError(f"{run_dir}: no complete checkpoint found; train first")
    model = build_model(model_cfg, device="cpu", seed=None)
    state = {"model": model.state_dict()}
    load_checkpoint(found.path, state)
    model.load_state_dict(state["model"])
    return model.eval()


def generate_samples(
    model: torch.nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int
) -> list[dict[str, str]]:
    """Greedy continuations of the prompts, decoded together in one batch."""
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    ids = [tokenizer.encode(prompt) for prompt in prompts]
    done = generate(model, ids, sampling, eos_id=tokenizer.eos_id, decode=tokenizer.decode)
    return [{"prompt": p, "completion": c.text or ""} for p, c in zip(prompts, done, strict=True)]


def generate_completions(
    model_path: Path, prompts: Sequence[str], sampling: SamplingConfig, *,
    tokenizer: Path | None = None, batch_size: int = 16, device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, Any]:  # fmt: skip
    """Complete `prompts` with MODEL (a run, a checkpoint or a Hugging Face directory).

    Prompts go through the model `batch_size` at a time with a KV cache. Returns each
    completion with its finish reason and token count, and the throughput.
    """
    if not prompts:
        raise ScifmError("no prompts given: pass them as arguments or with --prompts-file")
    if dtype not in TORCH_DTYPES:
        raise ScifmError(f"dtype {dtype!r} is not one of {sorted(TORCH_DTYPES)}")
    model, tok = load_model(model_path, tokenizer)
    if sampling.max_new_tokens >= model.cfg.max_seq_len:
        raise ScifmError(f"max_new_tokens={sampling.max_new_tokens} leaves no room for a prompt: "
                         f"the model's max_seq_len is {model.cfg.max_seq_len}")  # fmt: skip
    encoded = [tok.encode(prompt) for prompt in prompts]
    if empty := [p for p, ids in zip(prompts, encoded, strict=True) if not ids]:
        raise ScifmError(f"prompt {empty[0]!r} has no tokens; give some text")
    model.to(device).cast_weights(TORCH_DTYPES[dtype])
    completions: list[dict[str, Any]] = []
    start = time.perf_counter()
    with track(len(prompts), "generate") as bar:
        for first in range(0, len(prompts), batch_size):
            chunk = prompts[first : first + batch_size]
            ids = encoded[first : first + batch_size]
            done = generate(model, ids, sampling, eos_id=tok.eos_id, decode=tok.decode)
            completions += [
                {"prompt": p, "completion": c.text, "finish_reason": c.finish_reason,
                 "new_tokens": len(c.ids)} for p, c in zip(chunk, done, strict=True)
            ]  # fmt: skip
            bar.advance(len(chunk))
    seconds = time.perf_counter() - start
    new_tokens = sum(c["new_tokens"] for c in completions)
    return {"completions": completions, "seconds": round(seconds, 3), "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / seconds, 1) if seconds else None}  # fmt: skip


def evaluate_model(
    model_path: Path, task_specs: Sequence[str], *, out: Path | None = None,
    limit: int | None = None, shots: Sequence[int] | None = None, batch_size: int = 16,
    tokenizer: Path | None = None, device: str = "cpu", contamination: bool = False,
    reliability: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Score MODEL on tasks (`heldout`, built-in names, task YAML or questions JSONL files);
    write results.json, results.md and per-question samples to `out` (default MODEL/eval).
    `shots` evaluates every task at each of these few-shot counts (a shots curve);
    `contamination` also checks the tasks' questions against the run's training corpora;
    `reliability` repeats each task under its other prompt wordings (and few-shot seeds)."""
    from scifm.eval.run import evaluate, write_results
    from scifm.eval.tasks import resolve_task

    if not task_specs:
        raise ScifmError("no tasks given: pass --tasks, e.g. --tasks heldout,sciq,arc_easy")
    tasks = [resolve_task(spec) for spec in task_specs if spec != HELDOUT]
    if shots:
        tasks = [task.model_copy(update={"num_fewshot": k}) for task in tasks for k in shots]
    needs_data = HELDOUT in task_specs or contamination
    data = _run_data_config(model_path) if needs_data else None
    model, tok = load_model(model_path, tokenizer)
    model.to(device)
    heldout = None
    if data is not None and HELDOUT in task_specs:
        from scifm.eval.perplexity import heldout_perplexity

        heldout = heldout_perplexity(model, data, tok.decode)
    overlap = _contamination(tasks, data) if contamination and data is not None else None
    results = evaluate(model, tok, tasks, limit, batch_size)
    reliable = None
    if reliability:
        from scifm.eval.run import reliability as measure_reliability

        def run(variant: Any) -> Any:
            return evaluate(model, tok, [variant], limit, batch_size)[0]

        reliable = [measure_reliability(run, task) for task in tasks]
    if out is None:
        step = model_path.name.startswith("step-")
        out = model_path.parent.parent / "eval" / model_path.name if step else model_path / "eval"
    meta = {"model": str(model_path), "limit": limit, "batch_size": batch_size}
    write_results(out, results, meta, heldout, overlap, reliable)
    return {"out": str(out), "heldout": heldout or [], "tasks": [r.summary() for r in results],
            "contamination": overlap, "reliability": reliable or []}  # fmt: skip


def _contamination(tasks: Sequence[Any], data: DataConfig) -> dict[str, Any]:
    """13-gram overlap of every task's questions with the run's training corpora."""
    from scifm.eval.contamination import contamination_report, corpus_inputs
    from scifm.eval.tasks import task_documents

    sampler = BlendedSampler.from_config(data)
    corpora: dict[str, tuple[list[Path], str]] = {}
    for corpus in sampler.mixture.corpora:
        inputs = [corpus_inputs(f.bin_path.with_suffix(".manifest.json")) for f in corpus.files]
        corpora[corpus.name] = ([p for files, _ in inputs for p in files], inputs[0][1])
    unique = {task.name: task for task in tasks}  # one per name, whatever its shots
    benchmarks = {name: task_documents(task) for name, task in unique.items()}
    return contamination_report(benchmarks, corpora)


def evaluate_run_series(
    run_dir: Path, task_specs: Sequence[str], prompts: Sequence[str], *,
    limit: int | None = None, shots: Sequence[int] | None = None, batch_size: int = 16,
    max_new_tokens: int = 24,
) -> dict[str, Any]:  # fmt: skip
    """Every complete checkpoint of a run: the tasks, greedy answers to `prompts`, and the
    series against tokens seen (RUN/eval/series/: JSON, Markdown, PNG)."""
    from scifm.checkpoint import list_checkpoints
    from scifm.eval.series import evaluate_series

    if not run_dir.is_dir():
        raise ScifmError(f"{run_dir}: no such run directory")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise ScifmError(f"{run_dir}: no complete checkpoint to evaluate; train first")
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)

    def evaluate(path: Path) -> dict[str, Any]:
        return evaluate_model(path, task_specs, out=run_dir / "eval" / path.name, limit=limit,
                              shots=shots, batch_size=batch_size)  # fmt: skip

    def answers(path: Path) -> list[dict[str, str]]:
        done = generate_completions(path, prompts, sampling)["completions"]
        return [{"prompt": c["prompt"], "completion": c["completion"]} for c in done]

    return evaluate_series(checkpoints, evaluate, answers, run_dir / "eval" / "series")


HELDOUT = "heldout"
"""The task name for perplexity and bits per byte on each training corpus's held-out split."""


def _run_data_config(model_path: Path) -> DataConfig:
    from scifm.convert.load import find_checkpoint, is_hf_dir

    if is_hf_dir(model_path):
        raise ScifmError(f"{model_path}: a Hugging Face directory records no training data; "
                         "evaluate held-out perplexity on the scifm run or checkpoint")  # fmt: skip
    metadata = find_checkpoint(model_path).metadata
    if "data" not in metadata:
        raise ScifmError(f"{model_path}: the checkpoint records no data config")
    return DataConfig.from_dict(metadata["data"], source=f"{model_path} metadata")


def inspect_mixture(cfg: DataConfig, token_budget: int | None = None) -> dict[str, Any]:
    """The mixture as rows (corpus, files, documents, tokens, weight, epochs) and totals."""
    sampler = BlendedSampler.from_config(cfg)  # validates every file and the corpus sizes
    rows = mixture_table(sampler.mixture)
    weights = sampler.mixture.weights.tolist()
    for row, samples, weight in zip(rows, sampler.samples_per_epoch.tolist(), weights, strict=True):
        row["samples_per_epoch"] = samples
        if token_budget is not None:  # epochs of the training split (held-out tokens excluded)
            row["epochs"] = round(token_budget * weight / (samples * cfg.seq_len), 4)
    return {
        "corpora": rows,
        "files": sum(r["files"] for r in rows),
        "documents": sum(r["documents"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "dtype": str(sampler.mixture.dtype),
        "tokenizer_sha256": sampler.mixture.tokenizer_sha256,
        "seq_len": cfg.seq_len,
    }
