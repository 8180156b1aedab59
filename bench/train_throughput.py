"""Training-step throughput on CPU: scifm's Llama against `transformers.LlamaForCausalLM`.

Both models have the same shape and the same weights (ours are built with
`build_model(cfg, seed=0)` and copied into the Hugging Face model by a state-dict key
mapping; our "half" RoPE convention is Hugging Face's, so no permutation), and both compute
the same function: the bench checks that their losses on the first batch agree within 1e-4
before timing anything, and reports both models' loss after one optimizer step too.

A step is forward + loss + backward + gradient clipping to 1.0 + `optimizer.step()` +
`zero_grad(set_to_none=True)`, on one fixed batch of random token ids ([micro_batch,
seq_len + 1] from a fixed seed: inputs are the first seq_len columns, labels the last
seq_len). Ours is the trainer's step: `scifm.train.step.LocalRunner` with
`scifm.train.loss.LanguageModelLoss` (cross entropy of the logits against the shifted
tokens, no z-loss). The Hugging Face model computes its own loss (`ForCausalLMLoss`, given
the shifted labels as `shift_labels`, so both average over the same seq_len positions).
Both are then clipped by `scifm.parallel.norms.clip_grad_norm` and stepped by
`torch.optim.AdamW(foreach=True)` with the trainer's defaults and groups (lr 3e-3, betas
(0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices, none on 1-D weights).

Timing: a warm-up of both, then `--repeats` rounds of `--steps` steps of each, the two
blocks alternating and the first of them alternating between rounds; tokens/s per block.
The reported figures are medians over the rounds (`ratio` is the median of the per-round
ratios ours / Hugging Face). Prints one JSON object.

The allocator: with glibc's default, dynamic thresholds, freed heap at the top is returned
to the OS whenever more than ~32 MB of it is free (the 16 MB logits-sized buffers of the
loss make that common), and the next step touches it again: thousands of page faults per
step (10-15 ms on 2 cores), for either model, in amounts that depend on the heap's layout
rather than on the model (`page_faults_per_step` reports them). `--malloc keep` (the
default) sets glibc's thresholds once at start (`mallopt`: mmap above 32 MB, trim above
1 GB), for both models alike, so the comparison measures the models; `--malloc glibc`
leaves the defaults.

Usage: python bench/train_throughput.py [--model debug|demo5m] [--steps 20] [--repeats 7]
       [--threads N] [--malloc keep|glibc] [--compile]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/tokenize.py shares its name with the standard library's `tokenize` (which torch
# imports through linecache): keep this directory off the import path before importing.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from scifm.convert.hf_llama import hf_config_dict, to_hf_state_dict  # noqa: E402
from scifm.model import ModelConfig, build_model, count_params  # noqa: E402
from scifm.model.llama import Llama  # noqa: E402
from scifm.parallel.norms import clip_grad_norm  # noqa: E402
from scifm.train.loss import LanguageModelLoss  # noqa: E402
from scifm.train.step import LocalRunner  # noqa: E402

# Shapes of the recipes that train these sizes: recipes/debug.yaml (seq 128, micro-batch 8,
# multiple_of 64) and the demo (`scifm demo`: seq 256, micro-batch 16).
SHAPES: dict[str, dict[str, Any]] = {
    "debug": dict(overrides=dict(multiple_of=64, max_seq_len=128), seq_len=128, batch=8),
    "demo5m": dict(overrides=dict(max_seq_len=256), seq_len=256, batch=16),
}
LOSS_TOLERANCE = 1e-4
# The training loop's defaults (recipes/debug.yaml's lr; betas, eps, decay of TrainConfig).
LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 3e-3, (0.9, 0.95), 1e-8, 0.1, 1.0


def model_config(name: str) -> ModelConfig:
    return ModelConfig.named(name, **SHAPES[name]["overrides"])


def hf_config(cfg: ModelConfig) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**hf_config_dict(cfg), attn_implementation="sdpa", use_cache=False)


def hf_state_dict(ours: Llama) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face's names (`scifm.convert.hf_llama`, the export's map)."""
    return to_hf_state_dict(ours.state_dict(), ours.cfg)


def hf_model(ours: Llama) -> nn.Module:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(hf_config(ours.cfg))
    state = hf_state_dict(ours)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if ours.cfg.tie_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping: missing {missing}, unexpected {unexpected}")
    model.train()
    return model


def adamw(model: nn.Module) -> torch.optim.AdamW:
    """The training loop's AdamW: foreach, its default hyperparameters, decay on matrices only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=True)


def our_forward_backward(model: nn.Module) -> Callable[[torch.Tensor], float]:
    """The trainer's micro-batch loop: `LocalRunner` with `LanguageModelLoss` (no z-loss)."""
    runner, loss_fn = LocalRunner(model), LanguageModelLoss()
    return lambda batch: runner.run([batch], loss_fn)


def our_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return LanguageModelLoss()(model(batch[:, :-1]), batch[:, 1:])


def hf_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Hugging Face's own loss: `ForCausalLMLoss` given the shifted labels as `shift_labels`."""
    inputs, labels = batch[:, :-1], batch[:, 1:].contiguous()
    return model(input_ids=inputs, labels=labels, shift_labels=labels, use_cache=False).loss


def hf_forward_backward(model: nn.Module) -> Callable[[torch.Tensor], float]:
    def run(batch: torch.Tensor) -> float:
        loss = hf_loss(model, batch)
        loss.backward()
        return float(loss.detach())

    return run


def make_step(
    model: nn.Module,
    forward_backward: Callable[[nn.Module], Callable[[torch.Tensor], float]],
    batch: torch.Tensor,
) -> Callable[[], float]:
    """forward + loss + backward, clip to 1.0, AdamW step, zero_grad; returns the loss."""
    optimizer = adamw(model)
    params = [p for p in model.parameters() if p.requires_grad]
    run_micro_batches = forward_backward(model)

    def step() -> float:
        loss = run_micro_batches(batch)
        clip_grad_norm(params, GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def timed(step: Callable[[], float], steps: int) -> tuple[float, float]:
    """Wall seconds of `steps` steps and the minor page faults per step they caused."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def keep_freed_heap() -> bool:
    """glibc: serve allocations up to 32 MB from the heap and do not trim it below 1 GB."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, 1 << 30)
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    malloc = "glibc defaults"
    if args.malloc == "keep":
        malloc = "mallopt: mmap > 32 MB, trim > 1 GB" if keep_freed_heap() else "unchanged"
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cfg = model_config(args.model)
    seq_len, batch_size = SHAPES[args.model]["seq_len"], SHAPES[args.model]["batch"]
    ours = build_model(cfg, seed=0)
    ours.train()
    hf = hf_model(ours)
    generator = torch.Generator().manual_seed(1234)
    batch = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1), generator=generator)

    with torch.no_grad():
        first = {"ours": float(our_loss(ours, batch)), "hf": float(hf_loss(hf, batch))}
    if abs(first["ours"] - first["hf"]) > LOSS_TOLERANCE:
        raise SystemExit(f"the two models disagree on the first batch: {first}")

    variants: dict[str, Callable[[], float]] = {
        "ours": make_step(ours, our_forward_backward, batch),
        "hf": make_step(hf, hf_forward_backward, batch),
    }
    # The loss of each model's second step: after one identical optimizer step (same
    # weights, gradients and AdamW), the two must still agree.
    for step in variants.values():
        step()
    second = {name: step() for name, step in variants.items()}
    compile_s: dict[str, float] = {}
    if args.compile:
        for name, model, fb in (
            ("ours", ours, our_forward_backward),
            ("hf", hf, hf_forward_backward),
        ):
            compiled = torch.compile(model)
            step = make_step(compiled, fb, batch)
            start = time.perf_counter()
            for _ in range(3):
                step()
            compile_s[f"{name}_compiled"] = round(time.perf_counter() - start, 1)
            variants[f"{name}_compiled"] = step
    for step in variants.values():
        for _ in range(args.warmup):
            step()

    tokens = args.steps * batch_size * seq_len
    rates: dict[str, list[float]] = {name: [] for name in variants}
    faults: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, block_faults = timed(variants[name], args.steps)
            rates[name].append(tokens / seconds)
            faults[name].append(block_faults)
    med = {name: statistics.median(values) for name, values in rates.items()}
    ratios = [o / h for o, h in zip(rates["ours"], rates["hf"], strict=True)]
    result: dict[str, Any] = {
        "model": args.model,
        "tokens_per_s": round(med["ours"], 1),
        "hf_tokens_per_s": round(med["hf"], 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "ratio_of_medians": round(med["ours"] / med["hf"], 3),
        "per_repeat": {
            "ours": [round(x, 1) for x in rates["ours"]],
            "hf": [round(x, 1) for x in rates["hf"]],
            "ratio": [round(x, 3) for x in ratios],
        },
        "page_faults_per_step": {k: round(statistics.median(v)) for k, v in faults.items()},
        "first_loss": {k: round(v, 6) for k, v in first.items()},
        "loss_after_1_step": {k: round(v, 6) for k, v in second.items()},
        "loss_diff_first": abs(first["ours"] - first["hf"]),
        "batch": batch_size,
        "seq_len": seq_len,
        "tokens_per_step": batch_size * seq_len,
        "dim": cfg.dim,
        "layers": cfg.num_layers,
        "heads": cfg.num_heads,
        "kv_heads": cfg.kv_heads,
        "hidden_dim": cfg.hidden_dim,
        "vocab": cfg.embedding_size,
        "params": count_params(cfg),
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": threads,
        "malloc": malloc,
        "dtype": "float32",
        "optimizer": "AdamW(foreach) lr 3e-3 betas (0.9, 0.95) eps 1e-8 wd 0.1 on matrices",
        "loss": "ours: LocalRunner + LanguageModelLoss; hf: its own (labels, shift_labels)",
        "attn_implementation": "sdpa",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if args.compile:
        for name in ("ours_compiled", "hf_compiled"):
            result[f"{name}_tokens_per_s"] = round(med[name], 1)
        result["compiled_ratio"] = round(med["ours_compiled"] / med["hf_compiled"], 3)
        result["compile_s"] = compile_s
        result["per_repeat"].update(
            {n: [round(x, 1) for x in rates[n]] for n in ("ours_compiled", "hf_compiled")}
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="debug")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of ours + HF blocks")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument(
        "--malloc", choices=("keep", "glibc"), default="keep",
        help="keep: glibc keeps freed heap (mallopt, both models); glibc: its defaults",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    print(json.dumps(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
