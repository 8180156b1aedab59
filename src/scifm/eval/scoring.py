"""Log-likelihood of continuations: each question's context computed once for all its choices.

The tokens scored are lm-evaluation-harness's, so the choices agree with it: trailing
spaces of the context move to the continuation; the context is encoded alone and the
continuation is what encoding context + continuation adds after it; a sequence longer than
`max_seq_len + 1` tokens keeps its last ones. The log-likelihood of a continuation is the
sum of its tokens' log-probabilities, each given everything before it.

Speed: questions go through the model in batches. A batch's contexts are left-padded and
run once (prefill, with a KV cache); the cache is then copied to one row per choice, and
every choice's tokens are run from there in one forward pass, right-padded (a causal model
never looks at the padding after a token). Questions whose context plus a choice does not
fit in the model's window are scored whole (each choice its own left-truncated sequence),
batched and left-padded. Batches group similar lengths, and the projection onto the
vocabulary runs only for the positions that are scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from scifm.model.kv_cache import KVCache


@dataclass(frozen=True)
class Question:
    """A context and the continuations to score after it."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class Encoded:
    context: list[int]
    continuations: list[list[int]]


def encode_question(question: Question, encode: Callable[[str], list[int]],
                    prefix_id: int | None) -> Encoded:  # fmt: skip
    """Token ids as lm-evaluation-harness forms them for a causal model."""
    context = question.context
    stripped = context.rstrip()
    moved = context[len(stripped) :]
    if not stripped:  # an empty context conditions on the prefix (end-of-text) token
        if prefix_id is None:
            raise ValueError("an empty context needs a prefix token id")
        return Encoded([prefix_id], [encode(moved + c) for c in question.continuations])
    context_ids = encode(stripped)
    continuations = [encode(stripped + moved + c)[len(context_ids) :]
                     for c in question.continuations]  # fmt: skip
    if any(not c for c in continuations):
        raise ValueError(f"a continuation of {question.context[-40:]!r} encodes to no tokens")
    return Encoded(context_ids, continuations)


class LoglikelihoodScorer:
    """Scores questions with one model; `batch_size` questions per forward pass."""

    def __init__(self, model: nn.Module, encode: Callable[[str], list[int]],
                 prefix_id: int | None, batch_size: int = 16) -> None:  # fmt: skip
        self.model, self.encode, self.prefix_id = model, encode, prefix_id
        self.batch_size = batch_size
        self.window = model.cfg.max_seq_len
        self.vocab = model.cfg.vocab_size
        self.device = next(model.parameters()).device

    def score(self, questions: Sequence[Question],
              on_batch: Callable[[int], None] | None = None) -> list[list[float]]:  # fmt: skip
        """The log-likelihood of every continuation of every question, in order."""
        encoded = [encode_question(q, self.encode, self.prefix_id) for q in questions]
        results: list[list[float]] = [[0.0] * len(e.continuations) for e in encoded]
        fits = [i for i, e in enumerate(encoded) if self._fits(e)]
        self._score_shared(encoded, fits, results, on_batch)
        long = [i for i, e in enumerate(encoded) if not self._fits(e)]
        self._score_truncated(encoded, long, results)
        if on_batch is not None and long:
            on_batch(len(long))
        return results

    def _score_shared(self, encoded: list[Encoded], indices: list[int],
                      results: list[list[float]],
                      on_batch: Callable[[int], None] | None) -> None:  # fmt: skip
        """Questions that fit the window, a batch at a time, longest contexts together."""
        ordered = sorted(indices, key=lambda i: -len(encoded[i].context))
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            for i, scores in zip(batch, self._shared([encoded[i] for i in batch]), strict=True):
                results[i] = scores
            if on_batch is not None:
                on_batch(len(batch))

    def _score_truncated(self, encoded: list[Encoded], indices: list[int],
                         results: list[list[float]]) -> None:  # fmt: skip
        """Questions too long for the window: every choice its own sequence, batched by
        length (`results[i][k]` keeps choice k in its place)."""
        pairs = [(i, k, encoded[i].context + c, len(c)) for i in indices
                 for k, c in enumerate(encoded[i].continuations)]  # fmt: skip
        pairs.sort(key=lambda pair: -min(len(pair[2]), self.window + 1))
        rows = self.batch_size * 4
        for start in range(0, len(pairs), rows):
            chunk = pairs[start : start + rows]
            scores = self._whole([(tokens, count) for _, _, tokens, count in chunk])
            for (i, k, _, _), score in zip(chunk, scores, strict=True):
                results[i][k] = score

    def _fits(self, encoded: Encoded) -> bool:
        longest = max(len(c) for c in encoded.continuations)
        return len(encoded.context) + longest - 1 <= self.window

    @torch.no_grad()
    def _whole(self, sequences: list[tuple[list[int], int]]) -> list[float]:
        """Each (tokens, count) left-truncated to the window and scored as one sequence:
        the summed log-probabilities of its last `count` tokens. The batch is left-padded
        (a KV cache masks the padding and gives each row its own positions), so every row's
        scored tokens end in the last column and only those columns are projected."""
        kept = [tokens[-(self.window + 1) :] for tokens, _ in sequences]
        width = max(len(t) for t in kept) - 1
        pads = [width + 1 - len(t) for t in kept]
        inputs = torch.tensor([[0] * pad + t[:-1] for pad, t in zip(pads, kept, strict=True)],
                              device=self.device)  # fmt: skip
        last = max(count for _, count in sequences)
        cache = KVCache(self.model.cfg, pads, width, device=self.device,
                        dtype=next(self.model.parameters()).dtype)  # fmt: skip
        logits = self.model(inputs, cache=cache, num_logits=last)[:, :, : self.vocab]
        logprobs = logits.float().log_softmax(-1)  # [R, last, V]
        scores = []
        for row, (tokens, (_, count)) in enumerate(zip(kept, sequences, strict=True)):
            targets = torch.tensor(tokens[-count:], device=self.device)
            positions = torch.arange(last - count, last, device=self.device)
            scores.append(float(logprobs[row, positions, targets].sum()))
        return scores

    @torch.no_grad()
    def _shared(self, batch: list[Encoded]) -> list[list[float]]:
        longest = max(len(e.context) for e in batch)
        pads = [longest - len(e.context) for e in batch]
        rows = [(q, c) for q, e in enumerate(batch) for c in e.continuations]
        width = max(len(c) for _, c in rows)
        cache = KVCache(self.model.cfg, pads, longest, device=self.device,
                        dtype=next(self.model.parameters()).dtype)  # fmt: skip
        contexts = torch.tensor([[0] * pad + e.context for pad, e in zip(pads, batch, strict=True)],
                                device=self.device)  # fmt: skip
        first = self.model(contexts, cache=cache, num_logits=1)[:, -1, : self.vocab]
        first = first.float().log_softmax(-1)
        owners = [q for q, _ in rows]
        table = first[owners][:, None]  # [R, 1, V]: each row's first continuation token
        if width > 1:  # the other tokens, every choice from a copy of its question's cache
            wide = cache.select(owners, capacity=longest + width - 1)
            inputs = torch.tensor([c[:-1] + [0] * (width - len(c)) for _, c in rows],
                                  device=self.device)  # fmt: skip
            rest = self.model(inputs, cache=wide)[:, :, : self.vocab].float().log_softmax(-1)
            table = torch.cat((table, rest), dim=1)  # [R, width, V]
        targets = torch.tensor([c + [0] * (width - len(c)) for _, c in rows], device=self.device)
        picked = table.gather(-1, targets[:, :, None])[:, :, 0]
        lengths = torch.tensor([len(c) for _, c in rows], device=self.device)
        keep = torch.arange(width, device=self.device)[None, :] < lengths[:, None]
        sums = picked.masked_fill(~keep, 0.0).sum(-1).tolist()
        scores: list[list[float]] = [[] for _ in batch]
        for (q, _), total in zip(rows, sums, strict=True):
            scores[q].append(total)
        return scores
