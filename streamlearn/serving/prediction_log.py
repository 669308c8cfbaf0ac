"""What the server predicted for events with an ``id``, handed to a sink off the request path.

Delayed labels join feedback (``{"id": ..., "label": ...}``) to what was served for that
``id``: the features the model saw, the version that answered and its score. The server
offers one record per such event to a :class:`PredictionLog`; a thread of its own sends
them in batches to a sink (``connectors.prediction_log.kafka_sink`` writes a Kafka
topic). A request never waits for the sink: a full queue drops the new records, a sink
that fails loses its batch, and both are counted (``streamlearn_prediction_log_records``
in ``/metrics``).

A record is JSON::

    {"id": "e-17", "key": "u-4", "ts": 1764900000000, "features": {...},
     "model": "ctr", "version": 12, "prediction": true, "probabilities": [0.3, 0.7],
     "at_ms": 1764900000123}

(``key`` and ``ts`` when the event has them, ``probabilities`` for a classifier, in the
order of the model's classes).

>>> sent = []
>>> log = PredictionLog(sent.extend, capacity=2)
>>> log.offer([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])  # one more than there is room for
2
>>> log.close()
>>> sent, log.counts()
([(b'a', b'1'), (b'b', b'2')], {'logged': 2, 'dropped': 1, 'failed': 0})
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streamlearn.errors import ConfigError

__all__ = ["PredictionLog", "Record", "record_of_body", "records_of"]

log = logging.getLogger(__name__)

#: One record for the sink: the Kafka key (the event's id, UTF-8) and the JSON value.
Record = tuple[bytes | None, bytes]
Sink = Callable[[list[Record]], Any]

_WARN_EVERY_S = 30.0  # a failing sink is reported at most this often


class PredictionLog:
    """A bounded queue of records and the thread that sends them to ``send``.

    Parameters
    ----------
    send
        Called with each batch of records, from the log's thread; may block (a Kafka
        flush). It returns how many of them were not delivered (``None``: none), or
        raises (the whole batch then counts as failed). Its ``close()``, if it has one,
        is called by :meth:`close`.
    capacity
        Records waiting at most; what comes on top is dropped (and counted).
    batch_size
        Records handed to ``send`` at most at once.
    linger_s
        How long the thread waits for a batch to fill before sending what it has.
    """

    def __init__(
        self, send: Sink, *, capacity: int = 100_000, batch_size: int = 1_000,
        linger_s: float = 0.05,
    ) -> None:
        for name, value in (("capacity", capacity), ("batch_size", batch_size)):
            if type(value) is not int or value < 1:
                raise ConfigError(name, "a positive integer", repr(value))
        if not 0 <= linger_s <= 60:
            raise ConfigError("linger_s", "seconds in [0, 60]", repr(linger_s))
        self._send = send
        self.capacity, self.batch_size, self.linger_s = capacity, batch_size, linger_s
        self._queue: deque[Record] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self.logged = self.dropped = self.failed = 0
        self._warned_at = 0.0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def offer(self, records: Sequence[Record]) -> int:
        """Queue ``records`` without waiting; returns how many were taken (the rest,
        beyond ``capacity`` or after :meth:`close`, count as dropped).

        Called by the server for each request (from one thread, its event loop): the
        queue (a deque, safe to extend while the log's thread pops) is taken without the
        lock, which only wakes the thread: when it may be waiting for a first record, or
        a full batch is here. One wake-up per batch, not one per request.
        """
        queue = self._queue
        queued = len(queue)
        room = 0 if self._closing else self.capacity - queued
        taken = records if len(records) <= room else records[:max(room, 0)]
        queue.extend(taken)
        self.dropped += len(records) - len(taken)
        if taken and (queued == 0 or queued < self.batch_size <= queued + len(taken)):
            with self._ready:
                self._ready.notify()
        return len(taken)

    def counts(self) -> dict[str, int]:
        """Records ``logged`` (sent), ``dropped`` (no room) and ``failed`` (the sink
        raised) so far."""
        return {"logged": self.logged, "dropped": self.dropped, "failed": self.failed}

    def pending(self) -> int:
        """Records waiting to be sent."""
        return len(self._queue)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout_s``) and stop; what is left then
        counts as dropped."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout_s)
        with self._ready:
            self.dropped += len(self._queue)
            self._queue.clear()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                deadline = time.monotonic() + self.linger_s  # a moment for the batch to fill
                while len(self._queue) < self.batch_size and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                n = min(len(self._queue), self.batch_size)
                batch = [self._queue.popleft() for _ in range(n)]
                done = self._closing and not self._queue
            if batch:
                try:
                    lost = min(int(self._send(batch) or 0), len(batch))
                except Exception as exc:  # the sink's fault: count it, never stop serving
                    lost, why = len(batch), str(exc)
                else:
                    why = "not delivered"
                self.logged += len(batch) - lost
                self.failed += lost
                now = time.monotonic()
                if lost and now - self._warned_at > _WARN_EVERY_S:
                    self._warned_at = now
                    log.warning("the prediction log could not send %d records: %s "
                                "(%d failed so far)", lost, why, self.failed)
            if done:
                closer = getattr(self._send, "close", None)
                if closer is not None:
                    try:
                        closer()
                    except Exception as exc:
                        log.warning("closing the prediction log's sink: %s", exc)
                return


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
