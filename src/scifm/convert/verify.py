"""`scifm export verify`: an export is checked by numbers, never by eye.

The exported directory is loaded by `transformers` itself, offline, and compared with
scifm's model on a fixed prompt set: the max |difference| of the logits, the mean KL
divergence of the next-token distributions, and greedy continuations token for token.
scifm's side is the checkpoint the export came from (`scifm_export.json`), or the same
weights imported back when that checkpoint is gone. An export fails when the logits differ
by more than `atol` or any greedy token differs. Both sides compute in float32; a
bfloat16 export is compared with the checkpoint's weights rounded to bfloat16 the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from scifm.convert.import_ import load_hf_model
from scifm.convert.load import checkpoint_model, find_checkpoint
from scifm.core.errors import ScifmError
from scifm.model.generate import greedy_ids
from scifm.tokens.tokenizer import Tokenizer


class ExportMismatch(ScifmError):
    """The export computes something else than scifm's model (exit code 1)."""

    exit_code = 1


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ScifmError("`export verify` needs transformers: pip install 'scifm[test]'") from None
    return transformers


def scifm_model(hf_dir: Path) -> torch.nn.Module:
    """The model the export was made from, else the export's weights in scifm's Llama.

    For a bfloat16 export the checkpoint's weights are rounded to bfloat16 (and computed in
    float32, as the export is): what is verified is the conversion, not the rounding.
    """
    record = hf_dir / "scifm_export.json"
    source = Path(json.loads(record.read_text())["checkpoint"]) if record.is_file() else None
    if source is None or not source.is_dir():
        return load_hf_model(hf_dir)
    model = checkpoint_model(find_checkpoint(source))
    if export_dtype(hf_dir) == "bfloat16":
        model.cast_weights(torch.bfloat16).cast_weights(torch.float32)
    return model


def export_dtype(hf_dir: Path) -> str:
    config = json.loads((hf_dir / "config.json").read_text())
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")


def verify_export(hf_dir: Path, prompts: Sequence[str], max_new_tokens: int = 32,
                  atol: float = 1e-4) -> dict[str, Any]:  # fmt: skip
    """Compare the export with scifm on `prompts`; raises ExportMismatch when they differ."""
    transformers = _transformers()
    ours = scifm_model(hf_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, local_files_only=True, dtype=torch.float32).eval()  # fmt: skip
    tokenizer = Tokenizer.load(hf_dir / "tokenizer.json")
    vocab = ours.cfg.vocab_size
    max_diff, kls, same, total = 0.0, [], 0, 0
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        tokens = torch.tensor([ids])
        with torch.no_grad():
            a, b = ours(tokens)[0, :, :vocab], theirs(tokens).logits[0, :, :vocab].float()
        max_diff = max(max_diff, float((a - b).abs().max()))
        kls.append(float(F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True,
                                  reduction="batchmean")))  # fmt: skip
        mine = greedy_ids(ours, ids, max_new_tokens, eos_id=tokenizer.eos_id)
        with torch.no_grad():
            out = theirs.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_id)[0, len(ids):].tolist()  # fmt: skip
        if tokenizer.eos_id in out:  # ours stops before the end-of-text token
            out = out[: out.index(tokenizer.eos_id)]
        same += sum(x == y for x, y in zip(mine, out, strict=False))
        total += max(len(mine), len(out))
    report = {"hf_dir": str(hf_dir), "prompts": len(prompts), "max_abs_diff": max_diff,
              "mean_kl": sum(kls) / len(kls), "greedy_agreement": same / max(1, total),
              "new_tokens": max_new_tokens, "atol": atol,
              "dtype": export_dtype(hf_dir)}  # fmt: skip
    report["identical"] = max_diff <= atol and same == total
    if not report["identical"]:
        raise ExportMismatch(
            f"{hf_dir}: the export differs from scifm's model: max |logit diff| "
            f"{max_diff:.3g} (atol {atol:g}), greedy agreement {report['greedy_agreement']:.3f}"
        )
    return report
