"""Kafka helpers on kafka-python: topics, a batching keyed producer, a consumer.

Settings follow kafka-python's names with units in the key (``linger_ms``);
unknown keys are rejected by name.

>>> with KeyedProducer("127.0.0.1:9092", "events") as producer:   # doctest: +SKIP
...     producer.send({"features": {"x": 1.0}, "label": 1}, key="user-1")
>>> consume_all("127.0.0.1:9092", "events", expected=1)           # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    "FailedMessage",
    "describe_reasons",
    "topic_config",
    "MAX_MESSAGE_BYTES",
    "DLQ_MAX_MESSAGE_BYTES",
    "consume",
    "consume_all",
    "Record",
    "PRODUCER_DEFAULTS",
]

log = logging.getLogger(__name__)

#: The largest message the project's producers send (``max_request_size``), and
#: so the ``max.message.bytes`` of every topic :func:`create_topics` makes: a
#: message the producer accepts, the topic accepts (a broker's own default is
#: about 1 MiB; ``LocalBroker`` allows 16 MiB).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

#: ``max.message.bytes`` of dead-letter topics (``<topic>.dlq``): their records
#: are bounded well under this, which is also a Java producer's default
#: ``max.request.size`` (the jobs write dead letters from the JVM).
DLQ_MAX_MESSAGE_BYTES = 1024 * 1024

#: Batching defaults for throughput with bounded latency (a few ms).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "acks": "all",
    "max_request_size": MAX_MESSAGE_BYTES,
    "retries": 10,
    "retry_backoff_ms": 200,  # a leader moving or just elected: retry for ~2 s
    "request_timeout_ms": 30_000,
    "delivery_timeout_ms": 120_000,  # every send is resolved (delivered or failed) by then
}


@dataclass(frozen=True)
class FailedMessage:
    """One message Kafka did not take: what was sent, where to, and why."""

    topic: str
    value: bytes
    key: bytes | None
    partition: int | None
    timestamp_ms: int | None
    error: BaseException


class DeliveryError(ServiceError):
    """Messages sent since the previous flush were not delivered to Kafka.

    Raised by ``flush`` (and so by ``close`` and leaving a ``with`` block). Each
    failure is reported by exactly one flush: the next flush reports only what
    failed after this one.

    Attributes
    ----------
    failed
        What was not delivered, as the sender handed it in, in no particular
        order: :class:`FailedMessage` records from :class:`KeyedProducer`, the
        events themselves from :class:`~streamlearn.publish.Publisher`.
        Re-sending exactly these delivers each item once more, no other.
    reasons
        ``{"ExceptionName": count}`` over ``failed``.
    first_error
        The text of the first failure.
    sent
        How many items were handed in since the previous flush.
    pending
        Messages not yet resolved when the flush gave up waiting (delivered or
        failed later, and then reported by a later flush); not in ``failed``.
    retriable
        True when every failure was of a kind that may pass (a broker away, a
        timeout); False when one cannot (a message too large, say).
    """

    retriable = True

    def __init__(
        self,
        message: str,
        failed: Sequence[Any] = (),
        reasons: Mapping[str, int] | None = None,
        sent: int = 0,
        pending: int = 0,
        retriable: bool = True,
        first_error: str = "",
    ) -> None:
        super().__init__(message)
        self.failed = tuple(failed)
        self.reasons = dict(reasons or {})
        self.first_error = first_error
        self.sent = sent
        self.pending = pending
        self.retriable = retriable

    @property
    def count(self) -> int:
        """How many items failed (``len(failed)``)."""
        return len(self.failed)


def describe_reasons(reasons: Mapping[str, int], first_error: str = "") -> str:
    """``"KafkaTimeoutError ×3, MessageSizeTooLargeError ×1; first: ..."``, most frequent first."""
    text = ", ".join(f"{r} ×{n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return text + (f"; first: {first_error}" if first_error else "")


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


#: How long a client's first contact with the cluster may take before the address is
#: reported as no broker (kafka-python waits 30 s by default, whatever else it is told)
BOOTSTRAP_TIMEOUT_MS = 10_000


def kafka_client(cls: Any, bootstrap: str, *args: Any, **config: Any) -> Any:
    """``cls(*args, bootstrap_servers=bootstrap, **config)``, a kafka-python client, whose first
    contact with the cluster takes at most :data:`BOOTSTRAP_TIMEOUT_MS`: an address where
    something accepts connections but answers no Kafka request (a Flink or HTTP port given
    by mistake) is :class:`~streamlearn.errors.BrokerUnavailable` in one line, not a
    30 s wait and a trace. Nothing listening at all fails at once (:func:`check_reachable`).
    """
    from kafka.errors import KafkaTimeoutError

    check_reachable(bootstrap)
    config.setdefault("bootstrap_timeout_ms", BOOTSTRAP_TIMEOUT_MS)
    try:
        return cls(*args, bootstrap_servers=bootstrap, **config)
    except KafkaTimeoutError:
        raise BrokerUnavailable(
            f"{bootstrap} accepts connections but no Kafka broker answered there within "
            f"{config['bootstrap_timeout_ms'] / 1000:g} s: is it the broker's address (not "
            "Flink's, the server's or another service's port)?"
        ) from None


def _admin(bootstrap: str):
    from kafka import KafkaAdminClient

    return kafka_client(KafkaAdminClient, bootstrap, request_timeout_ms=10_000)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: dict[int, int]

    @property
    def messages(self) -> int:
        return sum(self.end_offsets.values())


def topic_config(name: str) -> dict[str, str]:
    """The topic settings :func:`create_topics` gives ``name`` unless told otherwise.

    >>> topic_config("events")
    {'max.message.bytes': '8388608'}
    >>> topic_config("events.dlq")
    {'max.message.bytes': '1048576'}
    """
    limit = DLQ_MAX_MESSAGE_BYTES if name.endswith(".dlq") else MAX_MESSAGE_BYTES
    return {"max.message.bytes": str(limit)}


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    exist_ok: bool = True,
    timeout_s: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create topics (name → partition count); returns those created now.

    Every topic created gets explicit limits (:func:`topic_config`:
    ``max.message.bytes`` of :data:`MAX_MESSAGE_BYTES`, or
    :data:`DLQ_MAX_MESSAGE_BYTES` for ``<topic>.dlq``) rather than the broker's
    default; ``configs`` (name → settings) adds to or overrides them per topic.
    An existing topic is left alone when ``exist_ok`` (neither its partition
    count nor its settings are changed). Waits until every topic's leaders are
    known.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    configs = dict(configs or {})
    for name, parts in topics.items():
        if not name or not isinstance(name, str):
            raise ConfigError("topic", "a non-empty topic name", repr(name))
        if not isinstance(parts, int) or parts < 1:
            raise ConfigError(f"partitions of {name}", "an integer >= 1", parts)
    for name, extra in configs.items():
        if name not in topics:
            raise ConfigError("configs", f"settings of a topic being created ({', '.join(topics)})",
                              repr(name))
        if not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise ConfigError(f"configs of {name}", "a mapping of str to str", repr(extra))
    admin = _admin(bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(n, p, 1, topic_configs={**topic_config(n), **configs.get(n, {})})
            for n, p in topics.items()
            if n not in existing
        ]
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

    consumer = kafka_client(KafkaConsumer, bootstrap)
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

    Delivery failures are never dropped: :meth:`flush` (and :meth:`close`, and
    leaving a ``with`` block) raises :class:`DeliveryError` carrying exactly
    the messages that failed since the previous flush, then starts clean, so a
    later flush whose messages all arrived succeeds. A failure known when
    :meth:`send` is called (a message over ``max_request_size``, no metadata
    within ``max_block_ms``) is reported the same way, by the next flush.

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
        self._config = config
        self._producer = kafka_client(KafkaProducer, bootstrap, **config)
        self.bootstrap = bootstrap
        self.topic = topic
        self.delivery_timeout_s = config["delivery_timeout_ms"] / 1000
        #: Messages sent, delivered and failed since the producer was made.
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._inflight = 0
        # the current flush window: items handed in, items that failed, why
        self._window_sent = 0
        self._window_failed: list[Any] = []
        self._window_reasons: Counter[str] = Counter()
        self._window_retriable = True
        self._window_first = ""

    def _ok(self, _meta: Any) -> None:
        with self._lock:
            self.delivered += 1
            self._inflight -= 1

    def _err(self, target: str, value: bytes, key: bytes | None, partition: int | None,
             timestamp_ms: int | None, carries: Sequence[Any] | None,
             exc: BaseException) -> None:
        if carries is None:
            carries = (FailedMessage(target, value, key, partition, timestamp_ms, exc),)
        with self._lock:
            self.failed += 1
            self._inflight -= 1
            first = not self._window_failed
            if first:
                self._window_first = " ".join(str(exc).split())[:300]
            self._window_failed.extend(carries)
            self._window_reasons[type(exc).__name__] += len(carries)
            self._window_retriable &= bool(getattr(exc, "retriable", False))
        if first:  # flush raises with all of them; one debug line, not one per message
            log.debug("Kafka delivery to %s failed: %s (the next flush reports every failure)",
                      target, exc)

    def send(
        self,
        value: Any,
        key: str | bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        *,
        carries: Sequence[Any] | None = None,
    ):
        """Queue one message; returns kafka-python's future (its metadata has the offset).

        ``carries`` is what a failure of this message reports in
        :attr:`DeliveryError.failed` (default: one :class:`FailedMessage`);
        :class:`~streamlearn.publish.Publisher` passes the events a message holds.
        """
        from kafka.errors import KafkaError
        from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
        from kafka.structs import TopicPartition

        target = topic or self.topic
        if target is None:
            raise ConfigError("topic", "a topic name (pass topic= here or to the producer)", None)
        value_bytes = _to_bytes(value)
        key_bytes = None if key is None else _to_bytes(key)
        errback = functools.partial(
            self._err, target, value_bytes, key_bytes, partition, timestamp_ms, carries
        )
        with self._lock:
            self.sent += 1
            self._inflight += 1
            self._window_sent += 1 if carries is None else len(carries)
        try:
            future = self._producer.send(
                target,
                value=value_bytes,
                key=key_bytes,
                partition=partition,
                timestamp_ms=timestamp_ms,
            )
        except KafkaError as exc:  # known at once: reported by the next flush like the rest
            errback(exc)
            failed = FutureRecordMetadata(
                FutureProduceResult(TopicPartition(target, partition)), -1, None, None, -1, -1, -1
            )
            return failed.failure(exc)
        future.add_callback(self._ok)
        future.add_errback(errback)
        return future

    def _take_window(self) -> tuple[list[Any], Counter[str], int, bool, str]:
        with self._lock:
            taken = (
                self._window_failed,
                self._window_reasons,
                self._window_sent,
                self._window_retriable,
                self._window_first,
            )
            self._window_failed, self._window_reasons = [], Counter()
            self._window_sent, self._window_retriable, self._window_first = 0, True, ""
        return taken

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every queued message; raise :class:`DeliveryError` if any failed.

        The error carries exactly the messages that failed since the previous
        flush, and the window starts clean. ``timeout_s`` bounds the wait
        (default: the delivery timeout and a margin, by which every message is
        resolved); messages still unresolved then are counted in ``pending``
        and reported by a later flush.
        """
        from kafka.errors import KafkaTimeoutError

        if timeout_s is None:
            timeout_s = self.delivery_timeout_s + 10.0
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            pass  # counted below as pending
        with self._lock:
            pending = self._inflight
        failed, reasons, sent, retriable, first = self._take_window()
        if failed and not pending:
            self._renew_if_dead()
        if failed or pending:
            raise DeliveryError(
                f"{len(failed)} of {sent} messages sent to {self.bootstrap} since the last "
                f"flush were not delivered"
                + (f" ({describe_reasons(reasons, first)})" if reasons else "")
                + (f"; {pending} still unresolved after {timeout_s:.0f} s" if pending else "")
                + "; re-send exactly DeliveryError.failed",
                failed=failed,
                reasons=reasons,
                sent=sent,
                pending=pending,
                retriable=retriable,
                first_error=first,
            )

    def _renew_if_dead(self) -> None:
        """Replace a kafka-python producer that a failure left unable to send.

        kafka-python (3.0) puts an idempotent producer in a fatal state on any
        non-retriable broker error (a message over the topic's limit, say):
        from then on it fails every batch. Nothing is in flight at this point
        (every message was resolved), so a fresh producer loses nothing.
        """
        from kafka import KafkaProducer

        manager = getattr(self._producer, "_transaction_manager", None)
        if manager is None or not manager.has_fatal_error():
            return
        log.warning("Kafka producer to %s is in a fatal state (%s); replacing it",
                    self.bootstrap, manager.last_error)
        self._producer.close(timeout=5)
        self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, **self._config)

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
    read_committed: bool = False,
) -> Iterator[Record]:
    """Yield records until ``max_records`` or ``idle_timeout_s`` without a new one
    (``read_committed``: only those of committed transactions)."""
    from kafka import KafkaConsumer

    consumer = kafka_client(
        KafkaConsumer,
        bootstrap,
        topic,
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        max_partition_fetch_bytes=8 * 1024 * 1024,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
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
