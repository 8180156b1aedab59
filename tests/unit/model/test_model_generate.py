"""Generation with a KV cache: the same numbers as full forward passes, batched or not.

The reference is the model run on the whole context at every step, without a cache.
"""

from __future__ import annotations

import math

import pytest
import torch

from scifm.model import ModelConfig, build_model
from scifm.model.generate import SamplingConfig, choose_next, filter_logits, generate, greedy_ids
from scifm.model.kv_cache import KVCache

CFG = ModelConfig.from_dict(
    dict(dim=32, num_layers=2, num_heads=4, vocab_size=100, multiple_of=16, max_seq_len=16)
)
SHAPES = {
    "gqa-untied-half": {},
    "mha-tied-half": dict(num_kv_heads=4, tie_embeddings=True),
    "gqa-interleaved": dict(num_kv_heads=2, rope_convention="interleaved"),
}


def _model(seed: int = 1, **changes: object) -> torch.nn.Module:
    return build_model(CFG.model_copy(update=changes), seed=seed).eval()


def reference_greedy(model: torch.nn.Module, prompt: list[int], new: int) -> list[int]:
    """Greedy decoding without a cache: the whole context through the model every step."""
    context = list(prompt)
    with torch.no_grad():
        for _ in range(new):
            logits = model(torch.tensor([context]))[0, -1, : model.cfg.vocab_size]
            context.append(int(logits.argmax()))
    return context[len(prompt) :]


@pytest.mark.parametrize("shape", SHAPES)
def test_cached_logits_equal_full_forward(shape: str) -> None:
    model = _model(**SHAPES[shape])
    tokens = torch.tensor([[5, 17, 3, 99, 42, 8, 61, 30, 2, 77]])
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(model.cfg, [0], capacity=16)
        pieces = [model(tokens[:, :4], cache=cache)]  # prefill, then one position at a time
        pieces += [model(tokens[:, i : i + 1], cache=cache) for i in range(4, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_cached_greedy_equals_uncached_greedy(shape: str) -> None:
    model = _model(seed=2, **SHAPES[shape])
    prompt = [3, 14, 15, 92]
    assert greedy_ids(model, prompt, 10) == reference_greedy(model, prompt, 10)


def test_left_padded_batch_gives_each_row_its_own_logits() -> None:
    model = _model(seed=3)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9], [40, 41, 42]]
    with torch.no_grad():
        cache = KVCache(model.cfg, [0, 6, 4], capacity=9)
        batch = torch.tensor([prompts[0], [0] * 6 + prompts[1], [0] * 4 + prompts[2]])
        last = model(batch, cache=cache)[:, -1]
        step = model(torch.tensor([[11], [12], [13]]), cache=cache)[:, -1]
        for row, prompt in enumerate(prompts):
            alone = model(torch.tensor([[*prompt, 11 + row]]))[0]
            torch.testing.assert_close(last[row], alone[-2], atol=1e-5, rtol=0)
            torch.testing.assert_close(step[row], alone[-1], atol=1e-5, rtol=0)


def test_batched_generation_equals_one_prompt_at_a_time() -> None:
    model = _model(seed=4)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9], [40, 41, 42]]
    together = generate(model, prompts, SamplingConfig(max_new_tokens=6))
    assert [c.ids for c in together] == [reference_greedy(model, p, 6) for p in prompts]
    assert {c.finish_reason for c in together} == {"length"}


def test_stops_at_eos_without_returning_it() -> None:
    model = _model(seed=5)
    free = greedy_ids(model, [1, 2], 5)
    assert greedy_ids(model, [1, 2], 5, eos_id=free[0]) == []
    cut = free.index(free[2])  # first occurrence of the third token
    done = generate(model, [[1, 2]], SamplingConfig(max_new_tokens=5), eos_id=free[2])[0]
    assert done.ids == free[:cut] and done.finish_reason == "stop"


def _letters(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_strings_spanning_tokens_end_the_text_before_them() -> None:
    model = _model(seed=6)
    free = generate(model, [[1, 2]], SamplingConfig(max_new_tokens=8), decode=_letters)[0]
    stop = free.text[3:5]  # the 4th and 5th tokens' letters
    first = free.text.find(stop)
    done = generate(model, [[1, 2]], SamplingConfig(max_new_tokens=8, stop=[stop, "#"]),
                    decode=_letters)[0]  # fmt: skip
    assert done.finish_reason == "stop"
    assert done.text == free.text[:first] and done.ids == free.ids[: first + 2]
    with pytest.raises(ValueError, match="decode"):
        generate(model, [[1]], SamplingConfig(stop=["x"]))


def test_padded_vocabulary_rows_are_never_chosen() -> None:
    model = _model(seed=7)
    context = torch.tensor([[1, 2]])
    with torch.no_grad():
        logits = model(context)[0, -1]
        winner = int(logits.argmax())
        sign = 1.0 if logits[winner] > 0 else -1.0
        model.output.weight[100:] = sign * 10 * model.output.weight[winner]
        assert int(model(context)[0, -1].argmax()) >= 100  # a padded id would win unmasked
    assert all(token < 100 for token in greedy_ids(model, [1, 2], 4))
    sampled = generate(model, [[1, 2]] * 4, SamplingConfig(max_new_tokens=4, temperature=2.0))
    assert all(token < 100 for c in sampled for token in c.ids)


def test_long_prompts_keep_their_last_tokens_and_bad_requests_fail() -> None:
    model = _model(seed=8)
    prompt = list(range(30))
    assert greedy_ids(model, prompt, 3) == greedy_ids(model, prompt[-13:], 3)
    with pytest.raises(ValueError, match="at least one token"):
        greedy_ids(model, [], 3)
    with pytest.raises(ValueError, match="no room"):
        greedy_ids(model, [1], 16)


def test_filter_logits_by_hand() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert filter_logits(logits, 2, 1.0).tolist() == [[-math.inf, -math.inf, 2.0, 3.0]]
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])  # sorted: 0.5, 0.3 | 0.15, 0.05
    kept = filter_logits(probs.log(), 0, 0.8).isfinite().tolist()
    assert kept == [[False, True, False, True]]
    assert filter_logits(probs.log(), 0, 0.81).isfinite().sum() == 3
    assert filter_logits(probs.log(), 0, 1e-6).isfinite().tolist() == [[False, True, False, False]]


def test_sampling_follows_the_softmax_and_is_seeded() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20_000, 4)
    sampling = SamplingConfig(temperature=1.0)
    draws = choose_next(logits, sampling, torch.Generator().manual_seed(0))
    frequency = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(frequency, logits[0].softmax(-1), atol=0.015, rtol=0)
    hot = choose_next(logits, SamplingConfig(temperature=0.5), torch.Generator().manual_seed(0))
    assert (hot == 0).float().mean() > frequency[0] + 0.1  # lower temperature: sharper


def test_seeded_sampling_repeats_and_degenerate_settings_are_greedy() -> None:
    model = _model(seed=9)
    prompts = [[1, 2, 3], [4]]
    warm = SamplingConfig(max_new_tokens=8, temperature=1.5, seed=11)
    first = [c.ids for c in generate(model, prompts, warm)]
    assert first == [c.ids for c in generate(model, prompts, warm)]
    other = [c.ids for c in generate(model, prompts, warm.model_copy(update={"seed": 12}))]
    assert other != first
    greedy = [c.ids for c in generate(model, prompts, SamplingConfig(max_new_tokens=8))]
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}):
        picked = generate(model, prompts, warm.model_copy(update=narrow))
        assert [c.ids for c in picked] == greedy
