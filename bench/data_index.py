"""Data-index cost at AuroraGPT's 2T shape: a Megatron-style index build against scifm's sampler.

AuroraGPT trains on the Dolma v1.7 data list (2,419 .bin/.idx files in 14 corpora, ~2.2e9
documents, 2e12 tokens, seq 4096, global batch 768). Megatron-style loaders first build a
document shuffle, a sample index, a sample shuffle and a blending index and save them as
.npy; scifm's sampler computes every index on demand. One run measures both over the same
files:

1. data: real Megatron .idx files for `--fraction` of the documents (default 0.1: 2.2e8
   documents, 4.4 GB of .idx) and sparse .bin files of the exact size, in the Dolma layout
   (see _data_index_gen.py), plus the mixture file `weight prefix corpus`. Cached in
   `--data-dir` behind a completion marker.
2. reference (in a child process): per corpus, one epoch of np.random.RandomState document
   shuffle (int32), the sample index (doc position, offset) of every seq_len sample
   (cumsum + searchsorted, what Megatron's C++ build_sample_idx loop computes) and the
   sample shuffle (uint32); then the blending index (corpus uint8 + sample int64) of every
   global sample, by a vectorised merge of each corpus's evenly spaced arrivals. Timed;
   `reference_bytes` is what np.save would write (the arrays are not written).
3. scifm (fresh child processes): read_mixture_file + open_mixture + BlendedSampler once
   after evicting the .idx and .bin files from the page cache (cold) and once warm, then
   `batch(b * 768, 768)` at 64 batches spread over the whole run and 63 more halfway between
   them (`*_steady`: per-file lookups already built), the write_bytes of each child
   (/proc/self/io; every file's atime is settled first, since a relatime update is charged
   to the reader), its peak RSS (ru_maxrss, which counts mapped file pages; RssAnon apart),
   and the corpus counts of every batch and every prefix of the run against the weights
   (`corpus_of`). The children also hash scifm.data's sources and fail if they changed.

Prints one JSON object. `ratio` = reference_s / startup_s (cold).
Usage: python bench/data_index.py [--fraction 0.1] [--skip-reference] [--profile cold]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds scripts named like standard modules (tokenize.py): keep it off the import path
# and load this benchmark's helper module by its file name instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402


def _load_helper(name: str):
    spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


gen = _load_helper("_data_index_gen")

SEQ_LEN = 4096
GLOBAL_BATCH = 768
SEED = 1234
NPY_HEADER = 128  # bytes np.save puts before the data of a 1- or 2-D array


def _mb(kilobytes: int) -> float:
    return round(kilobytes / 1024, 1)


def _peak_rss_mb() -> float:
    return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _proc_io() -> dict[str, int]:
    with open("/proc/self/io") as handle:
        return {k: int(v) for k, v in (line.split(":") for line in handle)}


def _rss_parts_mb() -> dict[str, float]:
    """Resident memory now, split: anonymous (heap) and file-backed (mapped files, reclaimable)."""
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return {k: _mb(int(fields[k].split()[0])) for k in ("RssAnon", "RssFile")}


def _stats_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "median": round(float(np.median(ms)), 3),
        "mean": round(float(ms.mean()), 3),
        "p90": round(float(np.percentile(ms, 90)), 3),
        "max": round(float(ms.max()), 3),
        "count": len(ms),
    }


def source_digest() -> str:
    """sha256 (12 hex) of scifm.data's sources: which sampler code a child measured."""
    import hashlib

    import scifm.data

    digest = hashlib.sha256()
    for path in sorted(Path(scifm.data.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _git_head() -> str | None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "src/scifm/data"],
                           capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+dirty-data" if dirty.stdout.strip() else "")


def total_samples(fraction: float, seq_len: int) -> int:
    return int(fraction * gen.FULL_TOKENS) // seq_len


def _read_corpora(mixture: Path) -> tuple[list[str], list[list[str]], np.ndarray]:
    """The mixture file's corpora in first-seen order: names, prefixes, normalised weights."""
    prefixes: dict[str, list[str]] = defaultdict(list)
    weights: dict[str, float] = defaultdict(float)
    for line in mixture.read_text().splitlines():
        weight, prefix, corpus = line.split()
        prefixes[corpus].append(prefix)
        weights[corpus] += float(weight)
    names = list(prefixes)
    w = np.asarray([weights[n] for n in names])
    return names, [prefixes[n] for n in names], w / w.sum()


# --- reference: the Megatron-style index build -------------------------------------------


def reference(data_dir: Path, seq_len: int, seed: int, samples: int) -> dict:
    """Build every index a Megatron-style loader saves, in memory; time it, count its bytes."""
    from scifm.tokens.format import read_index

    _, prefixes, weights = _read_corpora(data_dir / gen.MIXTURE)
    parts = dict.fromkeys(["read_sizes", "doc_shuffle", "sample_idx", "sample_shuffle"], 0.0)
    nbytes = corpus_samples = 0
    start = time.perf_counter()
    for files in prefixes:
        t = time.perf_counter()
        sizes = np.concatenate([read_index(p + ".idx").sizes for p in files])
        parts["read_sizes"] += time.perf_counter() - t

        t = time.perf_counter()  # Megatron _build_doc_idx, one epoch
        doc_idx = np.arange(len(sizes), dtype=np.int32)
        rng = np.random.RandomState(seed)
        rng.shuffle(doc_idx)
        parts["doc_shuffle"] += time.perf_counter() - t

        t = time.perf_counter()  # build_sample_idx: (position in doc_idx, offset) per sample
        ends = np.cumsum(sizes[doc_idx], dtype=np.int64)
        num_samples = (int(ends[-1]) - 1) // seq_len
        first_token = np.arange(num_samples + 1, dtype=np.int64) * seq_len
        position = np.searchsorted(ends, first_token, side="right")
        doc_start = np.where(position > 0, ends[np.maximum(position - 1, 0)], 0)
        sample_idx = np.empty((num_samples + 1, 2), dtype=np.int32)
        sample_idx[:, 0] = position
        sample_idx[:, 1] = first_token - doc_start
        del ends, first_token, position, doc_start
        parts["sample_idx"] += time.perf_counter() - t

        t = time.perf_counter()  # _build_shuffle_idx
        shuffle_idx = np.arange(num_samples, dtype=np.uint32)
        rng.shuffle(shuffle_idx)
        parts["sample_shuffle"] += time.perf_counter() - t

        nbytes += doc_idx.nbytes + sample_idx.nbytes + shuffle_idx.nbytes + 3 * NPY_HEADER
        corpus_samples += num_samples
        del sizes, doc_idx, sample_idx, shuffle_idx

    t = time.perf_counter()  # blending: the k-th sample of corpus c arrives at (k + 1/2) / w_c
    quota = np.ceil(samples * weights).astype(np.int64) + 1
    arrivals = np.concatenate(
        [(np.arange(q) + 0.5) / w for q, w in zip(quota, weights, strict=True)]
    )
    order = np.argsort(arrivals, kind="stable")[:samples]
    del arrivals
    offsets = np.concatenate([[0], np.cumsum(quota)[:-1]])
    dataset_index = np.repeat(np.arange(len(weights), dtype=np.uint8), quota)[order]
    dataset_sample_index = order - offsets[dataset_index]
    nbytes += dataset_index.nbytes + dataset_sample_index.nbytes + 2 * NPY_HEADER
    parts["blend"] = time.perf_counter() - t
    del order, dataset_index, dataset_sample_index

    return {
        "reference_s": round(time.perf_counter() - start, 2),
        "reference_parts_s": {k: round(v, 2) for k, v in parts.items()},
        "reference_bytes": nbytes,
        "reference_corpus_samples": corpus_samples,
        "reference_peak_rss_mb": _peak_rss_mb(),
    }


# --- scifm: the on-demand sampler, in a fresh process ----------------------------------------


def spread(count: int, total: int) -> np.ndarray:
    """`count` batch numbers spread evenly over [1, total) (batch 0 is the first batch)."""
    return np.unique(np.linspace(1, total - 1, count).round().astype(np.int64))


def measure(args: argparse.Namespace) -> dict:
    io_start = _proc_io()
    t = time.perf_counter()
    from scifm.data.mixture import open_mixture, read_mixture_file
    from scifm.data.sampler import BlendedSampler

    import_s = time.perf_counter() - t
    digest = source_digest()
    io_imported = _proc_io()
    profiler = None
    if args.profile_child:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    t = time.perf_counter()
    sources = read_mixture_file(args.data_dir / gen.MIXTURE)
    mixture = open_mixture(sources)
    sampler = BlendedSampler(
        mixture, seq_len=args.seq_len, seed=args.seed, blend_batch=args.global_batch
    )
    startup_s = time.perf_counter() - t

    batch, seq_len = args.global_batch, args.seq_len
    t = time.perf_counter()
    first = sampler.batch(0, batch)
    first_batch_ms = (time.perf_counter() - t) * 1e3
    if first.shape != (batch, seq_len + 1) or first.dtype != np.int64:
        raise SystemExit(f"batch(0, {batch}) gave {first.dtype} {first.shape}")
    total_batches = total_samples(args.fraction, seq_len) // batch
    # round 1: batches spread over the run; round 2: as many others, halfway between them
    # (per-file lookups built in round 1 are reused: the steady state of a long run)
    positions = spread(args.timed_batches, total_batches)
    halfway = (positions[:-1] + positions[1:]) // 2
    times: list[list[float]] = [[], []]
    anon = [_rss_parts_mb()["RssAnon"]]
    for round_, numbers in enumerate((positions, halfway)):
        for b in numbers:
            t = time.perf_counter()
            tokens = sampler.batch(int(b) * batch, batch)
            times[round_].append(time.perf_counter() - t)
            anon.append(_rss_parts_mb()["RssAnon"])
            if tokens.shape != (batch, seq_len + 1):
                raise SystemExit(f"batch({b * batch}, {batch}) gave shape {tokens.shape}")
    index_times = []  # the index alone (no token reads), at batches not read above
    for b in positions[:-1] + 1:
        numbers = np.arange(int(b) * batch, (int(b) + 1) * batch, dtype=np.int64)
        t = time.perf_counter()
        sampler.index(numbers)
        index_times.append(time.perf_counter() - t)
    if profiler is not None:
        profiler.disable()
        _print_profile(profiler)
    io_sampler = _proc_io()
    out = {
        "import_s": round(import_s, 3),
        "startup_s": round(startup_s, 3),
        "first_batch_ms": round(first_batch_ms, 2),
        "batch_ms": _stats_ms(times[0]),
        "batch_ms_steady": _stats_ms(times[1]),
        "index_ms": _stats_ms(index_times),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_end_mb": _rss_parts_mb(),
        "peak_rss_anon_mb": max(anon),
        "write_bytes": io_sampler["write_bytes"] - io_start["write_bytes"],
        "write_bytes_after_import": io_sampler["write_bytes"] - io_imported["write_bytes"],
        "read_bytes": io_sampler["read_bytes"] - io_start["read_bytes"],
        "names": list(mixture.names),
        "weights": [float(w) for w in mixture.weights],
    }
    if args.deviation != "none":
        t = time.perf_counter()
        out |= deviations(sampler, np.asarray(mixture.weights, np.float64), total_batches, args)
        out["deviation_s"] = round(time.perf_counter() - t, 1)
        out["peak_rss_with_check_mb"] = _peak_rss_mb()
        io_end = _proc_io()
        out["write_bytes"] = io_end["write_bytes"] - io_start["write_bytes"]
        out["write_bytes_after_import"] = io_end["write_bytes"] - io_imported["write_bytes"]
    out["source"] = source_digest()
    if out["source"] != digest:
        raise SystemExit("scifm.data changed while this child ran; run again")
    return out


def deviations(sampler, weights: np.ndarray, total_batches: int, args) -> dict:
    """Max |corpus count - expected| over global batches and over prefixes of the run."""
    batch, k = args.global_batch, len(weights)
    if args.deviation == "all":  # every batch, and every prefix, in order
        runs = [(b, min(256, total_batches - b)) for b in range(0, total_batches, 256)]
    else:  # the first 100 batches in order (prefixes there), then 2,000 spread batches
        runs = [(0, 100)] + [(int(b), 1) for b in spread(2000, total_batches) if b >= 100]
    counted = np.zeros(k, dtype=np.int64)
    worst_batch = worst_prefix = 0.0
    batches_checked = prefix_samples = 0
    for first, count in runs:
        ids = np.asarray(sampler.corpus_of(np.arange(first * batch, (first + count) * batch)))
        if ids.min() < 0 or ids.max() >= k:
            raise SystemExit(f"corpus_of gave corpus {ids.min()}..{ids.max()} for {k} corpora")
        ids = ids.astype(np.int64)
        rows = np.repeat(np.arange(count), batch)
        counts = np.bincount(rows * k + ids, minlength=count * k).reshape(count, k)
        worst_batch = max(worst_batch, float(np.abs(counts - batch * weights).max()))
        batches_checked += count
        if first * batch == prefix_samples:  # contiguous with what came before: prefixes
            n = np.arange(first * batch + 1, (first + count) * batch + 1, dtype=np.float64)
            for c in range(k):
                running = np.cumsum(ids == c) + counted[c]
                worst_prefix = max(worst_prefix, float(np.abs(running - weights[c] * n).max()))
            counted += counts.sum(axis=0)
            prefix_samples = (first + count) * batch
    return {
        "max_batch_deviation": round(worst_batch, 3),
        "max_prefix_deviation": round(worst_prefix, 3),
        "deviation_batches": batches_checked,
        "deviation_prefix_samples": prefix_samples,
    }


def _print_profile(profiler) -> None:
    import pstats

    for key in ("tottime", "cumulative"):
        print(f"--- cProfile of start-up and batches, by {key} ---", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats(key).print_stats(25)


# --- the parent: data, page cache, children, report ------------------------------------------


def _data_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.rglob("*") if p.suffix in (".idx", ".bin"))


def _snapshot(data_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(data_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in data_dir.rglob("*")
    }


def settle_atime(data_dir: Path) -> None:
    """Read one byte of every file, so that reads in the children make no relatime atime update
    (the kernel charges that inode write to the reading process's write_bytes)."""
    for path in _data_files(data_dir):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.pread(fd, 1, 0)
        finally:
            os.close(fd)


def evict(data_dir: Path) -> int | None:
    """Drop the data files from the page cache; the bytes of .idx still resident (fincore)."""
    os.sync()
    for path in _data_files(data_dir):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return resident_bytes([p for p in _data_files(data_dir) if p.suffix == ".idx"])


def resident_bytes(paths: list[Path]) -> int | None:
    if not shutil.which("fincore"):
        return None
    command = ["fincore", "--bytes", "--noheadings", "--output", "RES"]
    total = 0
    for i in range(0, len(paths), 500):
        out = subprocess.run([*command, *map(str, paths[i : i + 500])], capture_output=True)
        total += sum(int(v) for v in out.stdout.split())
    return total


def warm_up(data_dir: Path) -> None:
    """Read every .idx once so that the warm child finds them in the page cache."""
    for path in _data_files(data_dir):
        if path.suffix == ".idx":
            with open(path, "rb", buffering=0) as handle:
                while handle.read(1 << 24):
                    pass


def run_child(args: argparse.Namespace, *extra: str) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--data-dir", str(args.data_dir),
        "--fraction", repr(args.fraction),
        "--seed", str(args.seed),
        "--seq-len", str(args.seq_len),
        "--global-batch", str(args.global_batch),
        "--timed-batches", str(args.timed_batches),
        *extra,
    ]  # fmt: skip
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1", "SCIFM_PROGRESS": "0"}
    done = subprocess.run(command, stdout=subprocess.PIPE, env=env, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(extra)} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--global-batch", type=int, default=GLOBAL_BATCH)
    parser.add_argument("--timed-batches", type=int, default=64)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--deviation", choices=["all", "sample", "none"], default="all",
                        help="all: every batch and prefix of the run; sample: the first 100 "
                        "batches and 2,000 spread ones")  # fmt: skip
    parser.add_argument("--profile", choices=["cold", "warm"], default=None,
                        help="also run a child under cProfile (stats on stderr)")  # fmt: skip
    parser.add_argument("--child", choices=["reference", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None:
        args.data_dir = Path(f"/tmp/scifm-bench/data-index-f{args.fraction:g}")
    samples = total_samples(args.fraction, args.seq_len)

    if args.child == "reference":
        print(json.dumps(reference(args.data_dir, args.seq_len, args.seed, samples)))
        return
    if args.child == "measure":
        print(json.dumps(measure(args)))
        return

    head = _git_head()
    load_start = os.getloadavg()[0]
    marker, generated = gen.ensure_data(args.data_dir, args.fraction, args.seed)
    ref = {} if args.skip_reference else run_child(args, "--child", "reference")
    settle_atime(args.data_dir)
    before = _snapshot(args.data_dir)

    cold_resident = evict(args.data_dir)
    cold = run_child(args, "--child", "measure", "--deviation", "none")
    warm_up(args.data_dir)
    warm = run_child(args, "--child", "measure", "--deviation", args.deviation)
    sources = {cold["source"], warm["source"]}
    if args.profile:
        if args.profile == "cold":
            evict(args.data_dir)
        profiled = run_child(args, "--child", "measure", "--deviation", "none", "--profile-child")
        sources.add(profiled["source"])
    if len(sources) > 1:
        raise SystemExit(f"scifm.data changed between the children ({sorted(sources)}); rerun")
    after = _snapshot(args.data_dir)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

    estimates = {  # the reference at the full 2T shape, scaled linearly from this fraction
        "reference_s_2t_linear_estimate": round(ref["reference_s"] / args.fraction),
        "reference_bytes_2t_linear_estimate": round(ref["reference_bytes"] / args.fraction),
    } if ref else {}  # fmt: skip
    report = {
        "fraction": args.fraction,
        "files": marker["files"],
        "corpora": marker["corpora"],
        "documents": marker["documents"],
        "tokens": marker["tokens"],
        "seq_len": args.seq_len,
        "global_batch": args.global_batch,
        "total_samples": samples,
        "total_batches": samples // args.global_batch,
        "token_dtype": marker["token_dtype"],
        "idx_bytes": marker["idx_bytes"],
        "bin_files": "sparse",
        "bin_bytes_apparent": marker["bin_bytes_apparent"],
        "data_dir": str(args.data_dir),
        "generated": generated,
        "generate_s": marker["generate_s"],
        **ref,
        "startup_s": cold["startup_s"],
        "startup_warm_s": warm["startup_s"],
        "ratio": round(ref["reference_s"] / cold["startup_s"], 1) if ref else None,
        **estimates,
        "cold_method": "os.sync, then posix_fadvise(POSIX_FADV_DONTNEED) on every .idx and .bin; "
        "code and Python stay cached",
        "cold_idx_resident_bytes": cold_resident,
        "cold_read_bytes": cold["read_bytes"],
        "import_s": cold["import_s"],
        "first_batch_ms_cold": cold["first_batch_ms"],
        "batch_ms_cold": cold["batch_ms"],
        "batch_ms_cold_steady": cold["batch_ms_steady"],
        "first_batch_ms": warm["first_batch_ms"],
        "batch_ms": warm["batch_ms"]["median"],
        "batch_ms_mean": warm["batch_ms"]["mean"],
        "batch_ms_stats": warm["batch_ms"],
        "batch_ms_steady": warm["batch_ms_steady"],
        "index_ms": warm["index_ms"]["median"],
        "index_ms_stats": warm["index_ms"],
        "warm_method": "every .idx read once before the child",
        "bytes_written": cold["write_bytes"] + warm["write_bytes"],
        "bytes_written_after_import": cold["write_bytes_after_import"]
        + warm["write_bytes_after_import"],
        "bytes_written_method": "/proc/self/io write_bytes, whole child (atime settled first)",
        "data_dir_changes": changed,
        "peak_rss_mb": max(cold["peak_rss_mb"], warm["peak_rss_mb"]),
        "peak_rss_anon_mb": max(cold["peak_rss_anon_mb"], warm["peak_rss_anon_mb"]),
        "rss_end_mb_cold": cold["rss_end_mb"],
        "rss_end_mb_warm": warm["rss_end_mb"],
        "peak_rss_with_check_mb": warm.get("peak_rss_with_check_mb"),
        **{k: warm[k] for k in warm if k.startswith(("max_", "deviation_"))},
        "corpus_names": warm["names"],
        "corpus_weights": [round(w, 6) for w in warm["weights"]],
        "git_head": head,
        "sampler_source_sha256": warm["source"],
        "cpus": os.cpu_count(),
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
