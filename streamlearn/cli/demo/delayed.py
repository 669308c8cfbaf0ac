"""``streamlearn demo --delayed-labels``: the loop with labels that come later.

serve → log → feedback → join → learn → serve, each part the real one:

1. :class:`Users` ask the prediction server for a prediction of each event
   (``delayed_clicks``: ``rate`` events a second, a request every 50 ms, each event
   with an ``id``); the server answers and logs what it served to
   ``<topic>.served`` (``streamlearn serve --log-topic``). Before the first model
   version exists the server cannot answer, so the users publish those
   impressions to ``<topic>.served`` themselves, as a system without a model would.
2. A clicked event's click arrives ``mean_delay_ms`` later on average (an
   exponential delay: some after the window) on ``<topic>.labels``, as
   ``{"id", "label": 1, "ts"}``; one click in fifty is sent twice.
3. The training job joins them (``[join]``: window ``window_ms``, unclicked
   impressions expire into 0) into ``<topic>``, learns each joined event once and
   commits versions, whose lineage counts every outcome of the join.
4. The server swaps each version in; the users' next predictions come from it.

At the end the run reads the logged predictions and the labels back and scores
what was *served* against the label each got (:func:`streamlearn.joining.delay_report`),
per version, and writes ``summary.json``.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamlearn.cli.demo.config import DemoConfig
from streamlearn.cli.demo.display import LiveDisplay
from streamlearn.cli.demo.report import write_json
from streamlearn.cli.demo.services import Services
from streamlearn.errors import ServiceError

__all__ = ["DelayedResult", "Users", "run_delayed"]

log = logging.getLogger(__name__)

_TICK_S = 0.05
#: events per prediction request at most (the server takes up to 10,000)
_MAX_REQUEST = 1000
#: how far out of event-time order the join takes records: the users' pacing jitter
DISORDER_MS = 500
#: a partition of the join's topics silent this long stops holding event time back
IDLE_MS = 2000
#: the job's checkpoints commit the joined events the learners read: a second of freshness
CHECKPOINT_MS = 1000
#: a share of clicks sent twice (the join's duplicates)
DOUBLE_CLICKS = 0.02


@dataclass
class DelayedResult:
    """Where the run's report is, and its summary."""

    report_dir: Path
    summary: dict
    interrupted: bool = False


class Users:
    """The users of the served system, on a thread: events asked for, clicks sent later.

    Parameters
    ----------
    server
        The prediction server's URL.
    bootstrap, served, labels
        The broker, the prediction log's topic, the labels' topic.
    rate
        Events a second.
    total
        Events the server serves before the users stop (those they logged themselves
        before the first version come on top; their clicks still come after).
    window_ms, mean_delay_ms
        The join's window and the mean click delay (clicks are sent until the last
        event's window has passed).
    seed
        The events' and the delays' seed.
    """

    def __init__(self, server: str, bootstrap: str, served: str, labels: str, *, rate: int,
                 total: int, window_ms: int, mean_delay_ms: int, seed: int = 0) -> None:
        from streamlearn.publish import Publisher

        self.server, self.rate, self.total = server, rate, total
        self.window_ms, self.mean_delay_ms, self.seed = window_ms, mean_delay_ms, seed
        # envelopes, sent every tick: the users keep up with thousands of events a second
        self._impressions = Publisher(bootstrap, served, envelope=True, envelope_size=500)
        self._labels = Publisher(bootstrap, labels, envelope=True, envelope_size=500)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-users", daemon=True)
        #: events served by the server (and logged by it), by the users themselves
        #: before any model was there, and clicks sent (double clicks included)
        self.served = self.self_logged = self.labels = self.doubles = 0
        #: the model version of the server's last answer
        self.version: int | None = None
        self.error: BaseException | None = None
        self.started_ms: int | None = None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def impressions(self) -> int:
        return self.served + self.self_logged

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def close(self) -> None:
        for publisher in (self._impressions, self._labels):
            publisher.close()

    def _run(self) -> None:
        import httpx

        from streamlearn.generators import delayed_clicks

        try:
            start = self.started_ms = int(time.time() * 1000)
            rng = np.random.default_rng(self.seed + 3)
            schedule = delayed_clicks(None, seed=self.seed, rate_per_s=self.rate,
                                      mean_delay_s=self.mean_delay_ms / 1000, start_ms=start)
            taken = 0  # the events shown so far: ids e0 .. e<taken - 1>, in schedule order
            # once the server has served `total`: clicks come until the last event's window
            # (and the join's disorder) has passed, and no more events are shown
            last_ms: int | None = None
            doubles: list[tuple[int, int, dict]] = []
            with httpx.Client(timeout=10.0) as client:
                pending: tuple[str, dict] | None = next(schedule)
                while not self._stop.is_set():
                    now = int(time.time() * 1000)
                    due: list[dict] = []
                    while pending is not None and pending[1]["ts"] <= now:
                        kind, event = pending
                        if kind == "label":
                            if _index(event["id"]) < taken:  # a click on an event shown
                                self._click(event, rng, doubles)
                        elif last_ms is None:
                            due.append(event)
                            taken += 1
                        pending = next(schedule)
                        if last_ms is not None and pending[1]["ts"] > last_ms:
                            pending = None
                    while doubles and doubles[0][0] <= now:
                        self._labels.publish(heapq.heappop(doubles)[2])
                        self.labels += 1
                    for i in range(0, len(due), _MAX_REQUEST):
                        self._serve(client, due[i:i + _MAX_REQUEST])
                    for publisher in (self._impressions, self._labels):
                        publisher.flush(30)
                    if last_ms is None and self.served >= self.total:
                        last_ms = now + self.window_ms + DISORDER_MS
                    if pending is None and not doubles:
                        break
                    time.sleep(_TICK_S)
        except BaseException as exc:  # reported by the run, which stops the services
            self.error = exc

    def _click(self, label: dict, rng: Any, doubles: list) -> None:
        self._labels.publish(label)
        self.labels += 1
        if rng.random() < DOUBLE_CLICKS:
            again = {**label, "label": 1, "ts": label["ts"] + int(rng.integers(1, 200))}
            heapq.heappush(doubles, (again["ts"], self.doubles, again))
            self.doubles += 1

    def _serve(self, client: Any, events: list[dict]) -> None:
        """Ask the server; without a model yet, log the impressions as a client would."""
        reply = client.post(f"{self.server}/v1/predict", json={"events": events})
        if reply.status_code == 200:
            self.served += len(events)
            self.version = reply.json().get("version", self.version)
            return
        if reply.status_code != 503:  # 503: no model version yet
            raise ServiceError(f"the prediction server answered {reply.status_code}: "
                               f"{reply.text[:300]}")
        for event in events:
            self._impressions.publish(event)
        self.self_logged += len(events)


def _index(event_id: str) -> int:
    """An event's place in :func:`~streamlearn.generators.clicks`'s stream (its id
    ``e<k>``)."""
    return int(event_id[1:])


def _counts(store: Any) -> tuple[int | None, int, dict[str, int]]:
    """The newest version, the events it reflects and the join's outcomes in its lineage."""
    from streamlearn.joining import lineage_counts

    latest = store.head().latest
    if latest is None:
        return None, 0, {}
    lineage = store.info(latest).lineage
    return latest, lineage.events, lineage_counts(lineage.metrics)


def _line(t_s: float, users: Users, version: int | None, events: int,
          counts: dict[str, int]) -> str:
    decided = sum(counts.get(k, 0) for k in ("joined", "expired", "dropped"))
    return (f"{t_s:5.0f} s  served {users.served:,} (v{users.version or '-'}), "
            f"self-logged {users.self_logged:,}, clicks {users.labels:,} | "
            f"v{version or '-'}: learned {events:,}: joined {counts.get('joined', 0):,}, "
            f"expired {counts.get('expired', 0):,}, late {counts.get('late', 0):,}, "
            f"duplicate {counts.get('duplicate', 0):,}; in a window "
            f"{max(users.impressions - decided, 0):,}")


def run_delayed(cfg: DemoConfig, display: LiveDisplay | None = None) -> DelayedResult:
    """Run the delayed-labels loop with ``cfg``; returns where the report is.

    Everything the run started is stopped before this returns, also when it
    fails or is interrupted.
    """
    from streamlearn.cli.demo.runner import run_places, wind_down
    from streamlearn.store import ModelStore

    display = display or LiveDisplay()
    report_dir, work_dir, topic = run_places(cfg)
    model = "demo"
    served, labels = f"{topic}.served", f"{topic}.labels"
    svc = Services(cfg, topic, model, work_dir, report_dir / "logs")
    users: Users | None = None
    interrupted = False
    lines: list[str] = []
    summary: dict[str, Any] = {}
    t_start = time.time()
    try:
        display.message("starting: Kafka broker (reused if running) ...")
        bootstrap = svc.ensure_broker()
        svc.create_topics({served: cfg.parallelism, labels: cfg.parallelism})
        display.message(f"broker {bootstrap}; topics {served} (what is served), {labels} "
                        f"(clicks), {topic} (joined, learned)")
        url = svc.start_server(log_topic=served)
        display.message(f"prediction server {url}, logging what it serves to {served}")
        join = {"impressions": served, "labels": labels, "window_ms": cfg.window_ms,
                "disorder_ms": DISORDER_MS, "idle_ms": IDLE_MS,
                "remember_ms": cfg.window_ms}
        svc.start_job([f"join.{k}={json.dumps(v)}" for k, v in join.items()]
                      + [f"job.checkpoint_ms={CHECKPOINT_MS}"])
        display.message(f"training job: joins clicks within {cfg.window_ms} ms of what was "
                        f"served (unclicked: 0), {cfg.parallelism} learners "
                        f"(log: {report_dir / 'logs' / 'job.log'})")
        users = Users(url, bootstrap, served, labels, rate=cfg.rate, total=cfg.total_events,
                      window_ms=cfg.window_ms, mean_delay_ms=cfg.mean_delay_ms, seed=cfg.seed)
        store = ModelStore(svc.store_uri, model)
        display.message(f"users: {cfg.rate:,} events/s, {cfg.total_events:,} served, clicks "
                        f"{cfg.mean_delay_ms} ms later on average (the job takes 10-30 s to "
                        "start: until its first version, the users log what they are shown)")
        users.start()
        try:
            while users.running:
                svc.check_alive()
                if not users.served and time.time() - t_start > cfg.warmup_timeout_s:
                    raise ServiceError(
                        f"no model version was served within {cfg.warmup_timeout_s:.0f} s of "
                        f"starting the training job; see {svc.log_dir / 'job.log'}")
                time.sleep(1.0)
                line = _line(time.time() - t_start, users, *_counts(store))
                lines.append(line)
                display.message(line)
            if users.error is not None:
                raise ServiceError(f"the demo's users failed: {users.error}")
            _settle(svc, store, users, cfg)
        except KeyboardInterrupt:
            interrupted = True
            users.stop()
            users.join(10)
            display.message("interrupted: stopping and writing the report ...")
        summary = _summary(cfg, svc, users, store, bootstrap, served, labels, interrupted,
                           t_start)
    finally:
        wind_down(svc, display, work_dir, users)
    write_json(report_dir / "summary.json", summary)
    (report_dir / "timeline.txt").write_text("\n".join(lines) + "\n")
    return DelayedResult(report_dir, summary, interrupted)


def _settle(svc: Services, store: Any, users: Users, cfg: DemoConfig) -> None:
    """Wait (a little) until the newest version counts what the stream lets the join
    decide: the job's versions lag a checkpoint and a sync behind the clicks."""
    deadline = time.monotonic() + 10.0 + 3 * cfg.sync_ms / 1000
    before: Any = None
    while time.monotonic() < deadline:
        svc.check_alive()
        now = _counts(store)
        if now == before and now[0] is not None:
            return
        before = now
        time.sleep(max(2 * CHECKPOINT_MS, cfg.sync_ms) / 1000)


def _summary(cfg: DemoConfig, svc: Services, users: Users, store: Any, bootstrap: str,
             served: str, labels: str, interrupted: bool, t_start: float) -> dict:
    """The run's figures: what the users did, what the newest version's lineage counts,
    and what was served scored against the labels that came (read back from Kafka)."""
    from streamlearn.cli.delays import read_topic
    from streamlearn.joining import delay_report

    version, events, counts = _counts(store)
    logged = [p for p in read_topic(bootstrap, served, 3.0, ("version", "probabilities"),
                                    10 * cfg.total_events + 1)]
    clicks = read_topic(bootstrap, labels, 3.0, ("label", "ts"), 10 * cfg.total_events + 1)
    report = delay_report(logged, clicks, window_ms=cfg.window_ms, default=0)
    decided = sum(counts.get(k, 0) for k in ("joined", "expired", "dropped"))
    return {
        "interrupted": interrupted,
        "run": {"topic": svc.topic, "model": svc.model, "bootstrap": bootstrap,
                "server": svc.server_url, "started": svc.started,
                "wall_s": round(time.time() - t_start, 1)},
        "config": {"duration_s": cfg.duration_s, "rate": cfg.rate,
                   "parallelism": cfg.parallelism, "window_ms": cfg.window_ms,
                   "mean_delay_ms": cfg.mean_delay_ms, "disorder_ms": DISORDER_MS,
                   "checkpoint_ms": CHECKPOINT_MS, "sync_ms": cfg.sync_ms, "seed": cfg.seed},
        "users": {"impressions": users.impressions, "served": users.served,
                  "self_logged": users.self_logged, "clicks": users.labels,
                  "double_clicks": users.doubles},
        "training": {"version": version, "events_learned": events, "join": counts,
                     "in_a_window": max(users.impressions - decided, 0)},
        "served_quality": {
            "by_version": {str(v): m for v, m in report["by_version"].items()},
            "delay_ms": report["delay_ms"],
            "positives_after_window": report["positives_after_window"],
            "predictions_logged": len(logged), "clicks_read": len(clicks),
        },
    }
