"""torch.compile of the blocks (with selective checkpointing inside) matches eager training.

One process, a tiny model, two SGD steps (Adam would turn the rounding differences of
near-zero gradients into full-size steps): compiled and eager losses and weights agree to
fp32 rounding (inductor fuses element-wise ops and may reorder sums). The C++ kernels are
built with one compile thread, which on 2 cores is faster than starting a worker pool.
"""

from __future__ import annotations

import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F

from scifm.model import ModelConfig, build_model
from scifm.parallel import ParallelConfig
from scifm.parallel.parallelize import parallelize

MODEL = ModelConfig.from_dict(
    {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 500,
     "multiple_of": 32, "max_seq_len": 16}
)  # fmt: skip


def _train(parallel: ParallelConfig, steps: int = 2) -> tuple[list[float], torch.nn.Module]:
    model = build_model(MODEL, seed=0)
    parallelize(model, parallel)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        tokens = torch.randint(0, MODEL.vocab_size, (4, 17), generator=generator)
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses, model


def test_compiled_blocks_train_like_eager(monkeypatch) -> None:
    monkeypatch.setattr(inductor_config, "compile_threads", 1)
    torch._dynamo.reset()
    eager, eager_model = _train(ParallelConfig())
    compiled, compiled_model = _train(
        ParallelConfig(compile=True, activation_checkpoint="selective")
    )
    assert max(abs(a - b) for a, b in zip(eager, compiled, strict=True)) < 1e-5, (eager, compiled)
    assert compiled_model.state_dict().keys() == eager_model.state_dict().keys()
    trained = compiled_model.state_dict()
    for name, tensor in eager_model.state_dict().items():
        assert torch.allclose(trained[name], tensor, atol=1e-5, rtol=0), name
    torch._dynamo.reset()
