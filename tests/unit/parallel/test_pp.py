"""Pipeline stages without processes: the balanced split, loop order, validation errors, and
stage modules that chain to the full model's output with the full model's parameter names."""

from __future__ import annotations

import pytest
import torch

from scifm.core.errors import ScifmError
from scifm.model import ModelConfig, build_model
from scifm.parallel import ParallelConfig
from scifm.parallel.pp import (
    _StepLoss,
    check_microbatches,
    prune_to_stages,
    split_stages,
    stage_layer_counts,
    stage_module,
    validate_pipeline,
)

SMALL = dict(dim=32, num_heads=4, num_kv_heads=2, vocab_size=300, multiple_of=32, max_seq_len=16)


def _model_cfg(num_layers: int = 4, **extra) -> ModelConfig:
    return ModelConfig(num_layers=num_layers, **{**SMALL, **extra})


def _interleaved(pp: int = 2, per_rank: int = 2) -> ParallelConfig:
    return ParallelConfig(pp=pp, pp_schedule="Interleaved1F1B", pp_stages_per_rank=per_rank)


@pytest.mark.parametrize(
    ("layers", "stages", "expected"),
    [
        (4, 2, [2, 2]),
        (5, 2, [3, 2]),  # no middle stage: the extra layer goes to the first, not the last
        (6, 4, [1, 2, 2, 1]),  # middle stages first
        (7, 4, [2, 2, 2, 1]),  # then the first; the last never gets one
        (8, 3, [3, 3, 2]),
        (80, 6, [13, 14, 14, 13, 13, 13]),
    ],
)
def test_layers_are_balanced_and_the_last_stage_is_never_the_larger(layers, stages, expected):
    assert stage_layer_counts(layers, stages) == expected


@pytest.mark.parametrize("layers", range(1, 33))
@pytest.mark.parametrize("stages", range(1, 9))
def test_every_split_covers_the_layers_within_one(layers, stages) -> None:
    if stages > layers:
        return
    counts = stage_layer_counts(layers, stages)
    assert sum(counts) == layers and max(counts) - min(counts) <= 1 and min(counts) >= 1
    assert counts[-1] == min(counts)


def test_one_stage_per_rank_in_model_order() -> None:
    cfg = ParallelConfig(pp=2, pp_schedule="1F1B")
    first, last = split_stages(_model_cfg(5), cfg, 0), split_stages(_model_cfg(5), cfg, 1)
    assert [(s.index, s.layers, s.is_first, s.is_last) for s in first] == [
        (0, (0, 1, 2), True, False)
    ]
    assert [(s.index, s.layers, s.is_first, s.is_last) for s in last] == [(1, (3, 4), False, True)]


def test_interleaved_ranks_hold_stages_in_loop_order() -> None:
    specs = [split_stages(_model_cfg(8), _interleaved(), rank) for rank in (0, 1)]
    assert [[(s.index, s.layers) for s in rank] for rank in specs] == [
        [(0, (0, 1)), (2, (4, 5))],
        [(1, (2, 3)), (3, (6, 7))],
    ]
    assert specs[0][0].is_first and specs[1][-1].is_last  # the last stage is on rank pp - 1


@pytest.mark.parametrize(
    ("model", "parallel", "message"),
    [
        (
            _model_cfg(6),
            ParallelConfig(pp=4, pp_schedule="Interleaved1F1B", pp_stages_per_rank=2),
            r"^parallel.pp=4 x pp_stages_per_rank=2 = 8 stages but the model has 6 layers; ",
        ),
        (_model_cfg(2), ParallelConfig(pp=4), "4 stages but the model has 2 layers"),
        (_model_cfg(), ParallelConfig(pp=2, pp_schedule="Interleaved1F1B"),
         "Interleaved1F1B needs parallel.pp_stages_per_rank >= 2 .got 1.; raise it"),
        (_model_cfg(), ParallelConfig(pp=2, pp_schedule="1F1B", pp_stages_per_rank=2),
         "1F1B runs one stage per rank but parallel.pp_stages_per_rank=2; set it to 1"),
        (_model_cfg(), ParallelConfig(pp=2, pp_schedule="GPipe", pp_stages_per_rank=2),
         "GPipe runs one stage per rank"),
        (_model_cfg(tie_embeddings=True), ParallelConfig(pp=2),
         "tie_embeddings=true shares one weight .* set model.tie_embeddings=false"),
    ],
)  # fmt: skip
def test_layouts_the_pipeline_cannot_run_are_one_line_errors(model, parallel, message) -> None:
    with pytest.raises(ScifmError, match=message) as raised:
        validate_pipeline(model, parallel)
    assert "\n" not in str(raised.value)
    with pytest.raises(ScifmError):
        split_stages(model, parallel, 0)


@pytest.mark.parametrize(
    ("parallel", "accepted", "rejected", "message"),
    [
        (ParallelConfig(pp=2, pp_schedule="GPipe"), [1, 2, 3, 5], [], ""),
        (ParallelConfig(pp=2, pp_schedule="1F1B"), [2, 3, 5], [1],
         "1F1B needs at least one micro-batch per stage: train.grad_accum_steps=1 < 2 stages"),
        (ParallelConfig(pp=4, pp_schedule="1F1B"), [4, 7], [3], "raise train.grad_accum_steps"),
        (_interleaved(), [1, 2, 3, 4, 6, 8], [5],
         r"multiple of its rounds, max\(1, n // pp=2\) = 2, but got 5; use 4 or 6"),
        (_interleaved(), [], [7], "= 3, but got 7; use 6 or 8"),
        (_interleaved(pp=4), [1, 3, 4, 5, 6, 7, 8, 10, 12], [9, 11], "Interleaved1F1B needs"),
    ],
)  # fmt: skip
def test_microbatch_counts_follow_what_torch_schedules_accept(
    parallel, accepted, rejected, message
) -> None:
    """As measured on torch 2.13 (gloo, two ranks): 1F1B raises for fewer micro-batches than
    stages, Interleaved1F1B for n not a multiple of max(1, n // pp); GPipe runs any n >= 1."""
    for n in accepted:
        check_microbatches(parallel, n)
    for n in rejected:
        with pytest.raises(ScifmError, match=message):
            check_microbatches(parallel, n)


def test_pp_rank_outside_the_layout_is_an_error() -> None:
    with pytest.raises(ScifmError, match="pp rank 2 is outside parallel.pp=2"):
        split_stages(_model_cfg(), ParallelConfig(pp=2), 2)


def test_stages_chain_to_the_full_model_with_its_parameter_names() -> None:
    model = build_model(_model_cfg(), seed=0)
    tokens = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    expected = model(tokens)
    specs = sorted(
        (s for rank in (0, 1) for s in split_stages(model.cfg, _interleaved(), rank)),
        key=lambda s: s.index,
    )
    stages = [stage_module(model, spec) for spec in specs]
    h = tokens
    for stage in stages:
        h = stage(h)
    torch.testing.assert_close(h, expected, rtol=0, atol=0)
    full_names = set(dict(model.named_parameters()))
    assert set(dict(stages[0].named_parameters())) == {
        "tok_embeddings.weight",
        *(n for n in full_names if n.startswith("layers.0.")),
    }
    assert {"norm.weight", "output.weight"} <= set(dict(stages[-1].named_parameters()))
    union = {name for stage in stages for name, _ in stage.named_parameters()}
    assert union == full_names


def test_pruned_model_keeps_only_this_ranks_stages_shared_with_them() -> None:
    model = build_model(_model_cfg(), seed=0)
    specs = split_stages(model.cfg, _interleaved(), 1)  # stages 1 and 3: layers 1 and 3, output
    stages = [stage_module(model, spec) for spec in specs]
    prune_to_stages(model, specs)
    assert list(model.layers) == ["1", "3"] and model.tok_embeddings is None
    names = set(model.state_dict())
    assert names == {n for stage in stages for n in stage.state_dict()}
    assert {"layers.3.attention.wq.weight", "norm.weight", "output.weight"} <= names
    assert stages[1].layers["3"] is model.layers["3"] and stages[1].output is model.output


class _Recorder:
    """A loss that records what it returns, as LanguageModelLoss records the cross entropy."""

    def __init__(self) -> None:
        self.recorded: list[float] = []

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = logits.sum()
        self.recorded.append(float(loss))
        return loss

    def pop_mean(self) -> float | None:
        mean = sum(self.recorded) / len(self.recorded) if self.recorded else None
        self.recorded.clear()
        return mean


def test_first_step_drops_the_shape_inference_call_and_scales_by_microbatches() -> None:
    step_loss, recorder = _StepLoss(), _Recorder()
    step_loss.begin(recorder, 2, pop_each=True)
    step_loss(torch.tensor([100.0]), None)  # torch's shape inference on placeholder values
    scaled = [step_loss(torch.tensor([v]), None) for v in (1.0, 3.0)]
    assert [float(s) for s in scaled] == [0.5, 1.5]
    assert step_loss.mean(2) == 2.0
    step_loss.begin(recorder, 2, pop_each=False)
    for v in (5.0, 7.0):
        step_loss(torch.tensor([v]), None)
    assert step_loss.mean(2) == 6.0
    step_loss.begin(recorder, 2, pop_each=False)
    step_loss(torch.tensor([1.0]), None)
    with pytest.raises(RuntimeError, match="called the loss 1 times for 2 micro-batches"):
        step_loss.mean(2)
