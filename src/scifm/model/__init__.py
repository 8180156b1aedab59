"""Llama-style decoder as plain single-device modules: config and named sizes, the model,
its parameter/FLOP formulas and greedy decoding. Never imports `torch.distributed`:
parallelism is applied from outside by `scifm.parallel`.
"""

from scifm.model.config import MODEL_SIZES, ModelConfig
from scifm.model.flops import count_params, flops_per_token
from scifm.model.llama import Llama, build_model, num_params

__all__ = [
    "MODEL_SIZES",
    "Llama",
    "ModelConfig",
    "build_model",
    "count_params",
    "flops_per_token",
    "num_params",
]
