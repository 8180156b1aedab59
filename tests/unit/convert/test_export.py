"""`scifm export hf` loads offline in `transformers` with identical logits and tokens.

A checkpoint written by the real checkpointer (metadata as the trainer records it) is
exported through the CLI; `AutoModelForCausalLM` and `AutoTokenizer` load the directory
with `local_files_only=True`, with no missing, unexpected or newly initialised weights.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers
from tests.unit.convert.conftest import PROMPTS

from scifm.checkpoint import save_checkpoint
from scifm.cli import main
from scifm.model import ModelConfig, build_model


def _checkpoint(tmp_path, cfg: ModelConfig, meta_extra: dict | None = None):
    model = build_model(cfg, device="cpu", seed=5).eval()
    meta = {"model": cfg.to_dict(), "rope_convention": cfg.rope_convention, **(meta_extra or {})}
    path = save_checkpoint(tmp_path / "run", 7, {"model": model.state_dict()}, meta)
    return model, path


@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_offline_with_identical_logits(tmp_path, tokenizer, tied, caplog) -> None:
    cfg = ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=2, multiple_of=32,
                      vocab_size=tokenizer.vocab_size, max_seq_len=64, tie_embeddings=tied,
                      rope_convention="interleaved" if tied else "half")  # fmt: skip
    model, checkpoint = _checkpoint(tmp_path, cfg)
    out = tmp_path / "hf"
    assert main(["export", "hf", str(checkpoint), str(out), "--tokenizer",
                 str(tokenizer.path)]) == 0  # fmt: skip
    with caplog.at_level(logging.WARNING):
        theirs, info = transformers.AutoModelForCausalLM.from_pretrained(
            out, local_files_only=True, output_loading_info=True, dtype=torch.float32
        )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert "newly initialized" not in caplog.text
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        assert hf_tokenizer.encode(prompt, add_special_tokens=False) == ids
        tokens = torch.tensor([ids])
        with torch.no_grad():
            assert (model(tokens)[..., : cfg.vocab_size] - theirs(tokens).logits).abs().max() < 1e-5
    export = json.loads((out / "scifm_export.json").read_text())
    assert export["step"] == 7 and export["rope_convention"] == cfg.rope_convention
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied and config["eos_token_id"] == tokenizer.eos_id


def test_large_exports_are_sharded_with_an_index(tmp_path, tokenizer) -> None:
    from scifm.convert.export import export_hf

    cfg = ModelConfig(dim=64, num_layers=2, num_heads=4, multiple_of=32,
                      vocab_size=tokenizer.vocab_size, max_seq_len=64)  # fmt: skip
    model, checkpoint = _checkpoint(tmp_path, cfg)
    out = export_hf(checkpoint.parent.parent, tmp_path / "hf", tokenizer.path,
                    max_shard_bytes=100_000)  # fmt: skip
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokens = torch.tensor([tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():
        assert (model(tokens)[..., : cfg.vocab_size] - theirs(tokens).logits).abs().max() < 1e-5


def test_refuses_a_checkpoint_without_rope_convention(tmp_path, tokenizer, capsys) -> None:
    cfg = ModelConfig(dim=64, num_layers=1, num_heads=4, multiple_of=32, vocab_size=400)
    model = build_model(cfg, device="cpu", seed=5)
    path = save_checkpoint(tmp_path / "run", 1, {"model": model.state_dict()},
                           {"model": cfg.to_dict()})  # fmt: skip
    code = main(["export", "hf", str(path), str(tmp_path / "hf"), "--tokenizer",
                 str(tokenizer.path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "refusing to guess" in err and not (tmp_path / "hf").exists()


def _export(tmp_path, tokenizer, rope: str = "half"):
    cfg = ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=2, multiple_of=32,
                      vocab_size=tokenizer.vocab_size, max_seq_len=64,
                      rope_convention=rope)  # fmt: skip
    model, checkpoint = _checkpoint(tmp_path, cfg)
    out = tmp_path / "hf"
    assert main(["export", "hf", str(checkpoint), str(out), "--tokenizer",
                 str(tokenizer.path)]) == 0  # fmt: skip
    return cfg, model, out


def test_verify_passes_a_good_export(tmp_path, tokenizer, capsys) -> None:
    _, _, out = _export(tmp_path, tokenizer, "interleaved")
    capsys.readouterr()
    assert main(["export", "verify", str(out), "--max-new-tokens", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical"] and report["greedy_agreement"] == 1.0
    assert report["max_abs_diff"] < 1e-5 and report["prompts"] == 3


def test_verify_checks_a_bfloat16_export_against_the_rounded_weights(tmp_path, tokenizer,
                                                                     capsys) -> None:  # fmt: skip
    cfg = ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=2, multiple_of=32,
                      vocab_size=tokenizer.vocab_size, max_seq_len=64)  # fmt: skip
    model, checkpoint = _checkpoint(tmp_path, cfg)
    out = tmp_path / "hf-bf16"
    assert main(["export", "hf", str(checkpoint), str(out), "--tokenizer", str(tokenizer.path),
                 "--dtype", "bfloat16"]) == 0  # fmt: skip
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert theirs.dtype == torch.bfloat16
    tokens = torch.tensor([tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():  # the rounding itself is visible against the fp32 weights
        rounded = theirs.float()(tokens).logits
        assert (model(tokens)[..., : cfg.vocab_size] - rounded).abs().max() > 1e-4
    capsys.readouterr()
    assert main(["export", "verify", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype"] == "bfloat16" and report["max_abs_diff"] < 1e-5


def test_verify_fails_an_export_with_the_wrong_rope_permutation(tmp_path, tokenizer,
                                                                capsys) -> None:  # fmt: skip
    from safetensors.torch import save_file

    from scifm.convert.hf_llama import to_hf_state_dict, trim_padded_vocab

    cfg, model, out = _export(tmp_path, tokenizer, "interleaved")
    with torch.no_grad():  # sharper attention than at initialisation, so positions matter
        for name, param in model.named_parameters():
            if name.endswith(("wq.weight", "wk.weight")):
                param.mul_(20)
    save_checkpoint(tmp_path / "run", 7, {"model": model.state_dict()},
                    {"model": cfg.to_dict(), "rope_convention": "interleaved"})  # fmt: skip
    mistaken = cfg.model_copy(update={"rope_convention": "half"})  # no q/k permutation
    wrong = trim_padded_vocab(to_hf_state_dict(model.state_dict(), mistaken), cfg)
    save_file({k: v.contiguous() for k, v in wrong.items()}, str(out / "model.safetensors"))
    capsys.readouterr()
    assert main(["export", "verify", str(out)]) == 1
    assert "differs from scifm's model" in capsys.readouterr().err


def test_hf_to_scifm_to_hf_round_trip_is_bit_identical(tmp_path, tokenizer) -> None:
    from safetensors.torch import load_file

    _, _, first = _export(tmp_path, tokenizer)
    run = tmp_path / "imported"
    assert main(["import", "hf", str(first), str(run)]) == 0
    second = tmp_path / "hf2"
    assert main(["export", "hf", str(run), str(second)]) == 0  # tokenizer found beside it
    a, b = (load_file(str(d / "model.safetensors")) for d in (first, second))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    configs = [json.loads((d / "config.json").read_text()) for d in (first, second)]
    assert configs[0] == configs[1]
