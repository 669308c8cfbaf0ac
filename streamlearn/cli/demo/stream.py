"""A paced, drifting event stream published to Kafka in envelopes.

:class:`PacedStream` publishes ``rate`` events per second from
:func:`~streamlearn.generators.clicks` (whose true weights change at the drift
point) in envelopes of a few dozen events, replaces a small share of events by
malformed ones (to show the dead-letter topic at work), and reports each
message's partition, offset and broker append time to a callback as Kafka
acknowledges it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamlearn.publish import Delivered

__all__ = ["PacedStream"]

log = logging.getLogger(__name__)

_TICK_S = 0.01


class PacedStream:
    """Publish events at a steady rate on a background thread.

    Parameters
    ----------
    bootstrap, topic
        Where to publish.
    events
        The events to publish (an iterator; it is read as needed).
    rate
        Events per second.
    total
        Events to publish before stopping.
    envelope_size
        Events per Kafka message at most.
    bad_share
        Share of events replaced by an event with an invalid label.
    on_ack
        Called as ``on_ack(partition, offset, append_ms)`` for every delivered message.
    seed
        Seeds which events are made malformed.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        events: Iterator[dict],
        rate: int,
        total: int,
        *,
        envelope_size: int = 100,
        bad_share: float = 0.0,
        on_ack: Callable[[int, int, int], None] | None = None,
        seed: int = 0,
    ) -> None:
        from streamlearn.publish import Publisher

        self.topic = topic
        self.rate = rate
        self.total = total
        self.bad_share = bad_share
        self._events = events
        self._on_ack = on_ack
        self._rng = np.random.default_rng(seed + 1)
        self._publisher = Publisher(bootstrap, topic, envelope=True, envelope_size=envelope_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-stream", daemon=True)
        self.published = 0
        self.bad = 0
        self.positives = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: BaseException | None = None

    # -- control ---------------------------------------------------------------
    def start(self) -> float:
        """Start publishing; returns the time it started (``started_at``)."""
        self.started_at = started = time.time()
        self._thread.start()
        return started

    def stop(self) -> None:
        """Stop early (Ctrl-C); what was published so far is flushed."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the publishing thread; nothing to wait for if it never started
        (a failure during the warm-up must still reach the runner's clean-up)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def publish_now(self, n: int) -> None:
        """Publish ``n`` events at once, in the caller's thread (the warm-up), and flush."""
        for _ in range(n):
            self._publish_one(next(self._events))
        self._publisher.flush()

    def close(self) -> None:
        try:
            self._publisher.close()
        except Exception as exc:  # closing after a failure must not hide the failure
            log.warning("closing the demo publisher failed: %s", exc)

    # -- publishing --------------------------------------------------------------
    def _ack(self, delivered: Delivered) -> None:
        if self._on_ack is not None:
            self._on_ack(delivered.partition, delivered.offset, delivered.timestamp_ms)

    def _publish_one(self, event: dict) -> None:
        if self.bad_share and self._rng.random() < self.bad_share:
            event = {**event, "label": "maybe"}  # rejected by the job: field `label`
            self.bad += 1
        else:
            self.positives += event["label"] == 1
        delivery = self._publisher.publish(event)
        self.published += 1
        if delivery is not None:
            delivery.on_delivered(self._ack)

    def _run(self) -> None:
        # An envelope leaves when full (at 10k events/s, within a few ticks); freshness
        # counts from the broker's append, so the wait in the envelope is not part of it.
        try:
            start = time.monotonic()
            sent = 0
            while sent < self.total and not self._stop.is_set():
                due = min(self.total, int((time.monotonic() - start) * self.rate) + 1)
                while sent < due:
                    self._publish_one(next(self._events))
                    sent += 1
                time.sleep(max(0.0, start + sent / self.rate - time.monotonic(), _TICK_S / 4))
            self._publisher.flush()
        except BaseException as exc:  # reported by the runner, not lost in the thread
            self.error = exc
            log.error("the demo stream stopped: %s", exc)
        finally:
            self.finished_at = time.time()
