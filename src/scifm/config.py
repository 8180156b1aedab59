"""Typed configuration: pydantic models with YAML round-trip, dotted overrides, clear errors.

Every component owns its config class (a `Config` subclass defined next to the code it
configures). Configs forbid unknown fields, validate types and ranges where they are defined,
and round-trip losslessly through YAML: `Cfg.from_yaml(p).to_yaml()` reloads to an equal object.

Overrides use dotted paths, as on the command line: `train.optimizer.lr=3e-4` or
`--train.optimizer.lr 3e-4`.
Values are parsed as YAML scalars (`true`, `[1, 2]`, `null`), then validated by the model.
Any problem becomes one `ScifmError` line naming the file, the field and the fix.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from scifm.core.errors import ScifmError


class Config(BaseModel):
    """Base for every scifm config section: strict about unknown fields, YAML in and out."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, overrides: Iterable[str] = (), source: str = "config"
    ) -> Self:
        merged = apply_overrides(dict(data or {}), overrides)
        try:
            return cls.model_validate(merged)
        except ValidationError as err:
            raise ScifmError(format_validation_error(err, source)) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str] | None, overrides: Iterable[str] = ()) -> Self:
        data = load_yaml(path) if path is not None else {}
        return cls.from_dict(data, overrides, source=str(path) if path else "config")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping, turning every way it can fail into one clear `ScifmError`."""
    p = Path(path)
    if not p.is_file():
        raise ScifmError(f"config file not found: {p} (check the path passed to --config)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScifmError(f"{p}: not UTF-8 text; save the config as UTF-8 YAML") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ScifmError(f"{p}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ScifmError(
            f"{p}: expected a mapping of sections at the top level, got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip().removeprefix("--")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ScifmError(f"bad override {text!r}: write it as section.field=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `data` with each dotted override set (intermediate maps created)."""
    result = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ScifmError(f"bad override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line for all problems: `source: field.path: message (got value)`; ...`."""
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field {loc!r} (remove it or check the spelling)")
            continue
        if item["type"] == "missing":
            parts.append(f"{loc}: required field is missing")
            continue
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = f" (got {got!r})" if _is_scalar(got) else ""
        parts.append(f"{loc}: {message}{shown}" if loc else f"{message}{shown}")
    return f"{source}: " + "; ".join(parts)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) < 80
