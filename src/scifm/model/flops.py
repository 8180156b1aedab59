"""Parameter count and training FLOPs per token of a `ModelConfig`, in closed form.

The formulas mirror the modules in `scifm.model.layers` term by term, so a 70B shape can be
sized (and MFU computed) without building anything; `tests/unit/model` checks the parameter
formula against the built module for several shapes.
"""

from __future__ import annotations

from scifm.model.config import ModelConfig


def layer_params(cfg: ModelConfig) -> int:
    """Parameters of one TransformerBlock: attention, SwiGLU and two RMSNorm weights."""
    q_dim = cfg.num_heads * cfg.head_dim
    kv_dim = cfg.kv_heads * cfg.head_dim
    attention = cfg.dim * q_dim + 2 * cfg.dim * kv_dim + q_dim * cfg.dim
    feed_forward = 3 * cfg.dim * cfg.hidden_dim
    return attention + feed_forward + 2 * cfg.dim


def count_params(cfg: ModelConfig, include_embeddings: bool = True) -> int:
    """Parameters of `Llama(cfg)`, each tied weight once.

    With `include_embeddings=False`, the "non-embedding" count: the blocks and the final
    norm, without the token embedding and without the (untied) output projection.
    """
    body = cfg.num_layers * layer_params(cfg) + cfg.dim
    if not include_embeddings:
        return body
    embedding = cfg.embedding_size * cfg.dim
    output = 0 if cfg.tie_embeddings else cfg.embedding_size * cfg.dim
    return body + embedding + output


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token at sequence length `seq_len`.

        6 * (N_body + V * dim) + 12 * num_layers * dim * seq_len

    N_body = `count_params(cfg, include_embeddings=False)`, V = `embedding_size`. Each weight
    costs 2 FLOPs per token forward and 4 backward, counting the output projection even when
    it is tied to the embedding (the matmul still happens) but not the embedding lookup.
    The second term is attention scores (QK^T) and the weighted sum of values (AV):
    2 * 2 * seq_len * dim per layer forward, times 3 with backward, without halving for the
    causal mask. Same as torchtitan's `6 * N + 12 * L * H * Q * T` (PaLM appendix B) with N
    excluding the input embedding.
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    weights = count_params(cfg, include_embeddings=False) + cfg.embedding_size * cfg.dim
    attention = 12 * cfg.num_layers * cfg.dim * seq_len
    return float(6 * weights + attention)
