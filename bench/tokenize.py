"""Tokenization throughput per core: `scifm tokenize` against a Megatron-style anchor and HF.

On the demo corpora (built into a temporary directory, with a 4,096-token byte-level BPE
trained by `stages.tokenizer_train`), three pipelines turn the same JSONL into token ids:

- ours: `stages.tokenize_corpus` end to end with `tokenize.workers=2` (read, shard, encode,
  write shard files, merge into PREFIX.bin/.idx, rejects and manifest);
- anchor: the structure of Megatron-LM's tools/preprocess_data.py, written here:
  `multiprocessing.Pool(2).imap(encode_line, lines, chunksize=25)`, each worker parsing one
  JSON line and encoding one document with `tokenizers` (`Tokenizer.encode`), the main
  process writing each document's ids to .bin (numpy per document) and then the .idx;
- limit: raw HF `tokenizers` `encode_batch` on the same texts, in memory, writing nothing.

Throughput per core = input bytes / CPU seconds (user + system of this process, its threads
and every child process it waited for: `resource.getrusage` RUSAGE_SELF + RUSAGE_CHILDREN
deltas), the median of `--repeat` runs. Prints one JSON object.
Usage: python bench/tokenize.py [--mb-per-corpus 3] [--repeat 3]
"""

import sys
from pathlib import Path

# This file shares its name with the standard library's `tokenize` (imported by linecache,
# inspect, ...): keep its directory off the import path before anything else is imported.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("SCIFM_PROGRESS", "0")
if __name__ == "__main__":
    # Imported here, not in the worker processes of ours, which re-import this file when they
    # start (as they would `scifm`'s light entry point) and must not pay for these.
    import numpy as np
    from tokenizers import Tokenizer as HFTokenizer

    from scifm.stages import tokenize_corpus
    from scifm.tokens.format import write_index
    from scifm.tokens.tokenizer import Tokenizer
    from scifm.tokens.writer import TokenizeConfig
CORPORA = ("math", "scicomp", "python")
KINDS = ("ours", "anchor", "limit")
_anchor_tokenizer: Any = None
_anchor_eod = 0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(CPU seconds, wall seconds, result) of one call."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    result = fn()
    return _cpu_seconds() - cpu, time.perf_counter() - wall, result


def _setup(root: str, mb_per_corpus: float) -> None:
    """Corpora and tokenizer, built in a child process: training runs `tokenizers` threads,
    and the anchor's forked workers must not inherit a process that used them."""
    from scifm.curate.demo import DemoCorpusConfig, build_demo_corpora
    from scifm.stages import tokenizer_train
    from scifm.tokens.tokenizer import TokenizerConfig

    cfg = DemoCorpusConfig(max_bytes_per_corpus=int(mb_per_corpus * 1e6))
    build_demo_corpora(cfg, Path(root) / "corpora")
    corpora = [Path(root) / "corpora" / name for name in CORPORA]
    tokenizer_train(TokenizerConfig(vocab_size=4096), corpora, Path(root) / "tokenizer.json")


# ---- the anchor: Megatron-LM preprocess_data.py's structure -------------------------------


def _anchor_init(tokenizer_path: str) -> None:
    """Pool initializer (Megatron's Encoder.initializer): one tokenizer per worker."""
    from tokenizers import Tokenizer

    global _anchor_tokenizer, _anchor_eod
    _anchor_tokenizer = Tokenizer.from_file(tokenizer_path)
    _anchor_tokenizer.encode_special_tokens = True  # as scifm: special strings are text
    _anchor_eod = _anchor_tokenizer.token_to_id("<|eos|>")


def _anchor_encode(line: str) -> tuple[list[int], int]:
    """Megatron's Encoder.encode: parse one JSON line, encode its text, append the EOD."""
    text = json.loads(line)["text"]
    ids = _anchor_tokenizer.encode(text, add_special_tokens=False).ids
    if ids:
        ids.append(_anchor_eod)
    return ids, len(line)


def _anchor(files: list[Path], tokenizer_path: Path, prefix: Path) -> None:
    sizes: list[int] = []
    handles = [open(f, encoding="utf-8") for f in files]  # noqa: SIM115
    with multiprocessing.Pool(2, initializer=_anchor_init, initargs=(str(tokenizer_path),)) as pool:
        encoded = pool.imap(_anchor_encode, itertools.chain(*handles), 25)
        with open(prefix.with_suffix(".bin"), "wb") as out:
            for ids, _ in encoded:
                if ids:  # IndexedDatasetBuilder.add_document: numpy per document
                    out.write(np.array(ids, dtype=np.uint16).tobytes(order="C"))
                    sizes.append(len(ids))
        pool.close()
        pool.join()
    for handle in handles:
        handle.close()
    doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
    write_index(prefix.with_suffix(".idx"), np.asarray(sizes, np.int32), doc_idx, np.uint16)


# ---- the benchmark --------------------------------------------------------------------------


def _ours(corpora: list[Path], tokenizer_path: Path, prefix: Path) -> dict[str, Any]:
    return tokenize_corpus(TokenizeConfig(workers=2), corpora, tokenizer_path, prefix)


def _limit(texts: list[str], tokenizer_path: Path) -> list[list[int]]:
    backend = HFTokenizer.from_file(str(tokenizer_path))
    backend.encode_special_tokens = True
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def _same_ids(ours: Path, anchor: Path, limit: list[list[int]], eod: int) -> bool:
    ours_bin = ours.with_suffix(".bin").read_bytes()
    expected = np.concatenate([np.asarray([*ids, eod], dtype="<u2") for ids in limit]).tobytes()
    return (
        ours_bin == anchor.with_suffix(".bin").read_bytes() == expected
        and ours.with_suffix(".idx").read_bytes() == anchor.with_suffix(".idx").read_bytes()
    )


def _rate(megabytes: float, seconds: list[float]) -> float:
    return round(megabytes / statistics.median(seconds), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb-per-corpus", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scifm-bench-") as tmp:
        print(json.dumps(_bench(Path(tmp), args.mb_per_corpus, args.repeat)))


def _bench(root: Path, mb_per_corpus: float, repeat: int) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    setup = spawn.Process(target=_setup, args=(str(root), mb_per_corpus))
    setup.start()
    setup.join()
    corpora = [root / "corpora" / name for name in CORPORA]
    files = [f for c in corpora for f in sorted(c.glob("*.jsonl"))]
    tokenizer_path = root / "tokenizer.json"
    input_mb = sum(f.stat().st_size for f in files) / 1e6
    texts = [json.loads(line)["text"] for f in files for line in f.read_text().splitlines()]

    runs: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in KINDS}
    limit_ids: list[list[int]] = []
    for _ in range(repeat):
        for key, fn in (
            ("ours", lambda: _ours(corpora, tokenizer_path, root / "ours")),
            ("anchor", lambda: _anchor(files, tokenizer_path, root / "anchor")),
            ("limit", lambda: _limit(texts, tokenizer_path)),
        ):
            cpu, wall, result = _measure(fn)
            runs[key]["cpu"].append(cpu)
            runs[key]["wall"].append(wall)
            if key == "limit":
                limit_ids = result

    tokenizer = Tokenizer.load(tokenizer_path)
    ours, anchor, limit = (_rate(input_mb, runs[k]["cpu"]) for k in KINDS)
    return {
        "input_mb": round(input_mb, 2),
        "text_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
        "documents": len(texts),
        "mb_per_s_per_core": ours,
        "anchor_mb_per_s_per_core": anchor,
        "limit_mb_per_s_per_core": limit,
        "ratio_vs_anchor": round(ours / anchor, 2),
        "ratio_vs_limit": round(ours / limit, 2),
        "ids_identical": _same_ids(root / "ours", root / "anchor", limit_ids, tokenizer.eos_id),
        "mb_per_s": _rate(input_mb, runs["ours"]["wall"]),
        "anchor_mb_per_s": _rate(input_mb, runs["anchor"]["wall"]),
        "limit_mb_per_s": _rate(input_mb, runs["limit"]["wall"]),
        "cpu_s": {k: [round(x, 2) for x in runs[k]["cpu"]] for k in KINDS},
        "repeat": repeat,
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
