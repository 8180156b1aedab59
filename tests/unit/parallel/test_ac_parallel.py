"""Activation checkpointing recomputes exactly: same loss, gradients and state-dict keys.

"selective" must keep what it promises (matmul and attention outputs) and recompute the
rest; counting the ops that run during backward shows which were recomputed.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from tests.unit.data.conftest import make_corpora
from torch.utils._python_dispatch import TorchDispatchMode

from scifm.core.errors import ScifmError
from scifm.data import CorpusSource, DataConfig
from scifm.model import ModelConfig, build_model
from scifm.parallel import ParallelConfig
from scifm.parallel.ac import apply_ac
from scifm.parallel.parallelize import parallelize
from scifm.train import TrainConfig, train
from scifm.train.metrics import read_metrics

MODEL = ModelConfig.from_dict(
    {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 500,
     "multiple_of": 32, "max_seq_len": 16}
)  # fmt: skip
TOKENS = torch.randint(0, 500, (4, 17), generator=torch.Generator().manual_seed(0))


def _loss(model: torch.nn.Module) -> torch.Tensor:
    logits = model(TOKENS[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), TOKENS[:, 1:].flatten())


def _loss_and_grads(mode: str) -> tuple[float, dict[str, torch.Tensor], torch.nn.Module]:
    model = build_model(MODEL, seed=0)
    parallelize(model, ParallelConfig(activation_checkpoint=mode))  # one process: no mesh
    loss = _loss(model)
    loss.backward()
    return float(loss.detach()), {n: p.grad for n, p in model.named_parameters()}, model


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_checkpointing_gives_the_loss_and_gradients_of_no_checkpointing(mode) -> None:
    loss, grads, model = _loss_and_grads("none")
    loss_ac, grads_ac, model_ac = _loss_and_grads(mode)
    assert abs(loss_ac - loss) < 1e-6
    clean = {name.replace("._checkpoint_wrapped_module", ""): g for name, g in grads_ac.items()}
    assert clean.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(clean[name], grad, atol=1e-6, rtol=0), name
    assert list(model_ac.state_dict()) == list(model.state_dict())  # checkpoints keep their keys
    assert all(type(b).__name__ == "CheckpointWrapper" for b in model_ac.layers.values())


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def _backward_ops(mode: str) -> Counter[str]:
    model = build_model(MODEL, seed=0)
    apply_ac(model, mode)
    loss = _loss(model)
    with _CountOps() as counter:
        loss.backward()
    return counter.counts


def test_selective_keeps_matmuls_and_attention_and_recomputes_the_rest() -> None:
    plain, full, selective = (_backward_ops(m) for m in ("none", "full", "selective"))
    attention = "_scaled_dot_product_flash_attention_for_cpu"
    # full reruns the blocks' matmuls and attention in backward; selective reruns neither
    assert full["mm"] > plain["mm"] and full[attention] == MODEL.num_layers
    assert selective["mm"] == plain["mm"] and selective[attention] == 0
    # both recompute the norms (rsqrt) and SiLU instead of storing their outputs
    for op in ("rsqrt", "silu"):
        assert plain[op] == 0 < selective[op] == full[op], op


def test_unknown_mode_is_one_clear_error() -> None:
    with pytest.raises(ScifmError, match="activation_checkpoint='some' is not a mode; use one of"):
        apply_ac(build_model(MODEL), "some")


def test_the_trainer_checkpoints_blocks_in_one_process(tmp_path, monkeypatch) -> None:
    """A single-process run goes through `parallelize` too, and trains exactly as without AC."""
    import scifm.parallel.parallelize as parallelize_module

    applied: list[str] = []

    def spy(model: torch.nn.Module, mode: str) -> None:
        applied.append(mode)
        apply_ac(model, mode)

    monkeypatch.setattr(parallelize_module, "apply_ac", spy)
    prefixes = make_corpora(tmp_path, files_per_corpus=(1,), docs_per_file=40)["a"]
    data = DataConfig(corpora=[CorpusSource(name="a", prefixes=prefixes, weight=1.0)],
                      seq_len=16)  # fmt: skip
    model = ModelConfig.from_dict({**MODEL.to_dict(), "vocab_size": 600})
    losses = {}
    for mode in ("none", "full"):
        cfg = TrainConfig.from_dict({"out_dir": str(tmp_path / mode), "max_steps": 3,
                                     "micro_batch_size": 4, "warmup_steps": 1,
                                     "log_every": 1})  # fmt: skip
        result = train(model, data, cfg, parallel=ParallelConfig(activation_checkpoint=mode))
        losses[mode] = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl")]
    assert applied == ["none", "full"]
    assert losses["full"] == losses["none"]
