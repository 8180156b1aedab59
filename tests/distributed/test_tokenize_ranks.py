"""`scifm tokenize` under torchrun: 2 gloo ranks x 2 workers write the bytes one process does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scifm.tokens.pipeline import tokenize_files
from scifm.tokens.tokenizer import TokenizerConfig, train_tokenizer
from scifm.tokens.writer import TokenizeConfig

pytestmark = pytest.mark.distributed
SHARD_BYTES = 2000


def _corpus(root: Path) -> list[str]:
    words = ("the", "ratio", "of", "the", "two", "integrals", "converges", "as", "the", "mesh",
             "is", "refined")  # fmt: skip
    texts = [f"doc {i}: " + " ".join(words[: 1 + i % len(words)]) for i in range(300)]
    root.mkdir()
    for part in range(3):
        lines = [json.dumps({"text": t}) for t in texts[part * 100 : (part + 1) * 100]]
        lines[part * 7] = '{"text": 5}'  # one reject per file
        (root / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n")
    return texts


def test_two_ranks_two_workers_match_one_process(launch, tmp_path: Path) -> None:
    texts = _corpus(tmp_path / "corpus")
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer(TokenizerConfig(vocab_size=300), texts, tokenizer)
    single = tmp_path / "single" / "c"
    cfg = TokenizeConfig(shard_bytes=SHARD_BYTES)
    tokenize_files(cfg, [tmp_path / "corpus"], tokenizer, single)
    ranks = tmp_path / "ranks" / "c"
    launch["torchrun"]("tokenize_ranks.py", 2, str(tmp_path / "corpus"), str(tokenizer),
                       str(ranks), "2", str(SHARD_BYTES))  # fmt: skip
    for suffix in (".bin", ".idx", ".rejects.jsonl", ".manifest.json"):
        assert ranks.with_suffix(suffix).read_bytes() == single.with_suffix(suffix).read_bytes()
    stats = [json.loads((ranks.parent / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert stats[0] == stats[1] and stats[0]["documents"] == 297 and stats[0]["rejected"] == 3
    assert stats[0]["shards"] > 4 and not ranks.with_suffix(".work").exists()
