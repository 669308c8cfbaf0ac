"""The publishing SDK: events to Kafka, one per message or in envelopes.

Its public path is :mod:`streamlearn.publish` (``from streamlearn.publish import
Publisher``); it lives here, with the project's other Kafka clients, because it
is one: the library core never imports Kafka code.

::

    with Publisher() as pub:                       # 127.0.0.1:9092, topic "events"
        delivery = pub.publish({"key": "u1", "features": {"x": 1.0}, "label": 1})
        pub.publish_many(events)
    delivery.wait()                                # Delivered(topic, partition, offset, ...)

The topic must exist (``streamlearn topics create events``): a missing one is
refused naming the topics that do exist, unless ``create_topic=True``. Event
values may be Python or numpy scalars (``np.float32``, ``np.int64``,
``np.bool_``: sent as the numbers they are); anything JSON cannot hold is
refused with :class:`~streamlearn.errors.EventError` naming the field.

Keys pick partitions exactly as any Kafka client does (murmur2 of the key), so
every event of a key lands in one partition and is learned by one learner.
``spread_hot_keys=0.01`` spreads the keys that carry more than 1% of the events
(found on the fly, see :class:`HotKeys`) over the partitions instead, each of
their events to the partition this publisher has sent the fewest events so
far: a Zipf-distributed key stream then loads every partition, and so every
learner, evenly; the events of a hot key are learned by several learners (the
merge sums their deltas, as for any slot learners share) and keep no order
across partitions. With
``envelope=True`` events are grouped per partition into ``{"events": [...]}``
messages of up to ``envelope_size`` events: far fewer, larger messages, the
fast path of the training job. ``validate=True`` checks each event before it
is sent and raises :class:`~streamlearn.errors.EventError` naming the field.

Delivery errors are raised, never dropped: each :meth:`Publisher.flush` (and
``close``, and leaving the ``with`` block) raises
:class:`~streamlearn.publish.DeliveryError` when events failed since the
previous flush, and its ``failed`` holds exactly those events (every event of
a failed envelope); the next flush starts clean. Re-sending exactly them
delivers each event once::

    try:
        pub.flush()
    except DeliveryError as exc:
        pub.publish_many(exc.failed)   # then flush again

``docs/publishing.md`` says more (timeouts, what ``retriable`` means, limits).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from connectors.kafka_io import (
    DeliveryError,
    KeyedProducer,
    create_topics,
    describe_reasons,
    list_topics,
)
from streamlearn.contract import Rejection, feature_name
from streamlearn.errors import ConfigError, EventError
from streamlearn.events import EventDecoder

__all__ = ["Publisher", "HotKeys", "Delivery", "Delivered", "DeliveryError", "DEFAULT_BOOTSTRAP",
           "DEFAULT_TOPIC"]

#: Where the publisher sends by default: the CLI's defaults (``streamlearn kafka start``).
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TOPIC = "events"

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY  # numpy scalars and arrays as the numbers they are
_PLAIN_TYPES = (str, int, float, bool, type(None), np.generic, np.ndarray)


def _bad_value(obj: Any, path: str = "") -> tuple[str, Any] | None:
    """The first value JSON cannot hold in ``obj``, with its dotted path."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                return (f"{path}.{k!r}" if path else repr(k)) + " (its name)", k
            found = _bad_value(v, f"{path}.{k}" if path else k)
            if found:
                return found
        return None
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found = _bad_value(v, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(obj, int) and not isinstance(obj, bool) and not -(2**63) <= obj < 2**64:
        return path or "event", obj  # JSON numbers the broker's readers take are 64-bit
    if isinstance(obj, _PLAIN_TYPES):
        return None
    return path or "event", obj


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return orjson.dumps(obj, option=_JSON_OPTIONS)
    except TypeError:
        found = _bad_value(obj)
        field, value = found if found else ("event", obj)
        raise EventError(
            field,
            "a number (Python or numpy), a string, true/false, null, a list or an object",
            f"{type(value).__name__} {value!r}"[:200],
            what,
        ) from None


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python values (what the validator reads)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    return obj


class HotKeys:
    """Which keys carry more than ``share`` of the events counted so far.

    Misra–Gries counting with ``ceil(4 / share)`` counters: memory stays bounded
    whatever the number of keys, a key whose true share is above ``1.25 * share``
    is always found hot, one whose share is at most ``share`` never (the counts
    only underestimate). No key is hot before ``20 / share`` events.

    >>> hot = HotKeys(0.1)                     # a quarter of the events are "h"'s
    >>> keys = [k for i in range(400) for k in (f"a{i}", f"b{i}", f"c{i}", "h")]
    >>> hot_at = [hot.add(k) for k in keys]
    >>> hot_at.index(True), hot_at[-1], hot.add("a1"), len(hot.counts) <= hot.capacity
    (199, True, False, True)
    """

    def __init__(self, share: float) -> None:
        self.share = share
        self.capacity = math.ceil(4 / share)
        self.min_seen = math.ceil(20 / share)
        self.counts: dict[object, int] = {}
        self.seen = 0

    def add(self, key: object) -> bool:
        """Count one event of ``key``; whether ``key`` is hot now."""
        self.seen += 1
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self.capacity:
            counts[key] = 1
        else:  # every count down by one: O(capacity), at most once per capacity events
            self.counts = counts = {k: c - 1 for k, c in counts.items() if c > 1}
            return False
        return self.seen >= self.min_seen and counts[key] > self.share * self.seen


@dataclass(frozen=True)
class Delivered:
    """Where a message landed: what :meth:`Delivery.wait` returns."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    events: int


class Delivery:
    """The delivery of one message :meth:`Publisher.publish` sent.

    ``wait(timeout_s)`` blocks until Kafka acknowledged it and returns
    :class:`Delivered` (topic, partition, offset, timestamp, how many events the
    message carries), raises :class:`DeliveryError` (``failed`` = its events)
    if it was not delivered, or :class:`TimeoutError` if it is still in flight
    after ``timeout_s``. A failure is *also* reported by the next
    :meth:`Publisher.flush`, which is the one place to take re-sends from.
    """

    def __init__(self, future: Any, topic: str, events: Sequence[Any]) -> None:
        self._future = future
        self.topic = topic
        self._events = tuple(events)

    @property
    def events(self) -> int:
        """How many events the message carries (1, or an envelope's count)."""
        return len(self._events)

    def done(self) -> bool:
        return bool(self._future.is_done)

    def wait(self, timeout_s: float | None = None) -> Delivered:
        from kafka.errors import KafkaTimeoutError

        if not self._future.is_done:
            try:
                self._future.get(timeout=timeout_s)
            except KafkaTimeoutError:
                if not self._future.is_done:
                    raise TimeoutError(
                        f"a message to {self.topic} is still in flight after {timeout_s} s "
                        "(flush() reports it if it fails)"
                    ) from None
            except Exception:  # the failure itself is read back below
                pass
        if self._future.failed():
            exc = self._future.exception
            raise DeliveryError(
                f"a message of {self.events} event(s) to {self.topic} was not delivered "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); the next flush "
                "reports it too: re-send what flush reports",
                failed=self._events,
                reasons={type(exc).__name__: self.events},
                sent=self.events,
                retriable=bool(getattr(exc, "retriable", False)),
                first_error=str(exc),
            )
        meta = self._future.value
        return Delivered(meta.topic, meta.partition, meta.offset, meta.timestamp, self.events)

    def on_delivered(self, fn: Callable[[Delivered], Any]) -> None:
        """Call ``fn(Delivered)`` once Kafka acknowledged the message (at once if
        it already did). It runs in the producer's I/O thread, so it must be
        quick; it is never called for a failed message (flush reports those).
        """
        events = self.events
        self._future.add_callback(
            lambda meta: fn(
                Delivered(meta.topic, meta.partition, meta.offset, meta.timestamp, events)
            )
        )

    def __repr__(self) -> str:
        state = "done" if self.done() else "in flight"
        return f"<Delivery to {self.topic}, {self.events} event(s), {state}>"


class Publisher:
    """Publish events to one topic.

    Parameters
    ----------
    bootstrap
        ``host:port`` of a broker (default ``127.0.0.1:9092``, as the CLI).
    topic
        The events topic (default ``events``). It must exist: a missing topic is
        refused (:class:`~streamlearn.errors.ConfigError` naming the topics that
        exist) unless ``create_topic``, so that a misspelt name never swallows
        events the training job does not read.
    create_topic
        Create the topic (with ``partitions`` partitions and the project's
        limits, see ``docs/publishing.md``) if it does not exist.
    partitions
        With ``create_topic``: how many partitions (default 4, as
        ``streamlearn topics create``).
    envelope
        Group events into envelope messages (per partition).
    envelope_size
        Events per envelope (at most).
    validate
        Check events before sending (``task`` decides what a valid label is).
    task
        ``binary``, ``multiclass`` or ``regression``; used by ``validate``.
    require_label
        With ``validate``: whether a label must be present.
    spread_hot_keys
        A share of events (``0 < share < 1``, e.g. ``0.01``) above which a key is
        hot: its events go to the partition this publisher has sent the fewest
        events so far rather than to its key's partition (see the module
        docstring). ``None`` (default): every key to its own partition.
    **settings
        kafka-python producer settings (``linger_ms``, ``batch_size``,
        ``delivery_timeout_ms``, ...) over
        :data:`~connectors.kafka_io.PRODUCER_DEFAULTS`; the producer never asks
        the broker to create a topic (``allow_auto_create_topics=False``).
    """

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        topic: str = DEFAULT_TOPIC,
        *,
        create_topic: bool = False,
        partitions: int = 4,
        envelope: bool = False,
        envelope_size: int = 500,
        validate: bool = False,
        task: str = "binary",
        require_label: bool = True,
        spread_hot_keys: float | None = None,
        **settings: Any,
    ) -> None:
        if (
            isinstance(envelope_size, bool)
            or not isinstance(envelope_size, int)
            or envelope_size < 1
        ):
            raise ConfigError("envelope_size", "an integer >= 1", envelope_size)
        if not isinstance(topic, str) or not topic:
            raise ConfigError("topic", "a topic name", repr(topic))
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ConfigError("partitions", "an integer >= 1", repr(partitions))
        if spread_hot_keys is not None and (
            isinstance(spread_hot_keys, bool)
            or not isinstance(spread_hot_keys, int | float)
            or not 0 < spread_hot_keys < 1
        ):
            raise ConfigError(
                "spread_hot_keys", "a share of events between 0 and 1 (e.g. 0.01) or None",
                repr(spread_hot_keys),
            )
        self.topic = topic
        self.envelope = envelope
        self.spread_hot_keys = spread_hot_keys
        self._hot = HotKeys(spread_hot_keys) if spread_hot_keys else None
        #: events this publisher placed per partition index (sent or buffered), in
        #: envelope mode or when spreading hot keys (else the Kafka client places them)
        self.partition_events: list[int] = []
        self.envelope_size = envelope_size
        self._decoder = EventDecoder(task, require_label=require_label) if validate else None
        self._ensure_topic(bootstrap, topic, create_topic, partitions)
        self._producer = KeyedProducer(
            bootstrap, topic, **{"allow_auto_create_topics": False, **settings}
        )
        self._partitions: list[int] | None = None
        self._buffers: dict[int, list[tuple[dict, bytes]]] = {}
        self._round_robin = itertools.count()
        self.events = 0
        self.messages = 0

    @staticmethod
    def _ensure_topic(bootstrap: str, topic: str, create: bool, partitions: int) -> None:
        if create:
            create_topics(bootstrap, {topic: partitions})
            return
        existing = list_topics(bootstrap)
        if topic not in existing:
            shown = ", ".join(existing[:20]) + (" ..." if len(existing) > 20 else "")
            raise ConfigError(
                "topic",
                f"a topic that exists at {bootstrap} ({shown or 'none yet'}); create it with "
                f"`streamlearn topics create {topic}`, Publisher(..., create_topic=True) or "
                "`streamlearn publish --create-topic`",
                repr(topic),
            )

    # -- partitions ------------------------------------------------------------
    def _partition_count(self) -> int:
        if self._partitions is None:
            parts = self._producer._producer.partitions_for(self.topic)
            self._partitions = sorted(parts)
        return len(self._partitions)

    def partition_of(self, key: str | int | None) -> int:
        """The partition Kafka's default partitioner gives ``key`` (round-robin without one)."""
        from kafka.partitioner.default import murmur2

        n = self._partition_count()
        if key is None:
            return next(self._round_robin) % n
        return (murmur2(str(key).encode()) & 0x7FFFFFFF) % n

    def _place(self, key: str | int | None) -> int:
        """The partition index of an event of ``key``, counted: its key's, or the
        least-loaded one for a hot key (``spread_hot_keys``)."""
        n = self._partition_count()
        loads = self.partition_events
        if len(loads) < n:
            loads.extend([0] * (n - len(loads)))
        if key is not None and self._hot is not None and self._hot.add(key):
            partition = min(range(n), key=loads.__getitem__)
        else:
            partition = self.partition_of(key)
        loads[partition] += 1
        return partition

    # -- publishing --------------------------------------------------------------
    def _check(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """The event to send: validated when ``validate`` is on, else as given; either
        way integer feature names (River's streams use them) become their decimal text,
        as the event contract reads them, and other names that are not strings are
        refused (``features.name_not_string``)."""
        if self._decoder is not None:
            return self._decoder.validate(_plain(event), self.events)
        features = event.get("features")
        if isinstance(features, Mapping) and any(type(k) is not str for k in features):
            named = {}
            for name, value in features.items():
                text = feature_name(name)
                if text is None and type(name) is not str:
                    raise Rejection("features.name_not_string", self.events, value=name)
                named[name if text is None else text] = value
            return {**event, "features": named}
        return event

    def publish(
        self, event: Mapping[str, Any], timestamp_ms: int | None = None
    ) -> Delivery | None:
        """Send one event (buffered into an envelope when ``envelope=True``).

        Returns the :class:`Delivery` of the message sent now: the event's own
        message, or the envelope this event filled; ``None`` when the event
        was only buffered into an envelope (``flush`` sends it). Raises
        :class:`~streamlearn.errors.EventError` naming the field for a value
        JSON cannot hold (and, with ``validate``, for an invalid event).
        """
        if not isinstance(event, Mapping):
            raise EventError(
                "event", "an object (a dict)", type(event).__name__, f"event {self.events}"
            )
        data = _dumps(self._check(event), f"event {self.events}")
        self.events += 1
        key = event.get("key")
        if not self.envelope:
            self.messages += 1
            placed = None if self._hot is None else self._place(key)
            future = self._producer.send(
                data,
                key=None if key is None else str(key),
                partition=None if placed is None else self._partitions[placed],
                timestamp_ms=timestamp_ms,
                carries=(event,),
            )
            return Delivery(future, self.topic, (event,))
        partition = self._place(key)
        buf = self._buffers.setdefault(partition, [])
        buf.append((dict(event), data))
        if len(buf) >= self.envelope_size:
            return self._send_envelope(partition)
        return None

    def publish_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Send many events; returns how many."""
        n = 0
        for event in events:
            self.publish(event)
            n += 1
        return n

    def _send_envelope(self, partition: int) -> Delivery | None:
        buffered = self._buffers.pop(partition, [])
        if not buffered:
            return None
        self.messages += 1
        events = [e for e, _ in buffered]
        future = self._producer.send(
            b'{"events":[' + b",".join(d for _, d in buffered) + b"]}",
            partition=self._partitions[partition],
            carries=events,
        )
        return Delivery(future, self.topic, events)

    def flush(self, timeout_s: float | None = None) -> None:
        """Send buffered envelopes and wait for every delivery.

        Raises :class:`~connectors.kafka_io.DeliveryError` when events failed
        since the previous flush: ``failed`` holds exactly those events (all
        the events of a failed envelope), ``reasons`` why. The next flush
        reports only later failures. ``timeout_s`` bounds the wait (default:
        the producer's delivery timeout and a margin, by which every message
        is resolved); messages still unresolved then are counted in
        ``pending``, not in ``failed``, and reported by a later flush.
        """
        for partition in list(self._buffers):
            self._send_envelope(partition)
        try:
            self._producer.flush(timeout_s)
        except DeliveryError as exc:
            raise DeliveryError(
                f"{exc.count} of {exc.sent} events published to {self.topic} at "
                f"{self._producer.bootstrap} since the last flush were not delivered"
                + (f" ({describe_reasons(exc.reasons, exc.first_error)})" if exc.reasons else "")
                + (f"; {exc.pending} messages still unresolved" if exc.pending else "")
                + "; re-send exactly DeliveryError.failed",
                failed=exc.failed,
                reasons=exc.reasons,
                sent=exc.sent,
                pending=exc.pending,
                retriable=exc.retriable,
                first_error=exc.first_error,
            ) from None

    @property
    def delivered(self) -> int:
        return self._producer.delivered

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer._producer.close(timeout=5)
