"""The tiny demo run the integration tests share (one per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scifm.cli import main

TINY = [
    "corpus.max_bytes_per_corpus=150000",
    "tokenizer.vocab_size=512",
    "data.seq_len=64",
    "model.dim=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.max_seq_len=64",
    "train.micro_batch_size=8",
    "train.max_tokens=20480",
    "train.warmup_steps=4",
    "train.log_every=4",
    "train.checkpoint.every=10",  # with keep_last 2: 10 and 20 are removed
    "demo.max_new_tokens=8",
    "demo.eval_limit=50",
]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out
