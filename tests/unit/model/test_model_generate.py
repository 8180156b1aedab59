"""Greedy decoding: deterministic, stops at EOS, never emits padded ids, truncates context."""

from __future__ import annotations

import pytest
import torch

from scifm.model import ModelConfig, build_model
from scifm.model.generate import greedy_generate

CFG = ModelConfig.from_dict(
    dict(dim=32, num_layers=2, num_heads=4, vocab_size=100, multiple_of=16, max_seq_len=8)
)


def test_generation_is_deterministic_and_matches_step_by_step_argmax() -> None:
    model = build_model(CFG, seed=1)
    prompt = [3, 14, 15, 92]
    new = greedy_generate(model, prompt, max_new_tokens=6)
    assert new == greedy_generate(build_model(CFG, seed=1), prompt, max_new_tokens=6)
    assert len(new) == 6 and torch.is_grad_enabled()
    context = list(prompt)
    for token in new:
        with torch.no_grad():
            logits = model(torch.tensor([context[-8:]]))[0, -1, :100]
        assert token == int(logits.argmax())
        context.append(token)


def test_stops_at_eos_without_returning_it() -> None:
    model = build_model(CFG, seed=2)
    free = greedy_generate(model, [1, 2], max_new_tokens=5)
    assert greedy_generate(model, [1, 2], max_new_tokens=5, eos_id=free[0]) == []
    cut = free.index(free[2])  # first occurrence of the third token
    assert greedy_generate(model, [1, 2], 5, eos_id=free[2]) == free[:cut]


def test_padded_vocabulary_rows_are_never_chosen() -> None:
    model = build_model(CFG, seed=3)
    context = torch.tensor([[1, 2]])
    with torch.no_grad():
        logits = model(context)[0, -1]
        winner = int(logits.argmax())
        sign = 1.0 if logits[winner] > 0 else -1.0
        model.output.weight[100:] = sign * 10 * model.output.weight[winner]
        assert int(model(context)[0, -1].argmax()) >= 100  # a padded id would win unmasked
    assert all(token < 100 for token in greedy_generate(model, [1, 2], 4))


def test_long_prompts_are_truncated_to_max_seq_len() -> None:
    model = build_model(CFG, seed=4)
    prompt = list(range(20))
    assert greedy_generate(model, prompt, 3) == greedy_generate(model, prompt[-8:], 3)
    with pytest.raises(ValueError, match="empty"):
        greedy_generate(model, [], 3)
