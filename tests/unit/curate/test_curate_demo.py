"""Demo corpora: real docstrings of installed packages, capped, deterministic, atomic."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest

import scifm.curate.demo as demo
from scifm.core.errors import ScifmError
from scifm.curate.demo import KNOWN_CORPORA, DemoCorpus, DemoCorpusConfig, build_demo_corpora
from scifm.curate.jsonl import list_corpus_files, read_documents

CAP = 40_000
SMALL = DemoCorpusConfig(max_bytes_per_corpus=CAP, docs_per_shard=10)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch) -> None:
    monkeypatch.setenv("SCIFM_PROGRESS", "0")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "corpora"
    return out, build_demo_corpora(SMALL, out)


def _docs(out: Path, corpus: str) -> list:
    return [d for f in list_corpus_files(out / corpus) for d in read_documents(f)]


def test_manifest_matches_the_shards(built) -> None:
    out, manifest = built
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *sorted(KNOWN_CORPORA)]
    assert manifest["skipped_files"] == 0
    for name in KNOWN_CORPORA:
        docs, entry = _docs(out, name), manifest[name]
        files = list_corpus_files(out / name)
        assert [f.name for f in files] == [f"shard-{i:05d}.jsonl" for i in range(len(files))]
        assert entry["shards"] == len(files) and entry["documents"] == len(docs)
        assert entry["bytes"] == sum(len(d.text.encode()) for d in docs)
        assert CAP - 10_000 < entry["bytes"] <= CAP
        assert [len(_docs_in(f)) for f in files[:-1]] == [10] * (len(files) - 1)
        assert {d.metadata["package"] for d in docs} == set(entry["sources"])


def _docs_in(path: Path) -> list:
    return list(read_documents(path))


def test_documents_are_real_unique_and_long_enough(built) -> None:
    out, manifest = built
    for name in KNOWN_CORPORA:
        docs = _docs(out, name)
        assert len({d.id for d in docs}) == len(docs)
        assert len({d.text for d in docs}) == len(docs)
        assert all(len(d.text.strip()) >= SMALL.min_chars for d in docs)
        for d in docs:
            meta = d.metadata
            assert set(meta) == {"package", "version", "path", "object"}
            assert d.id == f"{meta['package']}:{meta['path']}:{meta['object']}"
            assert "/tests/" not in f"/{meta['path']}" and "/test/" not in f"/{meta['path']}"
    assert set(manifest["math"]["sources"]) == {"sympy", "mpmath"}
    assert set(manifest["scicomp"]["sources"]) == {"numpy", "torch"}
    assert manifest["python"]["sources"] == {"python": "{}.{}.{}".format(*sys.version_info[:3])}


def test_text_is_the_packages_own(built) -> None:
    from pydoc_data.topics import topics

    import numpy

    out, _ = built
    math = {d.id: d.text for d in _docs(out, "math")}
    assert (
        "SymPy is a Python library for symbolic mathematics"
        in math["sympy:sympy/__init__.py:<module>"]
    )
    scicomp = {d.id: d.text for d in _docs(out, "scicomp")}
    assert scicomp["numpy:numpy/__init__.py:<module>"] == inspect.cleandoc(numpy.__doc__)
    python = {d.id: d.text for d in _docs(out, "python")}
    assert python["python:pydoc_data/topics.py:assert"] == topics["assert"]
    assert any(key.startswith("python:pydoc_data") for key in python)
    assert any(not key.startswith("python:pydoc_data") for key in python)


def test_two_builds_are_byte_identical(built, tmp_path) -> None:
    first, _ = built
    second = tmp_path / "again"
    build_demo_corpora(SMALL, second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_unknown_or_repeated_corpus(tmp_path) -> None:
    with pytest.raises(ScifmError, match=r"unknown demo corpus 'nope'.*math, scicomp, python"):
        DemoCorpusConfig.from_dict({"corpora": ["math", "nope"]})
    with pytest.raises(ScifmError, match="listed twice"):
        DemoCorpusConfig.from_dict({"corpora": ["math", "math"]})
    unchecked = DemoCorpusConfig.model_construct(corpora=["nope"], max_bytes_per_corpus=CAP)
    with pytest.raises(ScifmError, match="known corpora"):
        build_demo_corpora(unchecked, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "field", ["max_bytes_per_corpus=0", "min_chars=0", "docs_per_shard=0", "corpora=[]"]
)
def test_config_ranges(field: str) -> None:
    with pytest.raises(ScifmError, match=field.split("=")[0]):
        DemoCorpusConfig.from_dict({}, [field])


def test_config_yaml_round_trip(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SMALL.to_yaml())
    assert DemoCorpusConfig.from_yaml(path) == SMALL


def test_failure_midway_leaves_nothing(monkeypatch, tmp_path) -> None:
    real, calls = demo.write_documents, []

    def flaky(path, docs):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(path, docs)

    monkeypatch.setattr(demo, "write_documents", flaky)
    cfg = DemoCorpusConfig(corpora=["math"], max_bytes_per_corpus=20_000, docs_per_shard=4)
    with pytest.raises(RuntimeError, match="disk full"):
        build_demo_corpora(cfg, tmp_path / "out")
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_build(monkeypatch, tmp_path) -> None:
    out = tmp_path / "out"
    cfg = DemoCorpusConfig(corpora=["math"], max_bytes_per_corpus=20_000)
    build_demo_corpora(cfg, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(path, docs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "write_documents", broken)
    with pytest.raises(RuntimeError):
        build_demo_corpora(cfg.model_copy(update={"min_chars": 300}), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replaces_a_previous_build_only(tmp_path) -> None:
    out = tmp_path / "out"
    cfg = DemoCorpusConfig(corpora=["python"], max_bytes_per_corpus=20_000)
    build_demo_corpora(cfg, out)
    (out / "stale.txt").write_text("from an older build")
    manifest = build_demo_corpora(cfg.model_copy(update={"corpora": ["math"]}), out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "math"]
    assert list(manifest) == ["math", "skipped_files"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ScifmError, match="not a demo corpus directory"):
        build_demo_corpora(cfg, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_too_small_a_cap_is_an_error(tmp_path) -> None:
    cfg = DemoCorpusConfig(corpora=["math"], max_bytes_per_corpus=100)
    with pytest.raises(ScifmError, match=r"is empty.*raise max_bytes_per_corpus"):
        build_demo_corpora(cfg, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


FAKE_FILES = {
    "__init__.py": '"""Package docstring long enough to keep, about widgets."""\n',
    "_private.py": '"""Private module docstring, read after the public ones."""\n',
    "public.py": '''"""Public module docstring, read before the private ones."""

if True:
    class Outer:
        """Outer class docstring, found inside an if block."""

        class Inner:
            """Inner class docstring with a qualified name."""

        def method(self):
            """Method docstring of Outer."""

            def local():
                """Local helpers inside functions are not read."""

try:
    pass
except ImportError:
    def fallback():
        """Fallback docstring, found inside an except handler."""

def fallback():
    """Second definition with the same name gets a unique id."""

def copy():
    """Method docstring of Outer."""

def short():
    """Too short."""
''',
    "broken.py": '"""Never read."""\ndef (:\n',
    "latin1.py": b'"""caf\xe9 without an encoding cookie is not UTF-8"""\n',
    "tests/test_widgets.py": '"""Test suites are skipped entirely, docstring or not."""\n',
}


def test_extraction_rules_on_a_fake_package(monkeypatch, tmp_path) -> None:
    pkg = tmp_path / "site" / "scifm_fake_widgets"
    for name, content in FAKE_FILES.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode()
        (pkg / name).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(KNOWN_CORPORA, "fake", DemoCorpus("fake", ("scifm_fake_widgets",)))
    cfg = DemoCorpusConfig(corpora=["fake"], min_chars=20)
    manifest = build_demo_corpora(cfg, tmp_path / "out")
    ids = [d.id.removeprefix("scifm_fake_widgets:scifm_fake_widgets/") for d in _docs(
        tmp_path / "out", "fake")]  # fmt: skip
    assert ids == [
        "__init__.py:<module>",
        "public.py:<module>",
        "public.py:Outer",
        "public.py:Outer.Inner",
        "public.py:Outer.method",
        "public.py:fallback",
        "public.py:fallback#2",
        "_private.py:<module>",
    ]
    assert manifest["skipped_files"] == 2
    assert manifest["fake"]["sources"] == {"scifm_fake_widgets": "unknown"}


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path) -> None:
    missing = DemoCorpus("missing", ("scifm_no_such_package",))
    monkeypatch.setitem(KNOWN_CORPORA, "missing", missing)
    with pytest.raises(ScifmError, match="install it"):
        build_demo_corpora(DemoCorpusConfig(corpora=["missing"]), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
