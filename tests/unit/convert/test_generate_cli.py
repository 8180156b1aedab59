"""`scifm generate` on a run, a checkpoint and its Hugging Face export: the same text.

The completions are checked against greedy decoding without a cache (the model run on the
whole context each step), decoded with the run's tokenizer.
"""

from __future__ import annotations

import json

import pytest
import torch
from tests.unit.convert.conftest import PROMPTS
from tests.unit.model.test_model_generate import reference_greedy

from scifm.checkpoint import save_checkpoint
from scifm.cli import main
from scifm.convert.export import export_hf
from scifm.model import ModelConfig, build_model


@pytest.fixture
def run(tmp_path, tokenizer):
    cfg = ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=2, multiple_of=32,
                      vocab_size=tokenizer.vocab_size, max_seq_len=64)  # fmt: skip
    model = build_model(cfg, device="cpu", seed=3).eval()
    meta = {"model": cfg.to_dict(), "rope_convention": "half",
            "data": {"tokenizer": str(tokenizer.path)}}  # fmt: skip
    save_checkpoint(tmp_path / "run", 4, {"model": model.state_dict()}, meta)
    return model, tmp_path / "run"


def _generate(capsys, *argv: str) -> list[dict]:
    code = main(["generate", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [json.loads(line) for line in captured.out.splitlines()]


def test_greedy_completions_from_a_run_and_from_its_export_agree(tmp_path, tokenizer, run,
                                                                 capsys) -> None:  # fmt: skip
    model, run_dir = run
    done = _generate(capsys, str(run_dir), *PROMPTS, "--max-tokens", "12", "--batch-size", "2")
    assert [d["prompt"] for d in done] == PROMPTS
    for prompt, completion in zip(PROMPTS, done, strict=True):
        ids = reference_greedy(model, tokenizer.encode(prompt), 12)
        if tokenizer.eos_id in ids:
            ids = ids[: ids.index(tokenizer.eos_id)]
        assert completion["completion"] == tokenizer.decode(ids)
        assert completion["new_tokens"] == len(ids)
    export_hf(run_dir, tmp_path / "hf")
    assert _generate(capsys, str(tmp_path / "hf"), *PROMPTS, "--max-tokens", "12") == done


def test_sampling_is_seeded_and_prompts_come_from_a_file(tmp_path, run, capsys) -> None:
    _, run_dir = run
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    options = ["--prompts-file", str(prompts), "--max-tokens", "10", "--temperature", "1.2",
               "--top-k", "50", "--top-p", "0.95"]  # fmt: skip
    first = _generate(capsys, str(run_dir), *options, "--seed", "1")
    assert first == _generate(capsys, str(run_dir), *options, "--seed", "1")
    assert first != _generate(capsys, str(run_dir), *options, "--seed", "2")


def test_human_output_names_each_prompt_and_the_throughput(run, capsys) -> None:
    _, run_dir = run
    assert main(["generate", str(run_dir), PROMPTS[0], "--max-tokens", "4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert PROMPTS[0] in out and "1 prompts, " in out and "tokens/s" in out


@pytest.mark.parametrize(("extra", "expected"), [
    ([], "no prompts given"),
    (["x", "--top-p", "1.5"], "top_p"),
    (["x", "--temperature", "-1"], "temperature"),
    (["x", "--max-tokens", "64"], "no room for a prompt"),
    (["--prompts-file", "missing.txt"], "prompts file not found"),
])  # fmt: skip
def test_bad_requests_are_one_line(run, capsys, extra, expected) -> None:
    _, run_dir = run
    code = main(["generate", str(run_dir), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_a_directory_without_checkpoints_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["generate", str(tmp_path / "empty"), "hello"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert torch.is_grad_enabled()
