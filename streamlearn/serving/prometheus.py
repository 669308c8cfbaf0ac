"""Service metrics, exposed through ``prometheus_client``.

The request path only counts: plain integers in dicts and lists, updated from
the event loop without locks (the swap count comes from the watcher thread).
A custom collector turns those counts into metric families when ``/metrics``
is scraped, so a request costs what it did before ``prometheus_client`` was
used (a ``Histogram.observe`` takes a lock and walks the buckets in Python;
here one ``bisect`` and two list updates). Reading without locks shows, at
worst, a value one request old.

Each app has its own registry: the service's collector, and the library's
process (``process_*``: CPU, memory, file descriptors, start time) and Python
(``python_info``, ``python_gc_*``) collectors.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["ServiceMetrics", "LATENCY_BUCKETS_S", "METRIC_NAMES"]

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
_N = len(LATENCY_BUCKETS_S)

#: The service's own metric families (as scraped: counters with ``_total``,
#: the histogram's ``_bucket``/``_sum``/``_count`` series under its name).
METRIC_NAMES: tuple[str, ...] = (
    "streamlearn_requests_total",
    "streamlearn_request_duration_seconds",
    "streamlearn_predictions_total",
    "streamlearn_model_swaps_total",
    "streamlearn_model_version",
    "streamlearn_model_age_seconds",
    "streamlearn_model_published_timestamp_seconds",
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
    >>> 'streamlearn_requests_total{route="/v1/predict",status="200"} 1.0' in text
    True
    >>> 'streamlearn_request_duration_seconds_bucket{le="0.0005",route="/v1/predict"} 1.0' in text
    True
    >>> 'streamlearn_model_age_seconds{model="ctr"} 10.0' in text
    True
    >>> "process_cpu_seconds_total" in text and "python_info" in text
    True
    """

    def __init__(
        self,
        model: str,
        model_info: Callable[[], tuple[int, float] | None],
        swaps: Callable[[], int],
    ) -> None:
        from prometheus_client import (
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )
        from prometheus_client.registry import CollectorRegistry

        self.model = model
        self._model_info = model_info
        self._swaps = swaps
        # (route, status) -> [requests, the count of each latency bucket, then of
        # those above every bound, then the sum of latencies]: one look-up per request
        self._counts: dict[tuple[str, int], list[Any]] = {}
        self.predictions = 0
        #: the prediction log's counts by outcome, when the server has one
        self.log_counts: Callable[[], Mapping[str, int]] | None = None
        self._now: float | None = None  # the clock of render(now=...), for tests
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe(self, route: str, status: int, seconds: float, predictions: int = 0) -> None:
        """Count one answered request: one dict look-up and three list updates,
        no lock, no allocation beyond the ``(route, status)`` key."""
        counts = self._counts.get((route, status))
        if counts is None:
            counts = self._counts[(route, status)] = [0] * (_N + 2) + [0.0]
        counts[0] += 1
        counts[1 + bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        counts[-1] += seconds
        if predictions:
            self.predictions += predictions

    @property
    def requests(self) -> dict[tuple[str, int], int]:
        """Requests answered so far by ``(route, status)``."""
        return {key: counts[0] for key, counts in list(self._counts.items())}

    def render(self, now: float | None = None) -> str:
        """Every metric of the registry as Prometheus text (format 0.0.4)."""
        from prometheus_client import generate_latest

        self._now = now
        try:
            return generate_latest(self.registry).decode()
        finally:
            self._now = None

    def families(self) -> Iterator[Any]:
        """The service's metric families, from the counts as they are now."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        now = time.time() if self._now is None else self._now
        requests = CounterMetricFamily(
            "streamlearn_requests",
            "HTTP requests answered, by route and status.",
            labels=("route", "status"),
        )
        by_route: dict[str, list[Any]] = {}
        for (route, status), counts in sorted(self._counts.items()):
            counts = list(counts)  # one copy, so that the counts agree with each other
            requests.add_metric((route, str(status)), counts[0])
            total = by_route.get(route)
            if total is None:
                by_route[route] = counts[1:]
            else:
                for i, value in enumerate(counts[1:]):
                    total[i] += value
        yield requests
        latency = HistogramMetricFamily(
            "streamlearn_request_duration_seconds",
            "Time to answer a request, by route.",
            labels=("route",),
        )
        for route, counts in by_route.items():
            cumulative = 0
            buckets = []
            for bound, in_bucket in zip(LATENCY_BUCKETS_S, counts, strict=False):
                cumulative += in_bucket
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", cumulative + counts[_N]))
            latency.add_metric((route,), buckets, counts[-1])
        yield latency
        model = (self.model,)
        predictions = CounterMetricFamily(
            "streamlearn_predictions", "Events predicted.", labels=("model",)
        )
        predictions.add_metric(model, self.predictions)
        yield predictions
        swaps = CounterMetricFamily(
            "streamlearn_model_swaps", "Times the served version changed.", labels=("model",)
        )
        swaps.add_metric(model, self._swaps())
        yield swaps
        if self.log_counts is not None:
            logged = CounterMetricFamily(
                "streamlearn_prediction_log_records",
                "Predictions of events with an id offered to the prediction log, by outcome "
                "(logged: sent; dropped: no room in its queue; failed: the sink refused them).",
                labels=("model", "outcome"),
            )
            for outcome, count in self.log_counts().items():
                logged.add_metric((self.model, outcome), count)
            yield logged
        info = self._model_info()
        if info is not None:
            version, created_at = info
            gauge = GaugeMetricFamily(
                "streamlearn_model_version", "The version serving now.", labels=("model",)
            )
            gauge.add_metric(model, version)
            yield gauge
            gauge = GaugeMetricFamily(
                "streamlearn_model_age_seconds",
                "Age of the version serving now (now minus its publication).",
                labels=("model",),
            )
            gauge.add_metric(model, round(now - created_at, 3))
            yield gauge
            gauge = GaugeMetricFamily(
                "streamlearn_model_published_timestamp_seconds",
                "When the version serving now was published, seconds since the epoch.",
                labels=("model",),
            )
            gauge.add_metric(model, created_at)
            yield gauge


class _Collector:
    """The custom collector: :meth:`ServiceMetrics.families` at each scrape."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics.families()
