"""Stages import one way: parse every module's imports and fail on a forbidden direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "scifm"
ALWAYS = {"scifm", "scifm.config", "scifm.core"}
# package -> scifm modules (besides core and config) it may import; prefixes match submodules.
ALLOWED = {
    "core": set(),
    "curate": set(),
    "tokens": {"scifm.curate.document"},
    "data": {"scifm.tokens.format"},
    "model": set(),
    "parallel": {"scifm.model"},
    "checkpoint": set(),
    "train": {"scifm.data", "scifm.model", "scifm.parallel", "scifm.checkpoint"},
    "convert": {"scifm.model", "scifm.checkpoint", "scifm.tokens.tokenizer"},
    "eval": {"scifm.data", "scifm.model", "scifm.convert"},
    "serve": {"scifm.model", "scifm.convert"},
}
FORBIDDEN_THIRD_PARTY = {"model": {"torch.distributed"}}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _allowed(package: str, name: str) -> bool:
    if name in ALWAYS or name.startswith("scifm.core.") or name.startswith("scifm.config."):
        return True
    own = f"scifm.{package}"
    permitted = ALLOWED[package] | {own}
    return any(name == p or name.startswith(p + ".") for p in permitted)


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in sorted(_imports(path)):
            if name.startswith("scifm") and not _allowed(package, name):
                found.append(f"{path.relative_to(SRC)} imports {name}")
            for banned in FORBIDDEN_THIRD_PARTY.get(package, ()):
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{path.relative_to(SRC)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_point_one_way(package: str) -> None:
    assert (SRC / package).is_dir(), f"missing package scifm.{package}"
    assert _violations(package) == []


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from scifm.train import train\nimport torch.distributed as dist\n")
    names = _imports(bad)
    assert not _allowed("model", "scifm.train.train")
    assert "scifm.train" in names and "torch.distributed" in names
    assert _allowed("train", "scifm.model.llama") and not _allowed("data", "scifm.model")
