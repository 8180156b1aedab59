"""Generative tasks: answers extracted from generated text and compared, by hand and end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.model.test_model_generate import reference_greedy

from scifm.eval.run import evaluate, extract_answer, is_correct
from scifm.eval.tasks import TaskConfig, prompt, resolve_task, task_documents
from scifm.model import ModelConfig, build_model

GSM = resolve_task("gsm8k")


@pytest.mark.parametrize(("text", "extracted", "right"), [
    (" 9 * 2 = 18 dollars. So the answer is 18.", "18", True),
    (" So the answer is $1,250.", "1,250", False),  # the answer is 1250.5 below
    (" She pays 3 + 4 = 7, then 7 * 2 = 14", "14", False),  # no phrase: the last number
    (" I do not know.", None, False),
])  # fmt: skip
def test_numeric_extraction_by_hand(text: str, extracted: str | None, right: bool) -> None:
    assert extract_answer(GSM, text) == extracted
    answer = "1250.5" if extracted == "1,250" else "18"
    assert is_correct(GSM, extracted, answer) is right


def test_tolerance_and_exact_matching() -> None:
    loose = GSM.model_copy(update={"tolerance": 0.6})
    assert is_correct(loose, "1,250", "1250.5") and not is_correct(GSM, "1,250", "1250.5")
    exact = TaskConfig(name="cap", kind="generate", dataset="x.jsonl", match="exact")
    assert extract_answer(exact, "  Paris \n") == "Paris" and is_correct(exact, "Paris", "Paris")
    regex = exact.model_copy(update={"extract": r"capital is (\w+)"})
    assert extract_answer(regex, "The capital is Rome.") == "Rome"
    assert extract_answer(regex, "no idea") is None


def test_gsm8k_loads_with_worked_solutions_for_few_shot() -> None:
    docs = task_documents(GSM)
    assert len(docs) == 1319 and docs[0]["answer"] == "18"
    text = prompt(GSM.model_copy(update={"num_fewshot": 2}), docs, 0)
    first_example = text.split("\n\n")[0]
    assert first_example.startswith("Question: ") and "So the answer is" in first_example
    assert text.endswith(f"Question: {docs[0]['question']}\nAnswer:")


def test_a_generate_task_end_to_end(tmp_path: Path, tokenizer) -> None:
    rows = [{"question": "What is the derivative of x**2?", "answer": "2*x"},
            {"question": "Compute the integral of", "answer": "x"}]  # fmt: skip
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text("name: calc\nkind: generate\ndataset: q.jsonl\n"
                                     "match: exact\nmax_new_tokens: 6\nstop: []\n")  # fmt: skip
    task = resolve_task(str(tmp_path / "t.yaml"))
    cfg = ModelConfig(dim=64, num_layers=2, num_heads=4, multiple_of=32,
                      vocab_size=tokenizer.vocab_size, max_seq_len=64)  # fmt: skip
    model = build_model(cfg, seed=4).eval()
    (result,) = evaluate(model, tokenizer, [task], batch_size=2)
    assert result.questions == 2 and result.new_tokens is not None
    for record, row in zip(result.records, rows, strict=True):
        ids = reference_greedy(model, tokenizer.encode(prompt(task, [row], 0)), 6)
        if tokenizer.eos_id in ids:
            ids = ids[: ids.index(tokenizer.eos_id)]
        assert record["generated"] == tokenizer.decode(ids)  # greedy, batched, cached
        assert record["acc"] == int(record["generated"].strip() == row["answer"])
    assert result.summary()["tokens_per_s"] > 0
