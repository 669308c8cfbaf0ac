"""One demo run, end to end: :func:`run_demo`.

1. start what is not running: the Kafka broker (reused when one answers), the
   run's topics, the prediction server and the training job;
2. warm up: publish a batch in three parts, each time waiting for a new model
   version (the first is loaded whole by every follower);
3. publish a drifting stream at ``rate`` events/s for ``duration_s``, showing
   live figures once a second, measuring freshness for every message;
4. wait (briefly) until the last events are served, stop everything started,
   and write the report: ``summary.json``, ``versions.json``,
   ``timeline.json``, ``freshness.json``, ``metrics.png``, ``freshness.png``
   and the job's and server's ``logs/``.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlearn.cli.demo.config import DemoConfig
from streamlearn.cli.demo.display import LiveDisplay, Snapshot
from streamlearn.cli.demo.freshness import FreshnessTracker
from streamlearn.cli.demo.report import between, chance_levels, windowed_metrics, write_json
from streamlearn.cli.demo.services import Services
from streamlearn.cli.demo.stream import PacedStream
from streamlearn.cli.demo.watch import ServedVersion, ServedVersions
from streamlearn.errors import ServiceError

__all__ = ["run_demo", "DemoResult", "default_report_dir", "run_places", "wind_down"]

log = logging.getLogger(__name__)

GOALS_MS = {"p50_ms": 1000.0, "p99_ms": 2000.0}
_DRAIN_S = 15.0


@dataclass
class DemoResult:
    """What a run produced: where its report is and its headline figures."""

    report_dir: Path
    summary: dict
    plots: list[Path] = field(default_factory=list)
    interrupted: bool = False


def default_report_dir() -> Path:
    """``reports/demo-<timestamp>`` under the project root (a new one each run)."""
    from connectors.paths import project_root

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = project_root() / "reports" / f"demo-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class _Live:
    """Figures for the live view, from the stream, the served versions and the tracker."""

    def __init__(self, stream: PacedStream, watcher: ServedVersions, tracker: FreshnessTracker,
                 window: int) -> None:
        self.stream, self.watcher, self.tracker, self.window = stream, watcher, tracker, window
        self.history: list[tuple[float, int, int]] = []  # (time, published, learned)
        self.timeline: list[Snapshot] = []

    def snapshot(self, t0: float) -> Snapshot:
        now = time.time()
        latest = self.watcher.latest
        learned = latest.events if latest else 0
        published = self.stream.published
        self.history.append((now, published, learned))
        past = next((h for h in self.history if now - h[0] <= 3.0), self.history[0])
        dt = max(now - past[0], 1e-9)
        fresh = self.tracker.summary()
        metrics = self._recent(latest) if latest else {}
        snap = Snapshot(
            t_s=round(now - t0, 2),
            published=published,
            in_rate=round((published - past[1]) / dt, 1) if now > past[0] else 0.0,
            learned=learned,
            learned_rate=round((learned - past[2]) / dt, 1) if now > past[0] else 0.0,
            version=latest.version if latest else None,
            age_s=round(now - latest.created_ms / 1000, 2) if latest else None,
            accuracy=metrics.get("Accuracy"),
            log_loss=metrics.get("LogLoss"),
            dlq=int(latest.metrics.get("rejected", 0)) if latest else 0,
            p50_ms=fresh["p50_ms"],
            p99_ms=fresh["p99_ms"],
        )
        self.timeline.append(snap)
        return snap

    def _recent(self, latest: ServedVersion) -> dict[str, float]:
        rows = [_row(v) for v in self.watcher.versions]
        return windowed_metrics(rows, self.window)[-1] if rows else {}


def _row(v: ServedVersion) -> dict:
    return {"events": v.events, "metrics": v.metrics}


def run_demo(cfg: DemoConfig, display: LiveDisplay | None = None) -> DemoResult:
    """Run the demo with ``cfg``; returns where the report is and its figures.

    Everything the run started is stopped before this returns, also when it
    fails or is interrupted (Ctrl-C ends the stream early and still writes
    the report).
    """
    from streamlearn.generators import clicks

    display = display or LiveDisplay()
    report_dir, work_dir, topic = run_places(cfg)
    model = "demo"
    warmup = min(cfg.rate, 2_000)
    window = max(2_000, cfg.rate * 5)  # the live metrics' window: about five seconds of stream
    tracker = FreshnessTracker()
    sampling = {"on": False}
    interrupted = False
    svc = Services(cfg, topic, model, work_dir, report_dir / "logs")
    watcher: ServedVersions | None = None
    stream: PacedStream | None = None
    live: _Live | None = None
    dlq_messages = None
    t_start = time.time()
    try:
        display.message("starting: Kafka broker (reused if running) ...")
        bootstrap = svc.ensure_broker()
        svc.create_topics()
        display.message(f"broker {bootstrap}; topic {topic} ({cfg.parallelism} partitions), "
                        f"{topic}.dlq, {topic}.models")
        url = svc.start_server()
        display.message(f"prediction server {url} (model {model!r}, store {svc.store_uri})")
        svc.start_job()
        display.message(f"training job: {cfg.parallelism} learners, 2^{cfg.bits} slots, a version "
                        f"every {cfg.sync_ms} ms at most (log: {report_dir / 'logs' / 'job.log'})")

        def on_ack(partition: int, offset: int, append_ms: int) -> None:
            if sampling["on"]:
                tracker.sent(partition, offset, append_ms)

        events = clicks(None, seed=cfg.seed, drift_at=warmup + cfg.drift_at)
        stream = PacedStream(bootstrap, topic, events, cfg.rate, cfg.total_events,
                             envelope_size=cfg.envelope_size, bad_share=cfg.bad_share,
                             on_ack=on_ack, seed=cfg.seed)
        watcher = ServedVersions(url, topic, tracker)
        watcher.start()
        display.message(f"warming up: {warmup:,} events, waiting for the first model version "
                        "(the Flink job takes 10-30 s to start) ...")
        # in three parts, each waiting for a new version: the first version is a
        # snapshot that the server loads whole, and that each learner rebases on whole
        # once it has sent the changes the second version holds (seconds at 2^24
        # slots); the third is the first version of the steady state the run measures
        after = 0
        for part in range(WARMUP_PARTS):
            stream.publish_now(warmup * (part + 1) // WARMUP_PARTS - warmup * part // WARMUP_PARTS)
            after = _wait_first_version(svc, watcher, cfg.warmup_timeout_s, after=after).version
        display.message(f"version {after} is serving; streaming {cfg.rate:,} events/s "
                        f"for {cfg.duration_s:.0f} s, concept drift at event "
                        f"{cfg.drift_at:,} (Ctrl-C stops early, the report is still written)")
        live = _Live(stream, watcher, tracker, window)
        sampling["on"] = True
        t0 = stream.start()
        try:
            while stream.running:
                svc.check_alive()
                display.show(live.snapshot(t0))
                _sleep_while(stream, 1.0)
            if stream.error is not None:
                raise ServiceError(f"publishing the demo stream failed: {stream.error}")
            _drain(svc, tracker, _DRAIN_S)
            display.show(live.snapshot(t0))
        except KeyboardInterrupt:
            interrupted = True
            stream.stop()
            stream.join(10)
            display.message("interrupted: stopping and writing the report ...")
        dlq_messages = _dlq_count(bootstrap, f"{topic}.dlq")
    finally:
        if watcher is not None:
            watcher.stop()
        wind_down(svc, display, work_dir, stream)

    summary, plots = _write_report(
        report_dir, cfg, svc, stream, watcher, tracker, live, warmup, dlq_messages,
        interrupted, t_start, display,
    )
    return DemoResult(report_dir, summary, plots, interrupted)


def run_places(cfg: DemoConfig) -> tuple[Path, Path, str]:
    """A new run's report directory (made: ``cfg.report_dir`` or
    :func:`default_report_dir`), its state directory and its topic, both named
    ``demo-<timestamp>-<random>``: each run is independent of the others."""
    from connectors.paths import state_dir

    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    report_dir = Path(cfg.report_dir) if cfg.report_dir else default_report_dir()
    report_dir.mkdir(parents=True, exist_ok=True)
    return report_dir, state_dir("demo", run_id), f"demo-{run_id}"


def wind_down(svc: Services, display: LiveDisplay, work_dir: Path, *threads: Any) -> None:
    """Stop what a run started, also after a failure or Ctrl-C: its ``threads`` (each
    stopped, joined for up to 10 s and closed; ``None``: never started), then its
    services; and remove the run's state."""
    for thread in threads:
        if thread is not None:
            thread.stop()
            thread.join(10)
            thread.close()
    stopped = svc.stop()
    if stopped:
        display.message(f"stopped what this run started: {', '.join(stopped)}")
    shutil.rmtree(work_dir, ignore_errors=True)


def _sleep_while(stream: PacedStream, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while stream.running and time.monotonic() < deadline:
        time.sleep(0.05)


#: the warm-up's parts, each waiting for a new version (see run_demo)
WARMUP_PARTS = 3


def _wait_first_version(
    svc: Services, watcher: ServedVersions, timeout_s: float, after: int = 0
) -> ServedVersion:
    """Wait until the server serves a version newer than ``after``; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        latest = watcher.latest
        if latest is not None and latest.version > after:
            return latest
        svc.check_alive()
        if time.monotonic() > deadline:
            raise ServiceError(
                f"no model version was served within {timeout_s:.0f} s of starting the "
                f"training job; see {svc.log_dir / 'job.log'}"
            )
        time.sleep(0.1)


def _drain(svc: Services, tracker: FreshnessTracker, timeout_s: float) -> None:
    """Wait until a served version reflects every sampled message (or ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while tracker.pending and time.monotonic() < deadline:
        svc.check_alive()
        time.sleep(0.1)


def _dlq_count(bootstrap: str, topic: str) -> int | None:
    from connectors.kafka_io import describe_topic

    try:
        return describe_topic(bootstrap, topic).messages
    except Exception as exc:  # a figure of the report, not a reason to fail the run
        log.warning("could not count the dead letters in %s: %s", topic, exc)
        return None


def draw_plots(
    report_dir: Path,
    display: LiveDisplay,
    *,
    metrics: tuple[list[float], list[dict], list[dict]] | None,
    drift_s: float | None,
    chance: dict[str, float],
    metrics_title: str,
    latencies_ms: list[float],
    sent_s: list[float],
    fresh: dict,
) -> list[Path]:
    """The report's PNG plots: ``metrics.png`` (when ``metrics``, the versions'
    seconds, windowed and cumulative metrics, are given) and ``freshness.png``.

    matplotlib is the ``demo`` extra: without it, one line says so and how to
    install it, and the report goes on without plots (returns ``[]``).
    """
    from streamlearn.cli.demo import plots

    if not plots.available():
        display.message(plots.MISSING)
        return []
    drawn = []
    if metrics is not None:
        times, windowed, cumulative = metrics
        drawn.append(plots.plot_metrics(
            report_dir / "metrics.png", times, windowed, cumulative, drift_s=drift_s,
            chance=chance, title=metrics_title,
        ))
    drawn.append(plots.plot_freshness(
        report_dir / "freshness.png", latencies_ms, sent_s, fresh,
        goals_ms=(float(GOALS_MS["p50_ms"]), float(GOALS_MS["p99_ms"])),
        title=f"freshness of {len(latencies_ms):,} messages: p50 {fresh['p50_ms']} ms, "
              f"p95 {fresh['p95_ms']} ms, p99 {fresh['p99_ms']} ms",
    ))
    return drawn


def _write_report(
    report_dir: Path, cfg: Any, svc: Any, stream: Any, watcher: Any, tracker: Any, live: Any,
    warmup: Any, dlq_messages: Any, interrupted: bool, t_start: float, display: Any,
) -> tuple[dict, list[Path]]:
    t0 = stream.started_at or time.time()
    versions = list(watcher.versions) if watcher else []
    rows = [_row(v) for v in versions]
    window = max(2_000, cfg.rate * 5)
    windowed = windowed_metrics(rows, window)
    steady = stream.published - warmup if stream else 0
    elapsed = ((stream.finished_at or time.time()) - t0) if stream and stream.started_at else 0.0
    drift_s = cfg.drift_at / cfg.rate if steady > cfg.drift_at else None
    first_steady = next((v for v in versions if v.seen_ms >= t0 * 1000), None)
    last = versions[-1] if versions else None
    fresh = tracker.summary()
    chance = chance_levels(stream.positives, stream.published - stream.bad) if stream else {}
    before_drift = None
    if drift_s is not None:
        idx = [i for i, v in enumerate(versions) if v.events < warmup + cfg.drift_at]
        before_drift = windowed[idx[-1]] if idx else None

    summary = {
        "interrupted": interrupted,
        "run": {
            "topic": svc.topic, "model": svc.model, "bootstrap": svc.bootstrap,
            "server": svc.server_url, "started": svc.started,
            "wall_s": round(time.time() - t_start, 1),
        },
        "config": {
            "duration_s": cfg.duration_s, "rate": cfg.rate, "parallelism": cfg.parallelism,
            "envelope_size": cfg.envelope_size, "sync_ms": cfg.sync_ms, "bits": cfg.bits,
            "bad_share": cfg.bad_share, "seed": cfg.seed,
        },
        "stream": {
            "warmup_events": warmup,
            "steady_events": steady,
            "events_published": stream.published if stream else 0,
            "malformed_events": stream.bad if stream else 0,
            "steady_seconds": round(elapsed, 2),
            "rate_target": cfg.rate,
            "rate_achieved": round(steady / elapsed, 1) if elapsed > 0 else None,
            "drift_at_event": cfg.drift_at,
            "drift_s": drift_s,
        },
        "training": {
            "versions_served": len(versions),
            "first_version": versions[0].version if versions else None,
            "last_version": last.version if last else None,
            "events_learned": last.events if last else 0,
            "learned_rate": (
                round((last.events - first_steady.events)
                      / max((last.seen_ms - first_steady.seen_ms) / 1000, 1e-9), 1)
                if last and first_steady and last.seen_ms > first_steady.seen_ms else None
            ),
            "rejected": int(last.metrics.get("rejected", 0)) if last else 0,
            "dlq_messages": dlq_messages,
        },
        "metrics": {
            "chance": chance,
            "final_cumulative": {k: v for k, v in (last.metrics if last else {}).items()
                                 if k != "rejected"},
            "final_window": windowed[-1] if windowed else {},
            "window_events": window,
            "after_warmup": (between(_row(versions[0]), _row(last))
                             if last and len(versions) > 1 else {}),
            "before_drift_window": before_drift,
        },
        "freshness": {
            **fresh,
            "definition": "Kafka log-append time of a message → first answer of the prediction "
                          "server by a version whose lineage offset for its partition is greater",
            "goals": GOALS_MS,
            "goals_met": (fresh["p50_ms"] is not None
                          and fresh["p50_ms"] <= GOALS_MS["p50_ms"]
                          and fresh["p99_ms"] <= GOALS_MS["p99_ms"]),
        },
    }
    times = [(v.seen_ms / 1000) - t0 for v in versions]
    cumulative = [{k: v for k, v in r["metrics"].items() if k != "rejected"} for r in rows]
    samples = list(tracker.samples)
    plots = draw_plots(
        report_dir, display,
        metrics=(times, windowed, cumulative) if versions else None,
        drift_s=drift_s, chance=chance,
        metrics_title=f"prequential metrics, {cfg.rate:,} events/s, {cfg.parallelism} learners",
        latencies_ms=[s.latency_ms for s in samples],
        sent_s=[s.t0_ms / 1000 - t0 for s in samples],
        fresh=fresh,
    )
    summary["plots"] = [p.name for p in plots]
    write_json(report_dir / "summary.json", summary)
    write_json(report_dir / "versions.json",
               [{**v.to_json(), "t_s": round(t, 3), "window": w}
                for v, t, w in zip(versions, times, windowed, strict=True)])
    write_json(report_dir / "timeline.json", [s.to_json() for s in (live.timeline if live else [])])
    write_json(report_dir / "freshness.json", {
        "summary": fresh,
        "samples": [[s.partition, s.offset, s.t0_ms, s.t1_ms, s.version] for s in samples],
        "columns": ["partition", "offset", "append_ms", "served_ms", "version"],
    })
    return summary, plots
