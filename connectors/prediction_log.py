"""The prediction log's Kafka sink: what the server answered for events with an ``id``,
written to a topic keyed by the id (see :mod:`streamlearn.serving.prediction_log`).

Made by ``streamlearn serve --log-topic TOPIC``. It runs on the log's own thread, never
on a request's: a broker that is away makes each batch fail after at most ``timeout_s``
(counted as ``failed``), and the next batch tries again.

The producer is librdkafka's (``confluent-kafka``), not kafka-python's: handing it a
record is one call into C, and its sending runs on threads of its own that never hold
the interpreter lock. With kafka-python's producer, Python code per record on the log's
thread took the lock from the server's event loop and cost 60% of a server's
single-event throughput at saturation (``bench/serving.py --prediction-log``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["KafkaSink"]


class KafkaSink:
    """Send prediction records (``(key, value)`` bytes) to ``topic`` of ``bootstrap``.

    Returns, for each batch, how many records were not delivered (0: all were): those the
    broker refused, and those still unsent ``timeout_s`` after the batch was handed over
    (taken back from the producer, so none is sent later and counted twice).
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 5.0) -> None:
        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        self._producer: Any = None
        self._lost = 0

    def _settings(self) -> dict[str, Any]:
        ms = int(self.timeout_s * 1000)
        return {"bootstrap.servers": self.bootstrap, "acks": 1, "linger.ms": 5,
                "message.timeout.ms": 2 * ms, "socket.timeout.ms": ms,
                "queue.buffering.max.messages": 1_000_000,
                # the delivery callback (Python, under the interpreter lock) for failures
                # only: one per record would contend with the server's event loop
                "delivery.report.only.error": True, "on_delivery": self._delivered,
                # librdkafka's own log lines (a broker away) go nowhere: the loss is counted
                "log_level": 0}

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._lost += 1

    def __call__(self, records: Sequence[tuple[bytes | None, bytes]]) -> int:
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer(self._settings())
        producer, self._lost = self._producer, 0
        refused, produce, topic = 0, producer.produce, self.topic
        for key, value in records:  # the failures' callback is the producer's (_settings)
            try:
                produce(topic, value, key)
            except BufferError:  # its queue is full: the broker has been away a while
                refused += 1
        left = producer.flush(3 * self.timeout_s)
        if left:  # not sent in time: taken back, each reported as failed by its callback
            producer.purge(in_queue=True, in_flight=True, blocking=True)
            producer.flush(0)
        return refused + self._lost

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self.timeout_s)
