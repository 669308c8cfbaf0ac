"""``streamlearn train`` in the foreground: the job as a child, one line per version.

The job (``flink_jobs/train.py``, the local Flink MiniCluster) runs as a child
process in a session of its own, its output going to a log file (and to the
terminal too with ``-v``). This process holds the model's writer lease until the
job's merger takes it over (:mod:`streamlearn.training.writer`), follows the
model store and prints one line per new version, and:

- on Ctrl-C (or SIGTERM, SIGHUP) stops the job, releases the writer lease and
  says in one line where the next start resumes;
- when another writer takes the model over (this job is fenced out, and would
  only restart to be refused again), stops the job and says who took over;
- when the job fails, says why in one line (:func:`~streamlearn.training.failures.diagnose`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from streamlearn.errors import ConfigError, ServiceError, StreamlearnError, VersionNotFound
from streamlearn.joining import METRIC_PREFIX
from streamlearn.training.config import TrainConfig
from streamlearn.training.workers import LOAD_PREFIX, START_PREFIX, UNBALANCED

__all__ = ["preflight", "run_foreground", "version_line", "Follower"]

#: how often the store's HEAD is read for new versions, and the writer lease checked
POLL_S = 0.25
WRITER_EVERY_S = 1.0
STOP_TIMEOUT_S = 20.0

_METRIC_NAMES = {"Accuracy": "accuracy", "LogLoss": "log-loss", "MAE": "mae", "RMSE": "rmse"}


def preflight(cfg: TrainConfig) -> None:
    """What would fail in the JVM after seconds, refused here at once in one line:
    no broker at ``kafka.bootstrap``, a ``kafka.topic`` that does not exist (with a join:
    an impressions or labels topic; the job creates ``kafka.topic``, which it writes)."""
    from connectors.kafka_io import check_reachable, list_topics

    check_reachable(cfg.kafka.bootstrap)
    topics = list_topics(cfg.kafka.bootstrap)
    wanted = (
        {"join.impressions": cfg.join.impressions, "join.labels": cfg.join.labels}
        if cfg.join.on else {"kafka.topic": cfg.kafka.topic}
    )
    for key, topic in wanted.items():
        if topic not in topics:
            there = ", ".join(t for t in topics if not t.endswith((".dlq", ".models"))) or "none"
            raise ConfigError(
                key,
                f"a topic that exists on {cfg.kafka.bootstrap} (there: {there}; create it with "
                f"`streamlearn topics create {topic}`)",
                repr(topic),
            )


def _count(n: float) -> str:
    return f"{int(round(n)):,}"


def version_line(
    info: Any, prev: Any = None, lag: int | None = None, newest_age_s: float | None = None
) -> str:
    """One line for a committed version (``info`` a ``VersionInfo``).

    >>> from streamlearn.store import Lineage
    >>> from streamlearn.store.records import VersionInfo
    >>> a = VersionInfo("m", 4, Lineage(events=10_000, created_at=100.0))
    >>> b = VersionInfo("m", 5, Lineage(events=19_500, created_at=101.0,
    ...                 metrics={"Accuracy": 0.8125, "LogLoss": 0.4012, "rejected": 3.0}))
    >>> version_line(b, a, lag=1200, newest_age_s=0.84)
    'version 5: 19,500 events, 9,500 events/s, lag 1,200 messages, accuracy 0.8125, \
log-loss 0.4012, rejected 3, newest event 0.8 s old'

    A job that joins delayed labels counts the join's outcomes (those that happened):

    >>> c = VersionInfo("m", 6, Lineage(events=20, metrics={"join.joined": 8.0,
    ...                 "join.expired": 12.0, "join.dropped": 0.0, "join.late": 2.0}))
    >>> version_line(c)
    'version 6: 20 events, join: joined 8; expired 12; late 2'

    The learners' loads (``learned.<learner>``) show only when one has learned 1.5
    times their mean or more (a hot partition):

    >>> d = VersionInfo("m", 7, Lineage(events=40, metrics={"learned.learner-0": 30.0,
    ...                 "learned.learner-1": 10.0}))
    >>> version_line(d)
    'version 7: 40 events, busiest learner 1.5 times the mean (learner-0)'
    """
    lin = info.lineage
    parts = [f"version {info.version}: {_count(lin.events)} events"]
    if prev is not None and lin.created_at and prev.lineage.created_at:
        dt = lin.created_at - prev.lineage.created_at
        if dt > 0:
            parts.append(f"{_count((lin.events - prev.lineage.events) / dt)} events/s")
    if lag is not None:
        parts.append(f"lag {_count(lag)} messages")
    metrics = dict(lin.metrics)
    rejected = metrics.pop("rejected", None)
    join = {name.removeprefix(METRIC_PREFIX): metrics.pop(name) for name in list(metrics)
            if name.startswith(METRIC_PREFIX)}
    loads = {name.removeprefix(LOAD_PREFIX): metrics.pop(name) for name in list(metrics)
             if name.startswith(LOAD_PREFIX)}
    for name in [name for name in metrics if name.startswith(START_PREFIX)]:
        del metrics[name]  # where each learner started (a warm-up's check): not a metric
    for name, value in metrics.items():
        parts.append(f"{_METRIC_NAMES.get(name, name)} {value:.4f}")
    if rejected:
        parts.append(f"rejected {_count(rejected)}")
    if any(join.values()):
        parts.append("join: " + "; ".join(f"{k} {_count(v)}" for k, v in join.items() if v))
    if len(loads) >= 2 and sum(loads.values()):
        busiest = max(loads, key=lambda who: loads[who])
        over = loads[busiest] / (sum(loads.values()) / len(loads))
        if over >= UNBALANCED:
            parts.append(f"busiest learner {over:.1f} times the mean ({busiest})")
    if newest_age_s is not None:
        parts.append(f"newest event {max(0.0, newest_age_s):.1f} s old")
    return ", ".join(parts)


class Follower:
    """Reads the topic's end offsets (for the lag) and the Kafka timestamp of the newest
    event a version reflects (the message just before its offset in each partition)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=64 * 1024,
            fetch_max_wait_ms=50,
            request_timeout_ms=5000,
        )
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(self.tps)

    def lag(self, offsets: dict[int, int]) -> int:
        ends = self.consumer.end_offsets(self.tps)
        return sum(max(0, ends[tp] - offsets.get(tp.partition, 0)) for tp in self.tps)

    def newest_event_ms(self, offsets: dict[int, int], timeout_s: float = 1.0) -> int | None:
        wanted = {}
        for tp in self.tps:
            end = offsets.get(tp.partition, 0)
            if end > 0:
                wanted[tp] = end - 1
                self.consumer.seek(tp, end - 1)
        self.consumer.resume(*self.tps)
        self.consumer.pause(*[tp for tp in self.tps if tp not in wanted])
        found: dict[Any, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for tp, records in self.consumer.poll(timeout_ms=100).items():
                for record in records:
                    if tp in wanted and tp not in found and record.offset >= wanted[tp]:
                        found[tp] = record.timestamp
                        self.consumer.pause(tp)
        return max(found.values()) if found else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


class _Output(threading.Thread):
    """Copies the job's output to its log file (and the terminal with ``-v``),
    keeping the last lines for :func:`diagnose`."""

    def __init__(self, stream: IO[bytes], log_path: Path, echo: IO[str] | None) -> None:
        super().__init__(daemon=True, name="train-job-output")
        self.stream, self.log_path, self.echo = stream, log_path, echo
        self.tail: collections.deque[str] = collections.deque(maxlen=3000)

    def run(self) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                log.write(line)
                log.flush()
                self.tail.append(line)
                if self.echo is not None:
                    self.echo.write(line)
                    self.echo.flush()

    def text(self) -> str:
        return "".join(self.tail)


class _Stop(Exception):
    """SIGTERM or SIGHUP: stop as on Ctrl-C."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def _stop_job(proc: subprocess.Popen) -> None:
    """SIGTERM to the job's whole session (its Python, the MiniCluster's JVM), then
    SIGKILL if it has not ended in :data:`STOP_TIMEOUT_S`; whatever of the session
    outlives its leader (a JVM) gets SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_foreground(
    cfg: TrainConfig,
    job_argv: list[str],
    resume: str,
    *,
    verbose: bool = False,
    out: IO[str] | None = None,
    log_dir: Path | None = None,
) -> int:
    """Run the training job as a child, following it; returns the exit code.

    ``job_argv`` is the job file and its flags (``job.writer_id`` among them).
    Raises :class:`~streamlearn.errors.StreamlearnError` (one line) when the job
    cannot start or fails.
    """
    from connectors.local_logs import KEEP_STARTS, prune_starts, route_minicluster_log, start_stamp
    from connectors.paths import state_dir
    from streamlearn.store import ModelStore
    from streamlearn.training.checkpoints import latest_checkpoint, resolve_recovery
    from streamlearn.training.writer import HandOver

    out = out or sys.stdout
    if not verbose:  # the first line and the last say what the store's INFO lines would
        logging.getLogger("streamlearn.store").setLevel(logging.WARNING)
    recovery = resolve_recovery(cfg, resume)  # a bad --resume fails before anything starts
    preflight(cfg)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    holder = HandOver(store, cfg.job.writer_id, cfg.job.lease_ms)  # WriterBusy: one line
    log_dir = log_dir or state_dir("logs")
    prune_starts(log_dir, f"train-{cfg.store.model}-", KEEP_STARTS - 1)  # bounded disk
    stamp = start_stamp()  # this start's name, on its two files (ours, the MiniCluster's)
    log_path = log_dir / f"train-{cfg.store.model}-{stamp}.log"
    start_version = store.head().latest
    where = f"checkpoint {recovery}" if recovery else (
        f"version {start_version}" if start_version else f"{cfg.kafka.start} offsets"
    )
    joined = (f" (joined there from {cfg.join.impressions!r} and {cfg.join.labels!r})"
              if cfg.join.on else "")
    print(
        f"training model {cfg.store.model!r} from topic {cfg.kafka.topic!r}{joined} "
        f"(writer {cfg.job.writer_id}, from {where}); the job's log: {log_path}; "
        "Ctrl-C stops it",
        file=out, flush=True,
    )
    env = {**os.environ, "STREAMLEARN_TRAIN_PARENT": str(os.getpid())}
    route_minicluster_log(f"train-{cfg.store.model}", env, stamp)  # the MiniCluster's own log
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C stops the job cleanly, also where SIGINT was inherited ignored (a script's `&`)
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(
        [sys.executable, *job_argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    assert proc.stdout is not None  # stdout=PIPE
    output = _Output(proc.stdout, log_path, sys.stderr if verbose else None)
    output.start()
    follower: Follower | None = None
    shown = start_version or 0
    prev = None
    next_writer_check = 0.0
    try:
        while True:
            rc = proc.poll()
            shown, prev, follower = _show_new(store, cfg, shown, prev, follower, out)
            if rc is not None:
                output.join(timeout=10)
                if rc == 0:
                    latest = store.head().latest
                    print(f"finished at version {latest} (the bounded input is learned)",
                          file=out, flush=True)
                    return 0
                from streamlearn.training.failures import diagnose

                cause = diagnose(
                    output.text(), topic=cfg.kafka.topic, bootstrap=cfg.kafka.bootstrap
                )
                # the job's whole session is gone, so no process of this writer id can
                # commit any more: give the lease up rather than make a retry wait for it
                _stop_job(proc)
                holder.stop()
                _release(store, cfg)
                hint = "" if verbose else "; `streamlearn -v train ...` shows it"
                raise ServiceError(f"{cause} (the job's log: {log_path}{hint})")
            if time.monotonic() >= next_writer_check:
                next_writer_check = time.monotonic() + WRITER_EVERY_S
                with contextlib.suppress(OSError, StreamlearnError):
                    holder.poll()
                if holder.state == "taken":
                    _stop_job(proc)
                    other = holder.taken_by
                    raise ServiceError(
                        f"stopped the job: model {cfg.store.model!r} was taken over by writer "
                        f"{other.describe() if other else '?'}; this job's commits are "
                        "refused (fenced out), so it would only restart to be refused again"
                    )
            time.sleep(POLL_S)
    except (KeyboardInterrupt, _Stop):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback either
        _stop_job(proc)
        # a version committed since the last look (the job ran until now) gets its line
        # (without Kafka's lag and age: the follower may be what was interrupted)
        with contextlib.suppress(Exception):
            shown, prev, _ = _show_new(store, cfg, shown, prev, None, out, kafka=False)
        holder.stop()
        _release(store, cfg)
        latest = store.head().latest
        checkpoint = latest_checkpoint(cfg)
        then = (
            f"resumes from checkpoint {checkpoint}" if checkpoint
            else f"resumes from version {latest}'s offsets" if latest
            else "starts afresh"
        )
        print(f"stopped at version {latest}; {then} at the next `streamlearn train` "
              f"of model {cfg.store.model!r}", file=out, flush=True)
        return 130
    finally:
        _stop_job(proc)
        if follower is not None:
            follower.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _release(store: Any, cfg: TrainConfig) -> None:
    """Release the model's writer lease on a clean stop (the job is dead by now): take
    it again under this start's writer id, which fences the dead merger's, and give it
    up, so the next trainer need not wait for the lease to expire."""
    from streamlearn.store.lease import WriterBusy

    with contextlib.suppress(WriterBusy, OSError, StreamlearnError):
        store.acquire_writer(cfg.job.writer_id, cfg.job.lease_ms).release()


def _show_new(
    store: Any, cfg: TrainConfig, shown: int, prev: Any, follower: Any, out: IO[str],
    kafka: bool = True,
) -> tuple[int, Any, Any]:
    """Print a line for each version committed since ``shown`` (the newest one's
    with the topic's lag and the age of its newest event, unless ``kafka`` is off)."""
    try:
        latest = store.head().latest or 0
    except (OSError, StreamlearnError):
        return shown, prev, follower
    for version in range(shown + 1, latest + 1):
        try:
            info = store.info(version)
        except (VersionNotFound, OSError):
            if version == latest:  # not readable yet: the next look shows it
                return shown, prev, follower
            continue  # an older one retention deleted meanwhile
        shown = version
        if info.kind == "fenced":
            continue
        if info.kind == "compact":  # the same model stored whole: no events, no new metrics
            print(f"version {version}: version {info.parent} stored whole (a compaction)",
                  file=out, flush=True)
            continue
        offsets = {int(p): int(o) for p, o in info.lineage.offsets.get(cfg.kafka.topic, {}).items()}
        lag = age = None
        try:
            if kafka and follower is None:
                follower = Follower(cfg.kafka.bootstrap, cfg.kafka.topic)
            if kafka and version == latest:  # only the newest: older ones are history by now
                lag = follower.lag(offsets)
                newest = follower.newest_event_ms(offsets)
                age = None if newest is None else time.time() - newest / 1000
        except Exception:  # Kafka away: the line goes out without lag and age
            follower = None
        print(version_line(info, prev, lag, age), file=out, flush=True)
        prev = info
    return max(shown, latest), prev, follower
