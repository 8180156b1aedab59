"""`scifm demo` end to end at a tiny budget, then the per-stage commands on its artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.integration.conftest import TINY

from scifm.cli import main

pytestmark = pytest.mark.integration


def test_demo_writes_the_run_directory(demo_run: Path) -> None:
    report = json.loads((demo_run / "report.json").read_text())
    for key in ("first_loss", "last_loss", "tokens_per_s", "num_params"):
        assert key in report
    assert report["steps"] == 40 and report["tokens_seen"] == 20480
    assert report["last_loss"] < report["first_loss"] - 1.0, report
    assert report["tokens_per_s"] > 0 and report["num_params"] > 0
    assert len(report["samples"]) == 3 and all(s["completion"] for s in report["samples"])
    assert (demo_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(x) for x in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(4, 41, 4))
    assert records[-1]["loss"] < records[0]["loss"]
    assert report["checkpoints_kept"] == "step-00000030, step-00000040"
    assert report["bad_steps"] == 0 and report["checkpoint_mb"] > 0
    assert report["export_verify"].startswith("identical")
    assert (demo_run / "hf" / "config.json").is_file()
    for corpus in ("math", "scicomp", "python"):  # held-out bits per byte of each corpus
        assert 0 < report[f"bpb_{corpus}"] < 8
    for task in ("sciq", "arc_easy"):
        assert "chance: 0.25)" in report[f"{task}_acc"]
    results = json.loads((demo_run / "eval" / "results.json").read_text())
    assert [t["questions"] for t in results["tasks"]] == [50, 50]
    overlap = json.loads((demo_run / "eval" / "contamination.json").read_text())
    assert [t["task"] for t in overlap["tasks"]] == ["sciq", "arc_easy"]
    assert overlap["corpora_documents"]["math"] > 0 and "of" in report["sciq_contaminated"]


def test_demo_checkpoints_are_complete(demo_run: Path) -> None:
    steps = sorted(p.name for p in (demo_run / "checkpoints").iterdir())
    assert steps == ["step-00000030", "step-00000040"]  # retention kept the last two
    meta = json.loads((demo_run / "checkpoints" / steps[-1] / "metadata.json").read_text())
    assert meta["step"] == 40 and meta["rope_convention"] == "half"
    assert meta["model"]["dim"] == 64 and meta["tokens_seen"] == 20480


def test_demo_rerun_resumes_without_redoing_work(demo_run: Path, capsys) -> None:
    before = (demo_run / "data" / "tokens" / "math.bin").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo_run), *TINY]) == 0
    assert (demo_run / "data" / "tokens" / "math.bin").stat().st_mtime_ns == before
    report = json.loads((demo_run / "report.json").read_text())
    assert report["steps"] == 40


def test_inspect_prints_counts_and_decoded_sample(demo_run: Path, capsys) -> None:
    prefix = demo_run / "data" / "tokens" / "math"
    tokenizer = demo_run / "data" / "tokenizer" / "tokenizer.json"
    assert main(["inspect", str(prefix), "--tokenizer", str(tokenizer)]) == 0
    info = json.loads(capsys.readouterr().out)
    manifest = json.loads(prefix.with_suffix(".manifest.json").read_text())
    assert info["tokens"] == manifest["tokens"] and info["dtype"] == "uint16"
    assert info["documents"] == manifest["documents"] and info["sample_text"]


def test_train_command_on_demo_tokens_and_a_changed_run_refuses(demo_run, tmp_path) -> None:
    tokens = demo_run / "data" / "tokens"
    corpora = "[" + ", ".join(
        f"{{name: {n}, prefixes: ['{tokens / n}'], weight: 1}}" for n in ("math", "python")
    ) + "]"  # fmt: skip
    argv = ["train", "--out", str(tmp_path / "t"), f"data.corpora={corpora}",
            "data.seq_len=32", "model.vocab_size=512", "train.max_steps=3",
            "train.micro_batch_size=2"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "t" / "checkpoints" / "step-00000003" / "metadata.json").is_file()
    assert main([*argv, "model.num_layers=1"]) == 2


def test_demo_uses_its_mixture_file_and_reports_epochs(demo_run: Path) -> None:
    lines = (demo_run / "data" / "mixture.txt").read_text().splitlines()
    assert lines[1:] == ["0.4 tokens/math math", "0.4 tokens/scicomp scicomp",
                         "0.2 tokens/python python"]  # fmt: skip
    mixture = json.loads((demo_run / "report.json").read_text())["mixture"]
    assert [round(m["weight"], 3) for m in mixture.values()] == [0.4, 0.4, 0.2]
    assert all(m["epochs"] > 0 for m in mixture.values())


def test_data_inspect_and_train_read_a_mixture_file(demo_run: Path, tmp_path, capsys) -> None:
    mixture = str(demo_run / "data" / "mixture.txt")
    assert main(["data", "inspect", mixture, "--tokens", "1000000", "data.seq_len=64"]) == 0
    table = capsys.readouterr().out
    assert "math" in table and "epochs" in table and "samples_per_epoch" in table
    copy = tmp_path / "mixture.txt"
    copy.write_text((demo_run / "data" / "mixture.txt").read_text().replace("tokens/",
                    f"{demo_run / 'data' / 'tokens'}/"))  # fmt: skip
    argv = ["train", "--out", str(tmp_path / "m"), f"data.mixture={copy}",
            "data.seq_len=32", "model.vocab_size=512", "train.max_steps=2",
            "train.micro_batch_size=2"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    copy.write_text(copy.read_text().replace("0.4 ", "0.1 ", 1))  # same path, other weights
    assert main([*argv, "train.max_steps=3"]) == 2
    assert "mixture_sha256" in capsys.readouterr().err


def test_broken_mixtures_fail_before_training(demo_run: Path, tmp_path, capsys) -> None:
    tokens = demo_run / "data" / "tokens"
    bad = tmp_path / "bad.txt"
    bad.write_text(f"0 {tokens}/math math\n")
    assert main(["data", "inspect", str(bad)]) == 2
    assert "must be positive" in capsys.readouterr().err
    cut = tmp_path / "cut"
    for suffix in (".bin", ".idx"):
        (cut.parent / f"cut{suffix}").write_bytes((tokens / f"math{suffix}").read_bytes())
    with open(f"{cut}.bin", "r+b") as handle:
        handle.truncate(1000)
    bad.write_text(f"1 {cut} math\n")
    assert main(["train", "--out", str(tmp_path / "x"), f"data.mixture={bad}",
                 "model.vocab_size=512"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("error:") and "cut.bin: truncated" in err and "Traceback" not in err
    assert not (tmp_path / "x" / "checkpoints").exists()
    magic = tmp_path / "magic"
    (tmp_path / "magic.bin").write_bytes((tokens / "math.bin").read_bytes())
    (tmp_path / "magic.idx").write_bytes(b"GARBAGE!!" + (tokens / "math.idx").read_bytes()[9:])
    empty = tmp_path / "empty"
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "empty.idx").write_bytes((tokens / "math.idx").read_bytes()[:9] +
                                         bytes([1, 0, 0, 0, 0, 0, 0, 0, 8]) + bytes(8) +
                                         bytes([1] + [0] * 7) + bytes(8))  # fmt: skip
    for text, message in [
        (f"1 {magic} math\n", "bad magic"),
        (f"1 {empty} math\n", "'math' is empty"),
        (f"0 {tokens}/math 0 {tokens}/python\n", "must be positive"),
    ]:
        bad.write_text(text)
        assert main(["data", "inspect", str(bad)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    bad.write_text(f"1 {tokens}/math math\n")
    assert main(["train", "--out", str(tmp_path / "y"), f"data.mixture={bad}", "data.seq_len=32",
                 "model.vocab_size=100", "train.max_steps=1"]) == 2  # fmt: skip
    assert "vocabulary" in capsys.readouterr().err


def test_stage_by_stage_commands_as_in_readme(tmp_path, capsys) -> None:
    root = tmp_path / "d"
    small = ["corpus.max_bytes_per_corpus=60000", "tokenizer.vocab_size=400"]
    assert main(["corpus", "demo", str(root / "corpora"), *small]) == 0
    manifest = json.loads((root / "corpora" / "manifest.json").read_text())
    assert set(manifest) >= {"math", "scicomp", "python"}
    corpora = [str(root / "corpora" / n) for n in ("math", "python")]
    tokenizer = str(root / "tokenizer.json")
    assert main(["tokenizer", "train", *corpora, "--out", tokenizer, *small]) == 0
    prefix = str(root / "tokens" / "math")
    assert main(["tokenize", corpora[0], "--tokenizer", tokenizer, "--out", prefix]) == 0
    capsys.readouterr()
    assert main(["inspect", prefix, "--tokenizer", tokenizer]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == manifest["math"]["documents"] and info["sample_text"]


@pytest.mark.parametrize(
    "argv",
    [
        ["corpus", "demo", "OUT", "--dry-run"],
        ["tokenizer", "train", "IN", "--out", "OUT/t.json", "--dry-run"],
        ["tokenize", "IN", "--tokenizer", "t.json", "--out", "OUT/p", "--dry-run"],
        ["demo", "--out", "OUT", "--dry-run"],
        ["train", "--out", "OUT", "--dry-run"],
        ["train", "--out", "OUT", "--dry-run", "--world-size", "8", "parallel.dp_replicate=2"],
        ["data", "inspect", "OUT/m.txt", "--dry-run"],
    ],
)
def test_dry_run_prints_config_and_writes_nothing(tmp_path, capsys, argv) -> None:
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 0
    assert ":" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
