"""The prediction log's Kafka sink: what the server answered for events with an ``id``,
written to a topic keyed by the id (see :mod:`streamlearn.serving.prediction_log`).

Made by ``streamlearn serve --log-topic TOPIC``. It runs on the log's own thread, never
on a request's: a broker that is away makes each batch fail after at most ``timeout_s``
(counted as ``failed``), and the next batch tries again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.kafka_io import DeliveryError, KeyedProducer

__all__ = ["KafkaSink"]


class KafkaSink:
    """Send prediction records (``(key, value)`` bytes) to ``topic`` of ``bootstrap``.

    Returns, for each batch, how many records were not delivered (0: all were);
    raises when the producer cannot be made (no broker within ``timeout_s``).
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 5.0) -> None:
        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        self._producer: KeyedProducer | None = None

    def _settings(self) -> dict[str, Any]:
        ms = int(self.timeout_s * 1000)
        return {"acks": 1, "linger_ms": 5, "max_block_ms": ms, "request_timeout_ms": ms,
                "delivery_timeout_ms": 2 * ms, "retries": 2}

    def __call__(self, records: Sequence[tuple[bytes | None, bytes]]) -> int:
        if self._producer is None:
            self._producer = KeyedProducer(self.bootstrap, self.topic, **self._settings())
        for key, value in records:
            self._producer.send(value, key=key)
        try:
            self._producer.flush(timeout_s=3 * self.timeout_s)
        except DeliveryError as err:
            return len(err.failed)
        return 0

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close()
            except DeliveryError:
                pass  # counted by the flush that failed them
