"""The prediction log on Kafka: what the server answered for events with an ``id``,
written to a topic keyed by the id (see :mod:`streamlearn.serving.prediction_log`).

Made by ``streamlearn serve --log-topic TOPIC``. The producer is librdkafka's
(``confluent-kafka``), and its queue is the log's queue: the server's event loop hands
it each record in one call into C that copies the bytes and returns (a full queue raises
at once: the record is dropped and counted), and librdkafka's own threads, which never
hold the interpreter lock, batch and send them. A broker that is away makes the waiting
records fail after ``2 × timeout_s`` (counted as ``failed``); nothing on the request path
waits for it.

Why no queue and sending thread of our own: such a thread, handing the same producer
batches, cost the server more than the producer's calls do (its wake-ups and its share
of the interpreter lock; ``bench/serving.py --prediction-log``), and kafka-python's
producer, Python code per record, cost 60% of a server's single-event throughput.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from streamlearn.errors import ConfigError

__all__ = ["KafkaLog"]

log = logging.getLogger(__name__)

_WARN_EVERY_S = 30.0  # a failing broker is reported at most this often


class KafkaLog:
    """A :class:`~streamlearn.serving.prediction_log.RecordLog` writing records
    (``(key, value)`` bytes) to ``topic`` of ``bootstrap``.

    Parameters
    ----------
    capacity
        Records waiting to be sent at most (librdkafka's queue); more are dropped.
    timeout_s
        The socket timeout; a record not delivered within twice that fails.
    linger_s
        How long librdkafka waits for a batch to fill: fewer, larger requests cost the
        broker less per record.
    """

    def __init__(
        self, bootstrap: str, topic: str, *, capacity: int = 100_000, timeout_s: float = 5.0,
        linger_s: float = 0.05,
    ) -> None:
        from confluent_kafka import KafkaException, Producer

        if type(capacity) is not int or not 1 <= capacity <= 10_000_000:
            raise ConfigError("capacity", "records in 1..10000000", repr(capacity))
        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        ms = int(timeout_s * 1000)
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "acks": 1, "linger.ms": int(linger_s * 1000),
            "message.timeout.ms": 2 * ms, "socket.timeout.ms": ms,
            "queue.buffering.max.messages": capacity,
            # a key's partition as Kafka's Java client (and streamlearn publish) picks
            # it, so the log is co-partitioned with a labels topic keyed by the same ids
            "partitioner": "murmur2_random",
            # the delivery callback (Python, under the interpreter lock) for failures only
            "delivery.report.only.error": True, "on_delivery": self._delivered,
            # librdkafka's own log lines (a broker away) go nowhere: the loss is counted
            "log_level": 0,
        })
        self._produce, self._poll = self._producer.produce, self._producer.poll
        self._refused = KafkaException
        self.taken = self.dropped = self.failed = 0
        self._closed = False
        self._warned_at = 0.0

    def offer(self, records: Sequence[tuple[bytes | None, bytes]]) -> int:
        """Hand ``records`` to the producer without waiting; returns how many it took
        (the rest, when its queue is full or after :meth:`close`, count as dropped), and
        count the records that failed since the last call. A record the producer
        refuses at once (larger than a message may be) fails."""
        taken = 0
        if not self._closed:
            produce, topic = self._produce, self.topic
            for key, value in records:
                try:
                    produce(topic, value, key)
                except BufferError:  # its queue is full: the broker has been away a while
                    break
                except self._refused as exc:
                    self.failed += 1
                    self._warn(exc)
                taken += 1
            self._poll(0)  # the failures' callbacks; returns at once
        self.taken += taken
        self.dropped += len(records) - taken
        return taken

    def counts(self) -> dict[str, int]:
        """Records ``logged`` (delivered: taken, neither failed nor still waiting),
        ``dropped`` and ``failed`` so far."""
        if not self._closed:
            self._poll(0)
        waiting = len(self._producer) if not self._closed else 0
        return {"logged": self.taken - self.failed - waiting, "dropped": self.dropped,
                "failed": self.failed}

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is waiting for at most ``timeout_s``; what is left then fails."""
        self._closed = True
        if self._producer.flush(timeout_s):  # not sent in time: taken back, each failed
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            self._producer.flush(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            self._warn(err)

    def _warn(self, why: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at > _WARN_EVERY_S:
            self._warned_at = now
            log.warning("the prediction log could not send a record to %s: %s "
                        "(%d failed so far)", self.topic, why, self.failed)
