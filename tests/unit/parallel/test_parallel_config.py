"""The data-parallel layout: degrees resolved against the world size, clear errors otherwise."""

from __future__ import annotations

import pytest

from scifm.core.errors import ScifmError
from scifm.parallel import ParallelConfig


@pytest.mark.parametrize(
    ("replicate", "shard", "world", "expected"),
    [
        (1, -1, 4, (1, 4)),
        (2, -1, 4, (2, 2)),
        (2, 2, 4, (2, 2)),
        (4, 1, 4, (4, 1)),
        (1, -1, 1, (1, 1)),
    ],
)
def test_degrees_fill_the_world(replicate, shard, world, expected) -> None:
    assert ParallelConfig(dp_replicate=replicate, dp_shard=shard).degrees(world) == expected


@pytest.mark.parametrize(
    ("replicate", "shard", "world", "message"),
    [(3, -1, 4, "do not divide the world size 4"), (1, 3, 4, "the job has 4")],
)
def test_degrees_that_do_not_fit_are_one_clear_error(replicate, shard, world, message) -> None:
    with pytest.raises(ScifmError, match=message):
        ParallelConfig(dp_replicate=replicate, dp_shard=shard).degrees(world)


@pytest.mark.parametrize(
    ("degrees", "world", "expected"),
    [
        ({"tp": 2}, 4, (1, 1, 2, 2)),
        ({"pp": 2, "tp": 2}, 8, (2, 1, 2, 2)),
        ({"pp": 2, "dp_replicate": 2, "dp_shard": 1}, 4, (2, 2, 1, 1)),
        ({"tp": 4}, 4, (1, 1, 1, 4)),
    ],
)
def test_layout_orders_pipeline_data_and_tensor_degrees(degrees, world, expected) -> None:
    layout = ParallelConfig(**degrees).layout(world)
    assert layout.shape() == expected
    assert layout.world_size == world
    assert layout.dp == expected[1] * expected[2]


def test_tensor_degree_that_does_not_divide_the_world_names_every_degree() -> None:
    with pytest.raises(ScifmError, match=r"pp=1 x dp_replicate=1 x tp=3 = 3 do not divide"):
        ParallelConfig(tp=3).layout(4)


def test_zero_shard_degree_is_rejected_when_the_config_is_read() -> None:
    with pytest.raises(ScifmError, match="dp_shard"):
        ParallelConfig.from_dict({"dp_shard": 0})


def test_memory_estimate_shards_state_and_names_the_layout() -> None:
    from scifm.model import ModelConfig
    from scifm.parallel.estimate import memory_per_rank

    model = ModelConfig.named("7b", vocab_size=32000, max_seq_len=4096)
    one = memory_per_rank(model, ParallelConfig(), 1, micro_batch=1, seq_len=4096)
    many = memory_per_rank(model, ParallelConfig(dp_replicate=2), 16, micro_batch=1, seq_len=4096)
    assert many["layout"] == {"pp": 1, "dp_replicate": 2, "dp_shard": 8, "tp": 1, "world_size": 16}
    assert many["params_per_rank"] == one["params"] // 8
    assert many["state_gib"] == pytest.approx(one["state_gib"] / 8, rel=0.01)
    assert one["state_gib"] == pytest.approx(one["params"] * 16 / 2**30, rel=0.01)
    assert many["activations_gib"] == one["activations_gib"]


def test_memory_estimate_splits_state_over_tensor_and_pipeline_ranks() -> None:
    from scifm.model import ModelConfig
    from scifm.parallel.estimate import memory_per_rank

    model = ModelConfig.named("70b")
    plain = memory_per_rank(model, ParallelConfig(), 8, micro_batch=1, seq_len=8192)
    split = memory_per_rank(model, ParallelConfig(tp=8, pp=4), 256, micro_batch=1,
                            seq_len=8192, micro_batches_per_step=16)  # fmt: skip
    assert split["layout"]["dp_shard"] == plain["layout"]["dp_shard"] == 8
    # a quarter of the layers, an eighth of each matrix: ~1/32 of the state (plus embeddings)
    assert plain["state_gib"] / 40 < split["state_gib"] < plain["state_gib"] / 25
    # 1F1B keeps pp=4 micro-batches in flight on 20 of 80 layers, each split 8 ways (SP)
    assert split["activations_gib"] == pytest.approx(plain["activations_gib"] / 8, rel=0.01)
    checkpointed = memory_per_rank(model, ParallelConfig(tp=8, pp=4, activation_checkpoint="full"),
                                   256, micro_batch=1, seq_len=8192)  # fmt: skip
    assert checkpointed["activations_gib"] < split["activations_gib"] / 5
