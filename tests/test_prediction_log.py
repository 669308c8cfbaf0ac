"""The prediction log: what the server answered for events with an ``id``, sent off the
request path; on the real broker through ``streamlearn serve --log-topic``, and with the
broker away (requests answered at once, the loss counted)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.kafka_io import consume_all, create_topics
from streamlearn.errors import ConfigError
from streamlearn.serving.prediction_log import PredictionLog
from streamlearn.store import Lineage, ModelStore
from tests.models import constant_model
from tests.test_serving_app import call, make_app
from tests.test_serving_cli import free_port, start, stop, wait_ready


def test_a_blocked_sink_never_blocks_an_offer_and_what_overflows_is_counted() -> None:
    release, sent = threading.Event(), []

    def slow(batch: list) -> None:
        release.wait(10)
        sent.extend(batch)

    log = PredictionLog(slow, capacity=5, batch_size=2, linger_s=0.0)
    start_s = time.perf_counter()
    taken = [log.offer([(b"k", b"%d" % i)]) for i in range(9)]
    assert time.perf_counter() - start_s < 0.5, "an offer waited for the sink"
    # the thread holds at most one batch of 2 while blocked; 5 more wait; the rest drop
    assert sum(taken) in (5, 6, 7) and log.dropped == 9 - sum(taken)
    release.set()
    log.close()
    assert log.counts() == {"logged": sum(taken), "dropped": 9 - sum(taken), "failed": 0}
    assert sent == [(b"k", b"%d" % i) for i in range(9) if taken[i]]


def test_a_failing_sink_is_counted_and_the_next_batches_still_go() -> None:
    calls: list[int] = []

    def flaky(batch: list) -> int:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("no broker")
        return 1 if len(calls) == 2 else 0  # the second batch: one record not delivered

    log = PredictionLog(flaky, batch_size=3, linger_s=0.0)
    for i in range(3):
        log.offer([(None, b"a"), (None, b"b"), (None, b"c")])
        deadline = time.monotonic() + 5
        while len(calls) <= i and time.monotonic() < deadline:
            time.sleep(0.005)
    log.close()
    assert calls == [3, 3, 3]
    assert log.counts() == {"logged": 5, "dropped": 0, "failed": 4}
    with pytest.raises(ConfigError, match="capacity"):
        PredictionLog(flaky, capacity=0)


def test_the_app_logs_events_with_an_id_and_counts_in_metrics() -> None:
    sent: list[Any] = []
    log = PredictionLog(sent.extend, linger_s=0.0)
    app, _ = make_app(3, classes=(False, True), prediction_log=log)
    call(app, "POST", "/v1/predict", json={"features": {"a": 1}})  # no id: not logged
    one = call(app, "POST", "/v1/predict",
               json={"id": "e-1", "key": "u-1", "ts": 5, "features": {"a": 1}})
    assert one.status_code == 200 and one.json()["id"] == "e-1"
    call(app, "POST", "/v1/predict", json={"events": [
        {"id": 7, "features": {"b": "x"}}, {"features": {"c": 2}},
        {"id": "e-3", "features": {"d": True}},
    ]})
    deadline = time.monotonic() + 5
    while len(sent) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    records = [(key, orjson.loads(value)) for key, value in sent]
    assert [key for key, _ in records] == [b"e-1", b"7", b"e-3"]
    first = records[0][1]
    assert {k: v for k, v in first.items() if k != "at_ms"} == {
        "id": "e-1", "key": "u-1", "ts": 5, "features": {"a": 1}, "model": "ctr",
        "version": 3, "prediction": True, "probabilities": [0.25, 0.75],
    }
    assert [r["features"] for _, r in records[1:]] == [{"b": "x"}, {"d": True}]
    assert abs(first["at_ms"] / 1000 - time.time()) < 60
    text = call(app, "GET", "/metrics").text
    assert 'streamlearn_prediction_log_records_total{model="ctr",outcome="logged"} 3.0' in text
    log.close()


@pytest.mark.parametrize("body", [
    b'{"id": "e-1", "key": "u-1", "ts": 5, "features": {"a": 1, "b": "x"}}',
    b'{"features":{"caf\\u00e9":"na\xc3\xafve","n":-1.5e3},"id":42}\r\n  ',
    b'  {"ts": 1764900000000, "id": {"s": 1}, "features": {"a": [1, 2]}}',
    b'{"id": "e-2", "key": null, "features": {"a": 1}}',  # null: absent, as records_of
    b'{"id": "e-3", "label": 1, "features": {"a": 1}}',  # a label is not logged
])
def test_a_single_events_record_is_its_body_with_the_answer_the_same_json(body: bytes) -> None:
    """The server logs a single plain event from its body's bytes (``record_of_body``): the
    record reads as the object :func:`records_of` builds, key included."""
    from streamlearn.serving.model import Predictions
    from streamlearn.serving.prediction_log import record_of_body, records_of

    doc = orjson.loads(body)
    for answer in (Predictions([True], None, [[0.25, 0.75]], None),
                   Predictions([2.5], None, None, None)):
        fast = record_of_body(body, doc, answer, "ctr", 3, now=2.0)
        built = records_of(doc, [doc["features"]], answer, "ctr", 3, now=2.0)
        assert [(k, orjson.loads(v)) for k, v in fast] == [
            (k, orjson.loads(v)) for k, v in built]


def _store_with_a_model(tmp_path: Path) -> Path:
    store = tmp_path / "models"
    ModelStore(str(store), "default").commit(constant_model(1.5), Lineage(events=1))
    return store


def test_serve_log_topic_writes_each_prediction_with_an_id_to_kafka(
    kafka_broker: Any, topic_name: str, tmp_path: Path
) -> None:
    create_topics(kafka_broker.bootstrap, {topic_name: 2})
    store = _store_with_a_model(tmp_path)
    proc, url = start(tmp_path, "--store", str(store), "--log-topic", topic_name,
                      "--log-bootstrap", kafka_broker.bootstrap)
    try:
        wait_ready(url)
        for i in range(20):
            r = httpx.post(url + "/v1/predict", json={"id": f"e-{i}", "features": {"a": i}})
            assert r.status_code == 200
        got = consume_all(kafka_broker.bootstrap, topic_name, expected=20, timeout_s=30)
    finally:
        stop(proc)
    records = {r.key: orjson.loads(r.value) for r in got}
    assert sorted(records) == sorted(f"e-{i}".encode() for i in range(20))
    assert records[b"e-4"]["features"] == {"a": 4} and records[b"e-4"]["version"] == 1
    assert records[b"e-4"]["prediction"] == pytest.approx(1.5)


def test_with_the_log_broker_away_requests_are_answered_and_the_loss_counted(
    tmp_path: Path,
) -> None:
    store = _store_with_a_model(tmp_path)
    away = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc, url = start(tmp_path, "--store", str(store), "--log-topic", "predictions",
                      "--log-bootstrap", away)
    try:
        wait_ready(url)
        slowest = 0.0
        for i in range(50):
            start_s = time.perf_counter()
            r = httpx.post(url + "/v1/predict", json={"id": i, "features": {"a": i}})
            slowest = max(slowest, time.perf_counter() - start_s)
            assert r.status_code == 200
        assert slowest < 1.0, "a request waited for the missing broker"
        deadline = time.monotonic() + 30
        failed = 0.0
        while time.monotonic() < deadline:
            for line in httpx.get(url + "/metrics").text.splitlines():
                if line.startswith("streamlearn_prediction_log_records_total") and (
                    'outcome="failed"' in line
                ):
                    failed = float(line.rsplit(" ", 1)[1])
            if failed == 50:
                break
            time.sleep(0.2)
        assert failed == 50, "every record the log could not send is counted"
    finally:
        stop(proc)
