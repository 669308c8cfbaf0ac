"""Watch the prediction server: which version answers, since when, and what it reflects.

:class:`ServedVersions` polls ``GET /v1/models/current`` every few
milliseconds on a background thread. The first time a version is seen
answering, it records the version's lineage (events, offsets, metrics) and
hands its offsets to a :class:`~streamlearn.cli.demo.freshness.FreshnessTracker`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from streamlearn.cli.demo.freshness import FreshnessTracker
from streamlearn.errors import ServiceError

__all__ = ["ServedVersion", "ServedVersions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedVersion:
    """A version as first seen answering on the prediction server."""

    version: int
    seen_ms: int
    created_ms: int
    events: int
    offsets: dict[int, int]
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "seen_ms": self.seen_ms,
            "created_ms": self.created_ms,
            "events": self.events,
            "offsets": {str(p): o for p, o in self.offsets.items()},
            "metrics": self.metrics,
        }


class ServedVersions:
    """Poll the server's current version; keep every version seen, in order.

    Parameters
    ----------
    url
        The prediction server.
    topic
        The events topic whose lineage offsets matter.
    tracker
        Told about every new version's offsets.
    interval_s
        Seconds between polls.
    """

    def __init__(
        self, url: str, topic: str, tracker: FreshnessTracker, interval_s: float = 0.01
    ) -> None:
        from streamlearn.serving import Client

        self.topic = topic
        self.tracker = tracker
        self.interval_s = interval_s
        self.versions: list[ServedVersion] = []
        self.polls = 0
        self._client = Client(url, timeout=5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-watch", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    @property
    def latest(self) -> ServedVersion | None:
        with self._lock:
            return self.versions[-1] if self.versions else None

    def poll(self) -> ServedVersion | None:
        """One poll; returns the version when it is new, else ``None``."""
        try:
            doc = self._client.current()
        except ServiceError:  # no version loaded yet, or the server is busy for a moment
            return None
        finally:
            self.polls += 1
        now_ms = int(time.time() * 1000)
        latest = self.latest
        if latest is not None and doc["version"] <= latest.version:
            return None
        lineage = doc.get("lineage") or {}
        offsets = {int(p): int(o) for p, o in (lineage.get("offsets") or {})
                   .get(self.topic, {}).items()}
        seen = ServedVersion(
            version=int(doc["version"]),
            seen_ms=now_ms,
            created_ms=int(float(doc.get("created_at") or 0) * 1000),
            events=int(lineage.get("events") or 0),
            offsets=offsets,
            metrics={k: float(v) for k, v in (lineage.get("metrics") or {}).items()},
        )
        self.tracker.served(seen.version, offsets, now_ms)
        with self._lock:
            self.versions.append(seen)
        return seen

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # keep watching: one odd answer must not end the demo
                log.warning("polling the prediction server failed: %s", exc)
            self._stop.wait(self.interval_s)
