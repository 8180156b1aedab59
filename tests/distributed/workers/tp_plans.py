"""Worker: the tensor-parallel plans reproduce the single-device forward and backward.

For tied and untied embeddings, with and without sequence parallelism, on the launcher's
ranks (all of them one "tp" group): logits come out whole and plain, the loss and every
gradient match the unsplit model, each rank holds its slice of the heads, and a foreach
AdamW step accepts the parameters (all DTensors). Then the one-line errors: a degree that
does not divide the key/value heads, and a sequence that sequence parallelism cannot split.
"""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from scifm.core.errors import ScifmError
from scifm.model import ModelConfig, build_model
from scifm.parallel.tp import apply_tp

MODEL = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 3000,
         "multiple_of": 32, "max_seq_len": 16}  # fmt: skip
TOKENS = torch.randint(0, 3000, (4, 17), generator=torch.Generator().manual_seed(0))


def _loss(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()), logits


def check_plan(mesh, tied: bool, sequence_parallel: bool) -> None:
    cfg = ModelConfig.from_dict({**MODEL, "tie_embeddings": tied})
    reference, split = build_model(cfg, seed=0), build_model(cfg, seed=0)
    apply_tp(split, mesh, sequence_parallel)
    (loss, logits), (loss_tp, logits_tp) = _loss(reference, TOKENS), _loss(split, TOKENS)
    loss.backward()
    loss_tp.backward()
    where = f"tied={tied} sequence_parallel={sequence_parallel}"
    assert type(logits_tp) is torch.Tensor and logits_tp.shape == logits.shape, where
    assert torch.allclose(logits_tp, logits, atol=1e-6, rtol=0), where
    assert abs(float(loss_tp) - float(loss)) < 1e-6, where
    split_params = dict(split.named_parameters())
    for name, param in reference.named_parameters():
        got = split_params[name]
        assert isinstance(got, DTensor), f"{where}: {name} is not a DTensor"
        assert torch.allclose(got.grad.full_tensor(), param.grad, atol=1e-6, rtol=0), name
    local_q = split.layers["0"].attention.wq.weight.to_local()
    assert local_q.shape[0] == cfg.num_heads * cfg.head_dim // mesh.size(), where
    torch.optim.AdamW(split.parameters(), foreach=True).step()


def check_errors(mesh) -> None:
    tp = mesh.size()
    model = build_model(ModelConfig.from_dict({**MODEL, "num_kv_heads": 1}))
    try:
        apply_tp(model, mesh, sequence_parallel=True)
        raise AssertionError("num_kv_heads=1 was split over tp ranks")
    except ScifmError as err:
        assert str(err).startswith(f"model.num_kv_heads=1 is not divisible by parallel.tp={tp}")
    model = build_model(ModelConfig.from_dict(MODEL))
    apply_tp(model, mesh, sequence_parallel=True)
    try:
        model(TOKENS[:, : 16 - 1])  # 15 positions
        raise AssertionError("an odd sequence length was split over tp ranks")
    except ScifmError as err:
        assert "sequence length 15 is not divisible by parallel.tp" in str(err)


def main() -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("tp",))["tp"]
    for tied in (False, True):
        for sequence_parallel in (True, False):
            check_plan(mesh, tied, sequence_parallel)
    check_errors(mesh)
    dist.destroy_process_group()
    gc.collect()  # as scifm.core.dist.shutdown_distributed: no gloo thread left to exit


if __name__ == "__main__":
    main()
