"""13-gram contamination: a planted question is flagged, 12 shared words are not."""

from __future__ import annotations

import json
from pathlib import Path

from scifm.eval.contamination import contamination_report, corpus_inputs, ngram_keys

QUESTION = {"question": "Which organelle of a eukaryotic cell releases the energy stored in "
            "glucose during cellular respiration?", "choices": ["the nucleus", "mitochondria"],
            "gold": 1}  # fmt: skip
SHORT = {"question": "What is two plus two?", "choices": ["4", "5"], "gold": 0}


def _corpus(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_ngrams_are_lowercased_words_and_need_thirteen() -> None:
    assert len(ngram_keys("one two three four five six seven eight nine ten eleven twelve")) == 0
    assert ngram_keys("A b c d e f g h i j k l m") == ngram_keys("a, B; c d e f g h i j k l m!")


def test_a_planted_question_is_flagged_and_a_near_miss_is_not(tmp_path: Path) -> None:
    words = QUESTION["question"].split()
    planted = "Lecture notes. " + " ".join(words[2:15]) + " and so on."  # 13 words verbatim
    near = " ".join(words[2:14])  # 12 words only
    clean = _corpus(tmp_path / "clean.jsonl", [near, "unrelated text " * 20])
    dirty = _corpus(tmp_path / "dirty.jsonl", ["nothing here", planted])
    report = contamination_report(
        {"bio": [QUESTION, SHORT]},
        {"web": ([clean], "text"), "notes": ([dirty], "text")},
    )
    (row,) = report["tasks"]
    assert row["questions"] == 2 and row["checkable"] == 1  # the short one cannot be checked
    assert row["flagged"] == 1 and row["flagged_questions"] == [{"index": 0, "corpora": ["notes"]}]
    assert report["corpora_documents"] == {"web": 2, "notes": 2}
    report = contamination_report({"bio": [QUESTION]}, {"web": ([clean], "text")})
    assert report["tasks"][0]["flagged"] == 0


def test_corpus_inputs_come_from_the_tokenizer_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "math.manifest.json"
    manifest.write_text(json.dumps({"inputs": [{"path": "/data/a.jsonl"}],
                                    "config": {"text_field": "body"}}))  # fmt: skip
    assert corpus_inputs(manifest) == ([Path("/data/a.jsonl")], "body")
