"""The one record type that flows through curation: a `Document` with an id, text and metadata.

Every reader turns its input into Documents and every writer writes them back as one JSONL
line each, `{"id": ..., "text": ..., "source": {...metadata}}`, so steps never care where a
document came from. `from_record` is the single place where an untrusted JSON object is
checked, so every reader reports a bad record the same way: one line naming where it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scifm.core.errors import ScifmError

RESERVED_KEYS = ("id", "source")


@dataclass(frozen=True)
class Document:
    """One text with a stable id and free-form metadata (package, path, url, ...)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSONL line (no trailing newline); non-ASCII text is kept as UTF-8."""
        record = {"id": self.id, "text": self.text, "source": self.metadata}
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], text_field: str = "text", where: str = ""
    ) -> Document:
        """Validate one decoded JSON object; `where` ("file:line") prefixes every error."""
        prefix = f"{where}: " if where else ""
        if not isinstance(record, Mapping):
            raise ScifmError(
                f"{prefix}expected a JSON object, got {_json_type(record)}; "
                "write one object per line"
            )
        text = _text(record, text_field, prefix)
        doc_id = _doc_id(record, where, prefix)
        return cls(id=doc_id, text=text, metadata=_metadata(record, text_field))


def _text(record: Mapping[str, Any], text_field: str, prefix: str) -> str:
    if text_field not in record:
        keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
        raise ScifmError(
            f"{prefix}missing text field {text_field!r} (keys: {keys}); "
            "add it or choose the field with text_field"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise ScifmError(
            f"{prefix}text field {text_field!r} must be a string, got {_json_type(text)}"
        )
    if not text.strip():
        raise ScifmError(f"{prefix}text field {text_field!r} is empty; drop this record")
    return text


def _doc_id(record: Mapping[str, Any], where: str, prefix: str) -> str:
    value = record.get("id")
    if value is None:
        if not where:
            raise ScifmError("record has no 'id' and no location to name it by; add an 'id'")
        return where
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ScifmError(f"{prefix}'id' must be a string or integer, got {_json_type(value)}")
    if isinstance(value, str) and not value.strip():
        raise ScifmError(f"{prefix}'id' is empty; give the record an id or remove the key")
    return str(value)


def _metadata(record: Mapping[str, Any], text_field: str) -> dict[str, Any]:
    """The "source" object, plus any other keys of the record (kept, not lost)."""
    source = record.get("source")
    metadata = dict(source) if isinstance(source, Mapping) else {}
    if source is not None and not isinstance(source, Mapping):
        metadata["source"] = source
    for key, value in record.items():
        if key != text_field and key not in RESERVED_KEYS:
            metadata.setdefault(key, value)
    return metadata


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return names.get(type(value), type(value).__name__)
