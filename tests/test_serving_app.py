"""The service's ASGI app and watcher, in process, over a fake model source.

The fake's predictor answers every event with its own version number, so a
response shows which version made it. The real server process, store and
learners are exercised in ``test_serving_live.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pytest

import streamlearn.serving as serving
from streamlearn.errors import ConfigError, StoreError, VersionNotFound
from streamlearn.serving import ModelWatcher, PredictionApp, Predictions


class VersionPredictor:
    """Predicts its own version for every event; a classifier when ``classes`` is set."""

    def __init__(self, version: int, classes: tuple[Any, ...] | None = None) -> None:
        self.version = version
        self.created_at = time.time() - 2.0
        self.lineage = {"parent": version - 1 if version else None}
        self.classes = classes
        self.seen: list[Any] = []

    def _answer(self, n: int) -> Predictions:
        if self.classes is None:
            return Predictions(values=np.full(n, float(self.version)))
        proba = np.tile(np.array([0.25, 0.75]), (n, 1))
        return Predictions.from_probabilities(proba, self.classes)

    def predict_features(self, features: Any) -> Predictions:
        self.seen.append(list(features))
        return self._answer(len(features))

    def predict_columns(self, columns: Any, n_rows: int) -> Predictions:
        self.seen.append({name: col.to_pylist() for name, col in columns.items()})
        return self._answer(n_rows)


class FakeSource:
    name = "ctr"

    def __init__(self, serving: int | None = None, classes: tuple[Any, ...] | None = None) -> None:
        self.serving = serving
        self.classes = classes
        self.loads: list[int] = []
        self.fail = False

    def serving_version(self) -> int | None:
        if self.fail:
            raise StoreError("manifest unreadable")
        return self.serving

    def load(self, version: int) -> VersionPredictor:
        if self.serving is None or version > self.serving or version < 1:
            raise VersionNotFound(f"version {version} of model 'ctr'")
        self.loads.append(version)
        return VersionPredictor(version, self.classes)

    def versions(self) -> list[dict[str, Any]]:
        return [{"version": v} for v in range(1, (self.serving or 0) + 1)]


def call(app: PredictionApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def make_app(serving: int | None = 3, **kwargs: Any) -> tuple[PredictionApp, FakeSource]:
    source = FakeSource(serving, kwargs.pop("classes", None))
    watcher = ModelWatcher(source)
    watcher.poll_once()
    return PredictionApp(watcher, **kwargs), source


def test_exports_match_all() -> None:
    public = {name for name in dir(serving) if not name.startswith("_")}
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(serving.__path__)}
    assert public - modules - {"annotations"} == set(serving.__all__)


def test_single_event_is_answered_by_the_current_version() -> None:
    app, _ = make_app(3)
    r = call(app, "POST", "/v1/predict", json={"features": {"age": 31, "country": "FR"}})
    assert r.status_code == 200
    doc = r.json()
    assert doc["version"] == 3 and doc["prediction"] == 3.0 and doc["model"] == "ctr"
    assert 1.5 < doc["age_s"] < 60


def test_envelope_and_classifier_answer_in_columns() -> None:
    app, _ = make_app(2, classes=("no", "yes"))
    events = [{"features": {"x": i}} for i in range(5)]
    doc = call(app, "POST", "/v1/predict", json={"events": events}).json()
    assert doc["predictions"] == ["yes"] * 5
    assert doc["classes"] == ["no", "yes"]
    assert doc["probabilities"] == [[0.25, 0.75]] * 5


def test_arrow_body_reaches_the_predictor_column_wise() -> None:
    app, _ = make_app(4)
    table = pa.table({"age": [31, None, 5], "country": ["FR", "DE", None]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    r = call(
        app,
        "POST",
        "/v1/predict",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [4.0, 4.0, 4.0]
    predictor = app.watcher.current
    assert predictor.seen[-1] == {"age": [31, None, 5], "country": ["FR", "DE", None]}


def test_a_specific_version_can_be_asked() -> None:
    app, source = make_app(5)
    assert (
        call(app, "POST", "/v1/predict?version=2", json={"features": {"a": 1}}).json()["version"]
        == 2
    )
    assert (
        call(app, "POST", "/v1/predict?version=2", json={"features": {"a": 1}}).json()["version"]
        == 2
    )
    assert source.loads.count(2) == 1  # cached after the first load
    r = call(app, "POST", "/v1/predict?version=9", json={"features": {"a": 1}})
    assert r.status_code == 404 and "version 9" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": {"age": {"nested": 1}}}, "event.features.age"),
        ({"features": {"tags": ["a", 2]}}, "event.features.tags"),
        ({"features": 3}, "event.features"),
        ({"features": {"a": 1}, "colour": "red"}, "event.colour"),
        ({"features": {"a": 1}, "ts": -1}, "event.ts"),
        ({"events": [{"features": {"a": 1}}, {"features": {"a": None}}]}, "events[1].features.a"),
        ({"events": "nope"}, "events"),
        ([1, 2], "body"),
    ],
)
def test_bad_fields_are_named_in_a_422(body: Any, field: str) -> None:
    app, _ = make_app(1)
    r = call(app, "POST", "/v1/predict", content=orjson.dumps(body))
    assert r.status_code == 422
    assert r.json()["fields"][0]["field"] == field


@pytest.mark.parametrize("where", ["features", "id", "key", "ts"])
def test_a_deeply_nested_value_is_a_422_not_a_crash(where: str) -> None:
    """Nested deeper than orjson writes (it reads up to 1024 levels): still named."""
    app, _ = make_app(1)
    deep = b"[" * 600 + b'"x"' + b"]" * 600
    body = (
        b'{"features": {"a": ' + deep + b"}}"
        if where == "features"
        else b'{"features": {"a": 1}, "' + where.encode() + b'": ' + deep + b"}"
    )
    r = call(app, "POST", "/v1/predict", content=body)
    assert r.status_code == 422
    field = r.json()["fields"][0]
    assert field["field"] == ("event.features.a" if where == "features" else f"event.{where}")


def test_every_bad_field_is_reported() -> None:
    app, _ = make_app(1)
    body = {"events": [{"features": {"a": None, "b": {}}}, {"features": {"c": [1]}}]}
    fields = [f["field"] for f in call(app, "POST", "/v1/predict", json=body).json()["fields"]]
    assert fields == ["events[0].features.a", "events[0].features.b", "events[1].features.c"]


def test_unreadable_oversized_and_wrongly_typed_bodies() -> None:
    app, _ = make_app(1, max_body_bytes=1000, max_events=3)
    assert call(app, "POST", "/v1/predict", content=b"{nope").status_code == 400
    big = {"features": {"x": "y" * 2000}}
    assert call(app, "POST", "/v1/predict", json=big).status_code == 413
    many = {"events": [{"features": {"a": 1}}] * 4}
    assert call(app, "POST", "/v1/predict", json=many).status_code == 413
    r = call(app, "POST", "/v1/predict", content=b"a=1", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and r.json()["fields"][0]["field"] == "content-type"
    arrow = {"content-type": "application/vnd.apache.arrow.stream"}
    assert call(app, "POST", "/v1/predict", content=b"\x00" * 20, headers=arrow).status_code == 400


def test_bad_query_routes_and_methods() -> None:
    app, _ = make_app(1)
    r = call(app, "POST", "/v1/predict?version=latest", json={"features": {"a": 1}})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "version"
    r = call(app, "POST", "/v1/predict?verison=1", json={"features": {"a": 1}})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "verison"
    assert call(app, "GET", "/v1/predict").status_code == 405
    assert call(app, "GET", "/nowhere").status_code == 404


def test_readiness_follows_the_first_version() -> None:
    app, source = make_app(None)
    assert call(app, "GET", "/healthz").status_code == 200
    assert call(app, "GET", "/readyz").status_code == 503
    assert call(app, "POST", "/v1/predict", json={"features": {"a": 1}}).status_code == 503
    assert call(app, "GET", "/v1/models/current").status_code == 503
    source.serving = 1
    app.watcher.poll_once()
    assert call(app, "GET", "/readyz").json() == {"status": "ready", "version": 1}
    assert call(app, "GET", "/v1/models/current").json()["lineage"] == {"parent": 0}


def test_models_lists_versions_and_the_serving_one() -> None:
    app, _ = make_app(3)
    doc = call(app, "GET", "/v1/models").json()
    assert doc["serving"] == 3 and [v["version"] for v in doc["versions"]] == [1, 2, 3]


def test_bearer_token_guards_the_api_but_not_health() -> None:
    app, _ = make_app(1, token="s3cret")
    assert call(app, "POST", "/v1/predict", json={"features": {"a": 1}}).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert call(app, "GET", "/v1/models", headers=wrong).status_code == 401
    good = {"authorization": "Bearer s3cret"}
    assert (
        call(app, "POST", "/v1/predict", json={"features": {"a": 1}}, headers=good).status_code
        == 200
    )
    assert call(app, "GET", "/healthz").status_code == 200
    assert call(app, "GET", "/metrics").status_code == 401
    with pytest.raises(ConfigError, match="token"):
        make_app(1, token=" ")


def test_metrics_count_requests_swaps_and_age() -> None:
    app, source = make_app(1)
    call(app, "POST", "/v1/predict", json={"events": [{"features": {"a": 1}}] * 3})
    call(app, "POST", "/v1/predict", json={"features": 1})
    source.serving = 2
    app.watcher.poll_once()
    text = call(app, "GET", "/metrics").text
    assert 'streamlearn_requests_total{route="/v1/predict",status="200"} 1' in text
    assert 'streamlearn_requests_total{route="/v1/predict",status="422"} 1' in text
    assert 'streamlearn_predictions_total{model="ctr"} 3' in text
    assert 'streamlearn_model_swaps_total{model="ctr"} 2' in text
    assert 'streamlearn_model_version{model="ctr"} 2' in text
    assert "streamlearn_model_age_seconds" in text


def test_a_predictor_that_crashes_gives_a_500_and_the_app_lives_on() -> None:
    app, _ = make_app(1)

    def boom(features: Any) -> Predictions:
        raise RuntimeError("bug")

    app.watcher.current.predict_features = boom
    assert call(app, "POST", "/v1/predict", json={"features": {"a": 1}}).status_code == 500
    assert call(app, "GET", "/healthz").status_code == 200


def test_openapi_document_lists_every_route() -> None:
    app, _ = make_app(1)
    doc = call(app, "GET", "/openapi.json").json()
    versioned = {
        "/v2/models/ctr/versions/{version}",
        "/v2/models/ctr/versions/{version}/ready",
        "/v2/models/ctr/versions/{version}/infer",
    }
    assert set(doc["paths"]) == set(app._routes) | versioned
    for path in versioned:  # each answered by the app, as the document says
        concrete = path.replace("{version}", "1")
        method = "post" if path.endswith("infer") else "get"
        assert method in doc["paths"][path]
        assert app._versioned_route(concrete)[0] == method.upper()


def test_watcher_follows_rollbacks_and_survives_source_errors() -> None:
    source = FakeSource(3)
    swaps: list[tuple[int | None, int]] = []
    watcher = ModelWatcher(source, on_swap=lambda old, new: swaps.append((old, new)))
    assert watcher.poll_once() and watcher.current.version == 3
    source.fail = True
    assert not watcher.poll_once() and "manifest unreadable" in watcher.last_error
    assert watcher.current.version == 3
    source.fail = False
    source.serving = 2  # a rollback
    assert watcher.poll_once() and watcher.current.version == 2
    assert swaps == [(None, 3), (3, 2)]
    assert not watcher.poll_once()


def test_watcher_thread_notices_a_new_version_quickly() -> None:
    source = FakeSource(1)
    seen = threading.Event()
    watcher = ModelWatcher(source, interval_s=0.02, on_swap=lambda old, new: seen.set())
    watcher.start()
    try:
        seen.clear()
        source.serving = 2
        assert seen.wait(5) and watcher.current.version == 2
    finally:
        watcher.stop()


def test_watcher_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="interval_s"):
        ModelWatcher(FakeSource(1), interval_s=1.0)


def test_a_model_that_refuses_an_event_gives_a_422_naming_the_field() -> None:
    from streamlearn.errors import ValidationError

    app, _ = make_app(1)

    def refuse(features: Any) -> Predictions:
        raise ValidationError("features", "a non-empty mapping of name to value", "{}", "event 0")

    app.watcher.current.predict_features = refuse
    r = call(app, "POST", "/v1/predict", json={"features": {"a": 1}})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "features"


def raw_call(
    app: PredictionApp, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]
) -> tuple[int, Any]:
    """POST /v1/predict straight through the ASGI interface, the body in ``messages``."""
    sent: list[dict[str, Any]] = []
    incoming = list(messages)

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/predict",
        "query_string": b"",
        "headers": headers,
    }
    asyncio.run(app(scope, receive, send))
    start, body = sent
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    return start["status"], orjson.loads(body["body"])


def test_a_body_in_several_messages_and_the_declared_length() -> None:
    app, _ = make_app(2, max_body_bytes=1000)
    body = orjson.dumps({"features": {"age": 31, "country": "FR"}})
    parts = [body[:5], body[5:20], body[20:]]
    chunked = [
        {"type": "http.request", "body": part, "more_body": i < 2} for i, part in enumerate(parts)
    ]
    status, doc = raw_call(app, chunked, [(b"content-type", b"application/json")])
    assert status == 200 and doc["prediction"] == 2.0
    assert app.watcher.current.seen[-1] == [{"age": 31, "country": "FR"}]
    status, doc = raw_call(app, chunked[:2], [])  # the client left before the end
    assert status == 400 and doc["fields"][0]["got"] == "a disconnect"
    too_long = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2
    status, doc = raw_call(app, too_long, [])
    assert status == 413 and doc["fields"][0]["field"] == "body"
    one = [{"type": "http.request", "body": body}]
    for declared, expected in ((b"1001", 413), (b"99999999999", 413), (b"12x", 400), (b"", 400)):
        status, doc = raw_call(app, one, [(b"content-length", declared)])
        assert status == expected, declared
        assert doc["fields"][0]["field"] == ("body" if expected == 413 else "content-length")
    status, doc = raw_call(app, one, [(b"content-length", str(len(body)).encode())])
    assert status == 200


def test_store_source_sees_every_change_of_the_head_at_once(tmp_path: Any) -> None:
    from streamlearn.serving import StoreSource
    from streamlearn.store import Lineage, ModelStore

    store = ModelStore(str(tmp_path), "ctr")
    source = StoreSource(store, "ctr")
    assert source.serving_version() is None
    for version in range(1, 13):  # heads of one size, written within a few milliseconds
        assert store.commit(pa.table({"w": [float(version)]}), Lineage(events=version)) == version
        assert source.serving_version() == version
        assert source.serving_version() == version  # from the stat, unchanged
    store.pin(4)
    assert source.serving_version() == 4
    store.unpin()
    assert source.serving_version() == 12
    store.rollback(3)
    assert source.serving_version() == 13


def test_a_refused_body_is_answered_at_once_then_read_and_dropped() -> None:
    """Refused from its ``content-length``, a request gets its whole 413 before the rest
    of its body is read (the first message is, as for every prediction); the rest is
    then received and dropped, and only then is the answer
    complete (so that a connection closing after it has no unread bytes); the latency
    counted is the answer's, not the drain's."""
    app, _ = make_app(1, max_body_bytes=1000)
    chunks = 8
    sent: list[tuple[float, dict[str, Any]]] = []
    received: list[float] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        scope = {
            "type": "http", "method": "POST", "path": "/v1/predict", "query_string": b"",
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", b"%d" % (chunks * 1000))],
        }

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.05)  # a body arriving slowly
            received.append(loop.time())
            more = len(received) < chunks
            return {"type": "http.request", "body": b"x" * 1000, "more_body": more}

        async def send(message: dict[str, Any]) -> None:
            sent.append((loop.time(), message))

        await app(scope, receive, send)

    asyncio.run(run())
    (_, start), (answered_at, answer), (done_at, end) = sent
    assert start["status"] == 413
    assert answer["more_body"] and b"at most 1000 bytes" in answer["body"]
    assert answered_at < received[1]  # answered before the rest of the body was read
    assert len(received) == chunks and end == {"type": "http.response.body", "body": b""}
    assert done_at >= received[-1]  # complete once the whole body was dropped
    assert app.metrics.requests == {("/v1/predict", 413): 1}
    latency = app.metrics._counts[("/v1/predict", 413)][-1]
    assert latency < received[-1] - answered_at  # the answer's time, not the drain's
