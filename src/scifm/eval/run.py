"""Run tasks on a model and write the results: JSON, a Markdown table, per-question records.

`evaluate` scores every task's questions (`scifm.eval.scoring`) and aggregates them
(`scifm.eval.metrics`). Per task it reports accuracy and length-normalised accuracy with
standard errors, the chance level (and says plainly when the model is not distinguishable
from it: within two standard errors), and speed: seconds, questions per second and the
mean latency of a question. `write_results` puts `results.json`, `results.md` and
`samples/<task>.jsonl` (each question's log-likelihoods and predictions) in a directory,
atomically.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_dir, write_json
from scifm.core.progress import track
from scifm.eval.contamination import contamination_table
from scifm.eval.metrics import chance, choice_outcome, mean_stderr
from scifm.eval.scoring import LoglikelihoodScorer, Question
from scifm.eval.series import plot_results
from scifm.eval.tasks import TaskConfig, prompt, task_documents
from scifm.model.generate import SamplingConfig, generate


@dataclass
class TaskResult:
    name: str
    questions: int
    num_fewshot: int
    acc: float
    acc_stderr: float
    acc_norm: float | None
    acc_norm_stderr: float | None
    chance: float
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    new_tokens: int | None = None
    """generate tasks: tokens generated in all."""

    @property
    def near_chance(self) -> bool:
        return abs(self.acc - self.chance) <= 2 * max(self.acc_stderr, 1e-12)

    def summary(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k != "records"}
        row["questions_per_s"] = round(self.questions / self.seconds, 2) if self.seconds else None
        row["latency_ms_per_question"] = round(1000 * self.seconds / self.questions, 2)
        if self.new_tokens is not None and self.seconds:
            row["tokens_per_s"] = round(self.new_tokens / self.seconds, 1)
        row["near_chance"] = self.near_chance
        return row


def task_questions(task: TaskConfig, limit: int | None = None) -> tuple[list[dict], list[Question]]:
    """The task's documents (the first `limit`) and the question each becomes."""
    docs = task_documents(task)
    chosen = range(min(limit, len(docs)) if limit else len(docs))
    questions = [Question(prompt(task, docs, i),
                          tuple(task.target_delimiter + c for c in docs[i]["choices"]))
                 for i in chosen]  # fmt: skip
    return [docs[i] for i in chosen], questions


def evaluate_task(scorer: LoglikelihoodScorer, task: TaskConfig,
                  limit: int | None = None) -> TaskResult:  # fmt: skip
    docs, questions = task_questions(task, limit)
    start = time.perf_counter()
    with track(len(questions), f"eval {task.name}") as bar:
        logliks = scorer.score(questions, on_batch=bar.advance)
    seconds = time.perf_counter() - start
    records = []
    for index, (doc, scores) in enumerate(zip(docs, logliks, strict=True)):
        outcome = choice_outcome(scores, doc["choices"], doc["gold"])
        records.append({"index": index, "gold": doc["gold"], "logliks": scores, **outcome})
    acc, acc_err = mean_stderr([r["acc"] for r in records])
    norm, norm_err = mean_stderr([r["acc_norm"] for r in records])
    return TaskResult(task.name, len(records), task.num_fewshot, acc, acc_err, norm, norm_err,
                      chance([len(d["choices"]) for d in docs]), round(seconds, 3),
                      records)  # fmt: skip


def evaluate_generate(model: nn.Module, tokenizer: Any, task: TaskConfig,
                      limit: int | None = None, batch_size: int = 16) -> TaskResult:  # fmt: skip
    """Generate an answer to each question (greedy, batched), extract it, compare it."""
    docs = task_documents(task)
    chosen = range(min(limit, len(docs)) if limit else len(docs))
    prompts = [tokenizer.encode(prompt(task, docs, i)) for i in chosen]
    sampling = SamplingConfig(max_new_tokens=min(task.max_new_tokens, model.cfg.max_seq_len // 2),
                              stop=task.stop)  # fmt: skip
    completions = []
    start = time.perf_counter()
    with track(len(prompts), f"eval {task.name}") as bar:
        for first in range(0, len(prompts), batch_size):
            batch = prompts[first : first + batch_size]
            completions += generate(model, batch, sampling, tokenizer.eos_id, tokenizer.decode)
            bar.advance(len(batch))
    seconds = time.perf_counter() - start
    records = []
    for index, completion in zip(chosen, completions, strict=True):
        answer = str(docs[index][task.answer_field])
        extracted = extract_answer(task, completion.text or "")
        right = is_correct(task, extracted, answer)
        records.append({"index": index, "answer": answer, "generated": completion.text,
                        "pred": extracted, "acc": int(right)})  # fmt: skip
    acc, acc_err = mean_stderr([r["acc"] for r in records])
    return TaskResult(task.name, len(records), task.num_fewshot, acc, acc_err, None, None, 0.0,
                      round(seconds, 3), records,
                      sum(len(c.ids) for c in completions))  # fmt: skip


def extract_answer(task: TaskConfig, text: str) -> str | None:
    """The answer in generated text: the `extract` regex's first group, else (numeric) the
    last number, else (exact) the stripped text."""
    if task.extract:
        found = re.search(task.extract, text)
        if found:
            return found.group(1)
    if task.match == "numeric":
        numbers = _NUMBER.findall(text)
        return numbers[-1] if numbers else None
    return text.strip() if not task.extract else None


def is_correct(task: TaskConfig, extracted: str | None, answer: str) -> bool:
    if extracted is None:
        return False
    if task.match == "exact":
        return extracted.strip() == answer.strip()
    try:
        got, want = (float(x.replace(",", "").rstrip(".")) for x in (extracted, answer))
    except ValueError:
        return False
    return abs(got - want) <= task.tolerance


_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def evaluate(model: nn.Module, tokenizer: Any, tasks: list[TaskConfig], limit: int | None = None,
             batch_size: int = 16) -> list[TaskResult]:  # fmt: skip
    """Every task on one model; `tokenizer` gives `encode`, `decode` and `eos_id`."""
    scorer = LoglikelihoodScorer(model, tokenizer.encode, tokenizer.eos_id, batch_size)
    return [evaluate_generate(model, tokenizer, task, limit, batch_size)
            if task.kind == "generate" else evaluate_task(scorer, task, limit)
            for task in tasks]  # fmt: skip


def reliability(run: Callable[[TaskConfig], TaskResult], task: TaskConfig) -> dict[str, Any]:
    """How often the model gives the same answer when only the wording changes: the task's
    prompt and each of its `templates`, and (with shots) two more few-shot seeds.

    `run` evaluates one variant. `agreement` is the share of questions answered identically
    under every variant (the raw choice, or the extracted answer); `acc_spread` the gap
    between the best and worst variant's accuracy.
    """
    variants = [("prompt", task)]
    variants += [(f"template {i}", task.model_copy(update={"template": t}))
                 for i, t in enumerate(task.templates, 2)]  # fmt: skip
    if task.num_fewshot > 0:
        variants += [(f"few-shot seed {task.fewshot_seed + k}",
                      task.model_copy(update={"fewshot_seed": task.fewshot_seed + k}))
                     for k in (1, 2)]  # fmt: skip
    if len(variants) < 2:
        raise ScifmError(f"task {task.name}: reliability needs other `templates` or shots > 0")
    runs = [(label, run(variant)) for label, variant in variants]
    answers = list(zip(*([r["pred"] for r in result.records] for _, result in runs), strict=True))
    accuracies = [result.acc for _, result in runs]
    return {"task": task.name, "shots": task.num_fewshot,
            "variants": [{"variant": label, "acc": result.acc} for label, result in runs],
            "agreement": round(sum(len(set(a)) == 1 for a in answers) / len(answers), 4),
            "acc_spread": round(max(accuracies) - min(accuracies), 4)}  # fmt: skip


def reliability_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | shots | variants | same answer under all | accuracy spread |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(f"| {row['task']} | {row['shots']} | {len(row['variants'])} | "
                     f"{row['agreement']:.2%} | {row['acc_spread']:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def markdown_table(results: list[TaskResult]) -> str:
    lines = ["| task | shots | questions | acc | acc_norm | chance | questions/s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        s = r.summary()
        flag = " (near chance)" if r.near_chance else ""
        norm = "-" if r.acc_norm is None else f"{r.acc_norm:.4f} ± {r.acc_norm_stderr:.4f}"
        lines.append(f"| {r.name} | {r.num_fewshot} | {r.questions} | {r.acc:.4f} ± "
                     f"{r.acc_stderr:.4f}{flag} | {norm} | {r.chance:.4f} | "
                     f"{s['questions_per_s']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def heldout_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| corpus (held out) | tokens | perplexity | bits per byte |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['corpus']} | {row['tokens']:,} | {row.get('perplexity', '-')} | "
                     f"{row.get('bits_per_byte', '-')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: list[TaskResult], meta: dict[str, Any],
                  heldout: list[dict[str, Any]] | None = None,
                  contamination: dict[str, Any] | None = None,
                  reliable: list[dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """OUT/results.json, OUT/results.md, OUT/results.png, OUT/samples/<task>-<k>shot.jsonl
    (and, when checked, OUT/contamination.json), written atomically."""
    tables = [heldout_table(heldout)] if heldout else []
    tables += [markdown_table(results)] if results else []
    tables += [reliability_table(reliable)] if reliable else []
    tables += [contamination_table(contamination)] if contamination else []
    with atomic_dir(out) as tmp:
        if contamination:
            write_json(tmp / "contamination.json", contamination)
        write_json(tmp / "results.json", {**meta, "heldout": heldout or [],
                                          "tasks": [r.summary() for r in results],
                                          "reliability": reliable or []})  # fmt: skip
        (tmp / "results.md").write_text("\n".join(tables), encoding="utf-8")
        if results:
            plot_results([r.summary() for r in results], tmp / "results.png")
        (tmp / "samples").mkdir()
        for r in results:
            lines = "".join(json.dumps(record) + "\n" for record in r.records)
            (tmp / "samples" / f"{r.name}-{r.num_fewshot}shot.jsonl").write_text(
                lines, encoding="utf-8")  # fmt: skip
    return out
