"""The contract as a program: a plain, slow reading of every rule, the source of the corpus.

It is written for clarity, not speed, and shares no code with the implementations it checks
(``streamlearn.events``, ``streamlearn.serving.request_body``, the C fast path, the JVM encoder):
only the rules, limits, codes and texts of :mod:`streamlearn.contract`.

>>> out = decode(b'{"events": [{"features": {"x": 2, "c": "a"}, "label": true}, {"features": {}}]}',
...              Settings(task="binary", bits=4))
>>> out.events
[Encoded(index=0, rows=[(2, 2.0, True), (12, -1.0, False)], label=1, weight=1.0)]
>>> [(r.index, r.field, r.code) for r in out.rejections]
[(1, 'features', 'features.empty')]
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamlearn.contract import (
    ENVELOPE_FIELD,
    EVENT_FIELDS,
    FIELD_KINDS,
    HASH,
    MAX_FEATURES,
    Rejection,
    cross_entry,
    event_weight,
    feature_name,
    field_ok,
)

__all__ = ["Decoded", "Encoded", "Settings", "decode", "encode_event", "slot"]

_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Settings:
    """What a decoder is set up with: the task, what it makes of labels, the hashing.

    ``labels``: ``"required"`` (training), ``"optional"`` (checked when given: the scoring
    job) or ``"ignored"`` (a serving request: a label is neither checked nor used).
    ``max_events``: a serving request's cap on the events of an envelope (None: no cap).
    ``crosses``: pairs of feature names crossed after the event's own entries.
    """

    task: str = "binary"
    labels: str = "required"
    bits: int = 20
    dense: tuple[str, ...] = ()
    max_features: int = MAX_FEATURES
    max_events: int | None = None
    crosses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Encoded:
    """One valid event: its index in its envelope (None: a single event), its entries
    ``(slot, value, numeric)`` in the order of its features, its label (None: none) and the
    weight it learns with (1.0 when it gives none)."""

    index: int | None
    rows: list[tuple[int, float, bool]]
    label: Any
    weight: float = 1.0


@dataclass
class Decoded:
    events: list[Encoded] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _hash53(text: str, person: bytes) -> int:
    digest = hashlib.blake2b(
        text.encode("utf-8"), digest_size=HASH.digest_size, person=person
    ).digest()
    return int.from_bytes(digest, "little") & ((1 << HASH.bits) - 1)


def slot(name: str, value: str | None, bits: int) -> tuple[int, int]:
    """``(slot, sign)`` of a hashed feature, from :data:`streamlearn.contract.HASH`.

    >>> slot("country", "FR", 20), slot("age", None, 20)
    ((188638, -1), (648457, -1))
    """
    value_hash = 0 if value is None else (_hash53(value, HASH.value_person) or 1)
    h = ((_hash53(name, HASH.name_person) * HASH.golden) & _U64) ^ value_hash
    h ^= h >> HASH.shift
    h = (h * HASH.mix_1) & _U64
    h ^= h >> HASH.shift
    h = (h * HASH.mix_2) & _U64
    h ^= h >> HASH.shift
    return h & ((1 << bits) - 1), -1 if h >> 63 else 1


def decode(message: bytes, settings: Settings) -> Decoded:
    """Every valid event of ``message`` encoded, and every rejection, in the contract's order."""
    out = Decoded()
    try:
        doc = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        out.rejections.append(Rejection("message.not_json", None, detail=str(exc)))
        return out
    if type(doc) is dict and ENVELOPE_FIELD in doc and "features" not in doc:
        items = doc[ENVELOPE_FIELD]
        if type(items) is not list:
            out.rejections.append(Rejection("events.not_list", None, value=items))
        elif not items:
            out.rejections.append(Rejection("events.empty", None))
        elif settings.max_events is not None and len(items) > settings.max_events:
            out.rejections.append(
                Rejection("events.too_many", None, count=len(items), max_events=settings.max_events)
            )
        else:
            for i, item in enumerate(items):
                _one(item, i, settings, out)
        return out
    _one(doc, None, settings, out)
    return out


def encode_event(event: dict, settings: Settings) -> Decoded:
    """One event given as Python objects: names read by
    :func:`~streamlearn.contract.feature_name` first (an integer is its decimal text)."""
    out = Decoded()
    features = event.get("features")
    if type(features) is dict:
        named = {}
        for name, value in features.items():
            text = feature_name(name)
            if text is None and name != "":
                out.rejections.append(Rejection("features.name_not_string", None, value=name))
                return out
            named[name if text is None else text] = value
        event = {**event, "features": named}
    _one(event, None, settings, out)
    return out


def _one(event: Any, index: int | None, s: Settings, out: Decoded) -> None:
    try:
        out.events.append(_event(event, index, s))
    except Rejection as err:
        out.rejections.append(err)


def _event(event: Any, index: int | None, s: Settings) -> Encoded:
    if type(event) is not dict:
        raise Rejection("event.not_object", index, value=event)
    unknown = sorted(k for k in event if k not in EVENT_FIELDS)
    if unknown:
        raise Rejection("event.unknown_field", index, name=unknown[0])
    if "features" not in event or event["features"] is None:
        raise Rejection("features.missing", index)
    features = event["features"]
    if type(features) is not dict:
        raise Rejection("features.not_object", index, value=features)
    if not features:
        raise Rejection("features.empty", index)
    if len(features) > s.max_features:
        raise Rejection(
            "features.too_many", index, count=len(features), max_features=s.max_features
        )
    for name, value in features.items():
        if name == "":
            raise Rejection("features.empty_name", index)
        if type(value) is float and not math.isfinite(value):
            raise Rejection("features.not_finite", index, name=name, value=value)
        if type(value) is list:
            for item in value:
                if type(item) is not str:
                    raise Rejection("features.bad_list_item", index, name=name, value=item)
        elif type(value) not in (int, float, str, bool):
            raise Rejection("features.bad_value", index, name=name, value=value)
    label = _label(event, index, s)
    for name, kind in FIELD_KINDS.items():
        value = event.get(name)  # null is absent
        if value is not None and not field_ok(kind, value):
            raise Rejection(f"{name}.invalid", index, value=value)
    return Encoded(index, _rows(features, index, s), label, event_weight(event))


def _label(event: dict, index: int | None, s: Settings) -> Any:
    if s.labels == "ignored":
        return None
    if "label" not in event:
        if s.labels == "required":
            raise Rejection("label.missing", index, task=s.task)
        return None
    label = event["label"]
    kind = type(label)
    if s.task == "regression":
        if kind is int or (kind is float and math.isfinite(label)):
            return label
    elif s.task == "binary":
        if kind in (bool, int, float) and label in (0, 1):
            return int(label)
    elif (kind is str and label) or kind is int:
        return label
    raise Rejection("label.invalid", index, task=s.task, value=label)


def _rows(features: dict, index: int | None, s: Settings) -> list[tuple[int, float, bool]]:
    rows: list[tuple[int, float, bool]] = []
    of_name: dict[str, list[tuple[int, float, bool]]] = {}
    for name, value in features.items():
        of_name[name] = _entries(name, value, index, s)
        rows.extend(of_name[name])
    pairs = [(of_name[a], of_name[b]) for a, b in s.crosses if a in of_name and b in of_name]
    count = sum(len(a) * len(b) for a, b in pairs)
    if count > s.max_features:
        raise Rejection(
            "features.too_many_crossed", index, count=count, max_features=s.max_features
        )
    crossed = [
        (*cross_entry(a_slot, a_value, b_slot, b_value, s.bits), False)
        for entries_a, entries_b in pairs
        for a_slot, a_value, _ in entries_a
        for b_slot, b_value, _ in entries_b
    ]
    return rows + crossed


def _entries(name: str, value: Any, index: int | None, s: Settings
             ) -> list[tuple[int, float, bool]]:
    """The entries ``(slot, value, numeric)`` of one feature."""
    if name in s.dense:
        if type(value) is str or (type(value) is list and value):
            raise Rejection("features.dense_not_number", index, name=name, value=value)
        position = (1 << s.bits) + s.dense.index(name)
        if type(value) is bool:
            return [(position, 1.0 if value else 0.0, False)]
        if type(value) is list:
            return []
        return [(position, float(value), True)]
    if type(value) is str:
        at, sign = slot(name, value, s.bits)
        return [(at, float(sign), False)]
    if type(value) is list:
        return [(at, float(sign), False) for at, sign in (slot(name, v, s.bits) for v in value)]
    at, sign = slot(name, None, s.bits)
    if type(value) is bool:
        return [(at, sign * (1.0 if value else 0.0), False)]
    return [(at, sign * float(value), True)]
