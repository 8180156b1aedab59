"""Synthetic token files in the shape of AuroraGPT's Dolma v1.7 data list (for data_index.py).

Layout: ALCF's Megatron-DeepSpeed data list `ALCF/data-lists/aurora/dolma.txt` (argonne-lcf/
Megatron-DeepSpeed, last changed 2024-08-30 in 38b2505b): 2,419 lines `weight prefix corpus`
in 14 corpora, Llama-2 tokenizer (32,000 ids, so uint16 tokens). Below, per corpus and file
stem: the number of files and their summed weight, exactly as in that list, and the standard
deviation of the log of the per-file weights; per-file weights are drawn from a lognormal of
that spread and rescaled to the summed weight (the list's individual weights are not copied).

Documents: AuroraGPT's run is 2e12 tokens in about 2.2e9 documents (mean ~909 tokens). At
`fraction` f a file of weight w gets round(f * 2e12 * w) tokens in round(tokens / 909.1)
documents whose lengths are lognormal (sigma 1.25: median ~416, heavy tail) rescaled to sum
to the file's tokens exactly. The .idx files are real Megatron indexes; the .bin files are
sparse files of the exact size (they read as zeros and occupy no disk).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scifm.tokens.format import dtype_for_vocab, write_index

FULL_TOKENS = 2_000_000_000_000
FULL_DOCUMENTS = 2_200_000_000
MEAN_DOC_TOKENS = FULL_TOKENS / FULL_DOCUMENTS
DOC_SIGMA = 1.25
VOCAB = 32_000  # Llama-2 tokenizer, as data_v1.7_Llama2Tokenizer
LAYOUT_VERSION = 1
MARKER = "COMPLETE.json"
OWNER = ".scifm-bench-data-index"  # written first: this directory may be deleted and redone
MIXTURE = "dolma.txt"

# (corpus, file stem, files, summed weight, std of log per-file weight) from dolma.txt
DOLMA_V17: list[tuple[str, str, int, float, float]] = [
    ("algebraic-stack-train", "algebraic-stack-train", 16, 0.017069925, 0.82),
    ("arxiv", "arxiv", 100, 0.030058285, 0.09),
    ("books", "books", 3, 0.007204209, 0.53),
    ("c4", "c4", 171, 0.039011265, 0.09),
    ("cc", "cc_en_head", 275, 0.100890234, 0.20),
    ("cc", "cc_en_middle", 379, 0.127524732, 0.17),
    ("cc", "cc_en_tail", 444, 0.109128090, 0.22),
    ("cc", "cc_news_head", 5, 0.010175584, 0.09),
    ("cc", "cc_news_middle", 3, 0.004471545, 0.53),
    ("cc", "cc_news_tail", 1, 0.001788540, 0.00),
    ("falcon", "falcon", 500, 0.176417195, 0.01),
    ("megawika", "megawika", 262, 0.006546340, 0.66),
    ("open-web-math-train", "open-web-math-train", 13, 0.017363606, 0.85),
    ("pes2o", "pes2o", 26, 0.068537816, 0.57),
    ("reddit", "reddit", 78, 0.044216199, 0.04),
    ("stackexchange", "stackexchange", 26, 0.026269062, 0.13),
    ("starcoder", "starcoder", 49, 0.189738822, 0.36),
    ("tulu", "tulu_flan", 66, 0.018203251, 0.29),
    ("wiki", "wiki", 2, 0.005385297, 0.33),
]


@dataclass(frozen=True)
class FilePlan:
    index: int
    corpus: str
    prefix: Path
    tokens: int
    documents: int


def plan_files(data_dir: Path, fraction: float, seed: int) -> list[FilePlan]:
    """Every file of the layout with its token and document counts (deterministic)."""
    total_weight = sum(group[3] for group in DOLMA_V17)
    plans: list[FilePlan] = []
    for group_number, (corpus, stem, files, weight, spread) in enumerate(DOLMA_V17):
        rng = np.random.default_rng([seed, 0x6C6179, group_number])
        shares = rng.lognormal(0.0, spread, files) if spread > 0 else np.ones(files)
        shares *= weight / total_weight / shares.sum()
        for k, share in enumerate(shares):
            tokens = max(1, round(fraction * FULL_TOKENS * float(share)))
            documents = max(1, min(tokens, round(tokens / MEAN_DOC_TOKENS)))
            prefix = data_dir / corpus / f"{stem}-{k:04d}_text_document"
            plans.append(FilePlan(len(plans), corpus, prefix, tokens, documents))
    return plans


def document_sizes(plan: FilePlan, seed: int) -> np.ndarray:
    """int32 lengths of the file's documents: lognormal, summing to plan.tokens exactly."""
    rng = np.random.default_rng([seed, 0x646F63, plan.index])
    mu = math.log(MEAN_DOC_TOKENS) - DOC_SIGMA**2 / 2
    raw = rng.lognormal(mu, DOC_SIGMA, plan.documents)
    sizes = np.maximum(1, np.floor(raw * (plan.tokens / raw.sum()))).astype(np.int64)
    largest = int(np.argmax(sizes))
    sizes[largest] += plan.tokens - int(sizes.sum())
    if sizes[largest] < 1 or sizes.max() > np.iinfo(np.int32).max:
        raise RuntimeError(f"{plan.prefix}: cannot split {plan.tokens} tokens into documents")
    return sizes.astype(np.int32)


def read_marker(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_data(data_dir: Path, fraction: float, seed: int) -> tuple[dict, bool]:
    """Generate the files unless a matching completion marker exists; (marker, generated)."""
    marker = read_marker(data_dir)
    wanted = {"fraction": fraction, "seed": seed, "layout_version": LAYOUT_VERSION}
    if marker and all(marker.get(k) == v for k, v in wanted.items()):
        return marker, False
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / OWNER).exists():
            raise SystemExit(f"{data_dir} exists and was not made by this benchmark; pick another")
        shutil.rmtree(data_dir)  # a partial or different generation of ours: start over
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / OWNER).write_text("generated by bench/data_index.py\n")
    marker = generate(data_dir, fraction, seed) | wanted
    (data_dir / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    return marker, True


def generate(data_dir: Path, fraction: float, seed: int) -> dict:
    start = time.perf_counter()
    plans = plan_files(data_dir, fraction, seed)
    dtype = dtype_for_vocab(VOCAB)
    total_tokens = sum(p.tokens for p in plans)
    lines = []
    documents = idx_bytes = 0
    for plan in plans:
        plan.prefix.parent.mkdir(exist_ok=True)
        sizes = document_sizes(plan, seed)
        doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
        idx_path = plan.prefix.with_name(plan.prefix.name + ".idx")
        write_index(idx_path, sizes, doc_idx, dtype)
        with open(plan.prefix.with_name(plan.prefix.name + ".bin"), "wb") as handle:
            os.truncate(handle.fileno(), plan.tokens * dtype.itemsize)  # sparse: no blocks
        documents += len(sizes)
        idx_bytes += idx_path.stat().st_size
        lines.append(f"{plan.tokens / total_tokens!r} {plan.prefix} {plan.corpus}\n")
        if (plan.index + 1) % 250 == 0 or plan.index + 1 == len(plans):
            print(
                f"[generate] {plan.index + 1}/{len(plans)} files, {documents:,} documents, "
                f"{idx_bytes / 1e9:.2f} GB .idx, {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    (data_dir / MIXTURE).write_text("".join(lines))
    return {
        "files": len(plans),
        "corpora": len({p.corpus for p in plans}),
        "documents": documents,
        "tokens": total_tokens,
        "idx_bytes": idx_bytes,
        "bin_bytes_apparent": total_tokens * dtype.itemsize,
        "token_dtype": str(dtype),
        "generate_s": round(time.perf_counter() - start, 2),
    }
