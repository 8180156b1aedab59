"""Document: one JSONL line out, one validated record in, and back without loss."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scifm.core.errors import ScifmError
from scifm.curate.document import Document


def test_to_json_is_one_line_with_source() -> None:
    doc = Document("a", "line one\nline two\u2028 café", {"package": "numpy", "n": 3})
    line = doc.to_json()
    assert "\n" not in line and "café" in line
    assert json.loads(line) == {
        "id": "a",
        "text": "line one\nline two\u2028 café",
        "source": {"package": "numpy", "n": 3},
    }


def test_documents_are_frozen() -> None:
    doc = Document("a", "text")
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.text = "other"  # type: ignore[misc]
    assert doc.metadata == {} and Document("b", "t").metadata is not doc.metadata


def test_from_record_defaults_and_other_fields() -> None:
    doc = Document.from_record({"content": "hello", "url": "u", "text": "kept"}, "content", "f:3")
    assert doc == Document("f:3", "hello", {"url": "u", "text": "kept"})
    assert Document.from_record({"id": 7, "text": "x"}).id == "7"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"body": "x"}, "missing text field 'text'"),
        ({"text": 5}, "must be a string, got number"),
        ({"text": None}, "must be a string, got null"),
        ({"text": " \n\t"}, "is empty"),
        ({"text": "x", "id": True}, "'id' must be a string or integer, got boolean"),
        ({"text": "x", "id": ""}, "'id' is empty"),
        (["text"], "expected a JSON object, got array"),
    ],
)
def test_from_record_rejects_with_location(record, expected: str) -> None:
    with pytest.raises(ScifmError) as info:
        Document.from_record(record, where="corpus/a.jsonl:17")
    message = str(info.value)
    assert message.startswith("corpus/a.jsonl:17: ") and expected in message
    assert "\n" not in message


def test_from_record_needs_an_id_or_a_location() -> None:
    with pytest.raises(ScifmError, match="no 'id'"):
        Document.from_record({"text": "x"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    doc_id=st.text(min_size=1).filter(str.strip),
    text=st.text(min_size=1).filter(str.strip),
    metadata=st.dictionaries(st.text().filter(lambda k: k not in ("id", "text")), json_values),
)
def test_json_round_trip(doc_id: str, text: str, metadata: dict) -> None:
    doc = Document(doc_id, text, metadata)
    assert Document.from_record(json.loads(doc.to_json()), where="x:1") == doc
