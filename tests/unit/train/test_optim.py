"""Optimizers: config errors, param groups, Newton-Schulz, Muon and SophiaG steps, state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from scifm.core.errors import ScifmError
from scifm.model import ModelConfig, build_model
from scifm.train.muon import lr_scale
from scifm.train.optim import (
    Muon,
    OptimizerConfig,
    SophiaG,
    build_optimizer,
    gnb_loss,
    newton_schulz,
    wants_hessian,
)

TINY = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=512,
                   multiple_of=32, max_seq_len=16)  # fmt: skip
NAMES = ("adamw", "muon", "sophiag")


def _model() -> torch.nn.Module:
    return build_model(TINY, seed=0)


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (4, 17), generator=torch.Generator().manual_seed(seed))


def _loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())


def _train_step(model, optimizer, batch) -> float:
    loss = _loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": "adam"}, "name"),
        ({"beta1": 1.0}, "beta1"),
        ({"lr": 0}, "lr"),
        ({"muon_ns_steps": 0}, "muon_ns_steps"),
        ({"sophia_hessian_every": 0}, "sophia_hessian_every"),
        ({"name": "muon", "muon_scale_rule": "spectral"}, "needs its own muon_lr"),
        ({"momentum": 0.9}, "unknown field"),
    ],
)
def test_bad_config_is_one_line_error(override, message) -> None:
    with pytest.raises(ScifmError, match=message) as err:
        OptimizerConfig.from_dict(override, source="recipe.yaml")
    assert "\n" not in str(err.value)


def test_config_round_trips_through_yaml() -> None:
    cfg = OptimizerConfig(name="muon", muon_lr=0.02, muon_scale_rule="spectral")
    assert OptimizerConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


# -- param groups ---------------------------------------------------------------------------


def _names_by_group(model, optimizer) -> list[set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in g["params"]} for g in optimizer.param_groups]


@pytest.mark.parametrize("name", NAMES)
def test_groups_carry_peak_lr_and_decay_only_matrices(name) -> None:
    model = _model()
    cfg = OptimizerConfig(name=name, lr=1e-3, weight_decay=0.05, muon_lr=0.02)
    optimizer = build_optimizer(model, cfg)
    seen = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(seen) == len(list(model.parameters())) == len({id(p) for p in seen})
    for group in optimizer.param_groups:
        muon = group.get("use_muon", False)
        assert group["peak_lr"] == group["lr"] == (0.02 if muon else 1e-3)
        ndims = {p.ndim for p in group["params"]}
        assert group["weight_decay"] == (0.05 if ndims == {2} else 0.0), ndims
        assert ndims in ({2}, {1})


def test_muon_takes_block_matrices_only() -> None:
    model = _model()
    optimizer = build_optimizer(model, OptimizerConfig(name="muon"))
    assert isinstance(optimizer, Muon)
    muon, *adamw = _names_by_group(model, optimizer)
    assert optimizer.param_groups[0]["use_muon"]
    assert not any(g["use_muon"] for g in optimizer.param_groups[1:])
    expected = {f"layers.{i}.{m}.weight" for i in range(2)
                for m in ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
                          "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")}  # fmt: skip
    assert muon == expected
    assert set().union(*adamw) == {n for n, _ in model.named_parameters()} - expected
    assert {"tok_embeddings.weight", "output.weight", "norm.weight"} <= set().union(*adamw)


def test_build_accepts_pipeline_stages_and_named_pairs() -> None:
    model = _model()
    first, last = copy.deepcopy(model), copy.deepcopy(model)  # as pipeline splitting leaves them
    del first.layers["1"]
    first.norm = first.output = None
    del last.layers["0"]
    last.tok_embeddings = None
    by_stages = build_optimizer([first, last], OptimizerConfig(name="muon"))
    by_pairs = build_optimizer(list(model.named_parameters()), OptimizerConfig(name="muon"))
    for optimizer in (by_stages, by_pairs):
        assert len(optimizer.param_groups[0]["params"]) == 14
        assert sum(len(g["params"]) for g in optimizer.param_groups) == 21


# -- Newton-Schulz and Muon -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (64, 64), (128, 352)])
def test_newton_schulz_singular_values_near_one(shape) -> None:
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 7.0
    result = newton_schulz(matrix, steps=5)
    values = torch.linalg.svdvals(result)
    assert result.shape == matrix.shape and result.dtype == torch.float32
    assert values.min() > (0.05 if shape[0] == shape[1] else 0.6), values.min()
    assert values.max() < 1.2 and 0.7 < values.median() < 1.1
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert F.cosine_similarity(result.flatten(), (u @ vh).flatten(), dim=0) > 0.97


def test_newton_schulz_rejects_vectors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.ones(4))


def test_lr_scale_rules() -> None:
    assert lr_scale(torch.Size([64, 16]), "match_adamw_rms", 0.2) == pytest.approx(1.6)
    assert lr_scale(torch.Size([64, 16]), "spectral", 0.2) == pytest.approx(2.0)
    assert lr_scale(torch.Size([16, 64]), "spectral", 0.2) == 1.0


def test_muon_step_orthogonalises_blocks_and_adamw_moves_the_rest() -> None:
    model = _model()
    reference = copy.deepcopy(model)
    cfg = OptimizerConfig(name="muon", lr=1e-2, weight_decay=0.0)
    optimizer = build_optimizer(model, cfg)
    adamw = torch.optim.AdamW(
        [p for n, p in reference.named_parameters() if "layers" not in n or p.ndim < 2],
        lr=1e-2, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=0.0,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _loss(model, _batch()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    _train_step(reference, adamw, _batch())
    reference_params = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        delta = param.detach() - before[name]
        if "layers" in name and param.ndim == 2:
            # first step, Nesterov: grad + 0.95 * buf with buf = grad
            direction = newton_schulz(grads[name] * 1.95)
            scale = 1e-2 * lr_scale(param.shape, "match_adamw_rms", 0.2)
            assert torch.allclose(delta, -scale * direction, atol=1e-7, rtol=1e-4), name
            top = torch.linalg.svdvals(direction).max()  # the rest: as the gradient's rank allows
            assert 0.6 < top < 1.2, name
        else:
            assert torch.allclose(param, reference_params[name], atol=1e-7, rtol=0), name


def test_muon_weight_decay_and_plain_momentum() -> None:
    weight = torch.nn.Parameter(torch.eye(4) * 2.0)
    optimizer = Muon([{"params": [weight], "use_muon": True}], lr=0.1, weight_decay=0.5,
                     nesterov=False, scale_rule="spectral")  # fmt: skip
    weight.grad = torch.eye(4)
    optimizer.step()
    ortho = newton_schulz(torch.eye(4))
    assert torch.allclose(weight.detach(), torch.eye(4) * 2.0 * 0.95 - 0.1 * ortho)
    assert torch.equal(optimizer.state[weight]["momentum_buffer"], torch.eye(4))


def test_muon_rejects_non_matrices_in_muon_groups() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Muon([{"params": [torch.nn.Parameter(torch.ones(3))], "use_muon": True}])


# -- SophiaG --------------------------------------------------------------------------------


def test_sophia_update_by_hand() -> None:
    """beta1 0.9, beta2 0.99, rho 0.1, lr 0.5, eps 1e-12, one GNB refresh over 10 tokens.

    h = 0.01 * 10 * gh^2 = [0.1, 0.4, 0]; m = 0.1 * g = [0.2, -0.001, 0.1];
    m / max(rho h, eps) = [20, -0.025, 1e11] -> clipped [1, -0.025, 1];
    vector (no decay): p - 0.5 * clip = [0.5, -1.9875, 0.0];
    matrix (decay 0.1): p * 0.95 - 0.5 * clip = [0.45, -1.8875, -0.025].
    """
    vector = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    matrix = torch.nn.Parameter(torch.tensor([[1.0, -2.0, 0.5]]))
    optimizer = SophiaG([{"params": [vector], "weight_decay": 0.0},
                         {"params": [matrix], "weight_decay": 0.1}],
                        lr=0.5, betas=(0.9, 0.99), rho=0.1, eps=1e-12)  # fmt: skip
    for param in (vector, matrix):
        param.grad = torch.tensor([1.0, 2.0, 0.0]).view_as(param)
    optimizer.update_hessian(num_tokens=10)
    assert torch.allclose(optimizer.state[vector]["hessian"], torch.tensor([0.1, 0.4, 0.0]))
    for param in (vector, matrix):
        param.grad = torch.tensor([2.0, -0.01, 1.0]).view_as(param)
    optimizer.step()
    assert torch.allclose(vector.detach(), torch.tensor([0.5, -1.9875, 0.0]))
    assert torch.allclose(matrix.detach(), torch.tensor([[0.45, -1.8875, -0.025]]))
    assert optimizer.state[vector]["step"] == 1


def test_sophia_hessian_schedule() -> None:
    model = _model()
    sophia = build_optimizer(model, OptimizerConfig(name="sophiag", sophia_hessian_every=3))
    assert [wants_hessian(sophia, s) for s in range(7)] == [1, 0, 0, 1, 0, 0, 1]
    adamw = build_optimizer(model, OptimizerConfig())
    assert not any(wants_hessian(adamw, s) for s in range(5))
    with pytest.raises(ValueError, match="num_tokens"):
        sophia.update_hessian(0)


def test_gnb_loss_has_no_gradient_through_the_sampling() -> None:
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(3), requires_grad=True)
    gen = torch.Generator().manual_seed(4)
    loss = gnb_loss(logits, generator=gen)
    loss.backward()
    probs = logits.detach().softmax(-1).flatten(0, 1)
    onehot = probs - logits.grad.flatten(0, 1) * 10  # grad = (softmax - onehot(label)) / N
    assert torch.allclose(onehot.sum(-1), torch.ones(10), atol=1e-6)
    assert torch.allclose(onehot.max(-1).values, torch.ones(10), atol=1e-6)
    again = gnb_loss(logits, generator=torch.Generator().manual_seed(4))
    assert torch.equal(loss.detach(), again.detach())


def test_sophia_trains_the_tiny_model() -> None:
    model = _model()
    optimizer = build_optimizer(model, OptimizerConfig(name="sophiag", lr=3e-3,
                                                       sophia_hessian_every=2))  # fmt: skip
    batch, losses = _batch(), []
    for step in range(6):
        if wants_hessian(optimizer, step):
            gnb_loss(model(batch[:, :-1])).backward()
            optimizer.update_hessian(num_tokens=batch[:, 1:].numel())
            optimizer.zero_grad(set_to_none=True)
        losses.append(_train_step(model, optimizer, batch))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1, losses
    hessian = optimizer.state[model.output.weight]["hessian"]
    assert hessian.shape == model.output.weight.shape and hessian.min() >= 0 and hessian.max() > 0


# -- training and checkpoint state ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_optimizer_lowers_the_loss(name) -> None:
    model = _model()
    optimizer = build_optimizer(model, OptimizerConfig(name=name, lr=1e-2))
    losses = [_train_step(model, optimizer, _batch()) for _ in range(4)]
    assert losses[-1] < losses[0] - 0.2, losses


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_get_and_set_state_dict(name) -> None:
    cfg = OptimizerConfig(name=name, lr=1e-2, muon_lr=2e-2)
    model = _model()
    optimizer = build_optimizer(model, cfg)
    if name == "sophiag":
        gnb_loss(model(_batch()[:, :-1])).backward()
        optimizer.update_hessian(num_tokens=64)
        optimizer.zero_grad(set_to_none=True)
    for seed in range(2):
        _train_step(model, optimizer, _batch(seed))
    model_sd, optim_sd = get_state_dict(model, optimizer)
    saved = copy.deepcopy((model_sd, optim_sd))

    restored_model = build_model(TINY, seed=1)
    restored = build_optimizer(restored_model, cfg)
    for group in restored.param_groups:
        group["peak_lr"] = 123.0  # must come back from the checkpoint
    set_state_dict(restored_model, restored, model_state_dict=saved[0], optim_state_dict=saved[1])
    assert [g["peak_lr"] for g in restored.param_groups] == [
        g["peak_lr"] for g in optimizer.param_groups
    ]
    for a, b in zip(optimizer.param_groups, restored.param_groups, strict=True):
        for p, q in zip(a["params"], b["params"], strict=True):
            for key, value in optimizer.state[p].items():
                assert torch.equal(value, restored.state[q][key]), key
    _train_step(model, optimizer, _batch(5))
    _train_step(restored_model, restored, _batch(5))
    for (n, p), q in zip(model.named_parameters(), restored_model.parameters(), strict=True):
        assert torch.equal(p, q), n
