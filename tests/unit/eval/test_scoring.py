"""Shared-context scoring gives every choice the log-likelihood of scoring it alone."""

from __future__ import annotations

import pytest
import torch

from scifm.eval.scoring import LoglikelihoodScorer, Question, encode_question
from scifm.model import ModelConfig, build_model

CFG = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=100,
                  multiple_of=16, max_seq_len=24)  # fmt: skip


def chars(text: str) -> list[int]:
    """A character-level encoding: context + continuation splits exactly at the boundary."""
    return [ord(c) % 97 + 1 for c in text]


def alone(model: torch.nn.Module, context: list[int], continuation: list[int]) -> float:
    """One sequence through the model, no cache; lm-eval's left truncation to the window."""
    tokens = (context + continuation)[-(CFG.max_seq_len + 1) :]
    with torch.no_grad():
        logprobs = model(torch.tensor([tokens[:-1]]))[0, :, :100].log_softmax(-1)
    start = len(tokens) - 1 - len(continuation)
    return sum(float(logprobs[start + j, t]) for j, t in enumerate(continuation))


QUESTIONS = [
    Question("Q: what is ice?\nA:", (" solid water", " steam", " a gas")),
    Question("2+2=", (" 4", " 22")),
    Question("Name a noble gas:", (" neon", " iron", " tin", " argon")),
    Question("x", (" y",)),
]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_context_scores_equal_scoring_each_choice_alone(batch_size: int) -> None:
    model = build_model(CFG, seed=1).eval()
    scorer = LoglikelihoodScorer(model, chars, prefix_id=0, batch_size=batch_size)
    scores = scorer.score(QUESTIONS)
    for question, got in zip(QUESTIONS, scores, strict=True):
        context = chars(question.context)
        expected = [alone(model, context, chars(c)) for c in question.continuations]
        assert got == pytest.approx(expected, abs=1e-5)


def test_a_question_longer_than_the_window_is_truncated_on_the_left() -> None:
    model = build_model(CFG, seed=2).eval()
    # choices of different lengths, the longest last: scored in length order, kept in theirs
    long = Question("a very long context that does not fit the window:", (" no", " yes", " maybe"))
    assert len(chars(long.context)) > CFG.max_seq_len
    scorer = LoglikelihoodScorer(model, chars, prefix_id=0, batch_size=4)
    short, scored, again = scorer.score([QUESTIONS[1], long, long])
    assert again == scored
    expected = [alone(model, chars(long.context), chars(c)) for c in long.continuations]
    assert scored == pytest.approx(expected, abs=1e-5)
    assert short == pytest.approx([alone(model, chars("2+2="), chars(c)) for c in (" 4", " 22")],
                                  abs=1e-5)  # fmt: skip


def test_trailing_spaces_move_to_the_continuation_and_empty_contexts_use_the_prefix() -> None:
    encoded = encode_question(Question("Answer: ", ("yes",)), chars, prefix_id=0)
    assert encoded.context == chars("Answer:") and encoded.continuations == [chars(" yes")]
    empty = encode_question(Question("", ("hi",)), chars, prefix_id=7)
    assert empty.context == [7] and empty.continuations == [chars("hi")]
    model = build_model(CFG, seed=3).eval()
    (score,) = LoglikelihoodScorer(model, chars, prefix_id=7).score([Question("", ("hi",))])
    assert score == pytest.approx([alone(model, [7], chars("hi"))], abs=1e-5)


def test_bpe_continuations_are_what_the_whole_string_adds(tokenizer) -> None:
    encoded = encode_question(Question("The eigenvalues of", (" a matrix",)), tokenizer.encode,
                              prefix_id=None)  # fmt: skip
    whole = tokenizer.encode("The eigenvalues of a matrix")
    assert encoded.context + encoded.continuations[0] == whole
