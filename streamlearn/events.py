"""Events on the wire: decoding single events and envelopes, with a reason for every rejection.

One Kafka message holds one event or an envelope of events::

    {"key": "user-42", "features": {"age": 31, "country": "FR", "tags": ["a", "b"]},
     "label": 1, "ts": 1732345678123, "id": "e-1"}

    {"events": [{...}, {...}]}

An event is returned as a plain ``dict`` with ``features`` always present and
the contract's other fields (:data:`~streamlearn.contract.EVENT_FIELDS`: ``label``,
``key``, ``ts``, ``id``, ``weight``) when given. A rejection is a
:class:`Rejected` carrying the :class:`~streamlearn.errors.EventError` (which
names the field), the index inside an envelope, and the original bytes.

>>> decoder = EventDecoder(task="binary")
>>> good, bad = decoder.decode(b'{"events": [{"features": {"x": 1.5}, "label": true},'
...                            b' {"features": {"x": "NaN"}, "label": 1}, {"features": {}}]}')
>>> [e["label"] for e in good]
[1, 1]
>>> [str(r.error) for r in bad]  # doctest: +NORMALIZE_WHITESPACE
['field `features` of event 2: expected at least one feature, got an empty object']

A string value is a category (``"NaN"`` is the string "NaN"), so the second
event is valid; the third has no features. Bytes that are not JSON are one
rejection for the whole message, and so is an envelope with no events.

Every rejection becomes one bounded dead-letter record (:func:`dead_letter`):
the same JSON shape, byte for byte, as the JVM encoder of the training job
writes (``io.streamlearn.flink.DeadLetter``). See ``docs/events.md``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamlearn.contract import (
    EVENT_FIELDS,
    FIELD_KINDS,
    MAX_FEATURES,
    TASKS,
    Rejection,
    feature_name,
    field_ok,
    show,
    write,
)
from streamlearn.errors import EventError

__all__ = [
    "DEAD_LETTER_FIELD_CHARS",
    "DEAD_LETTER_MAX_BYTES",
    "DEAD_LETTER_REASON_CHARS",
    "DEAD_LETTER_VALUE_BYTES",
    "EventDecoder",
    "Rejected",
    "TASKS",
    "dead_letter",
    "encode_envelope",
    "encode_event",
]

_ALLOWED = frozenset(EVENT_FIELDS)
_MISSING = object()


@dataclass(frozen=True)
class Rejected:
    """One event (or a whole message) that could not be used, and why."""

    error: EventError
    index: int | None  # position inside an envelope; None for the whole message
    raw: bytes

    @property
    def reason(self) -> str:
        return str(self.error)

    @property
    def field(self) -> str:
        return self.error.field

    @property
    def code(self) -> str | None:
        """The contract's code of the rule broken (``features.empty``, ...); None for an
        error that is not a :class:`~streamlearn.contract.Rejection`."""
        return self.error.code if isinstance(self.error, Rejection) else None


_short = show  # a value as messages show it (the contract's rendering)


def _item_bytes(item: Any) -> bytes:
    """An envelope item as JSON bytes; orjson writes at most 254 levels, deeper items are
    written here in its layout."""
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return write(item, lambda v: orjson.dumps(v).decode(), ",", ":", math.inf).encode()


class EventDecoder:
    """Decode and validate messages for one task, by the rules of :mod:`streamlearn.contract`.

    Parameters
    ----------
    task
        ``"regression"``, ``"binary"`` or ``"multiclass"``: decides what a
        valid ``label`` is.
    require_label
        Training needs labels; scoring does not (a label, if present, is
        still checked).
    max_features
        Events with more features than this are rejected (protects memory).

    Every rejection is a :class:`~streamlearn.contract.Rejection`: an
    :class:`~streamlearn.errors.EventError` with the contract's ``code``.
    """

    def __init__(
        self, task: str = "binary", require_label: bool = True, max_features: int = MAX_FEATURES
    ):
        if task not in TASKS:
            raise EventError("task", f"one of {', '.join(TASKS)}", repr(task))
        self.task = task
        self.require_label = require_label
        self.max_features = max_features

    # -- public -----------------------------------------------------------
    def decode(self, raw: bytes | str) -> tuple[list[dict], list[Rejected]]:
        """All valid events of one message, and the rejections."""
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return [], [Rejected(Rejection("message.not_json", None, detail=str(exc)), None, data)]
        if isinstance(doc, dict) and "events" in doc and "features" not in doc:
            items = doc["events"]
            if not isinstance(items, list):
                return [], [Rejected(Rejection("events.not_list", None, value=items), None, data)]
            if not items:
                return [], [Rejected(Rejection("events.empty", None), None, data)]
            good: list[dict] = []
            bad: list[Rejected] = []
            for i, item in enumerate(items):
                try:
                    good.append(self._checked(item, i))
                except Rejection as err:
                    bad.append(Rejected(err, i, _item_bytes(item)))
            return good, bad
        try:
            return [self._checked(doc, None)], []
        except Rejection as err:
            return [], [Rejected(err, None, data)]

    def validate(self, event: Any, index: int | None = None) -> dict:
        """Check one event given as Python objects; returns it or raises a
        :class:`~streamlearn.contract.Rejection`.

        Unlike JSON's, the names of Python objects may be other than strings: an integer
        name (River's streams use them) is the feature named by its decimal text, and the
        event returned has its ``features`` keyed by strings; any other name is refused
        (``features.name_not_string``).

        >>> EventDecoder("regression").validate({"features": {0: 1.5, "b": 2}, "label": 1.0})
        {'features': {'0': 1.5, 'b': 2}, 'label': 1.0}
        """
        if type(event) is dict:
            features = event.get("features")
            if type(features) is dict:
                for name in features:
                    if type(name) is not str:  # a copy: the caller's event stays as given
                        event = {**event, "features": self._string_names(features, index)}
                        break
        return self._checked(event, index)

    @staticmethod
    def _string_names(features: dict, index: int | None) -> dict:
        named = {}
        for name, value in features.items():
            text = feature_name(name)
            if text is None and name != "":
                raise Rejection("features.name_not_string", index, value=name)
            named[name if text is None else text] = value
        return named

    def _checked(self, event: Any, index: int | None) -> dict:
        """Check one decoded event; returns it (as given) or raises :class:`Rejection`.

        The common case, a well-formed event, is checked in one tight pass; any
        doubt falls through to the detailed checks, which name the field.
        """
        if type(event) is dict and event.keys() <= _ALLOWED:
            features = event.get("features")
            if (
                type(features) is dict
                and 0 < len(features) <= self.max_features
                and "" not in features
            ):
                for value in features.values():
                    kind = type(value)
                    if kind is str or kind is int or kind is bool:
                        continue
                    if kind is float and value - value == 0.0:  # finite
                        continue
                    if kind is list and all(type(item) is str for item in value):
                        continue
                    break
                else:
                    if self._label_ok(event) and self._plain_extras(event):
                        return event
        return self._validate(event, index)

    def _label_ok(self, event: dict) -> bool:
        """The label is plainly valid (binary: normalised to 0/1); False means: look closer."""
        label = event.get("label", _MISSING)
        if label is _MISSING:
            return not self.require_label
        kind = type(label)
        if self.task == "binary":
            if (kind is int or kind is bool) and label in (0, 1):
                event["label"] = int(label)
                return True
            return False
        if self.task == "regression":
            return kind is int or (kind is float and label - label == 0.0)
        return (kind is str and label != "") or kind is int

    @staticmethod
    def _plain_extras(event: dict) -> bool:
        for name, kind in FIELD_KINDS.items():
            value = event.get(name)
            if value is not None and not field_ok(kind, value):
                return False
        return True

    def _validate(self, event: Any, index: int | None) -> dict:
        if not isinstance(event, dict):
            raise Rejection("event.not_object", index, value=event)
        extra = event.keys() - _ALLOWED
        if extra:
            raise Rejection("event.unknown_field", index, name=sorted(map(str, extra))[0])
        features = event.get("features")
        if not isinstance(features, dict):
            if features is None:
                raise Rejection("features.missing", index)
            raise Rejection("features.not_object", index, value=features)
        if not features:
            raise Rejection("features.empty", index)
        if len(features) > self.max_features:
            raise Rejection(
                "features.too_many", index, count=len(features), max_features=self.max_features
            )
        for name, value in features.items():
            self._check_feature(name, value, index)
        if "label" in event:
            event["label"] = self._check_label(event["label"], index)
        elif self.require_label:
            raise Rejection("label.missing", index, task=self.task)
        for name, kind in FIELD_KINDS.items():
            value = event.get(name)
            if value is not None and not field_ok(kind, value):
                raise Rejection(f"{name}.invalid", index, value=value)
        return event

    # -- checks -----------------------------------------------------------
    @staticmethod
    def _check_feature(name: str, value: Any, index: int | None) -> None:
        if not name:  # the hasher has no slot for it: refused here, as the JVM encoder does
            raise Rejection("features.empty_name", index)
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise Rejection("features.not_finite", index, name=name, value=value)
        elif kind is int or kind is str or kind is bool:
            return
        elif kind is list:
            for item in value:
                if type(item) is not str:
                    raise Rejection("features.bad_list_item", index, name=name, value=item)
        else:
            raise Rejection("features.bad_value", index, name=name, value=value)

    def _check_label(self, label: Any, index: int | None) -> Any:
        kind = type(label)
        if self.task == "regression":
            if kind is int or (kind is float and math.isfinite(label)):
                return label
        elif self.task == "binary":
            if kind is bool:
                return int(label)
            if (kind is int or kind is float) and label in (0, 1):
                return int(label)
        else:
            if kind is str and label:
                return label
            if kind is int:
                return label
        raise Rejection("label.invalid", index, task=self.task, value=label)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One event as the JSON bytes of a Kafka message; an integer feature name is written
    as its decimal text (JSON keys are strings), any other name that is not a string is
    refused (``features.name_not_string``).

    >>> encode_event({"features": {0: 1.5, "b": "x"}, "label": 1})
    b'{"features":{"0":1.5,"b":"x"},"label":1}'
    """
    try:
        return orjson.dumps(event)
    except TypeError:
        return orjson.dumps(_text_names(event, None))


def encode_envelope(events: Sequence[Mapping[str, Any]]) -> bytes:
    """Several events as one envelope message ``{"events": [...]}`` (names as in
    :func:`encode_event`)."""
    try:
        return orjson.dumps({"events": list(events)})
    except TypeError:
        return orjson.dumps({"events": [_text_names(e, i) for i, e in enumerate(events)]})


def _text_names(event: Mapping[str, Any], index: int | None) -> Mapping[str, Any]:
    features = event.get("features")
    if not isinstance(features, Mapping) or all(type(k) is str for k in features):
        return event  # orjson names the problem, if any
    return {**event, "features": EventDecoder._string_names(dict(features), index)}


# -- dead letters ------------------------------------------------------------------------------

#: A dead letter keeps at most this many bytes of the rejected value (a prefix past it).
DEAD_LETTER_VALUE_BYTES = 64 * 1024
#: ... and at most this many characters of the reason and of the field (cut with "...").
DEAD_LETTER_REASON_CHARS = 1000
DEAD_LETTER_FIELD_CHARS = 200
#: No dead-letter record is longer than this (with a Kafka topic name of at most 249
#: characters, Kafka's own limit): the base64 of 64 KiB is 87,384 bytes, the reason and the
#: field at most 6 bytes a character once escaped, the rest a few hundred bytes.
DEAD_LETTER_MAX_BYTES = 96 * 1024


def _cut(text: str, limit: int) -> str:
    """``text`` unchanged up to ``limit`` characters (code points), else its first
    ``limit - 3`` and "..."."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dead_letter(
    *,
    stage: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    index: int | None,
    field: str,
    reason: str,
    raw: bytes,
    at_ms: int | None = None,
    code: str | None = None,
) -> bytes:
    """The dead-letter record of one rejected event (or message), as JSON bytes.

    One shape for every job (``stage`` says which: ``"train"``, ``"score"``, or ``"join"``
    for the training job's join of delayed labels), always
    at most :data:`DEAD_LETTER_MAX_BYTES` long, so it always fits in a Kafka message::

        {"stage": "train", "topic": "events", "partition": 2, "offset": 1812, "index": 3,
         "code": "label.invalid", "field": "label", "reason": "field `label` of event 3: ...",
         "size": 57, "sha256": "9f86...", "truncated": false, "value_b64": "eyJm...",
         "at_ms": 1795409682918}

    ``value_b64`` is the base64 of the rejected bytes, the one copy of them (base64 carries
    any bytes, UTF-8 or not): all of them up to :data:`DEAD_LETTER_VALUE_BYTES`, else their
    first :data:`DEAD_LETTER_VALUE_BYTES` and ``truncated`` true; ``size`` and ``sha256``
    are those of all the bytes, and ``topic``/``partition``/``offset`` where the whole
    message can be read again (``index``: the event's position in its envelope, null for
    the whole message). ``code`` is the contract's stable code of the rule broken
    (:mod:`streamlearn.contract`; null for a failure no rule names, such as the
    model failing in the scoring job). ``field`` and ``reason`` are cut past
    :data:`DEAD_LETTER_FIELD_CHARS` and :data:`DEAD_LETTER_REASON_CHARS` characters.
    The JVM's ``io.streamlearn.flink.DeadLetter.record`` writes the same bytes for the same
    arguments.

    >>> import json
    >>> rec = json.loads(dead_letter(stage="score", topic="events", partition=0, offset=7,
    ...                  index=None, field="message", reason="bad", raw=b"\\xff" * 70_000,
    ...                  at_ms=0))
    >>> rec["size"], rec["truncated"], len(base64.b64decode(rec["value_b64"]))
    (70000, True, 65536)
    """
    if at_ms is None:
        at_ms = int(time.time() * 1000)
    raw = bytes(raw)
    return orjson.dumps(
        {
            "stage": stage,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "index": index,
            "code": code,
            "field": _cut(field, DEAD_LETTER_FIELD_CHARS),
            "reason": _cut(reason, DEAD_LETTER_REASON_CHARS),
            "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "truncated": len(raw) > DEAD_LETTER_VALUE_BYTES,
            "value_b64": base64.b64encode(raw[:DEAD_LETTER_VALUE_BYTES]).decode("ascii"),
            "at_ms": at_ms,
        }
    )
