"""ModelConfig: derived sizes, named sizes, one-line validation errors, lossless YAML."""

from __future__ import annotations

import pytest

from scifm.core.errors import ScifmError
from scifm.model.config import MODEL_SIZES, ModelConfig

BASE = {"dim": 64, "num_layers": 2, "num_heads": 4, "vocab_size": 100}


def test_kv_heads_default_to_query_heads_and_stay_given_values() -> None:
    assert ModelConfig.from_dict(BASE).num_kv_heads == 4
    assert ModelConfig.from_dict({**BASE, "num_kv_heads": 2}).num_kv_heads == 2


def test_derived_sizes() -> None:
    cfg = ModelConfig.from_dict(BASE)
    assert cfg.head_dim == 16
    assert cfg.embedding_size == 128  # 100 padded up to a multiple of 64
    assert ModelConfig.from_dict({**BASE, "vocab_size": 128}).embedding_size == 128
    assert ModelConfig.from_dict({**BASE, "pad_vocab_to_multiple_of": 1}).embedding_size == 100


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"dim": 4096, "num_heads": 32}, 11008),  # Llama-2-7B: int(8*4096/3)=10922 -> 11008
        # Llama-3-70B: int(8*8192/3)=21845, *1.3 -> 28398, up to a multiple of 1024 -> 28672
        ({"dim": 8192, "num_heads": 64, "ffn_dim_multiplier": 1.3, "multiple_of": 1024}, 28672),
        ({"dim": 64, "ffn_hidden_dim": 100}, 100),
        ({"dim": 64, "multiple_of": 1}, 170),
    ],
)
def test_hidden_dim_follows_the_llama_rule(fields: dict, expected: int) -> None:
    assert ModelConfig.from_dict({**BASE, **fields}).hidden_dim == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dim": 100, "num_heads": 3}, "dim=100 is not divisible by num_heads=3"),
        ({"num_kv_heads": 3}, "num_heads=4 is not divisible by num_kv_heads=3"),
        ({"dim": -64}, "dim: Input should be greater than 0"),
        ({"num_layers": 0}, "num_layers: Input should be greater than 0"),
        ({"ffn_hidden_dim": -1}, "ffn_hidden_dim"),
        ({"dim": 24, "num_heads": 8}, "head_dim = dim / num_heads = 3 is odd"),
        ({"rope_convention": "complex"}, "rope_convention"),
        ({"heads": 4}, "unknown field 'heads'"),
    ],
)
def test_bad_shapes_raise_one_line_scifm_error(fields: dict, message: str) -> None:
    with pytest.raises(ScifmError) as info:
        ModelConfig.from_dict({**BASE, **fields}, source="m.yaml")
    text = str(info.value)
    assert message in text and text.startswith("m.yaml: ") and "\n" not in text


def test_yaml_round_trip_is_lossless(tmp_path) -> None:
    cfg = ModelConfig.from_dict(
        {**BASE, "ffn_dim_multiplier": 1.5, "rope_convention": "interleaved", "norm_eps": 1e-6}
    )
    path = tmp_path / "model.yaml"
    path.write_text(cfg.to_yaml())
    again = ModelConfig.from_yaml(path)
    assert again == cfg and again.to_yaml() == cfg.to_yaml()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(MODEL_SIZES))
def test_named_sizes_validate_and_round_trip(name: str) -> None:
    cfg = ModelConfig.named(name)
    assert isinstance(cfg.num_kv_heads, int)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_named_shapes_and_overrides() -> None:
    big = ModelConfig.named("70b")
    assert (big.dim, big.num_layers, big.num_heads, big.num_kv_heads) == (8192, 80, 64, 8)
    assert (big.hidden_dim, big.vocab_size, big.rope_theta) == (28672, 128256, 500000.0)
    small = ModelConfig.named("1b")
    assert small.tie_embeddings and small.hidden_dim == 8192 and small.head_dim == 64
    demo = ModelConfig.named("demo5m", vocab_size=1000, max_seq_len=256)
    assert (demo.vocab_size, demo.max_seq_len, demo.dim) == (1000, 256, 256)
    with pytest.raises(ScifmError, match=r"model size 'debug'.*num_heads"):
        ModelConfig.named("debug", num_heads=5)


def test_unknown_size_lists_the_known_ones() -> None:
    with pytest.raises(ScifmError, match="unknown model size '3b'; known sizes: debug, demo5m"):
        ModelConfig.named("3b")
