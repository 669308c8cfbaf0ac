"""Kafka helpers on kafka-python: topics, a batching keyed producer, a consumer.

Settings follow kafka-python's names with units in the key (``linger_ms``);
unknown keys are rejected by name.

>>> with KeyedProducer("127.0.0.1:9092", "events") as producer:   # doctest: +SKIP
...     producer.send({"features": {"x": 1.0}, "label": 1}, key="user-1")
>>> consume_all("127.0.0.1:9092", "events", expected=1)           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from streamlearn.errors import BrokerUnavailable, ConfigError, ServiceError

__all__ = [
    "check_reachable",
    "TopicInfo",
    "create_topics",
    "list_topics",
    "describe_topic",
    "delete_topics",
    "KeyedProducer",
    "DeliveryError",
    "consume",
    "consume_all",
    "Record",
    "PRODUCER_DEFAULTS",
]

log = logging.getLogger(__name__)

#: Batching defaults for throughput with bounded latency (a few ms).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "acks": "all",
    "max_request_size": 8 * 1024 * 1024,
    "retries": 10,
    "retry_backoff_ms": 200,  # a leader moving or just elected: retry for ~2 s
    "request_timeout_ms": 30_000,
}


class DeliveryError(ServiceError):
    """One or more messages could not be delivered to Kafka."""

    retriable = True


def check_reachable(bootstrap: str, timeout_s: float = 2.0) -> None:
    """Fail fast, naming the address, when nothing listens at any bootstrap server."""
    last: OSError | None = None
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
            return
        except OSError as exc:
            last = exc
        except ValueError:
            raise ConfigError("bootstrap", "host:port[,host:port...]", repr(bootstrap)) from None
    raise BrokerUnavailable(
        f"no broker at {bootstrap} ({last}) — start one with `streamlearn kafka start`"
    )


def _admin(bootstrap: str):
    from kafka import KafkaAdminClient

    check_reachable(bootstrap)
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: dict[int, int]

    @property
    def messages(self) -> int:
        return sum(self.end_offsets.values())


def create_topics(
    bootstrap: str, topics: Mapping[str, int], exist_ok: bool = True, timeout_s: float = 30.0
) -> list[str]:
    """Create topics (name → partition count); returns those created now.

    An existing topic is left alone when ``exist_ok`` (its partition count is
    not changed). Waits until every topic's leaders are known.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    for name, parts in topics.items():
        if not name or not isinstance(name, str):
            raise ConfigError("topic", "a non-empty topic name", repr(name))
        if not isinstance(parts, int) or parts < 1:
            raise ConfigError(f"partitions of {name}", "an integer >= 1", parts)
    admin = _admin(bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, p, 1) for n, p in topics.items() if n not in existing]
        if not exist_ok and len(new) < len(topics):
            dup = sorted(set(topics) & existing)
            raise ConfigError("topic", "a topic that does not exist yet", ", ".join(dup))
        if new:
            try:
                admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                if not exist_ok:
                    raise
    finally:
        admin.close()
    _wait_for_leaders(bootstrap, list(topics), timeout_s)
    return [t.name for t in new]


def _wait_for_leaders(bootstrap: str, names: list[str], timeout_s: float) -> None:
    """Wait until every partition of ``names`` has a leader the broker serves.

    A topic's partitions are listed before their leader takes them on; a
    producer sending in between gets ``NotLeaderForPartition``.
    """
    admin = _admin(bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for topic in admin.describe_topics(sorted(pending)):
                parts = topic.get("partitions") or []
                if (
                    topic.get("error_code") == 0
                    and parts
                    and all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in parts)
                ):
                    pending.discard(topic["name"])
            if pending:
                time.sleep(0.1)
        if pending:
            raise ServiceError(f"topics {sorted(pending)} have no leader after {timeout_s:.0f} s")
    finally:
        admin.close()


def list_topics(bootstrap: str, internal: bool = False) -> list[str]:
    admin = _admin(bootstrap)
    try:
        names = admin.list_topics()
    finally:
        admin.close()
    return sorted(n for n in names if internal or not n.startswith("__"))


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    admin = _admin(bootstrap)
    try:
        admin.delete_topics(list(names))
    finally:
        admin.close()


def describe_topic(bootstrap: str, name: str) -> TopicInfo:
    """Partition count and end offset (message count for a fresh topic) per partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = consumer.partitions_for_topic(name)
        if not parts:
            raise ConfigError("topic", "an existing topic", repr(name))
        tps = [TopicPartition(name, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    return TopicInfo(name, len(tps), {tp.partition: ends[tp] for tp in tps})


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


class KeyedProducer:
    """A batching producer: values are bytes, str or JSON-able objects; keys pick partitions.

    Delivery failures are never dropped silently: they are counted, and
    :meth:`flush` (and leaving a ``with`` block) raises :class:`DeliveryError`
    naming how many failed and the first reason.

    Parameters
    ----------
    bootstrap
        ``host:port`` of a broker.
    topic
        The default topic for :meth:`send`.
    **settings
        kafka-python producer settings overriding :data:`PRODUCER_DEFAULTS`.
    """

    def __init__(self, bootstrap: str, topic: str | None = None, **settings: Any) -> None:
        from kafka import KafkaProducer

        unknown = set(settings) - set(KafkaProducer.DEFAULT_CONFIG)
        if unknown:
            raise ConfigError(
                "producer setting",
                f"one of kafka-python's producer settings (e.g. {', '.join(PRODUCER_DEFAULTS)})",
                ", ".join(sorted(unknown)),
            )
        config = {**PRODUCER_DEFAULTS, **settings}
        check_reachable(bootstrap)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
        self.bootstrap = bootstrap
        self.topic = topic
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self._first_error: BaseException | None = None
        self._lock = threading.Lock()

    def _ok(self, _meta: Any) -> None:
        with self._lock:
            self.delivered += 1

    def _err(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if self._first_error is None:
                self._first_error = exc
        log.warning("Kafka delivery failed: %s", exc)

    def send(
        self,
        value: Any,
        key: str | bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ):
        """Queue one message; returns kafka-python's future (its metadata has the offset)."""
        target = topic or self.topic
        if target is None:
            raise ConfigError("topic", "a topic name (pass topic= here or to the producer)", None)
        future = self._producer.send(
            target,
            value=_to_bytes(value),
            key=None if key is None else _to_bytes(key),
            partition=partition,
            timestamp_ms=timestamp_ms,
        )
        future.add_callback(self._ok)
        future.add_errback(self._err)
        self.sent += 1
        return future

    def flush(self, timeout_s: float | None = 60.0) -> None:
        """Wait for every queued message; raise :class:`DeliveryError` if any failed."""
        self._producer.flush(timeout=timeout_s)
        with self._lock:
            failed, err = self.failed, self._first_error
        if failed:
            raise DeliveryError(
                f"{failed} of {self.sent} messages to {self.bootstrap} were not delivered "
                f"(first error: {err}); check the broker and retry"
            )

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> KeyedProducer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.close(timeout=5)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


def consume(
    bootstrap: str,
    topic: str,
    group_id: str | None = None,
    from_beginning: bool = True,
    idle_timeout_s: float = 5.0,
    max_records: int | None = None,
) -> Iterator[Record]:
    """Yield records until ``max_records`` or ``idle_timeout_s`` without a new one."""
    from kafka import KafkaConsumer

    check_reachable(bootstrap)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    n = 0
    try:
        for msg in consumer:
            yield Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.timestamp)
            n += 1
            if max_records is not None and n >= max_records:
                return
    finally:
        consumer.close()


def consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0
) -> list[Record]:
    """Read from the beginning until ``expected`` records arrived (or ``timeout_s`` passed)."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(
            consume(
                bootstrap,
                topic,
                idle_timeout_s=min(5.0, max(0.5, deadline - time.monotonic())),
                max_records=expected,
            )
        )
        if len(out) < expected:
            out.clear()  # re-read from the beginning: count each record once
            time.sleep(0.5)
    return out
