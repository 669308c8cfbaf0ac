"""Service metrics in the Prometheus text exposition format, written by hand.

Counters are plain integers updated from the event loop (and the swap count
from the watcher thread); rendering reads them without locks, which at worst
shows a value one request old.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

__all__ = ["ServiceMetrics", "LATENCY_BUCKETS_S"]

# Upper bounds of the latency histogram, in seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServiceMetrics:
    """Requests, latency, predictions and model freshness of one server.

    Parameters
    ----------
    model
        The served model's name, used as a label.
    model_info
        Returns ``(version, created_at)`` of the version serving now, or
        ``None`` before the first one.
    swaps
        Returns how many swaps happened so far.

    Examples
    --------
    >>> m = ServiceMetrics("ctr", lambda: (3, 0.0), lambda: 1)
    >>> m.observe("/v1/predict", 200, 0.0004, predictions=2)
    >>> text = m.render(now=10.0)
    >>> 'streamlearn_requests_total{route="/v1/predict",status="200"} 1' in text
    True
    >>> 'streamlearn_request_duration_seconds_bucket{le="0.0005"} 1' in text
    True
    >>> 'streamlearn_model_age_seconds{model="ctr"} 10.0' in text
    True
    """

    def __init__(
        self,
        model: str,
        model_info: Callable[[], tuple[int, float] | None],
        swaps: Callable[[], int],
    ) -> None:
        self.model = model
        self._model_info = model_info
        self._swaps = swaps
        self.requests: dict[tuple[str, int], int] = {}
        self.predictions = 0
        self._buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last: above every bound
        self._latency_sum = 0.0

    def observe(self, route: str, status: int, seconds: float, predictions: int = 0) -> None:
        """Count one answered request: a few integer updates, no lock, no allocation
        beyond the ``(route, status)`` key."""
        requests = self.requests
        key = (route, status)
        requests[key] = requests.get(key, 0) + 1
        self._buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._latency_sum += seconds
        self.predictions += predictions

    def render(self, now: float | None = None) -> str:
        """The metrics as Prometheus text (format version 0.0.4)."""
        now = time.time() if now is None else now
        model = _label(self.model)
        lines = [
            "# HELP streamlearn_requests_total HTTP requests answered, by route and status.",
            "# TYPE streamlearn_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(
                f'streamlearn_requests_total{{route="{_label(route)}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP streamlearn_request_duration_seconds Time to answer a request.",
            "# TYPE streamlearn_request_duration_seconds histogram",
        ]
        buckets = list(self._buckets)  # one copy, so that the counts agree with each other
        latency_sum = self._latency_sum
        count = sum(buckets)
        cumulative = 0
        for bound, in_bucket in zip(LATENCY_BUCKETS_S, buckets, strict=False):
            cumulative += in_bucket
            lines.append(
                f'streamlearn_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}'
            )
        lines.append(f'streamlearn_request_duration_seconds_bucket{{le="+Inf"}} {count}')
        lines.append(f"streamlearn_request_duration_seconds_sum {latency_sum!r}")
        lines.append(f"streamlearn_request_duration_seconds_count {count}")
        lines += [
            "# HELP streamlearn_predictions_total Events predicted.",
            "# TYPE streamlearn_predictions_total counter",
            f'streamlearn_predictions_total{{model="{model}"}} {self.predictions}',
            "# HELP streamlearn_model_swaps_total Times the served version changed.",
            "# TYPE streamlearn_model_swaps_total counter",
            f'streamlearn_model_swaps_total{{model="{model}"}} {self._swaps()}',
        ]
        info = self._model_info()
        if info is not None:
            version, created_at = info
            lines += [
                "# HELP streamlearn_model_version The version serving now.",
                "# TYPE streamlearn_model_version gauge",
                f'streamlearn_model_version{{model="{model}"}} {version}',
                "# HELP streamlearn_model_age_seconds Age of the version serving now.",
                "# TYPE streamlearn_model_age_seconds gauge",
                f'streamlearn_model_age_seconds{{model="{model}"}} {round(now - created_at, 3)}',
            ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
