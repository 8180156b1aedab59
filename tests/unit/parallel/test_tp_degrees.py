"""Tensor-parallel degrees that do not split the model evenly: one clear error, before any work."""

from __future__ import annotations

import pytest

from scifm.core.errors import ScifmError
from scifm.model import ModelConfig, build_model
from scifm.parallel import ParallelConfig
from scifm.parallel.parallelize import parallelize
from scifm.parallel.tp import check_tp_degree

BASE = {"dim": 64, "num_layers": 1, "num_heads": 8, "num_kv_heads": 4, "vocab_size": 3000,
        "ffn_hidden_dim": 128}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "tp", "message"),
    [
        ({"num_heads": 2, "num_kv_heads": 2}, 4,
         "model.num_heads=2 is not divisible by parallel.tp=4"),
        ({"num_kv_heads": 2}, 4, "model.num_kv_heads=2 is not divisible by parallel.tp=4"),
        ({"ffn_hidden_dim": 90}, 4,
         "model.ffn_hidden_dim=90 is not divisible by parallel.tp=4 .* or set "
         "model.ffn_hidden_dim to a multiple of 4"),
        ({"ffn_hidden_dim": None, "multiple_of": 2}, 4, "the FFN hidden size=170 is not divisible"),
        ({"vocab_size": 3001, "pad_vocab_to_multiple_of": 2}, 4,
         "the padded vocabulary=3002 is not divisible by parallel.tp=4 .* or set "
         "model.pad_vocab_to_multiple_of to a multiple of 4"),
    ],
)  # fmt: skip
def test_uneven_split_names_the_size_and_the_fix(overrides, tp, message) -> None:
    cfg = ModelConfig.from_dict({**BASE, **overrides})
    with pytest.raises(ScifmError, match=message) as info:
        check_tp_degree(cfg, tp)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_even_splits_pass(tp) -> None:
    check_tp_degree(ModelConfig.from_dict(BASE), tp)


def test_tensor_parallelism_without_ranks_is_a_layout_error() -> None:
    model = build_model(ModelConfig.from_dict(BASE))
    with pytest.raises(ScifmError, match="tp=2 = 2 do not divide the world size 1"):
        parallelize(model, ParallelConfig(tp=2))
