"""The prediction log: what the server answered for events with an ``id``, sent off the
request path; on the real broker through ``streamlearn serve --log-topic``, and with the
broker away (requests answered at once, the loss counted)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka.partitioner.default import murmur2

from connectors.kafka_io import consume_all, create_topics
from streamlearn.errors import ConfigError
from streamlearn.store import Lineage, ModelStore
from tests.models import constant_model
from tests.test_serving_app import call, make_app
from tests.test_serving_cli import free_port, start, stop, wait_ready


class ListLog:
    """A :class:`RecordLog` keeping what it is offered."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.offers = 0

    def offer(self, records: Any) -> int:
        self.offers += 1
        self.records += records
        return len(records)

    def counts(self) -> dict[str, int]:
        return {"logged": len(self.records), "dropped": 0, "failed": 0}

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def test_the_app_logs_events_with_an_id_and_counts_in_metrics() -> None:
    log = ListLog()
    app, _ = make_app(3, classes=(False, True), prediction_log=log)
    call(app, "POST", "/v1/predict", json={"features": {"a": 1}})  # no id: not logged
    one = call(app, "POST", "/v1/predict",
               json={"id": "e-1", "key": "u-1", "ts": 5, "features": {"a": 1}})
    assert one.status_code == 200 and one.json()["id"] == "e-1"
    call(app, "POST", "/v1/predict", json={"events": [
        {"id": 7, "features": {"b": "x"}}, {"features": {"c": 2}},
        {"id": "e-3", "features": {"d": True}},
    ]})
    # each call ran a loop of its own, closed before the linger was over: the scrape
    # offers what waits, then counts
    text = call(app, "GET", "/metrics").text
    assert 'streamlearn_prediction_log_records_total{model="ctr",outcome="logged"} 3.0' in text
    records = [(key, orjson.loads(value)) for key, value in log.records]
    assert [key for key, _ in records] == [b"e-1", b"7", b"e-3"]
    first = records[0][1]
    assert {k: v for k, v in first.items() if k != "at_ms"} == {
        "id": "e-1", "key": "u-1", "ts": 5, "features": {"a": 1}, "model": "ctr",
        "version": 3, "prediction": True, "probabilities": [0.25, 0.75],
    }
    assert [r["features"] for _, r in records[1:]] == [{"b": "x"}, {"d": True}]
    assert abs(first["at_ms"] / 1000 - time.time()) < 60


def test_answers_wait_for_the_log_a_batch_of_requests_or_the_linger_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamlearn.serving import app as app_module

    log = ListLog()
    app, _ = make_app(3, prediction_log=log)

    async def go() -> list[int]:
        seen = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            monkeypatch.setattr(app_module, "LOG_LINGER_S", 60.0)
            for i in range(app_module.LOG_BATCH):
                await client.post("/v1/predict", json={"id": i, "features": {"a": i}})
                await asyncio.sleep(0)
                seen.append(len(log.records))
            monkeypatch.setattr(app_module, "LOG_LINGER_S", 0.01)
            await client.post("/v1/predict", json={"id": "late", "features": {"a": 1}})
            seen.append(len(log.records))
            await asyncio.sleep(0.05)
            seen.append(len(log.records))
        return seen

    seen = asyncio.run(go())
    batch = app_module.LOG_BATCH
    # not a full batch: nothing offered yet (the first one's timer waits a minute); full:
    # offered at once, in one go; then a lone request, offered when its linger is over
    assert seen == [0] * (batch - 1) + [batch, batch, batch + 1]
    assert [orjson.loads(v)["id"] for _, v in log.records] == [*range(batch), "late"]
    assert log.offers == 2


def test_kafka_log_never_waits_and_counts_what_it_could_not_take_or_send() -> None:
    from connectors.prediction_log import KafkaLog

    away = f"127.0.0.1:{free_port()}"  # nothing listens there
    log = KafkaLog(away, "predictions", capacity=3, timeout_s=0.5)
    start_s = time.perf_counter()
    taken = [log.offer([(b"k", b"%d" % i)]) for i in range(5)]
    assert time.perf_counter() - start_s < 0.5, "an offer waited for the broker"
    assert taken == [1, 1, 1, 0, 0]  # librdkafka's queue holds three
    assert log.counts() == {"logged": 0, "dropped": 2, "failed": 0}  # three waiting
    log.close(timeout_s=0.2)
    assert log.counts() == {"logged": 0, "dropped": 2, "failed": 3}
    assert log.offer([(b"k", b"after")]) == 0 and log.counts()["dropped"] == 3
    with pytest.raises(ConfigError, match="capacity"):
        KafkaLog(away, "predictions", capacity=0)


def test_kafka_log_counts_a_record_too_large_to_send_as_failed_and_goes_on() -> None:
    from connectors.prediction_log import KafkaLog

    log = KafkaLog(f"127.0.0.1:{free_port()}", "predictions", timeout_s=0.5)
    assert log.offer([(b"big", b"x" * 2_000_000), (b"k", b"small")]) == 2
    assert log.counts() == {"logged": 0, "dropped": 0, "failed": 1}  # the small one waits
    log.close(timeout_s=0.2)
    assert log.counts()["failed"] == 2


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
    create_topics(kafka_broker.bootstrap, {topic_name: 4})
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
    # each id in the partition Kafka's Java client picks for it (murmur2), as a labels
    # topic keyed by the same ids has it: co-partitioned for a Kafka Streams join
    assert {r.partition for r in got} != {0}
    assert all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 4 for r in got)
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


def test_an_event_read_from_its_bytes_is_answered_and_logged_as_when_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the native table, an event's ``id``, ``key`` and ``ts`` are read with it from the
    raw body: the answer and the log's record are those of the decoded path."""
    pytest.importorskip("streamlearn.serving._native")
    import streamlearn.serving.linear_scorer as linear_scorer
    from streamlearn.serving import ModelWatcher, PredictionApp
    from tests.test_serving_fast import OneVersion, make_events, predictor
    from tests.test_serving_native import MODELS, post_raw

    x = make_events(1, seed=5)[0]
    features = orjson.dumps(x)
    bodies = [b'{"features": %s}' % features]  # teaches the table the event's shares
    bodies += [
        b'{"id": "e-1", "features": %s}' % features,
        b'{"features": %s, "id": 7, "key": "u-1", "ts": 1700000000000}' % features,
        b' {"key": -3, "ts": 0, "features": %s, "id": "\xc3\xa9"} ' % features,
    ]

    def run() -> tuple[list[Any], list[Any], int]:
        served = predictor(MODELS["binary"])
        watcher = ModelWatcher(OneVersion(served))
        watcher.poll_once()
        log = ListLog()
        app = PredictionApp(watcher, prediction_log=log)
        answers = [post_raw(app, body) for body in bodies]
        app._flush_log()
        records = [(key, {k: v for k, v in orjson.loads(value).items() if k != "at_ms"})
                   for key, value in log.records]
        return answers, records, served.native_hits

    natively = run()
    monkeypatch.setattr(linear_scorer, "_NativeShares", None)  # as if it were not built
    decoded = run()
    assert natively[2] == 3 and decoded[2] == 0  # each event with an id, from its bytes
    assert natively[:2] == decoded[:2]
    answers, records, _ = natively
    assert [a[1].get("id") for a in answers] == [None, "e-1", 7, "é"]
    assert [a[1].get("key") for a in answers] == [None, None, "u-1", -3]
    assert [key for key, _ in records] == [b"e-1", b"7", "é".encode()]
    assert records[1][1]["ts"] == 1700000000000 and records[1][1]["features"] == x
