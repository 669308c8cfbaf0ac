"""What the server predicted for events with an ``id``, for a log off the request path.

Delayed labels join feedback (``{"id": ..., "label": ...}``) to what was served for that
``id``: the features the model saw, the version that answered and its score. The server
keeps what it answered (:data:`Answered`) for at most a few milliseconds, makes records of
it many at a time (:func:`served_records`) and offers them to a :class:`RecordLog`,
which never makes it wait: ``connectors.prediction_log.KafkaLog`` (what ``streamlearn
serve --log-topic`` uses) hands each record to librdkafka's bounded queue and sending
threads. What finds no room is dropped, what cannot be sent fails, and both are
counted (``streamlearn_prediction_log_records`` in ``/metrics``).

A record is JSON::

    {"id": "e-17", "key": "u-4", "ts": 1764900000000, "features": {...},
     "model": "ctr", "version": 12, "prediction": true, "probabilities": [0.3, 0.7],
     "at_ms": 1764900000123}

(``key`` and ``ts`` when the event has them, ``probabilities`` for a classifier, in the
order of the model's classes).

>>> from streamlearn.serving.model import Predictions
>>> answer = Predictions([2.5], None, None, None)
>>> served_records([({"id": 7, "features": {"x": 1}}, [{"x": 1}], answer, 3, None, 1.0),
...                 ({"features": {"x": 2}}, [{"x": 2}], answer, 3, None, 1.0)], "m")
[(b'7', b'{"id":7,"features":{"x":1},"model":"m","version":3,"prediction":2.5,"at_ms":1000}')]
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson

__all__ = [
    "Answered", "Record", "RecordLog", "record_of_body", "records_of", "served_records",
]

#: One record for the log: the Kafka key (the event's id, UTF-8) and the JSON value.
Record = tuple[bytes | None, bytes]
#: What the server answered to a JSON request, kept for the log: the request as decoded,
#: its events' features, the answer (:class:`~streamlearn.serving.model.Predictions`),
#: the version that answered, the raw body when it is one plain event (else ``None``),
#: and the time of the answer (seconds since the epoch).
Answered = tuple[Any, Any, Any, int, bytes | None, float]


class RecordLog(Protocol):
    """Where the server offers its records, from its event loop: :meth:`offer` never
    waits (``connectors.prediction_log.KafkaLog``)."""

    def offer(self, records: Sequence[Record]) -> int:
        """Take ``records`` (or as many as there is room for) without waiting; returns how
        many were taken, the rest counted as dropped."""

    def counts(self) -> dict[str, int]:
        """Records ``logged`` (delivered), ``dropped`` (no room) and ``failed`` (not
        delivered) so far."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is waiting, for at most ``timeout_s``, and stop."""


def served_records(answered: Iterable[Answered], model: str) -> list[Record]:
    """The records of the requests ``answered`` by ``model``: :func:`record_of_body` of a
    single plain event's body, :func:`records_of` of any other request."""
    out: list[Record] = []
    for doc, features, result, version, body, at in answered:
        if body is not None:
            out += record_of_body(body, doc, result, model, version, at)
        else:
            out += records_of(doc, features, result, model, version, at)
    return out


#: The fields of a single-event body the log keeps as they came (:func:`record_of_body`).
_AS_SENT = frozenset(("id", "key", "ts", "features"))


def record_of_body(
    body: bytes, doc: dict, result: Any, model: str, version: int, now: float | None = None,
) -> list[Record]:
    """:func:`records_of` for a JSON ``body`` that is one event (decoded: ``doc``), cheaper
    when it holds an ``id`` and nothing besides ``key``, ``ts`` and ``features``: the
    record is the body's own bytes with the answer written in before its closing brace
    (no object built, the features not written again); it reads as the same JSON object.
    Any other body is :func:`records_of`'s.

    >>> from streamlearn.serving.model import Predictions
    >>> body = b'{"id": 7, "features": {"x": 1}}\\n'
    >>> answer = Predictions([2.5], None, None, None)
    >>> [(key, orjson.loads(value)) for key, value in
    ...  record_of_body(body, orjson.loads(body), answer, "m", 3, now=1.0)]
    [(b'7', {'id': 7, 'features': {'x': 1}, 'model': 'm', 'version': 3, 'prediction': 2.5, \
'at_ms': 1000})]
    """
    event_id = doc.get("id")
    if event_id is None or not _AS_SENT.issuperset(doc) or doc.get("key", 0) is None \
            or doc.get("ts", 0) is None:
        return records_of(doc, [doc.get("features")], result, model, version, now)
    at_ms = int((time.time() if now is None else now) * 1000)
    tail = orjson.dumps(_answer(result, 0, model, version, at_ms),
                        option=orjson.OPT_SERIALIZE_NUMPY)
    return [(_key(event_id), b"".join((body[:body.rindex(b"}")], b",", tail[1:])))]


def records_of(
    request: Any, features: Sequence[Any], result: Any, model: str, version: int,
    now: float | None = None,
) -> list[Record]:
    """The records of a JSON prediction ``request`` (one event or an envelope) whose
    events carry an ``id``: their ``features`` as decoded, and the answer ``result``
    (:class:`~streamlearn.serving.model.Predictions`) of ``version``.

    >>> from streamlearn.serving.model import Predictions
    >>> answer = Predictions([2.5], None, None, None)
    >>> records_of({"id": 7, "features": {"x": 1}}, [{"x": 1}], answer, "m", 3, now=1.0)
    [(b'7', b'{"id":7,"features":{"x":1},"model":"m","version":3,"prediction":2.5,"at_ms":1000}')]
    """
    if type(request) is not dict:
        return []
    events = [request] if "features" in request else request.get("events")
    if type(events) is not list:
        return []
    at_ms = int((time.time() if now is None else now) * 1000)
    out: list[Record] = []
    for i, (event, x) in enumerate(zip(events, features, strict=False)):
        if type(event) is not dict or event.get("id") is None:
            continue
        rec: dict[str, Any] = {"id": event["id"]}
        for name in ("key", "ts"):
            if event.get(name) is not None:
                rec[name] = event[name]
        rec["features"] = x
        rec.update(_answer(result, i, model, version, at_ms))
        out.append((_key(event["id"]), orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY)))
    return out


def _answer(result: Any, i: int, model: str, version: int, at_ms: int) -> dict[str, Any]:
    """What a record says was served for the ``i``-th event, in the record's order."""
    answer: dict[str, Any] = {"model": model, "version": version,
                              "prediction": result.values[i]}
    if result.probabilities is not None:
        answer["probabilities"] = result.probabilities[i]
    answer["at_ms"] = at_ms
    return answer


def _key(event_id: Any) -> bytes:
    """A record's Kafka key: the event's id, a string as it is, else its JSON."""
    return (event_id if type(event_id) is str else orjson.dumps(event_id).decode()).encode()
