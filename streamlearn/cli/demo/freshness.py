"""Freshness: from an event's append to Kafka to the first answer of a version that learned it.

For a sampled Kafka message, ``t0`` is its append time (the broker's log-append
timestamp, as the producer's acknowledgement reports it). ``t1`` is the first
moment the prediction server was seen answering with a version whose lineage
offset for the message's partition is greater than the message's offset, that
is, a version that reflects it, not merely a newer one. Freshness is
``t1 - t0``.

>>> tracker = FreshnessTracker()
>>> tracker.sent(partition=0, offset=10, t0_ms=1_000)
>>> tracker.sent(partition=1, offset=4, t0_ms=1_050)
>>> tracker.served(version=1, offsets={0: 11, 1: 3}, t1_ms=1_700)  # covers only partition 0
1
>>> tracker.served(version=2, offsets={0: 11, 1: 5}, t1_ms=2_250)
1
>>> tracker.latencies_ms()
[700, 1200]
>>> tracker.summary()["p50_ms"], tracker.pending
(950.0, 0)
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FreshnessTracker", "Sample", "percentiles"]


@dataclass(frozen=True)
class Sample:
    """One measured message: where it was, when it was appended, when it was first served."""

    partition: int
    offset: int
    t0_ms: int
    t1_ms: int
    version: int

    @property
    def latency_ms(self) -> int:
        return self.t1_ms - self.t0_ms


def percentiles(values: Sequence[float] | np.ndarray, qs: tuple[int, ...] = (50, 95, 99)) -> dict:
    """``{"p50_ms": ..., ...}`` of ``values`` (``None`` each when there are none).

    >>> percentiles([1, 2, 3, 4], (50,))
    {'p50_ms': 2.5}
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {f"p{q}_ms": None for q in qs}
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 1) for q in qs}


class FreshnessTracker:
    """Match sampled messages with the first served version that covers them.

    Thread-safe: the producer's callback thread calls :meth:`sent`, a poller
    of the prediction server calls :meth:`served`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # partition -> offsets (sorted) and their t0, not yet covered
        self._offsets: dict[int, list[int]] = {}
        self._t0: dict[int, list[int]] = {}
        self._covered: dict[int, int] = {}  # partition -> highest lineage offset seen served
        self.samples: list[Sample] = []

    def sent(self, partition: int, offset: int, t0_ms: int) -> None:
        """Record a message appended at ``t0_ms`` (milliseconds since the epoch)."""
        with self._lock:
            offsets = self._offsets.setdefault(partition, [])
            times = self._t0.setdefault(partition, [])
            # acknowledgements arrive in offset order per partition; insort keeps it true anyway
            i = bisect.bisect(offsets, offset)
            offsets.insert(i, offset)
            times.insert(i, t0_ms)

    def served(self, version: int, offsets: Mapping[int, int], t1_ms: int) -> int:
        """The server answered with ``version`` (lineage ``offsets``) at ``t1_ms``.

        Returns how many pending messages this resolved.
        """
        resolved = 0
        with self._lock:
            for partition, end in offsets.items():
                partition, end = int(partition), int(end)
                if end <= self._covered.get(partition, -1):
                    continue
                self._covered[partition] = end
                pending = self._offsets.get(partition)
                if not pending:
                    continue
                cut = bisect.bisect_left(pending, end)  # offsets < end are reflected
                times = self._t0[partition]
                for off, t0 in zip(pending[:cut], times[:cut], strict=True):
                    self.samples.append(Sample(partition, off, t0, max(t1_ms, t0), version))
                del pending[:cut], times[:cut]
                resolved += cut
        return resolved

    @property
    def pending(self) -> int:
        """Messages sent but not yet seen served."""
        with self._lock:
            return sum(len(v) for v in self._offsets.values())

    def latencies_ms(self) -> list[int]:
        with self._lock:
            return [s.latency_ms for s in self.samples]

    def summary(self) -> dict:
        """Count, p50/p95/p99, mean and max of the freshness measured so far (ms)."""
        lat = self.latencies_ms()
        out: dict = {"samples": len(lat), "pending": self.pending, **percentiles(lat)}
        out["mean_ms"] = round(float(np.mean(lat)), 1) if lat else None
        out["max_ms"] = int(max(lat)) if lat else None
        return out
