"""Mixture files in three forms, and every way a mixture can be broken -> one clear error."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from scifm.core.errors import ScifmError
from scifm.data import BlendedSampler, CorpusSource, DataConfig, open_mixture, read_mixture_file
from scifm.data.mixture import mixture_table
from tests.unit.data.conftest import write_corpus_file


def _write(tmp_path, name: str, docs=8, dtype=np.uint16) -> str:
    rng = np.random.default_rng(len(name))
    return write_corpus_file(tmp_path / name, [list(rng.integers(3, 99, 20)) for _ in range(docs)],
                             dtype)  # fmt: skip


def test_auroragpt_list_sums_weights_per_corpus_and_resolves_relative_paths(tmp_path) -> None:
    for name in ("c4-0", "c4-1", "wiki-0"):
        _write(tmp_path, name)
    spec = tmp_path / "dolma.txt"
    spec.write_text("# weight prefix corpus\n0.2 c4-0 c4\n0.3 c4-1 c4  # second shard\n"
                    f"0.5 {tmp_path}/wiki-0 wiki\n")  # fmt: skip
    sources = read_mixture_file(spec)
    assert [s.name for s in sources] == ["c4", "wiki"]
    assert sources[0].weight == pytest.approx(0.5)
    assert sources[0].prefixes == [str(tmp_path / "c4-0"), str(tmp_path / "c4-1")]
    mixture = open_mixture(sources)
    assert np.allclose(mixture.weights, [0.5, 0.5])
    rows = mixture_table(mixture, token_budget=1000)
    assert rows[0]["files"] == 2 and rows[0]["tokens"] == 320
    assert rows[0]["epochs"] == pytest.approx(500 / 320, rel=1e-3)


def test_megatron_pairs_and_yaml_forms(tmp_path) -> None:
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    megatron = tmp_path / "blend.txt"
    megatron.write_text("0.3 a 0.7\nb\n")
    sources = read_mixture_file(megatron)
    assert [(s.name, s.weight) for s in sources] == [("a", 0.3), ("b", 0.7)]
    spec = tmp_path / "mix.yaml"
    spec.write_text("corpora:\n  - {name: x, prefixes: [a, b], weight: 2}\n")
    (source,) = read_mixture_file(spec)
    assert source.prefixes == [str(tmp_path / "a"), str(tmp_path / "b")]
    config = DataConfig(mixture=str(spec), seq_len=8)
    assert BlendedSampler.from_config(config).batch(0, 4).shape == (4, 9)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 a c\n", "must be positive"),
        ("-1 a c\n", "must be positive"),
        ("x a c\n", "not a number"),
        ("0.5 a 0.5 b 0.2\n", "pairs"),
        ("# nothing\n", "lists no files"),
    ],
)
def test_bad_mixture_lines(tmp_path, text: str, match: str) -> None:
    _write(tmp_path, "a")
    spec = tmp_path / "m.txt"
    spec.write_text(text)
    with pytest.raises(ScifmError, match=match):
        read_mixture_file(spec)


def _open(tmp_path, *prefixes) -> None:
    open_mixture(
        [CorpusSource(name=f"c{i}", prefixes=[p], weight=1) for i, p in enumerate(prefixes)]
    )


def test_missing_truncated_and_corrupt_files(tmp_path) -> None:
    good = _write(tmp_path, "good")
    with pytest.raises(ScifmError, match="missing.idx: not found"):
        _open(tmp_path, str(tmp_path / "missing"))
    bad = _write(tmp_path, "truncbin")
    os.truncate(bad + ".bin", 100)
    with pytest.raises(ScifmError, match=r"truncbin.bin: truncated"):
        _open(tmp_path, good, bad)
    bad = _write(tmp_path, "truncidx")
    os.truncate(bad + ".idx", 60)
    with pytest.raises(ScifmError, match=r"truncidx.idx: truncated"):
        _open(tmp_path, bad)
    bad = _write(tmp_path, "magic")
    with open(bad + ".idx", "r+b") as handle:
        handle.write(b"NOTMAGIC!")
    with pytest.raises(ScifmError, match="bad magic"):
        _open(tmp_path, bad)


def test_mixed_dtypes_tokenizers_and_empty_corpora(tmp_path) -> None:
    small = _write(tmp_path, "small")
    wide = _write(tmp_path, "wide", dtype=np.int32)
    with pytest.raises(ScifmError, match="mixes token dtypes"):
        _open(tmp_path, small, wide)
    other = _write(tmp_path, "other")
    for prefix, sha in ((small, "a" * 64), (other, "b" * 64)):
        (tmp_path / f"{prefix}.manifest.json").write_text(
            json.dumps({"tokenizer": {"sha256": sha, "vocab_size": 100}})
        )
    with pytest.raises(ScifmError, match="mixes tokenizers"):
        _open(tmp_path, small, other)
    with pytest.raises(ScifmError, match="larger than the model's 50"):
        open_mixture([CorpusSource(name="s", prefixes=[small], weight=1)], vocab_size=50)
    empty = write_corpus_file(tmp_path / "empty", [])
    with pytest.raises(ScifmError, match="'c1' is empty"):
        _open(tmp_path, small, empty)


def test_data_config_needs_exactly_one_source_and_a_power_of_two_window() -> None:
    with pytest.raises(ScifmError, match="no data"):
        DataConfig().sources()
    with pytest.raises(ScifmError, match="power of two"):
        DataConfig.from_dict({"shuffle_window_docs": 100})
    with pytest.raises(ScifmError, match="not both"):
        DataConfig.from_dict(
            {"mixture": "m.txt", "corpora": [{"name": "a", "prefixes": ["a"], "weight": 1}]}
        )
    with pytest.raises(ScifmError, match="greater than 0"):
        DataConfig.from_dict({"corpora": [{"name": "a", "prefixes": ["a"], "weight": 0}]})
    with pytest.raises(ScifmError, match="seed"):
        DataConfig.from_dict({"seed": -1})


def test_inspect_counts_epochs_over_the_training_split(tmp_path) -> None:
    from scifm.stages import inspect_mixture

    prefix = _write(tmp_path, "a", docs=40)
    config = DataConfig(corpora=[CorpusSource(name="a", prefixes=[prefix], weight=1)],
                        seq_len=8, valid_fraction=0.4)  # fmt: skip
    (row,) = inspect_mixture(config, token_budget=1000)["corpora"]
    assert row["epochs"] == pytest.approx(1000 / (row["samples_per_epoch"] * 8), rel=1e-3)
    assert row["samples_per_epoch"] * 8 < 0.7 * row["tokens"]
