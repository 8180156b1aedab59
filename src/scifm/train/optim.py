"""Optimizers of the training engine: one config, one builder, three algorithms.

`build_optimizer(model, cfg)` returns a single `torch.optim.Optimizer` for the model's
trainable parameters:

- "adamw": `torch.optim.AdamW` (foreach kernels; Loshchilov and Hutter 2019).
- "muon": `scifm.train.muon.Muon`: Muon (Jordan et al. 2024; Liu et al. 2025) on the 2-D
  weight matrices of the transformer blocks, AdamW on embeddings, the output projection and
  norms, in one optimizer object.
- "sophiag": `scifm.train.sophia.SophiaG` (Liu et al. 2023) on every parameter; the trainer
  refreshes its Hessian estimate as described in `scifm.train.sophia`.

Contract with the trainer:

- Every param group carries `peak_lr`; each step the trainer sets
  `group["lr"] = group["peak_lr"] * schedule_multiplier` (groups may have different peaks:
  Muon's matrices use `muon_lr` when set).
- Weight decay applies to parameters with ndim >= 2 only (never to norm gains).
- `wants_hessian(optimizer, step)` says whether step `step` (from 0) needs the Hessian
  refresh; it is False for optimizers without one.
- All state is plain tensors or DTensors placed like their parameter, so
  `torch.distributed.checkpoint.state_dict.get_state_dict(model, optimizer)` saves it and
  `set_state_dict` restores it, also onto another sharding.

Parameters are named by their module path (FQN); FSDP2 keeps the names, activation
checkpointing and torch.compile add wrapper segments, so a block matrix is any 2-D
parameter with a path segment "layers".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from scifm.config import Config
from scifm.train.muon import Muon, ScaleRule, newton_schulz
from scifm.train.sophia import SophiaG, gnb_loss

__all__ = [
    "Muon",
    "OptimizerConfig",
    "SophiaG",
    "build_optimizer",
    "gnb_loss",
    "is_block_matrix",
    "newton_schulz",
    "wants_hessian",
]

ParamSource = nn.Module | Iterable[nn.Module] | Iterable[tuple[str, nn.Parameter]]


class OptimizerConfig(Config):
    """Which optimizer, and its hyperparameters (fields prefixed muon_/sophia_ apply to one)."""

    name: Literal["adamw", "muon", "sophiag"] = "adamw"
    """Algorithm: AdamW everywhere, Muon on block matrices (+ AdamW), or SophiaG everywhere."""
    lr: float = Field(default=3e-3, gt=0)
    """Peak learning rate (of every group, except Muon matrices when muon_lr is set)."""
    beta1: float = Field(default=0.9, ge=0, lt=1)
    """EMA factor of the gradient (AdamW, Muon's AdamW groups, SophiaG; the paper used 0.965)."""
    beta2: float = Field(default=0.95, ge=0, lt=1)
    """EMA factor of the squared gradient (AdamW and Muon's AdamW groups)."""
    eps: float = Field(default=1e-8, gt=0)
    """Added to AdamW's denominator."""
    weight_decay: float = Field(default=0.1, ge=0)
    """Decoupled weight decay (p *= 1 - lr * wd) on parameters with ndim >= 2 only."""
    foreach: bool = True
    """torch's multi-tensor AdamW kernels; turn off for layouts that mix DTensor and plain
    parameters (tensor parallelism with some parameters left unsharded)."""

    muon_momentum: float = Field(default=0.95, ge=0, lt=1)
    """Muon: momentum of the matrix updates (buf = momentum * buf + grad)."""
    muon_nesterov: bool = True
    """Muon: orthogonalise grad + momentum * buf (Nesterov) instead of buf."""
    muon_ns_steps: int = Field(default=5, ge=1, le=20)
    """Muon: Newton-Schulz iterations."""
    muon_scale_rule: ScaleRule = "match_adamw_rms"
    """Muon: per-matrix lr factor. "match_adamw_rms": muon_update_rms * sqrt(max(fan_out,
    fan_in)), updates with AdamW's RMS, so lr and weight_decay carry over (Liu et al. 2025);
    "spectral": sqrt(max(1, fan_out/fan_in)) (Jordan et al. 2024), with muon_lr ~0.02."""
    muon_update_rms: float = Field(default=0.2, gt=0)
    """Muon: target RMS of a matrix update per unit lr under "match_adamw_rms"."""
    muon_lr: float | None = Field(default=None, gt=0)
    """Muon: peak learning rate of the block matrices; null: `lr`."""
    muon_ns_bfloat16: bool = True
    """Muon: Newton-Schulz in bfloat16 on accelerators (always float32 on CPU)."""

    sophia_rho: float = Field(default=0.04, gt=0)
    """SophiaG: rho (gamma in the paper) scaling the Hessian before clipping m / (rho h)."""
    sophia_beta2: float = Field(default=0.99, ge=0, lt=1)
    """SophiaG: EMA factor of the Hessian diagonal estimate."""
    sophia_hessian_every: int = Field(default=10, ge=1)
    """SophiaG: refresh the Hessian estimate every this many steps (k in the paper)."""
    sophia_eps: float = Field(default=1e-12, gt=0)
    """SophiaG: floor of rho * h in the denominator."""

    @model_validator(mode="after")
    def _muon_lr_for_spectral(self) -> Self:
        if self.name == "muon" and self.muon_scale_rule == "spectral" and self.muon_lr is None:
            raise ValueError(
                'muon_scale_rule "spectral" needs its own muon_lr (about 0.02); set it, or '
                'use "match_adamw_rms" to share lr'
            )
        return self


def named_trainable_parameters(source: ParamSource) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of a module, of several (pipeline stages), or as given; no repeats."""
    if isinstance(source, nn.Module):
        pairs: Iterable[tuple[str, nn.Parameter]] = source.named_parameters()
    else:
        items = list(source)
        pairs = [
            pair
            for item in items
            for pair in (item.named_parameters() if isinstance(item, nn.Module) else [item])
        ]
    seen: set[int] = set()
    result = []
    for name, param in pairs:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            result.append((name, param))
    return result


def is_block_matrix(name: str, param: torch.Tensor) -> bool:
    """A 2-D weight inside the transformer blocks (`layers.<i>....`): Muon's parameters."""
    return param.ndim == 2 and "layers" in name.split(".")


def _group(params: list[nn.Parameter], peak_lr: float, weight_decay: float,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"params": params, "peak_lr": peak_lr, "lr": peak_lr,
            "weight_decay": weight_decay, **extra}  # fmt: skip


def _decay_groups(pairs: list[tuple[str, nn.Parameter]], cfg: OptimizerConfig,
                  **extra: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Matrices with weight decay, the rest (norm gains, biases) without."""
    matrices = [p for _, p in pairs if p.ndim >= 2]
    vectors = [p for _, p in pairs if p.ndim < 2]
    return [
        _group(matrices, cfg.lr, cfg.weight_decay, **extra),
        _group(vectors, cfg.lr, 0.0, **extra),
    ]


def param_groups(source: ParamSource, cfg: OptimizerConfig) -> list[dict[str, Any]]:
    """The optimizer's param groups for `cfg.name`, empty groups left out."""
    pairs = named_trainable_parameters(source)
    if cfg.name != "muon":
        groups = _decay_groups(pairs, cfg)
    else:
        blocks = [p for name, p in pairs if is_block_matrix(name, p)]
        others = [(name, p) for name, p in pairs if not is_block_matrix(name, p)]
        muon_lr = cfg.muon_lr if cfg.muon_lr is not None else cfg.lr
        groups = [_group(blocks, muon_lr, cfg.weight_decay, use_muon=True)]
        groups += _decay_groups(others, cfg, use_muon=False)
    return [group for group in groups if group["params"]]


def build_optimizer(source: ParamSource, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """One optimizer over the trainable parameters of `source` (a model, its pipeline stages,
    or (name, parameter) pairs), each param group carrying `peak_lr`."""
    groups = param_groups(source, cfg)
    if not groups:
        raise ValueError("no trainable parameters to optimize")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                 foreach=cfg.foreach)  # fmt: skip
    if cfg.name == "muon":
        return Muon(groups, lr=cfg.lr, momentum=cfg.muon_momentum, nesterov=cfg.muon_nesterov,
                    ns_steps=cfg.muon_ns_steps, scale_rule=cfg.muon_scale_rule,
                    update_rms=cfg.muon_update_rms, ns_bfloat16=cfg.muon_ns_bfloat16,
                    betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)  # fmt: skip
    return SophiaG(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.sophia_beta2), rho=cfg.sophia_rho,
                   eps=cfg.sophia_eps, hessian_every=cfg.sophia_hessian_every)  # fmt: skip


def wants_hessian(optimizer: torch.optim.Optimizer, step: int) -> bool:
    """Whether `optimizer` needs the GNB Hessian refresh before step `step` (SophiaG only)."""
    wants = getattr(optimizer, "wants_hessian", None)
    return bool(wants(step)) if callable(wants) else False
