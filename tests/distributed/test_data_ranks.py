"""Data across real processes: every rank reads its slice; together they are the global batch."""

from __future__ import annotations

import pytest

from scifm.data import CorpusSource, DataConfig
from tests.distributed.conftest import run_torchrun
from tests.unit.data.conftest import make_corpora

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_gathered_equal_the_single_process_batches(tmp_path, world: int) -> None:
    corpora = make_corpora(tmp_path)
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), (5, 3, 2), strict=True)]  # fmt: skip
    config = tmp_path / "data.yaml"
    config.write_text(DataConfig(corpora=sources, seq_len=16, shuffle_window_docs=8).to_yaml())
    result = tmp_path / "result.txt"
    run_torchrun("data_ranks.py", world, str(config), str(result))
    assert result.read_text() == "ok"
