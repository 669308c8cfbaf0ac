"""The scoring job on the real broker and Flink: one record per event, versions swapped live."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.kafka_io import KeyedProducer, consume_all, create_topics
from streamlearn.cli import main as cli_main
from streamlearn.learners import FMClassifier, LinearRegression, LogisticRegression
from streamlearn.state import ModelState
from streamlearn.store import Lineage, ModelStore

pytestmark = pytest.mark.integration

MODEL = "m"
VERSIONS = 3


def constant_model(value: float) -> ModelState:
    """A regressor whose every prediction is ``value``: the output shows which version scored."""
    state = LinearRegression(bits=6).state()
    state.arrays["intercept"][:] = value
    return state


class Tail:
    """Reads a topic from the beginning, record by record, for as long as the test needs."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None,
        )
        self.rows: list[dict] = []

    def poll(self) -> list[dict]:
        for batch in self.consumer.poll(timeout_ms=200).values():
            self.rows.extend(orjson.loads(m.value) for m in batch)
        return self.rows

    def close(self) -> None:
        self.consumer.close()


class Waves:
    """Sends numbered events: single events, envelopes, and a bad message in each wave."""

    def __init__(self, producer: KeyedProducer) -> None:
        self.producer = producer
        self.good: list[str] = []
        self.bad = 0

    def send(self, size: int = 20) -> None:
        start = len(self.good)
        ids = [f"e{start + i}" for i in range(size)]
        half = size // 2
        for n, eid in enumerate(ids[:half]):  # single events, some keyed by Kafka only
            event = {"features": {"x": n, "c": "abc"[n % 3]}, "id": eid}
            if n % 2:
                event["key"] = f"user-{n}"
            self.producer.send(event, key=f"k{n % 5}")
        envelope = [{"features": {"x": 1}, "id": eid, "label": 0.5} for eid in ids[half:]]
        envelope.insert(1, {"features": {"x": "ok"}, "id": "bad", "extra": 1})  # bad event
        self.producer.send({"events": envelope}, key="envelopes")
        self.producer.send(b"{not json", key="junk")  # bad message
        self.producer.flush()
        self.good.extend(ids)
        self.bad += 2


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def test_minicluster_job_scores_every_event_once_and_follows_new_versions(
    kafka_broker, topic_name, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    source, sink = f"{topic_name}-events", f"{topic_name}-predictions"
    dlq = f"{source}.dlq"
    create_topics(bootstrap, {source: 2, sink: 2, dlq: 1})
    store = ModelStore(str(tmp_path / "models"), MODEL)
    store.commit(constant_model(1.0), Lineage())
    command = [
        sys.executable, "-c", "import sys; from streamlearn.cli import main; sys.exit(main())",
        "score", "--bootstrap", bootstrap, "--source", source, "--sink", sink,
        "--store", str(tmp_path / "models"), "--model", MODEL, "--parallelism", "2",
        "--wait-s", "30",
    ]
    log = (tmp_path / "job.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tail = Tail(bootstrap, sink)
    try:
        with KeyedProducer(bootstrap, source) as producer:
            waves = Waves(producer)
            for version in range(1, VERSIONS + 1):
                if version > 1:
                    assert store.commit(constant_model(float(version)), Lineage()) == version
                deadline = time.monotonic() + 90
                # keep events coming until this version shows up in the output
                while not any(r["version"] == version for r in tail.poll()):
                    assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"version {version} never scored"
                    waves.send()
                    time.sleep(0.2)
        deadline = time.monotonic() + 60
        while len(tail.poll()) < len(waves.good) and time.monotonic() < deadline:
            pass
        assert proc.poll() is None, "bad events never stop the job"
        rows = tail.poll()
    finally:
        tail.close()
        _stop(proc)
        log.close()

    assert sorted(r["id"] for r in rows) == sorted(waves.good), "every event exactly once"
    assert all(r["prediction"] == float(r["version"]) for r in rows), "the version's own model"
    assert {r["version"] for r in rows} == set(range(1, VERSIONS + 1))
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    per_message: dict[tuple[int, int], set[int]] = defaultdict(set)
    for r in rows:
        by_partition[r["partition"]].append((r["offset"], r["version"]))
        per_message[(r["partition"], r["offset"])].add(r["version"])
    for seen in by_partition.values():  # swaps only go forward within a partition
        versions = [v for _, v in sorted(seen)]
        assert versions == sorted(versions)
    assert all(len(v) == 1 for v in per_message.values()), "one message, one version"
    envelope_rows = [r for r in rows if "label" in r]
    assert envelope_rows and {r["index"] for r in envelope_rows} >= {0, 2}  # index 1 was bad
    keyed = {r["id"]: r.get("key") for r in rows}
    assert keyed["e1"] == "user-1" and keyed["e0"] == "k0"  # event key, else the Kafka key

    letters = [orjson.loads(r.value) for r in consume_all(bootstrap, dlq, waves.bad, 30)]
    assert len(letters) == waves.bad
    assert sorted({(d["field"], d["index"]) for d in letters}) == [("extra", 1),
                                                                   ("message", None)]
    assert all(d["topic"] == source and d["stage"] == "score" for d in letters)


@pytest.mark.parametrize("learner", ["logistic", pytest.param("fm", marks=pytest.mark.slow)])
def test_cli_submits_a_bounded_classifier_job_to_a_standalone_cluster(
    kafka_broker, flink_cluster, topic_name, tmp_path: Path, learner: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    source, sink, dlq = f"{topic_name}-events", f"{topic_name}-scores", f"{topic_name}-bad"
    create_topics(bootstrap, {source: 2, sink: 1, dlq: 1})
    events = [{"age": float(i % 9), "country": ["FR", "DE", "JP"][i % 3]} for i in range(300)]
    model = LogisticRegression(bits=10) if learner == "logistic" else FMClassifier(
        k=4, bits=10, init_std=0.1
    )
    model.learn_many(events, [(e["age"] > 4) != (e["country"] == "FR") for e in events])
    ModelStore(str(tmp_path / "models"), MODEL).commit(model.state(), Lineage(events=300))
    with KeyedProducer(bootstrap, source) as producer:
        for i in range(0, 300, 30):
            producer.send({"events": [{"features": f, "id": i + j}
                                      for j, f in enumerate(events[i : i + 30])]})
        producer.send({"features": {"age": 1.0}, "label": "maybe", "id": "bad"})

    code = cli_main([
        "score", "--bootstrap", bootstrap, "--source", source, "--sink", sink, "--dlq", dlq,
        "--store", str(tmp_path / "models"), "--model", MODEL, "--bounded",
        "--cluster", flink_cluster.address,
    ])
    assert code == 0
    rows = [orjson.loads(r.value) for r in consume_all(bootstrap, sink, 300, timeout_s=60)]
    assert sorted(r["id"] for r in rows) == list(range(300))
    rows.sort(key=lambda r: r["id"])
    expected = np.asarray(model.predict_proba_many(events))
    expected = expected[:, -1] if expected.ndim == 2 else expected
    np.testing.assert_allclose([r["probabilities"][1] for r in rows], expected, rtol=1e-9)
    assert all(r["classes"] == [False, True] and r["version"] == 1 for r in rows)
    (letter,) = [orjson.loads(r.value) for r in consume_all(bootstrap, dlq, 1, timeout_s=30)]
    assert letter["field"] == "label" and "maybe" in letter["reason"]
    assert any(j["name"] == "streamlearn-score" and j["state"] == "FINISHED"
               for j in flink_cluster.jobs())
