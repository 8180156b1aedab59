"""Atomic outputs appear whole or not at all."""

from __future__ import annotations

import pytest

from scifm.core.io import atomic_dir, atomic_path, sha256_bytes, sha256_file, write_json


def test_atomic_file_is_absent_after_a_failure(tmp_path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_file_replaces_whole(tmp_path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert target.read_text() == '{\n  "a": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_keeps_the_old_version_on_failure(tmp_path) -> None:
    target = tmp_path / "corpus"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v2 partial")
        raise ValueError
    assert (target / "a.txt").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("v3")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_hashes_agree(tmp_path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == sha256_bytes(b"abc")
    assert sha256_bytes(b"abc").startswith("ba7816bf")


def test_outputs_get_the_permissions_of_a_plain_create(tmp_path) -> None:
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "shared.json", {})
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
