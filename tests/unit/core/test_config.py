"""Config base: YAML round trip, dotted overrides, and one-line errors for bad input."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from scifm.cli import split_overrides
from scifm.config import Config, apply_overrides, load_yaml
from scifm.core.errors import ScifmError


class Inner(Config):
    lr: float = Field(default=1e-3, gt=0)
    kind: Literal["a", "b"] = "a"
    sizes: list[int] = Field(default_factory=lambda: [1, 2])


class Outer(Config):
    name: str = "x"
    steps: int = Field(default=10, gt=0)
    inner: Inner = Field(default_factory=Inner)
    maybe: float | None = None


def test_yaml_round_trip_is_lossless(tmp_path) -> None:
    cfg = Outer.from_dict({"name": "run", "inner": {"lr": 3e-4, "kind": "b", "sizes": [5]}})
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    again = Outer.from_yaml(path)
    assert again == cfg and again.to_yaml() == cfg.to_yaml()


def test_dotted_overrides_are_parsed_as_yaml_scalars() -> None:
    cfg = Outer.from_dict({}, ["inner.lr=3e-4", "steps=20", "inner.sizes=[4, 8]", "maybe=null"])
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.steps == 20
    assert cfg.inner.sizes == [4, 8] and cfg.maybe is None


def test_overrides_do_not_mutate_the_input() -> None:
    data = {"inner": {"lr": 1.0}}
    assert apply_overrides(data, ["inner.lr=2"])["inner"]["lr"] == 2
    assert data == {"inner": {"lr": 1.0}}


def test_cli_accepts_both_override_spellings() -> None:
    rest, overrides = split_overrides(["train", "--train.lr", "3e-4", "model.dim=64", "--dry-run"])
    assert rest == ["train", "--dry-run"]
    assert overrides == ["train.lr=3e-4", "model.dim=64"]
    with pytest.raises(ScifmError, match="has no value"):
        split_overrides(["--train.lr"])


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"stepz": 1}, [], "unknown field 'stepz'"),
        ({}, ["inner.lrr=1"], "unknown field 'inner.lrr'"),
        ({"steps": "many"}, [], "steps: Input should be a valid integer"),
        ({"steps": -5}, [], "steps: Input should be greater than 0 (got -5)"),
        ({"inner": {"kind": "c"}}, [], "inner.kind: Input should be 'a' or 'b'"),
    ],
)
def test_bad_values_give_one_line_naming_the_field(data, overrides, message) -> None:
    with pytest.raises(ScifmError) as err:
        Outer.from_dict(data, overrides, source="r.yaml")
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("r.yaml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["steps"], "bad override 'steps'"), (["steps.x=1"], "'steps' is not a section")],
)
def test_malformed_overrides(overrides, message) -> None:
    with pytest.raises(ScifmError, match=message):
        Outer.from_dict({"steps": 1}, overrides)


def test_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ScifmError, match="config file not found"):
        load_yaml(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ScifmError, match=r"malformed YAML at line \d+"):
        load_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ScifmError, match="expected a mapping"):
        load_yaml(scalar)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ScifmError, match="not UTF-8"):
        load_yaml(binary)
