"""Generation throughput on CPU: scifm's KV-cache decoding against `transformers.generate`.

The same weights in both models (scifm's Llama built with `build_model(cfg, seed=0)`,
copied into `LlamaForCausalLM` through the export's key mapping), the same batch of
prompts (random token ids from a fixed seed, all of one length, so neither side pads), and
greedy decoding of `--new-tokens` tokens with no end-of-text stop. Both use their KV cache
(Hugging Face's `DynamicCache`, SDPA attention). The bench first checks that the two
produce the same tokens, then times `--repeats` alternating rounds of each; the figures
are medians, the ratio is the median of per-round ratios (scifm / Hugging Face). Also
reported: scifm without a cache (the whole context rerun every step, as decoding was
before the cache), once, as a reference for what the cache buys.

Usage: python bench/generate_speed.py [--model demo5m] [--batch 8] [--prompt-len 64]
       [--new-tokens 64] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent  # keep bench/tokenize.py from shadowing `tokenize`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from scifm.convert.hf_llama import hf_config_dict, to_hf_state_dict  # noqa: E402
from scifm.model import ModelConfig, build_model  # noqa: E402
from scifm.model.generate import SamplingConfig, generate  # noqa: E402
from scifm.model.llama import Llama  # noqa: E402


def hf_model(ours: Llama) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**hf_config_dict(ours.cfg), attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    model.load_state_dict(to_hf_state_dict(ours.state_dict(), ours.cfg), strict=False)
    model.tie_weights()
    return model.eval()


def ours_generate(model: Llama, prompts: torch.Tensor, new: int) -> list[list[int]]:
    done = generate(model, prompts.tolist(), SamplingConfig(max_new_tokens=new))
    return [c.ids for c in done]


def hf_generate(model: Any, prompts: torch.Tensor, new: int) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                             max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                             pad_token_id=0)  # fmt: skip
    return out[:, prompts.shape[1] :].tolist()


def uncached_generate(model: Llama, prompts: torch.Tensor, new: int) -> list[list[int]]:
    tokens = prompts
    with torch.no_grad():
        for _ in range(new):
            logits = model(tokens)[:, -1, : model.cfg.vocab_size]
            tokens = torch.cat((tokens, logits.argmax(-1, keepdim=True)), dim=1)
    return tokens[:, prompts.shape[1] :].tolist()


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo5m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.named(args.model, max_seq_len=args.prompt_len + args.new_tokens)
    ours = build_model(cfg, seed=0).eval()
    theirs = hf_model(ours)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_len), generator=generator)
    new = args.new_tokens
    same = ours_generate(ours, prompts, new) == hf_generate(theirs, prompts, new)
    if not same:
        raise SystemExit("scifm and transformers generate different tokens; not timing")
    rounds = []
    for i in range(args.repeats):
        order = [("ours", ours_generate, ours), ("hf", hf_generate, theirs)]
        results = dict((name, timed(fn, model, prompts, new)[0]) for name, fn, model in
                       (order if i % 2 == 0 else order[::-1]))  # fmt: skip
        rounds.append(results)
    uncached_s, uncached = timed(uncached_generate, ours, prompts, new)
    tokens = args.batch * new
    seconds = statistics.median(r["ours"] for r in rounds)
    hf_seconds = statistics.median(r["hf"] for r in rounds)
    print(json.dumps({
        "bench": "generate_speed", "model": args.model, "batch": args.batch,
        "prompt_len": args.prompt_len, "new_tokens": new, "threads": args.threads,
        "identical_tokens": same, "seconds": round(seconds, 4),
        "hf_seconds": round(hf_seconds, 4), "tokens_per_s": round(tokens / seconds, 1),
        "hf_tokens_per_s": round(tokens / hf_seconds, 1),
        "ratio": round(statistics.median(r["hf"] / r["ours"] for r in rounds), 3),
        "uncached_seconds": round(uncached_s, 4),
        "uncached_identical_tokens": uncached == ours_generate(ours, prompts, new),
        "torch": torch.__version__, "machine": platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
