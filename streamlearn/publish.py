"""The publishing SDK: events to Kafka, one per message or in envelopes.

::

    with Publisher("127.0.0.1:9092", "events") as pub:
        pub.publish({"key": "u1", "features": {"x": 1.0}, "label": 1})
        pub.publish_many(events)

Keys pick partitions exactly as any Kafka client does (murmur2 of the key), so
every event of a key lands in one partition and is learned by one learner. With
``envelope=True`` events are grouped per partition into ``{"events": [...]}``
messages of up to ``envelope_size`` events: far fewer, larger messages, the
fast path of the training job. ``validate=True`` checks each event before it
is sent and raises :class:`~streamlearn.errors.EventError` naming the field.

Delivery errors are raised, never dropped: each :meth:`Publisher.flush` (and
``close``, and leaving the ``with`` block) raises
:class:`~connectors.kafka_io.DeliveryError` when events failed since the
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
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from connectors.kafka_io import DeliveryError, describe_reasons
from streamlearn.errors import ConfigError
from streamlearn.events import EventDecoder

__all__ = ["Publisher", "DeliveryError"]


class Publisher:
    """Publish events to one topic.

    Parameters
    ----------
    bootstrap
        ``host:port`` of a broker.
    topic
        The events topic.
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
    **settings
        kafka-python producer settings (``linger_ms``, ``batch_size``,
        ``delivery_timeout_ms``, ...) over
        :data:`~connectors.kafka_io.PRODUCER_DEFAULTS`.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        envelope: bool = False,
        envelope_size: int = 500,
        validate: bool = False,
        task: str = "binary",
        require_label: bool = True,
        **settings: Any,
    ) -> None:
        from connectors.kafka_io import KeyedProducer

        if not isinstance(envelope_size, int) or envelope_size < 1:
            raise ConfigError("envelope_size", "an integer >= 1", envelope_size)
        self.topic = topic
        self.envelope = envelope
        self.envelope_size = envelope_size
        self._decoder = EventDecoder(task, require_label=require_label) if validate else None
        self._producer = KeyedProducer(bootstrap, topic, **settings)
        self._partitions: list[int] | None = None
        self._buffers: dict[int, list[dict]] = {}
        self._round_robin = itertools.count()
        self.events = 0
        self.messages = 0

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

    # -- publishing --------------------------------------------------------------
    def _check(self, event: Mapping[str, Any]) -> None:
        if self._decoder is not None:
            self._decoder.validate(dict(event), self.events)

    def publish(self, event: Mapping[str, Any], timestamp_ms: int | None = None):
        """Send one event (buffered into an envelope when ``envelope=True``)."""
        self._check(event)
        self.events += 1
        key = event.get("key")
        if not self.envelope:
            self.messages += 1
            return self._producer.send(
                orjson.dumps(event),
                key=None if key is None else str(key),
                timestamp_ms=timestamp_ms,
                carries=(event,),
            )
        partition = self.partition_of(key)
        buf = self._buffers.setdefault(partition, [])
        buf.append(dict(event))
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

    def _send_envelope(self, partition: int):
        events = self._buffers.pop(partition, [])
        if not events:
            return None
        self.messages += 1
        return self._producer.send(
            orjson.dumps({"events": events}),
            partition=self._partitions[partition],
            carries=events,
        )

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
