"""Decoding and validating events: every rejection names its field; the fast path agrees."""

from __future__ import annotations

import base64
import copy
import hashlib

import orjson
import pytest

from streamlearn.errors import EventError
from streamlearn.events import (
    DEAD_LETTER_FIELD_CHARS,
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_REASON_CHARS,
    DEAD_LETTER_VALUE_BYTES,
    EventDecoder,
    dead_letter,
    encode_envelope,
    encode_event,
)

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


# -- values nested deeper than Python's recursion limit ------------------------------------

DEPTH = 1000  # deeper than repr can go; orjson reads up to 1024 levels, the event's included


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_object(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth



@pytest.mark.parametrize(
    ("message", "field", "got"),
    [
        (b'{"features": {"x": 1}, "label": 1, "id": ' + _nested(DEPTH) + b"}", "id", "[" * 57),
        (b'{"features": {"x": 1}, "label": 1, "key": ' + _nested(DEPTH) + b"}", "key", "[" * 57),
        (b'{"features": {"x": 1}, "label": ' + _nested(DEPTH) + b"}", "label", "[" * 57),
        (b'{"features": {"x": 1}, "label": 1, "ts": ' + _nested(DEPTH) + b"}", "ts", "[" * 57),
        (b'{"features": {"x": ' + _nested_object(DEPTH) + b'}, "label": 1}', "features.x",
         '{"a":' * 11 + '{"'),
        (b'{"features": {"x": ["a", ' + _nested(DEPTH) + b']}, "label": 1}', "features.x",
         None),
        (b'{"features": ' + _nested(DEPTH) + b', "label": 1}', "features", "[" * 57),
        (_nested(DEPTH), "event", "[" * 57),
        (b'{"events": ' + _nested_object(DEPTH) + b"}", "events", '{"a":' * 11 + '{"'),
    ],
)
def test_a_deeply_nested_value_is_a_rejection_naming_its_field(message, field, got):
    good, bad = EventDecoder("binary").decode(message)
    assert good == [] and len(bad) == 1
    assert bad[0].field == field and bad[0].index is None and bad[0].raw == message
    if got is not None:
        assert bad[0].reason.endswith(f", got {got}..."), bad[0].reason


def test_a_deeply_nested_list_item_is_quoted_by_its_first_brackets():
    message = b'{"features": {"x": ["a", ' + _nested(DEPTH) + b']}, "label": 1}'
    (rejected,) = EventDecoder("binary").decode(message)[1]
    assert rejected.reason == (
        "field `features.x`: expected a list of strings, got an item " + "[" * 57 + "..."
    )


def test_a_deeply_nested_envelope_item_keeps_its_bytes():
    """orjson writes at most 254 levels: a deeper rejected item is written as orjson would."""
    item = b'{"features":{"x":1},"label":1,"id":' + _nested(DEPTH - 2) + b"}"
    other = b'{"features":{"x":2},"label":0}'
    good, bad = EventDecoder("binary").decode(b'{"events":[' + other + b"," + item + b"]}")
    assert [e["features"] for e in good] == [{"x": 2}]
    assert [(r.index, r.field) for r in bad] == [(1, "id")]
    assert bad[0].raw == item


@pytest.mark.parametrize("seed", range(4))
def test_a_short_value_is_json_cut_to_sixty_characters(seed):
    """For any JSON value, what the rejection quotes is the value written as JSON (the
    contract's ``show``: no spaces, RFC 8785's escapes) cut at 60 characters; and a rejected
    envelope item's bytes are orjson's."""
    import random

    rng = random.Random(seed)
    words = ["", "a", "it's", 'say "hi"', "\\", "tab\tnew\nline\x7f\u2028", "é😀", "x" * 70]

    def value(depth: int):
        kind = rng.random()
        if depth > 4 or kind < 0.5:
            return rng.choice([None, True, False, 0, -3, 2**64 - 1, 1.5, -0.0, 1e-7, 1e300,
                               *words])
        if kind < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 5))]
        return {rng.choice(words): value(depth + 1) for _ in range(rng.randint(0, 4))}

    cut = 0
    decoder = EventDecoder("binary")
    for _ in range(500):
        v = value(0)
        text = _json(v)
        expected = text if len(text) <= 60 else text[:57] + "..."
        cut += len(text) > 60
        event = {"features": {"x": 1}, "label": 1, "id": v}
        message = orjson.dumps({"events": [event]})
        good, bad = decoder.decode(message)
        if v is None or type(v) in (str, int, bool):
            assert len(good) == 1
            continue
        reason = "field `id` of event 0: expected a string or an integer, got " + expected
        assert [r.reason for r in bad] == [reason]
        assert bad[0].raw == orjson.dumps(event)
    assert cut > 50  # long values were cut


def _json(value) -> str:
    """JSON as the contract shows it, written independently: the standard library's writer
    (its escapes are RFC 8785's), no spaces, and ECMAScript's float layout with ".0" kept."""
    import json

    def number(x: float) -> str:
        if x == 0:
            return "-0.0" if str(x).startswith("-") else "0.0"
        text = json.dumps(x)  # repr: the shortest digits, in Python's layout
        mantissa, _, exp = text.partition("e")
        digits = mantissa.lstrip("-").replace(".", "")
        point = len(mantissa.lstrip("-").split(".")[0]) + int(exp or 0)  # 0.DIGITS * 10**point
        point -= len(digits) - len(digits.lstrip("0"))
        digits = digits.strip("0")
        sign = "-" if x < 0 else ""
        if len(digits) <= point <= 21:
            return sign + digits + "0" * (point - len(digits)) + ".0"
        if 0 < point <= 21:
            return sign + digits[:point] + "." + digits[point:]
        if -6 < point <= 0:
            return sign + "0." + "0" * -point + digits
        rest = "." + digits[1:] if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{rest}e{point - 1:+d}"

    if isinstance(value, float):
        return number(value)
    if isinstance(value, list):
        return "[" + ",".join(map(_json, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(_json(k) + ":" + _json(v) for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def test_a_value_repr_cannot_render_is_named_as_deeply_nested():
    """Through :meth:`EventDecoder.validate` (the SDK), any Python value can come: a tuple
    nested too deep for ``repr`` is "a deeply nested value"."""
    deep: tuple = ()
    for _ in range(5 * DEPTH):
        deep = (deep,)
    with pytest.raises(EventError) as info:
        EventDecoder("binary").validate({"features": {"x": 1}, "label": 1, "id": deep})
    assert info.value.field == "id"
    assert str(info.value).endswith("got a deeply nested value")


def test_an_envelope_without_events_is_one_counted_rejection():
    """Never dropped without a trace: one rejection of the message, naming `events`."""
    for message in (b'{"events": []}', b'{"events": [], "meta": 1}', b' { "events" : [ ] } '):
        good, bad = EventDecoder("binary").decode(message)
        assert good == []
        (rejected,) = bad
        assert (rejected.field, rejected.index, rejected.raw) == ("events", None, message)
        assert rejected.reason == "field `events`: expected at least one event, got an empty list"


@pytest.mark.parametrize(
    "features", [{"": 1}, {"x": 1, "": "a"}, {"": None}, {"": ["a"]}, {"": True}]
)
def test_an_empty_feature_name_is_refused_before_its_value(features):
    """The hasher has no slot for an empty name: the decoder refuses it (as the JVM does),
    on the fast path too, naming `features`."""
    decoder = EventDecoder("binary")
    with pytest.raises(EventError) as info:
        decoder.validate({"features": dict(features), "label": 1}, 2)
    assert info.value.field == "features"
    assert str(info.value) == (
        "field `features` of event 2: expected non-empty string feature names, got \"\""
    )
    good, bad = decoder.decode(encode_envelope([{"features": {"x": 1}, "label": 0},
                                                {"features": features, "label": 1}]))
    assert len(good) == 1 and [(r.field, r.index) for r in bad] == [("features", 1)]


def _letter(raw: bytes, reason: str = "why", field: str = "label") -> dict:
    return orjson.loads(dead_letter(stage="train", topic="events", partition=3, offset=9,
                                    index=None, field=field, reason=reason, raw=raw, at_ms=5))


@pytest.mark.parametrize("size", [0, 1, DEAD_LETTER_VALUE_BYTES, DEAD_LETTER_VALUE_BYTES + 1,
                                  1_800_000])
def test_a_dead_letter_keeps_one_bounded_copy_and_describes_all_of_it(size):
    raw = (bytes(range(256)) * (size // 256 + 1))[:size]
    record = dead_letter(stage="train", topic="events", partition=3, offset=9, index=None,
                         field="message", reason="r", raw=raw, at_ms=5)
    assert len(record) <= DEAD_LETTER_MAX_BYTES
    doc = orjson.loads(record)
    assert list(doc) == ["stage", "topic", "partition", "offset", "index", "code", "field",
                         "reason", "size", "sha256", "truncated", "value_b64", "at_ms"]
    assert base64.b64decode(doc["value_b64"]) == raw[:DEAD_LETTER_VALUE_BYTES]
    assert doc["truncated"] is (size > DEAD_LETTER_VALUE_BYTES)
    assert (doc["size"], doc["sha256"]) == (size, hashlib.sha256(raw).hexdigest())
    assert (doc["topic"], doc["partition"], doc["offset"], doc["at_ms"]) == ("events", 3, 9, 5)


def test_a_dead_letter_cuts_long_reasons_and_fields_by_characters():
    long = "é" * (DEAD_LETTER_REASON_CHARS + 1)
    doc = _letter(b"x", reason=long, field="features." + "😀" * DEAD_LETTER_FIELD_CHARS)
    assert doc["reason"] == "é" * (DEAD_LETTER_REASON_CHARS - 3) + "..."
    assert len(doc["field"]) == DEAD_LETTER_FIELD_CHARS and doc["field"].endswith("...")
    exact = "é" * DEAD_LETTER_REASON_CHARS
    assert _letter(b"x", reason=exact)["reason"] == exact
