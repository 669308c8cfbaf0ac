"""The training job's delayed-label join on the real broker and the real job.

Impressions and labels with random delays (some after the window, some twice, some for ids
never served, some impressions served twice, some records malformed) go to two topics; the
job joins them (``[join]``), writes the joined events to its training topic in Kafka
transactions, learns them, and dead-letters every record it does not learn. After the
stream, the newest version's lineage counts every impression exactly once and every
outcome as the reference join (:func:`streamlearn.joining.join`, computed here on the same
records) counts it, the training topic holds each impression with the label the reference
gives it, and every other record is in the dead-letter topic with its reason. The same
after a ``kill -9`` of the job mid-stream and a restart.
"""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from connectors.kafka_io import consume, create_topics
from streamlearn.joining import OUTCOMES, join, lineage_counts
from streamlearn.store import ModelStore
from tests.conftest import free_port
from tests.test_train_cli import PROM, _scrape
from tests.test_train_job import (
    JOB,
    _config,
    _kill,
    _last_checkpoint_s,
    _start_job,
    _wait_for,
)

pytestmark = pytest.mark.integration

WINDOW_MS, REMEMBER_MS, DISORDER_MS = 400, 400, 100
#: event time starts 10 minutes ago (Kafka refuses record times far in the future)
BASE_MS = int(time.time() * 1000) - 600_000
PARTITIONS = 2
#: malformed records, each with the dead-letter code the join gives it
BAD = [(b"{not json", "join.not_json"), (b'{"ts": 5, "label": 1}', "join.id_missing"),
       (b'{"id": "q", "ts": "soon"}', "join.ts_missing")]


def _streams(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Impressions a few ms apart; half clicked after an exponential delay (mean 150 ms, so
    a few after the 400 ms window), 5% of those twice; 1% labels of ids never served and 1%
    of impressions served twice. Each list in its event-time order."""
    rng = random.Random(seed)
    impressions, labels, ts = [], [], BASE_MS
    for i in range(n):
        ts += rng.randint(0, 3)
        event = {"id": f"e{i}", "ts": ts,
                 "features": {"x": round(rng.random(), 3), "ad": f"a{rng.randint(0, 9)}"}}
        impressions.append(event)
        if rng.random() < 0.01:
            impressions.append({**event, "ts": ts + 1})
        if rng.random() < 0.5:
            delay = int(rng.expovariate(1 / 150))
            labels.append({"id": event["id"], "label": 1, "ts": ts + delay})
            if rng.random() < 0.05:
                labels.append({"id": event["id"], "label": 0, "ts": ts + delay + 20})
        if rng.random() < 0.01:
            labels.append({"id": f"ghost{i}", "label": 1, "ts": ts})
    labels.sort(key=lambda r: r["ts"])  # stable: an id's labels keep their order
    return impressions, labels


def _publish(bootstrap: str, topic: str, records: list[dict], bad: bool = False) -> None:
    """Each record keyed by its id (an id's records in one partition, in order)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for rec in records:
        producer.send(topic, orjson.dumps(rec), key=str(rec["id"]).encode())
    if bad:
        for raw, _ in BAD:
            producer.send(topic, raw, partition=0)
    producer.flush()
    producer.close()


def _tick(bootstrap: str, impressions: str, labels: str, after_ms: int) -> None:
    """A record far enough in event time on every partition of both topics that the
    watermark passes every real record's window and memory (the tick's own ids stay
    undecided: their time never passes)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    at = after_ms + WINDOW_MS + REMEMBER_MS + DISORDER_MS + 10
    for p in range(PARTITIONS):
        producer.send(impressions, orjson.dumps({"id": f"tick{p}", "ts": at,
                                                 "features": {"x": 1}}), partition=p)
        producer.send(labels, orjson.dumps({"id": f"tick{p}", "label": 1, "ts": at}),
                      partition=p)
    producer.flush()
    producer.close()


def _join_counts(text: str) -> dict[str, int]:
    """The join's counters in a Prometheus scrape, summed over the subtasks."""
    out: dict[str, int] = {}
    for name, value in re.findall(r"^flink_\w+_join_(\w+)\{[^}]*\} (\S+)$", text, re.M):
        if name in OUTCOMES:
            out[name] = out.get(name, 0) + int(float(value))
    return out


def _join_args(tmp_path: Path, bootstrap: str, topic: str, keep: str = "first",
               **job) -> list[str]:
    args = _config(tmp_path, bootstrap, topic, parallelism=2, checkpoint_ms=1000,
                   flush_ms=50, sync_ms=200, **job)
    for key, value in {"impressions": f"{topic}.impressions", "labels": f"{topic}.labels",
                       "window_ms": WINDOW_MS, "remember_ms": REMEMBER_MS,
                       "disorder_ms": DISORDER_MS, "idle_ms": 60_000, "keep": keep}.items():
        args += ["--set", f"join.{key}={json.dumps(value)}"]
    return args + ["--set", "store.keep_versions=0"]


def _expected(impressions: list[dict], labels: list[dict], keep: str = "first"):
    return join(impressions, labels, window_ms=WINDOW_MS, default=0, remember_ms=REMEMBER_MS,
                keep=keep)


def _counted(store: ModelStore) -> dict[str, int]:
    """The join's outcomes the newest version's lineage reflects."""
    return lineage_counts(store.get().lineage.metrics) if store.head().latest else {}


def _outcomes(reference) -> dict[str, int]:
    """Every outcome the job counts for the records published: the reference's, and the
    malformed records of both topics."""
    return {**reference.counts(), "bad": 2 * len(BAD)}


def _check(bootstrap: str, topic: str, store: ModelStore, impressions, labels,
           keep: str = "first") -> None:
    """The job's outcome against the reference's on the same records."""
    want = _expected(impressions, labels, keep)
    # the training topic: the joined events, and an empty tally record per other outcome
    records = list(consume(bootstrap, topic, idle_timeout_s=3, read_committed=True))
    learned = [orjson.loads(r.value) for r in records if r.value]
    assert len(records) - len(learned) == sum(_outcomes(want).values()) - len(want.learned)
    ids = Counter(e["id"] for e in learned)
    assert max(ids.values()) == 1, "an impression learned twice"
    assert {e["id"]: e["label"] for e in learned} == {
        e["id"]: e["label"] for e, _ in want.learned
    }, "each impression once, with the reference's label"
    assert store.get().lineage.events == len(want.learned)
    assert _counted(store) == _outcomes(want), "every outcome once in the lineage"

    dead = [orjson.loads(r.value) for r in consume(bootstrap, f"{topic}.dlq", idle_timeout_s=3,
                                                   read_committed=True)]
    assert {d["stage"] for d in dead} == {"join"}
    got, bad = Counter(), Counter()
    for d in dead:
        if d["code"] in {code for _, code in BAD}:
            bad[d["code"]] += 1
            continue
        rec = json.loads(base64.b64decode(d["value_b64"]))
        got[(rec["id"], rec["ts"], d["code"])] += 1
        assert rec["id"] in d["reason"], d
    assert bad == Counter({code: 2 for _, code in BAD}), "each malformed record, from both topics"
    assert got == Counter((r["id"], r["ts"], f"join.{why}") for r, why in want.rejected)
    counts = want.counts()
    assert min(counts[k] for k in ("joined", "expired", "duplicate", "late", "unmatched",
                                   "impression_duplicate")) > 0, counts
    print(f"\njoin outcomes: {counts}")


def test_the_job_joins_delayed_labels_and_learns_each_impression_once(
    kafka_broker, topic_name, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    impressions, labels = _streams(4_000, seed=5)
    create_topics(bootstrap, {f"{topic_name}.impressions": PARTITIONS,
                              f"{topic_name}.labels": PARTITIONS})
    _publish(bootstrap, f"{topic_name}.impressions", impressions, bad=True)
    _publish(bootstrap, f"{topic_name}.labels", labels, bad=True)
    _tick(bootstrap, f"{topic_name}.impressions", f"{topic_name}.labels",
          max(r["ts"] for r in impressions + labels))
    store = ModelStore(str(tmp_path / "models"), "clicks")
    reference = _expected(impressions, labels)
    port = free_port()
    args = _join_args(tmp_path, bootstrap, topic_name, writer_id="train-clicks-join1")
    metrics = ["--flink-conf", f"metrics.reporter.prom.factory.class={PROM}",
               "--flink-conf", f"metrics.reporter.prom.port={port}"]
    job = _start_job(args + metrics, tmp_path / "run.log")
    try:
        counts = _outcomes(reference)
        _wait_for(lambda: _counted(store) == counts, job, tmp_path / "run.log", 180,
                  "every outcome in the lineage")
        time.sleep(2.5)  # more checkpoints and versions: nothing more may come
        # every outcome counted in the job's metrics too
        _wait_for(lambda: _join_counts(_scrape(port)) == counts, job, tmp_path / "run.log", 30,
                  f"the join's counters at {counts}")
    finally:
        _kill(job)
    _check(bootstrap, topic_name, store, impressions, labels)

    # started again without its checkpoint: refused in one line, nothing joined twice
    again = subprocess.run([sys.executable, str(JOB), *args, "--resume", "none"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1, again.stderr[-2000:]
    assert "field `--resume`: expected a checkpoint of the join" in again.stderr
    _check(bootstrap, topic_name, store, impressions, labels)


@pytest.mark.slow
def test_kill_minus_9_mid_stream_and_resume_joins_and_learns_nothing_twice(
    kafka_broker, topic_name, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    impressions, labels = _streams(6_000, seed=6)
    imp_topic, lab_topic = f"{topic_name}.impressions", f"{topic_name}.labels"
    create_topics(bootstrap, {imp_topic: PARTITIONS, lab_topic: PARTITIONS})
    half = impressions[len(impressions) // 2]["ts"]
    _publish(bootstrap, imp_topic, [r for r in impressions if r["ts"] < half], bad=True)
    _publish(bootstrap, lab_topic, [r for r in labels if r["ts"] < half], bad=True)
    store = ModelStore(str(tmp_path / "models"), "clicks")
    checkpoints = tmp_path / "checkpoints" / "clicks"
    # the window's last label (join.keep = "last"): its slots hold a kept label across
    # the checkpoint the restart resumes from
    args = _join_args(tmp_path, bootstrap, topic_name, keep="last",
                      writer_id="train-clicks-join9")
    job = _start_job(args, tmp_path / "run1.log")
    try:
        _wait_for(lambda: store.head().latest and len(list(checkpoints.glob("*/chk-*/_metadata")))
                  >= 2, job, tmp_path / "run1.log", 180, "no version and checkpoints")
        # more of the stream while the job runs, then kill -9 between checkpoints
        _publish(bootstrap, imp_topic, [r for r in impressions if half <= r["ts"] < half + 2000])
        _publish(bootstrap, lab_topic, [r for r in labels if half <= r["ts"] < half + 2000])
        mark = _last_checkpoint_s(checkpoints)
        _wait_for(lambda: _last_checkpoint_s(checkpoints) > mark, job, tmp_path / "run1.log",
                  30, "a checkpoint after the second part")
        time.sleep(0.5)
    finally:
        _kill(job)
    before = store.get().lineage.events
    assert 0 < before < len(_expected(impressions, labels, "last").learned), "killed mid-stream"

    _publish(bootstrap, imp_topic, [r for r in impressions if r["ts"] >= half + 2000])
    _publish(bootstrap, lab_topic, [r for r in labels if r["ts"] >= half + 2000])
    _tick(bootstrap, imp_topic, lab_topic, max(r["ts"] for r in impressions + labels))
    want = _outcomes(_expected(impressions, labels, "last"))
    job = _start_job([*args, "--resume", "auto"], tmp_path / "run2.log")
    try:
        _wait_for(lambda: _counted(store) == want, job, tmp_path / "run2.log", 180,
                  "every outcome in the lineage after the restart")
        time.sleep(2.5)
    finally:
        _kill(job)
    assert "resuming from checkpoint" in (tmp_path / "run2.log").read_text()
    _check(bootstrap, topic_name, store, impressions, labels, keep="last")


def test_train_checks_the_join_topics_not_the_one_the_job_writes(kafka_broker, topic_name):
    from streamlearn.cli.train_foreground import preflight
    from streamlearn.errors import ConfigError
    from streamlearn.training.config import TrainConfig

    cfg = TrainConfig.from_dict({
        "kafka": {"bootstrap": kafka_broker.bootstrap, "topic": f"{topic_name}.joined"},
        "join": {"impressions": f"{topic_name}.impressions", "labels": f"{topic_name}.labels"},
    })
    with pytest.raises(ConfigError, match="`join.impressions`"):
        preflight(cfg)
    create_topics(kafka_broker.bootstrap, {f"{topic_name}.impressions": 1})
    with pytest.raises(ConfigError, match="`join.labels`"):
        preflight(cfg)
    create_topics(kafka_broker.bootstrap, {f"{topic_name}.labels": 1})
    preflight(cfg)  # the training topic is the job's to create
