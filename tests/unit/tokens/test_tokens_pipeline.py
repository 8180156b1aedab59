"""`scifm tokenize` end to end: formats, rejects, resume, and the same bytes for any workers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from scifm.core.errors import ScifmError
from scifm.core.io import sha256_file
from scifm.tokens import pipeline
from scifm.tokens.format import IndexedTokens
from scifm.tokens.pipeline import assign, tokenize_files
from scifm.tokens.readers import Shard
from scifm.tokens.tokenizer import Tokenizer
from scifm.tokens.writer import TokenizeConfig


def jsonl(texts: list[str]) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def sequences(prefix: Path) -> list[list[int]]:
    tokens = IndexedTokens(prefix)
    return [tokens[i].tolist() for i in range(len(tokens))]


def expected(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [[*ids, tokenizer.eos_id] for ids in tokenizer.encode_batch(texts)]


def outputs(prefix: Path) -> list[bytes]:
    return [prefix.with_suffix(s).read_bytes() for s in (".bin", ".idx", ".rejects.jsonl")]


def test_every_format_in_order_with_a_manifest(
    tmp_path: Path, tokenizer: Tokenizer, texts: list[str]
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_bytes(jsonl(texts[0:4]))
    (data / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(texts[4:8])))
    (data / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(texts[8:12])))
    pq.write_table(pa.table({"text": texts[12:16]}), data / "d.parquet", row_group_size=2)
    (data / "e.txt").write_text(texts[16])
    stats = tokenize_files(TokenizeConfig(), [data], tokenizer.path, tmp_path / "out" / "c")
    assert stats["documents"] == 17 and stats["rejected"] == 0 and stats["dtype"] == "uint16"
    assert sequences(tmp_path / "out" / "c") == expected(tokenizer, texts[:17])
    manifest = json.loads((tmp_path / "out" / "c.manifest.json").read_text())
    assert manifest["tokens"] == stats["tokens"] == sum(map(len, sequences(tmp_path / "out/c")))
    assert manifest["tokenizer"]["sha256"] == tokenizer.sha256
    assert [(Path(i["path"]).name, i["documents"]) for i in manifest["inputs"]] == [
        ("a.jsonl", 4), ("b.jsonl.gz", 4), ("c.jsonl.zst", 4), ("d.parquet", 4), ("e.txt", 1),
    ]  # fmt: skip
    assert all(i["sha256"] == sha256_file(i["path"]) for i in manifest["inputs"])
    assert manifest["config"]["text_field"] == "text" and "workers" not in manifest["config"]
    assert not (tmp_path / "out" / "c.work").exists()


def test_rejects_are_counted_written_with_lines_and_the_run_goes_on(
    tmp_path: Path, tokenizer: Tokenizer, texts: list[str]
) -> None:
    lines = [json.dumps({"text": t}).encode() for t in texts[:30]]
    lines[3], lines[17], lines[25] = b"{not json", b'{"txt": "x"}', b'"just a string"'
    source = tmp_path / "c.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n\n")
    cfg = TokenizeConfig(shard_bytes=2000)  # many shards: line numbers must stay global
    stats = tokenize_files(cfg, [source], tokenizer.path, tmp_path / "t")
    assert stats["shards"] > 3 and stats["documents"] == 27 and stats["rejected"] == 4
    assert stats["rejects"] == {"blank_line": 1, "malformed_json": 1, "missing_field": 1,
                                "not_an_object": 1}  # fmt: skip
    rejects = [json.loads(line) for line in (tmp_path / "t.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (4, "malformed_json"), (18, "missing_field"), (26, "not_an_object"), (31, "blank_line"),
    ]  # fmt: skip
    assert all(r["file"] == str(source) for r in rejects) and rejects[0]["excerpt"] == "{not json"
    good = [t for i, t in enumerate(texts[:30]) if i not in (3, 17, 25)]
    assert sequences(tmp_path / "t") == expected(tokenizer, good)
    manifest = json.loads((tmp_path / "t.manifest.json").read_text())
    assert manifest["inputs"][0]["rejected"] == 4 and manifest["rejected"] == 4


def test_nothing_valid_is_an_error_naming_the_rejects_file(tmp_path: Path, tokenizer) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b'{"text": ""}\n[1]\n\xff\n')
    with pytest.raises(ScifmError, match=r"no valid document.*3 records rejected.*t\.rejects"):
        tokenize_files(TokenizeConfig(), [source], tokenizer.path, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "t.rejects.jsonl"]
    assert len((tmp_path / "t.rejects.jsonl").read_text().splitlines()) == 3


def _corpus(root: Path, texts: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / f"part-{i}.jsonl").write_bytes(jsonl(texts[i * 15 : (i + 1) * 15]))
    (root / "part-4.jsonl.gz").write_bytes(gzip.compress(jsonl(texts[60:75])))
    return root


def test_two_workers_write_the_same_bytes_as_one(
    tmp_path: Path, tokenizer: Tokenizer, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(tmp_path / "corpus", texts)
    pools: list[int] = []
    run_pool = pipeline._run_pool
    monkeypatch.setattr(pipeline, "_run_pool", lambda *a: pools.append(a[2]) or run_pool(*a))
    for workers in (1, 2):
        cfg = TokenizeConfig(workers=workers, shard_bytes=3000, batch_size=7)
        tokenize_files(cfg, [corpus], tokenizer.path, tmp_path / f"w{workers}")
    assert pools == [2]  # workers=1 ran in this process, workers=2 in two spawned ones
    assert outputs(tmp_path / "w1") == outputs(tmp_path / "w2")
    manifests = [(tmp_path / f"w{w}.manifest.json").read_text() for w in (1, 2)]
    assert manifests[0] == manifests[1].replace("w2.", "w1.")
    assert sequences(tmp_path / "w1") == expected(tokenizer, texts[:75])


def test_interrupted_run_resumes_with_only_unfinished_shards(
    tmp_path: Path, tokenizer: Tokenizer, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(tmp_path / "corpus", texts)
    broken = corpus / "part-4.jsonl.gz"
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # a truncated download: the first run fails
    ran: list[str] = []

    def counting(shard: Shard, job):
        ran.append(Path(shard.path).name)
        return run_shard(shard, job)

    run_shard = pipeline.run_shard
    monkeypatch.setattr(pipeline, "run_shard", counting)
    with pytest.raises(ScifmError, match=r"part-4\.jsonl\.gz: cannot read the file"):
        tokenize_files(TokenizeConfig(), [corpus], tokenizer.path, tmp_path / "t")
    assert not (tmp_path / "t.bin").exists() and not (tmp_path / "t.manifest.json").exists()
    assert len(list((tmp_path / "t.work").glob("*.done.json"))) == 4
    broken.write_bytes(good)
    ran.clear()
    tokenize_files(TokenizeConfig(), [corpus], tokenizer.path, tmp_path / "t")
    assert ran == ["part-4.jsonl.gz"]
    tokenize_files(TokenizeConfig(), [corpus], tokenizer.path, tmp_path / "fresh")
    assert outputs(tmp_path / "t") == outputs(tmp_path / "fresh")


def test_stale_or_damaged_shards_are_redone(
    tmp_path: Path, tokenizer: Tokenizer, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(tmp_path / "corpus", texts)
    ran: list[str] = []
    run_shard = pipeline.run_shard
    monkeypatch.setattr(pipeline, "run_shard", lambda s, j: ran.append(s.name) or run_shard(s, j))
    monkeypatch.setattr(pipeline.shutil, "rmtree", lambda *a, **k: None)  # keep the work dir
    tokenize_files(TokenizeConfig(), [corpus], tokenizer.path, tmp_path / "t")
    work = tmp_path / "t.work"
    (work / "shard-000001.bin").write_bytes(b"\x00")  # damaged output
    (corpus / "part-2.jsonl").touch()  # a newer input (mtime changes)
    ran.clear()
    tokenize_files(TokenizeConfig(), [corpus], tokenizer.path, tmp_path / "t")
    assert sorted(ran) == ["shard-000001", "shard-000002"]
    ran.clear()
    tokenize_files(TokenizeConfig(append_eod=False), [corpus], tokenizer.path, tmp_path / "t")
    assert len(ran) == 5  # other settings: every marker is stale


def test_assignment_depends_only_on_shards_and_ranks() -> None:
    shards = [Shard(i, f"f{i}", "jsonl", "", 0, size, size, size, 0)
              for i, size in enumerate([5, 1, 9, 3, 3, 7])]  # fmt: skip
    ranks = assign(shards, 2)
    assert [[s.index for s in r] for r in ranks] == [[2, 3, 4], [5, 0, 1]]
    assert sorted(s.index for r in assign(shards, 4) for s in r) == list(range(6))


def test_out_must_be_a_prefix(tmp_path: Path, tokenizer: Tokenizer) -> None:
    (tmp_path / "c.jsonl").write_bytes(jsonl(["x"]))
    with pytest.raises(ScifmError, match="is a directory"):
        tokenize_files(TokenizeConfig(), [tmp_path / "c.jsonl"], tokenizer.path, tmp_path)


def test_a_file_given_twice_counts_twice_with_its_own_line_numbers(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    source = tmp_path / "c.jsonl"
    source.write_bytes(jsonl(["one", "two"]) + b"oops\n" + jsonl(["three"]))
    cfg = TokenizeConfig(shard_bytes=10)
    stats = tokenize_files(cfg, [source, source], tokenizer.path, tmp_path / "t")
    assert stats["documents"] == 6 and stats["rejected"] == 2
    rejects = [json.loads(line) for line in (tmp_path / "t.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [3, 3]
    manifest = json.loads((tmp_path / "t.manifest.json").read_text())
    assert [(i["documents"], i["rejected"]) for i in manifest["inputs"]] == [(3, 1), (3, 1)]
    assert manifest["inputs"][0]["sha256"] == sha256_file(source)


def test_worker_count_fills_the_node_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from scifm.core.dist import LaunchInfo

    monkeypatch.setattr(pipeline, "_cores", lambda: 16)
    one, four = LaunchInfo("none", 0, 1, 0, 1), LaunchInfo("torchrun", 1, 8, 1, 4)
    assert pipeline._worker_count(0, one, 100) == 16 and pipeline._worker_count(0, four, 100) == 4
    assert pipeline._worker_count(3, one, 2) == 2 and pipeline._worker_count(0, one, 0) == 1
    assert pipeline._threads(4, one) == 4 and pipeline._threads(4, four) == 1
