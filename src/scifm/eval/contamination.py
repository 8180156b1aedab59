"""Benchmark contamination: 13-gram overlap between benchmark questions and training text.

A benchmark question that appears in the training data measures memory, not skill. As in
GPT-3's and lm-evaluation-harness's decontamination, text is lower-cased and split into
words (runs of letters and digits), and a question is flagged when any 13 consecutive words
of it (its question and right answer, and SciQ's support paragraph) also occur in a
training document. Questions shorter than 13 words cannot be checked and are counted apart.

The corpora are found through the run's data config: each corpus's token files have a
`PREFIX.manifest.json` (written by `scifm tokenize`) that lists the input files and their
text field. Only the benchmarks' n-grams are held in memory (tens of thousands); each
training document is streamed past them once, so the cost is one read of the corpora.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scifm.core.errors import ScifmError
from scifm.eval.benchmarks import Document

NGRAM = 13
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_keys(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of every n consecutive words of `text` (empty when it has fewer)."""
    ws = words(text)
    return {hash(tuple(ws[i : i + n])) for i in range(len(ws) - n + 1)}


def question_text(doc: Document) -> str:
    """What is checked of a question: its support passage, question and right answer."""
    parts = [doc.get("support", ""), doc.get("question", "")]
    if "choices" in doc and "gold" in doc:
        parts.append(doc["choices"][doc["gold"]])
    elif "answer" in doc:
        parts.append(str(doc["answer"]))
    return "\n".join(p for p in parts if p)


def corpus_inputs(manifest: Path) -> tuple[list[Path], str]:
    """The input files a token file was made from, and their text field."""
    if not manifest.is_file():
        raise ScifmError(f"{manifest}: no manifest; contamination needs corpora tokenized "
                         "by `scifm tokenize`")  # fmt: skip
    data = json.loads(manifest.read_text())
    return [Path(i["path"]) for i in data["inputs"]], data["config"]["text_field"]


def read_texts(path: Path, text_field: str) -> Iterator[str]:
    """Documents of a JSONL (optionally .gz) or text file."""
    opener = gzip.open if path.suffix == ".gz" else open
    name = path.name.removesuffix(".gz")
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        if name.endswith(".jsonl"):
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    if isinstance(record.get(text_field), str):
                        yield record[text_field]
        else:
            yield handle.read()


def contamination_report(benchmarks: dict[str, list[Document]],
                         corpora: dict[str, tuple[list[Path], str]]) -> dict[str, Any]:  # fmt: skip
    """Per task: questions checked, flagged (with the corpora they were found in)."""
    owners: dict[int, list[tuple[str, int]]] = {}
    checkable: dict[str, int] = {}
    for task, docs in benchmarks.items():
        checkable[task] = 0
        for index, doc in enumerate(docs):
            keys = ngram_keys(question_text(doc))
            checkable[task] += bool(keys)
            for key in keys:
                owners.setdefault(key, []).append((task, index))
    found: dict[tuple[str, int], set[str]] = {}
    documents = {}
    for corpus, (files, field) in corpora.items():
        documents[corpus] = 0
        for path in files:
            for text in read_texts(path, field):
                documents[corpus] += 1
                for key in ngram_keys(text) & owners.keys():
                    for owner in owners[key]:
                        found.setdefault(owner, set()).add(corpus)
    tasks = []
    for task, docs in benchmarks.items():
        flagged = sorted(i for t, i in found if t == task)
        tasks.append({"task": task, "questions": len(docs), "checkable": checkable[task],
                      "flagged": len(flagged),
                      "flagged_fraction": round(len(flagged) / max(1, checkable[task]), 4),
                      "flagged_questions": [{"index": i, "corpora": sorted(found[(task, i)])}
                                            for i in flagged]})  # fmt: skip
    return {"ngram": NGRAM, "corpora_documents": documents, "tasks": tasks}


def contamination_table(report: dict[str, Any]) -> str:
    lines = [f"| task | questions | checkable (>= {report['ngram']} words) | flagged | share |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in report["tasks"]:
        lines.append(f"| {row['task']} | {row['questions']} | {row['checkable']} | "
                     f"{row['flagged']} | {row['flagged_fraction']:.2%} |")  # fmt: skip
    return "\n".join(lines) + "\n"
