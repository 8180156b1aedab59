"""Checkpoint save and load times: scifm's DCP checkpoints against a plain `torch.save`.

For each model shape (default: debug and 125m), one process builds the model in fp32 and
AdamW, runs one optimizer step so the optimizer holds its two moments (the checkpoint is
then 3x the weights plus a little), and measures, in one run:

- `save_s`: `Checkpointer.save` synchronous (DCP shards + per-rank RNG file + file list
  with sizes + atomic rename + retention), as the trainer calls it;
- `async_blocked_s` and `async_total_s`: an asynchronous save; the time training is
  blocked (the copy to CPU memory) and the time until the checkpoint is renamed into place;
- `load_s`: `load_checkpoint` of the newest complete checkpoint into a fresh model and
  optimizer, plus `set_state_dict` (what a resume does); the files are in the page cache,
  as they are right after a save, so this is the CPU-side cost, not the disk's;
- the reference: `torch.save` of the same state dict to one file, and `torch.load` of it,
  with `save_ratio` = save_s / torch_save_s and `load_ratio` = load_s / torch_load_s (< 1:
  scifm is faster). Each figure is the median of `--repeats` runs.

Usage: python bench/checkpoint_io.py [--models debug 125m] [--repeats 3] [--dir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/tokenize.py shares its name with the standard library's `tokenize`: keep this
# directory off the import path before importing torch.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict  # noqa: E402

from scifm.checkpoint import (  # noqa: E402
    CheckpointConfig,
    Checkpointer,
    latest_checkpoint,
    load_checkpoint,
)
from scifm.model import ModelConfig, build_model  # noqa: E402
from scifm.train.optim import OptimizerConfig, build_optimizer  # noqa: E402


def _trained(name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    cfg = ModelConfig.named(name)
    model = build_model(cfg, device="cpu", seed=0)
    optimizer = build_optimizer([model], OptimizerConfig())
    tokens = torch.randint(0, cfg.vocab_size, (1, 65), generator=torch.Generator().manual_seed(0))
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, root: Path, repeats: int) -> dict:
    model, optimizer = _trained(name)
    state = _state(model, optimizer)
    nbytes = sum(t.numel() * t.element_size() for t in _tensors(state))
    rows: dict[str, list[float]] = {k: [] for k in ("save_s", "async_blocked_s",
                                                    "async_total_s", "load_s",
                                                    "torch_save_s", "torch_load_s")}  # fmt: skip
    for i in range(repeats):
        run = root / f"{name}-{i}"
        sync = Checkpointer(run / "sync", CheckpointConfig())
        rows["save_s"].append(_timed(lambda sync=sync: sync.save(1, state, {"bench": 1}, {})))
        background = Checkpointer(run / "async", CheckpointConfig(async_save=True))
        start = time.perf_counter()
        background.save(1, state, {"bench": True}, {})
        rows["async_blocked_s"].append(time.perf_counter() - start)
        background.wait()
        rows["async_total_s"].append(time.perf_counter() - start)
        fresh_model, fresh_optim = _trained(name)
        fresh = _state(fresh_model, fresh_optim)

        def load(fresh=fresh, fresh_model=fresh_model, fresh_optim=fresh_optim, run=run):
            load_checkpoint(latest_checkpoint(run / "sync").path, fresh)
            set_state_dict(fresh_model, fresh_optim, model_state_dict=fresh["model"],
                           optim_state_dict=fresh["optim"])  # fmt: skip

        rows["load_s"].append(_timed(load))
        single = run / "torch.pt"
        rows["torch_save_s"].append(_timed(lambda single=single: torch.save(state, single)))
        rows["torch_load_s"].append(_timed(lambda single=single: torch.load(single)))
        check = dict(fresh_model.named_parameters())
        assert all(torch.equal(check[k], p) for k, p in model.named_parameters()), name
        shutil.rmtree(run)
    result = {k: round(statistics.median(v), 3) for k, v in rows.items()}
    result["save_ratio"] = round(result["save_s"] / result["torch_save_s"], 3)
    result["load_ratio"] = round(result["load_s"] / result["torch_load_s"], 3)
    result["save_GBps"] = round(nbytes / result["save_s"] / 1e9, 2)
    num_params = sum(p.numel() for p in model.parameters())
    return {"model": name, "num_params": num_params, "checkpoint_bytes": nbytes, **result}


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _tensors(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["debug", "125m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="scifm-ckpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = [measure(name, root, args.repeats) for name in args.models]
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"bench": "checkpoint_io", "threads": torch.get_num_threads(),
                      "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
