"""Bad input as a new user meets it: one line on stderr, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scifm.cli import main

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "recipes" / "debug.yaml")


def _fails_cleanly(capsys, argv: list[str], expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and expected in lines[0], lines[0]
    return lines[0]


def test_missing_config_file(capsys, tmp_path) -> None:
    _fails_cleanly(capsys, ["train", "--config", str(tmp_path / "nope.yaml")], "not found")


def test_malformed_yaml(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.1\n   steps: [\n")
    _fails_cleanly(capsys, ["train", "--config", str(bad), "--dry-run"], "malformed YAML")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", "unknown field 'train.lrr'"),
        ("train.optimizer.lr=fast", "train.optimizer.lr: Input should be a valid number"),
        ("train.lr=0.1", "train.lr is now train.optimizer.lr"),
        ("train.checkpoint_every=10", "train.checkpoint_every is now train.checkpoint.every"),
        ("train.anomaly.policy=retry", "train.anomaly.policy: Input should be 'skip'"),
        ("train.checkpoint.save_on_signals=[SIGFOO]", "train.checkpoint.save_on_signals.0"),
        ("train.watchdog.step_timeout_s=0", "train.watchdog.step_timeout_s"),
        ("model.dim=-64", "model.dim"),
        ("model.num_layers=0", "model.num_layers"),
    ],
)
def test_bad_fields(capsys, override: str, expected: str) -> None:
    _fails_cleanly(capsys, ["train", "--config", DEBUG, override, "--dry-run"], expected)


def test_unknown_subcommand_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_missing_token_files(capsys, tmp_path) -> None:
    _fails_cleanly(capsys, ["inspect", str(tmp_path / "corpus")], str(tmp_path / "corpus"))


def test_unknown_demo_corpus(capsys, tmp_path) -> None:
    out = tmp_path / "corpora"
    _fails_cleanly(capsys, ["corpus", "demo", str(out), "corpus.corpora=[nope]"], "nope")
    assert not out.exists()


def test_tokenize_rejects_bad_records_and_goes_on(capsys, tmp_path) -> None:
    tokenizer = _tiny_tokenizer(tmp_path)
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"text": "fine"}\n\n{"text": "caf\xe9"}\n{"text": \n{"text": "ok"}\n')
    prefix = tmp_path / "tokens" / "c"
    argv = ["tokenize", str(corpus), "--tokenizer", str(tokenizer), "--out", str(prefix)]
    assert main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 2 and stats["rejected"] == 3
    assert stats["rejects"] == {"blank_line": 1, "invalid_utf8": 1, "malformed_json": 1}
    rejects = (tmp_path / "tokens" / "c.rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["line"] for r in rejects] == [2, 3, 4]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("c.csv", b"text\nhello\n", "unsupported input file type"),
        ("missing.jsonl", None, "input not found"),
        ("c.jsonl", b"\n[1]\n", "no valid document"),
    ],
)
def test_tokenize_bad_input_writes_nothing(capsys, tmp_path, name, content, expected) -> None:
    tokenizer = _tiny_tokenizer(tmp_path)
    corpus = tmp_path / name
    if content is not None:
        corpus.write_bytes(content)
    prefix = tmp_path / "tokens" / "c"
    argv = ["tokenize", str(corpus), "--tokenizer", str(tokenizer), "--out", str(prefix)]
    line = _fails_cleanly(capsys, argv, expected)
    assert name in line or "c.rejects.jsonl" in line
    leftovers = sorted(p.name for p in prefix.parent.glob("*")) if prefix.parent.exists() else []
    assert leftovers == (["c.rejects.jsonl"] if expected == "no valid document" else [])


def _tiny_tokenizer(tmp_path: Path) -> Path:
    import json as json_module

    from scifm.tokens.tokenizer import TokenizerConfig, train_tokenizer

    texts = [json_module.__doc__ or "", json_module.dumps.__doc__ or ""]
    path = tmp_path / "tokenizer.json"
    train_tokenizer(TokenizerConfig(vocab_size=300, min_frequency=1), texts, path)
    return path


def test_console_script_exit_code(tmp_path) -> None:
    script = Path(sys.executable).parent / "scifm"
    done = subprocess.run([str(script), "train", "--config", str(tmp_path / "x.yaml")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: config file not found")
    assert "Traceback" not in done.stderr


SEVENTY_B = str(REPO / "recipes" / "llama-70b.yaml")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--world-size", "6", "--parallel.tp", "4"], "tp=4 = 4 do not divide the world size 6"),
        (["--world-size", "8", "--parallel.dp_shard", "3"], "make 3 ranks, but the job has 8"),
        (["--world-size", "8", "--train.global_batch_tokens", "1000000"],
         "train.global_batch_tokens=1000000 is not a whole number of micro-batches"),
        (["--world-size", "128", "--parallel.pp", "32", "--parallel.pp_schedule",
          "Interleaved1F1B", "--parallel.pp_stages_per_rank", "4"],
         "= 128 stages but the model has 80 layers"),
    ],
)  # fmt: skip
def test_layouts_and_batches_that_do_not_divide(capsys, overrides, expected) -> None:
    _fails_cleanly(capsys, ["train", "--config", SEVENTY_B, "--dry-run", *overrides], expected)


def test_seventy_b_dry_run_prints_layout_params_and_memory(capsys) -> None:
    argv = ["train", "--config", SEVENTY_B, "--dry-run", "--world-size", "256",
            "--parallel.tp", "8", "--parallel.pp", "4"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "num_params: 70,553,706,496" in out
    for line in ("pp: 4", "tp: 8", "dp_shard: 8", "world_size: 256", "total_gib:"):
        assert line in out, line


def test_tensor_parallel_without_a_launcher_is_one_clear_error(capsys) -> None:
    _fails_cleanly(capsys, ["train", "--config", DEBUG, "--parallel.tp", "2"],
                   "do not divide the world size 1")  # fmt: skip


def test_malformed_fault_spec_is_one_clear_error(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SCIFM_FAULT", "kill-at-step-5")
    _fails_cleanly(capsys, ["train", "--config", DEBUG], "SCIFM_FAULT: cannot read")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--tasks", "sciqq"], "unknown task 'sciqq'"),
    (["--tasks", "sciq", "--limit", "0"], "--limit 0"),
    ([], "no tasks given"),
])  # fmt: skip
def test_eval_bad_requests(capsys, tmp_path, argv: list[str], expected: str) -> None:
    (tmp_path / "run").mkdir()
    _fails_cleanly(capsys, ["eval", str(tmp_path / "run"), *argv], expected)


def test_eval_of_a_directory_without_checkpoints(capsys, tmp_path) -> None:
    (tmp_path / "run").mkdir()
    _fails_cleanly(capsys, ["eval", str(tmp_path / "run"), "--tasks", "sciq"],
                   "no complete checkpoint")  # fmt: skip


def test_eval_malformed_task_yaml(capsys, tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "task.yaml").write_text("name: [x\n")
    _fails_cleanly(capsys, ["eval", str(tmp_path / "run"), "--tasks", str(tmp_path / "task.yaml")],
                   "malformed YAML")  # fmt: skip


def test_eval_series_of_a_run_without_checkpoints(capsys, tmp_path) -> None:
    (tmp_path / "run").mkdir()
    _fails_cleanly(capsys, ["eval", "--run", str(tmp_path / "run"), "--tasks", "sciq"],
                   "no complete checkpoint to evaluate")  # fmt: skip
    _fails_cleanly(capsys, ["eval", "--tasks", "sciq"], "needs MODEL")
