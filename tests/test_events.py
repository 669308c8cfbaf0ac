"""Decoding and validating events: every rejection names its field; the fast path agrees."""

from __future__ import annotations

import copy

import orjson
import pytest

from streamlearn.errors import EventError
from streamlearn.events import EventDecoder, encode_envelope, encode_event

GOOD = {
    "key": "u1",
    "features": {"x": 1.5, "c": "FR", "t": ["a", "b"], "b": True, "n": 3},
    "label": 1,
    "ts": 1732345678123,
    "id": "e-1",
}


@pytest.mark.parametrize(
    ("task", "event", "field"),
    [
        ("binary", [1, 2], "event"),
        ("binary", {"features": {"x": 1.0}}, "label"),
        ("binary", {"features": {"x": 1.0}, "label": 2}, "label"),
        ("binary", {"features": {"x": 1.0}, "label": "yes"}, "label"),
        ("binary", {"features": {}, "label": 1}, "features"),
        ("binary", {"features": "x=1", "label": 1}, "features"),
        ("binary", {"label": 1}, "features"),
        ("binary", {"features": {"x": [1, 2]}, "label": 1}, "features.x"),
        ("binary", {"features": {"x": {"y": 1}}, "label": 1}, "features.x"),
        ("binary", {"features": {"x": None}, "label": 1}, "features.x"),
        ("binary", {"features": {"x": float("nan")}, "label": 1}, "features.x"),
        ("binary", {"features": {"x": float("inf")}, "label": 1}, "features.x"),
        ("binary", {"features": {"x": 1}, "label": 1, "colour": "red"}, "colour"),
        ("binary", {"features": {"x": 1}, "label": 1, "ts": -5}, "ts"),
        ("binary", {"features": {"x": 1}, "label": 1, "ts": 1.5}, "ts"),
        ("binary", {"features": {"x": 1}, "label": 1, "key": ["a"]}, "key"),
        ("binary", {"features": {"x": 1}, "label": 1, "id": {"a": 1}}, "id"),
        ("regression", {"features": {"x": 1}, "label": "3"}, "label"),
        ("regression", {"features": {"x": 1}, "label": True}, "label"),
        ("regression", {"features": {"x": 1}, "label": float("nan")}, "label"),
        ("multiclass", {"features": {"x": 1}, "label": ""}, "label"),
        ("multiclass", {"features": {"x": 1}, "label": 1.5}, "label"),
    ],
)
def test_every_rejection_names_its_field(task, event, field):
    with pytest.raises(EventError) as info:
        EventDecoder(task).validate(copy.deepcopy(event), 4)
    assert info.value.field == field
    assert f"`{field}`" in str(info.value) and "event 4" in str(info.value)


@pytest.mark.parametrize(
    ("task", "label", "stored"),
    [
        ("binary", True, 1),
        ("binary", 0, 0),
        ("binary", 1.0, 1),
        ("regression", 2.5, 2.5),
        ("regression", -3, -3),
        ("multiclass", "cat", "cat"),
        ("multiclass", 7, 7),
    ],
)
def test_valid_labels_fast_and_detailed_paths_agree(task, label, stored):
    decoder = EventDecoder(task)
    fast = decoder.validate({**copy.deepcopy(GOOD), "label": label})
    slow = decoder._validate({**copy.deepcopy(GOOD), "label": label}, None)
    assert fast == slow and fast["label"] == stored


def test_scoring_needs_no_label_but_checks_one_given():
    decoder = EventDecoder("binary", require_label=False)
    assert "label" not in decoder.validate({"features": {"x": 1}})
    with pytest.raises(EventError, match="label"):
        decoder.validate({"features": {"x": 1}, "label": 5})


def test_messages_single_envelope_and_broken():
    decoder = EventDecoder("binary")
    good, bad = decoder.decode(encode_event(GOOD))
    assert good == [GOOD] and bad == []
    events = [GOOD, {"features": {}}, {**GOOD, "label": False}]
    good, bad = decoder.decode(encode_envelope(events))
    assert [e["label"] for e in good] == [1, 0]
    assert [(r.index, r.field) for r in bad] == [(1, "features")]
    assert orjson.loads(bad[0].raw) == {"features": {}}
    for raw in (b'{"features": ', b"\xff\xfe", b"NaN", b'{"events": 3}'):
        good, bad = decoder.decode(raw)
        assert good == [] and len(bad) == 1 and bad[0].index is None and bad[0].raw == raw
    assert decoder.decode(b'{"events": 3}')[1][0].field == "events"


def test_input_event_is_not_copied_but_validated_in_place():
    event = copy.deepcopy(GOOD)
    assert EventDecoder("binary").validate(event) is event


def test_unknown_task_is_refused():
    with pytest.raises(EventError, match="task"):
        EventDecoder("ranking")
