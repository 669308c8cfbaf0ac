"""The demo's settings: one validated :class:`DemoConfig`.

>>> cfg = DemoConfig(duration_s=30, rate=2000)
>>> cfg.total_events, cfg.drift_at
(60000, 30000)
>>> DemoConfig(rate=0)
Traceback (most recent call last):
...
streamlearn.errors.ConfigError: field `--rate`: expected an integer in 1..200000 (events/s), got 0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamlearn.errors import ConfigError
from streamlearn.training.config import DEFAULT_SYNC_MS, SCHEMA, default_flush_ms

__all__ = ["DemoConfig", "SYNC_MS", "FLUSH_MS"]

# the model size is the training job's: its default and its rule (``features.bits``)
_BITS_CHECK, _BITS_EXPECTED, _BITS_DEFAULT = SCHEMA["features"]["bits"]
# how often the job commits a version, and its learners send their changes: the job's defaults
SYNC_MS = DEFAULT_SYNC_MS
FLUSH_MS = default_flush_ms(DEFAULT_SYNC_MS)


@dataclass(frozen=True)
class DemoConfig:
    """What one ``streamlearn demo`` run does.

    Parameters
    ----------
    duration_s
        Seconds of steady stream after the warm-up (the first model version).
    rate
        Events per second published during the steady stream.
    parallelism
        Parallel learners in the training job (and partitions of the topic).
    kafka_port
        The local broker's port: reused when a broker already listens there,
        started (and stopped at the end) otherwise. Ignored with ``bootstrap``.
    bootstrap
        An existing broker to use instead of a local one (never stopped).
    serve_port
        The prediction server's port (it must be free).
    report_dir
        Where the report goes (default ``reports/demo-<timestamp>``).
    envelope_size
        Events per Kafka message (the job's fast path).
    sync_ms
        How often the training job commits a merged version, at most (the
        job's ``job.sync_ms`` unless given; its learners send their changes
        every ``job.flush_ms``, or as often as a version when that is sooner).
    bits
        The model's size, ``2**bits`` hashed slots: the training default
        (``features.bits``) unless given.
    bad_share
        Share of deliberately malformed events, to show the dead-letter topic.
    seed
        Seed of the event stream.
    delayed_labels
        Run the delayed-labels loop instead (``streamlearn.cli.demo.delayed``): events
        served with an ``id`` and logged, clicks later on a labels topic, joined by the job.
    window_ms
        With ``delayed_labels``: the join's window (a click counts this long after).
    mean_delay_ms
        With ``delayed_labels``: the mean delay of a click (exponential).
    """

    duration_s: float = 90.0
    rate: int = 10_000
    parallelism: int = 2
    kafka_port: int = 9092
    bootstrap: str | None = None
    serve_port: int = 8000
    report_dir: Path | None = None
    envelope_size: int = 100
    sync_ms: int = SYNC_MS
    bits: int = _BITS_DEFAULT
    bad_share: float = 0.001
    seed: int = 0
    warmup_timeout_s: float = 180.0
    delayed_labels: bool = False
    window_ms: int = 2000
    mean_delay_ms: int = 500

    def __post_init__(self) -> None:
        checks = (
            ("--duration", self.duration_s, 1 <= self.duration_s <= 86_400,
             "seconds, a number in 1..86400"),
            ("--rate", self.rate, _is_int(self.rate) and 1 <= self.rate <= 200_000,
             "an integer in 1..200000 (events/s)"),
            ("--parallelism", self.parallelism,
             _is_int(self.parallelism) and 1 <= self.parallelism <= 16,
             "an integer in 1..16"),
            ("--kafka-port", self.kafka_port, _is_port(self.kafka_port) and self.kafka_port < 65535,
             "a port in 1..65534 (the controller takes the next one)"),
            ("--serve-port", self.serve_port, _is_port(self.serve_port), "a port in 1..65535"),
            ("--envelope-size", self.envelope_size,
             _is_int(self.envelope_size) and 1 <= self.envelope_size <= 10_000,
             "an integer in 1..10000"),
            ("--sync-ms", self.sync_ms, _is_int(self.sync_ms) and 50 <= self.sync_ms <= 60_000,
             "milliseconds, an integer in 50..60000"),
            ("--bits", self.bits, _BITS_CHECK(self.bits), _BITS_EXPECTED),
            ("--bad-share", self.bad_share, 0.0 <= self.bad_share < 0.5,
             "a share in [0, 0.5)"),
            ("--window-ms", self.window_ms,
             _is_int(self.window_ms) and 100 <= self.window_ms <= 3_600_000,
             "milliseconds, an integer in 100..3600000"),
            ("--mean-delay-ms", self.mean_delay_ms,
             _is_int(self.mean_delay_ms) and 1 <= self.mean_delay_ms <= 3_600_000,
             "milliseconds, an integer in 1..3600000"),
        )
        for flag, value, ok, expected in checks:
            if not ok:
                raise ConfigError(flag, expected, value)
        if self.bootstrap is not None and ":" not in self.bootstrap:
            raise ConfigError("--bootstrap", "host:port[,host:port...]", repr(self.bootstrap))

    @property
    def total_events(self) -> int:
        """Events of the steady stream."""
        return int(self.rate * self.duration_s)

    @property
    def drift_at(self) -> int:
        """Index, in the steady stream, of the first event after the concept drift."""
        return self.total_events // 2


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: object) -> bool:
    return _is_int(value) and 1 <= value <= 65535  # type: ignore[operator]
