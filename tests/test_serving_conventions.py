"""Serving conventions, in process: Retry-After and the missing model's hint on
503, known features in every answer, the empty feature name refused as
training refuses it, a valid OpenAPI document, the KServe Open Inference
Protocol v2 and TF Serving routes, and metrics through prometheus_client.

The CLI side (``serve`` defaults, the start-up hint, ``predict``) runs as
subprocesses in ``test_serving_cli.py``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.errors import EventError, VersionNotFound
from streamlearn.events import EventDecoder
from streamlearn.learners import LinearRegression, LogisticRegression, SoftmaxRegression
from streamlearn.serving import ModelWatcher, PredictionApp
from streamlearn.serving.learner_predictor import LearnerPredictor
from streamlearn.serving.linear_scorer import native_available
from tests.test_serving_fast import native_answer

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}


def call(app: PredictionApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


class Source:
    """One model, ``ctr``, serving ``served`` once it is set; the store holds ``models``."""

    name = "ctr"

    def __init__(self, served: Any = None, models: list[str] | None = None) -> None:
        self.served = served
        self.held = models if models is not None else ["ctr"]

    def serving_version(self) -> int | None:
        return None if self.served is None else self.served.version

    def load(self, version: int) -> Any:
        if self.served is None or version != self.served.version:
            raise VersionNotFound(f"version {version} of model 'ctr'")
        return self.served

    def versions(self) -> list[dict[str, Any]]:
        return [] if self.served is None else [{"version": self.served.version}]

    def models(self) -> list[str]:
        return self.held


def app_for(served: Any = None, models: list[str] | None = None, **kwargs: Any) -> PredictionApp:
    watcher = ModelWatcher(Source(served, models))
    watcher.poll_once()
    return PredictionApp(watcher, **kwargs)


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# -- 503: Retry-After and which models the store holds --------------------------------


def test_every_503_carries_retry_after_and_names_the_models_the_store_holds() -> None:
    app = app_for(None, models=["default", "clicks"])
    requests = [
        ("POST", "/v1/predict", {"json": {"features": {"a": 1}}}),
        ("POST", "/v1/predict", {"json": {"events": [{"features": {"a": 1}, "id": 1}]}}),
        ("POST", "/v1/predict", {"content": arrow_body(pa.table({"a": [1.0]})), "headers": ARROW}),
        ("GET", "/readyz", {}),
        ("GET", "/v1/models/current", {}),
        ("GET", "/v2/models/ctr", {}),
        ("POST", "/v1/models/ctr:predict", {"json": {"instances": [{"a": 1}]}}),
        (
            "POST",
            "/v2/models/ctr/infer",
            {"json": {"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}]}},
        ),
    ]
    for method, path, kwargs in requests:
        r = call(app, method, path, **kwargs)
        assert r.status_code == 503, path
        assert r.headers["retry-after"] == "1", path
        doc = r.json()
        assert doc["model"] == "ctr" and doc["models_in_store"] == ["default", "clicks"], path
        assert "'ctr' is not in the store" in doc["error"], path
        assert "'default', 'clicks'" in doc["error"], path
    # the v2 readiness answers false with a 4xx, as the protocol has it
    assert call(app, "GET", "/v2/health/ready").status_code == 400
    assert call(app, "GET", "/v2/models/ctr/ready").status_code == 400
    # other statuses carry no Retry-After
    assert "retry-after" not in call(app, "GET", "/healthz").headers


def test_a_model_that_is_in_the_store_but_not_loaded_yet_is_told_to_retry() -> None:
    app = app_for(None, models=["ctr"])
    doc = call(app, "POST", "/v1/predict", json={"features": {"a": 1}}).json()
    assert doc["error"] == "no version of model 'ctr' loaded yet; retry shortly"


# -- known features -----------------------------------------------------------------------

TRAIN = [
    {"age": 31.0, "city": "Lyon", "tags": ["a", "b"], "member": True},
    {"age": 5.0, "city": "Nice", "tags": ["c"], "member": False},
    {"age": 52.0, "city": "Lyon", "tags": ["b"], "member": True},
    {"age": 17.0, "city": "Pau", "tags": ["a"], "member": False},
]


def trained(kind: str, scale: bool = False) -> tuple[Any, LearnerPredictor]:
    if kind == "binary":
        model = LogisticRegression(bits=14, scale=scale)
        labels: list[Any] = [True, False, True, False]
    elif kind == "regression":
        model = LinearRegression(bits=14, scale=scale)
        labels = [1.0, 0.0, 2.0, 0.5]
    else:
        model = SoftmaxRegression(bits=14, scale=scale)
        labels = ["x", "y", "z", "x"]
    for _ in range(10):
        model.learn_many(TRAIN, labels)
    classes = getattr(model, "classes_", None)
    return model, LearnerPredictor(model, 1, time.time(), classes=classes)


def expected_known(model: Any, features: dict[str, Any]) -> int:
    """From the learner's own weights: a feature is known when one of its slots
    has a non-zero weight (for some class)."""
    from streamlearn.features import FeatureHasher

    hasher = FeatureHasher(bits=model.bits, dense=model.dense)
    w = model.state(copy=False).arrays["weights"].reshape(hasher.n_slots, -1)
    sd = model.state(copy=False).arrays.get("scaler.var")
    known = 0
    for name, value in features.items():
        if type(value) is str:
            slots = [hasher.slot_of(name, value)[0]]
        elif type(value) is list:
            slots = [hasher.slot_of(name, item)[0] for item in value]
        else:
            slots = [hasher.slot_of(name)[0]]
            if sd is not None and type(value) is not bool and sd[slots[0]] <= 0:
                slots = []  # standardised to 0: adds nothing
        known += any(np.any(w[slot] != 0.0) for slot in slots)
    return known


EVENTS = [
    {"age": 40.0, "city": "Lyon", "tags": ["a", "b"], "member": True},  # every feature known
    {"agee": 40.0, "cty": "Lyon", "tag": ["a"], "membr": True},  # every name misspelled
    {"age": "0.4", "city": "Lyon"},  # a string: the category "0.4", never seen
    {"age": 40, "city": "Paris", "tags": ["zz", "b"]},  # a new city; one known tag of two
    {"age": 0, "member": False},  # values that add nothing, of known features
    {"tags": []},  # a list without strings
]


def post_one(app: PredictionApp, features: dict[str, Any]) -> dict[str, Any]:
    r = call(app, "POST", "/v1/predict", content=orjson.dumps({"features": features}))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    ("kind", "scale"),
    [("binary", False), ("regression", False), ("binary", True), ("multiclass", False)],
)
def test_every_answer_says_how_many_features_the_model_knew(kind: str, scale: bool) -> None:
    model, served = trained(kind, scale)
    app = app_for(served)
    want = [expected_known(model, e) for e in EVENTS]
    assert want[:5] == [4, 0, 1, 2, 2]  # the events are what they say they are
    # one event, twice: the first time learnt on the Python path, then (when the
    # extension is built and the model fits it) from the native table
    for _ in range(2):
        assert [post_one(app, e)["known_features"] for e in EVENTS] == want
    # the envelope, the Arrow body, the Open Inference Protocol and TF Serving
    envelope = call(app, "POST", "/v1/predict", json={"events": [{"features": e} for e in EVENTS]})
    assert envelope.json()["known_features"] == want
    rows = EVENTS[:2] + EVENTS[3:5]  # Arrow: one type per column
    table = pa.table(
        {
            name: [e.get(name) for e in rows]
            for name in sorted({n for e in rows for n in e})
        }
    )
    arrow = call(app, "POST", "/v1/predict", content=arrow_body(table), headers=ARROW)
    assert arrow.json()["known_features"] == [want[0], want[1], want[3], want[4]]
    tf = call(app, "POST", "/v1/models/ctr:predict", json={"instances": EVENTS})
    assert tf.json()["known_features"] == want
    if kind == "binary" and not scale:
        # nothing known: the prediction is the intercept's alone, and the answer says so
        lost = post_one(app, EVENTS[1])
        b = float(model.state(copy=False).arrays["intercept"][0])
        assert lost["probabilities"][1] == pytest.approx(1 / (1 + np.exp(-b)), abs=1e-12)
        assert lost["known_features"] == 0


def test_the_native_table_counts_known_features_as_the_python_path() -> None:
    if not native_available():
        pytest.skip("the C extension is not built here")
    model, served = trained("binary")
    for features in EVENTS:
        body = orjson.dumps({"features": features})
        if native_answer(served, body) is False:
            served.predict_one(features)
            served.remember(features)
        got = native_answer(served, body)
        assert got not in (None, False), features
        assert got[2] == served.predict_one(features)[2] == expected_known(model, features)


# -- the empty feature name -------------------------------------------------------------------


def training_refusal() -> EventError:
    with pytest.raises(EventError) as err:
        EventDecoder(task="binary").validate({"features": {"": 1.0}, "label": 1})
    return err.value


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": {"": 1}}, "event.features"),
        ({"features": {"": "x"}}, "event.features"),
        ({"features": {"age": 3, "": ["a"]}}, "event.features"),
        ({"features": {"": True}, "id": "e-1"}, "event.features"),
        ({"events": [{"features": {"age": 1}}, {"features": {"": 1}}]}, "events[1].features"),
    ],
)
def test_an_empty_feature_name_is_refused_as_training_refuses_it(
    body: dict[str, Any], field: str, native: bool
) -> None:
    refusal = training_refusal()
    assert refusal.field == "features"
    _model, served = trained("binary")
    if not native:
        served._native = None
    app = app_for(served)
    for _ in range(2):  # the second time, every other name is in the native table
        r = call(app, "POST", "/v1/predict", content=orjson.dumps(body))
        assert r.status_code == 422, r.text
        first = r.json()["fields"][0]
        assert first == {"field": field, "expected": refusal.expected, "got": refusal.got,
                         "code": "features.empty_name"}
    if native and native_available():
        assert served._native.score_event(b'{"features": {"": 1}}') is None
    tf = call(app, "POST", "/v1/models/ctr:predict", json={"instances": [{"": 1}]})
    assert tf.status_code == 400
    assert tf.json()["fields"][0]["field"] == "instances[0].features"
    v2 = call(
        app,
        "POST",
        "/v2/models/ctr/infer",
        json={"inputs": [{"name": "", "datatype": "FP64", "shape": [1], "data": [1]}]},
    )
    assert v2.status_code == 400
    assert v2.json()["fields"][0] == {
        "field": "inputs[0].name",
        "expected": refusal.expected,
        "got": refusal.got,
    }


def test_an_empty_column_name_of_an_arrow_body_is_refused_in_training_words() -> None:
    refusal = training_refusal()
    _model, served = trained("binary")
    app = app_for(served)
    body = arrow_body(pa.table({"age": [1.0], "": [2.0]}))
    r = call(app, "POST", "/v1/predict", content=body, headers=ARROW)
    assert r.status_code == 422
    assert r.json()["fields"][0] == {
        "field": "columns",
        "expected": refusal.expected,
        "got": refusal.got,
    }


# -- OpenAPI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_the_openapi_document_is_valid(token: str | None) -> None:
    from openapi_spec_validator import validate

    app = app_for(None, token=token)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    doc = call(app, "GET", "/openapi.json", headers=headers).json()
    validate(doc)
    assert "/v2/models/ctr/infer" in doc["paths"]
    assert "/v1/models/ctr:predict" in doc["paths"]


# -- KServe Open Inference Protocol v2 and TF Serving -------------------------------------------


def test_open_inference_protocol_health_metadata_and_infer() -> None:
    model, served = trained("binary")
    app = app_for(served)
    assert call(app, "GET", "/v2/health/live").json() == {"live": True}
    assert call(app, "GET", "/v2/health/ready").json() == {"ready": True}
    assert call(app, "GET", "/v2/models/ctr/ready").status_code == 200
    assert call(app, "GET", "/v2/models/ctr/versions/1/ready").status_code == 200
    assert call(app, "GET", "/v2/models/ctr/versions/7/ready").status_code == 400
    meta = call(app, "GET", "/v2/models/ctr").json()
    assert meta["name"] == "ctr" and meta["versions"] == ["1"] and meta["platform"]
    assert [o["name"] for o in meta["outputs"]] == [
        "prediction",
        "probabilities",
        "known_features",
    ]
    assert meta["outputs"][1]["shape"] == [-1, 2]
    assert call(app, "GET", "/v2/models/ctr/versions/1").json()["versions"] == ["1"]
    other = call(app, "GET", "/v2/models/typo")
    assert other.status_code == 404 and "'ctr'" in other.json()["error"]

    request = {
        "id": "req-7",
        "inputs": [
            {"name": "age", "datatype": "FP32", "shape": [3], "data": [40.0, 5, None]},
            {
                "name": "city",
                "datatype": "BYTES",
                "shape": [3, 1],
                "data": [["Lyon"], ["Nice"], None],  # nested row-major, as the protocol allows
            },
            {"name": "member", "datatype": "BOOL", "shape": [3], "data": [True, False, True]},
        ],
    }
    for path in ("/v2/models/ctr/infer", "/v2/models/ctr/versions/1/infer"):
        r = call(app, "POST", path, json=request)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == "ctr" and doc["model_version"] == "1"
        assert doc["id"] == "req-7"
        out = {o["name"]: o for o in doc["outputs"]}
        events = [
            {"age": 40.0, "city": "Lyon", "member": True},
            {"age": 5, "city": "Nice", "member": False},
            {"member": True},
        ]
        native = call(
            app, "POST", "/v1/predict", json={"events": [{"features": e} for e in events]}
        ).json()
        assert out["prediction"]["data"] == native["predictions"]
        assert out["prediction"]["datatype"] == "BOOL" and out["prediction"]["shape"] == [3]
        assert out["probabilities"]["shape"] == [3, 2]
        np.testing.assert_allclose(out["probabilities"]["data"], native["probabilities"])
        assert out["known_features"]["data"] == native["known_features"] == [3, 3, 1]
    only = dict(request, outputs=[{"name": "known_features"}])
    doc = call(app, "POST", "/v2/models/ctr/infer", json=only).json()
    assert [o["name"] for o in doc["outputs"]] == ["known_features"]


@pytest.mark.parametrize(
    ("request_doc", "status", "field"),
    [
        ({"inputs": []}, 400, "inputs"),
        ({"input": []}, 400, "input"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [2], "data": [1]}]}, 400,
         "inputs[0].data"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": ["x"]}]}, 400,
         "inputs[0].data[0]"),
        ({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [1.5]}]}, 400,
         "inputs[0].data[0]"),
        ({"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [3]}]}, 400,
         "inputs[0].data[0]"),
        ({"inputs": [{"name": "a", "datatype": "STRING", "shape": [1], "data": ["x"]}]}, 400,
         "inputs[0].datatype"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [2, 2], "data": [1, 2, 3, 4]}]},
         400, "inputs[0].shape"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [None]}]}, 400,
         "events[0].features"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]},
                     {"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}]}, 400,
         "inputs[1].name"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]},
                     {"name": "b", "datatype": "FP64", "shape": [2], "data": [1, 2]}]}, 400,
         "inputs[1].shape"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [4], "data": [1] * 4}]}, 413,
         "inputs[0].shape"),
        ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}],
          "outputs": [{"name": "score"}]}, 400, "outputs[0].name"),
    ],
)
def test_open_inference_protocol_refusals_name_the_field(
    request_doc: dict[str, Any], status: int, field: str
) -> None:
    _model, served = trained("binary")
    app = app_for(served, max_events=3)
    r = call(app, "POST", "/v2/models/ctr/infer", json=request_doc)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["fields"][0]["field"] == field
    assert doc["error"].startswith(f"field `{field}`")  # the protocol's one error string


def test_tf_serving_predict() -> None:
    _model, served = trained("regression")
    app = app_for(served)
    instances = [EVENTS[0], EVENTS[3]]
    r = call(app, "POST", "/v1/models/ctr:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    native = call(
        app, "POST", "/v1/predict", json={"events": [{"features": e} for e in instances]}
    ).json()
    assert r.json()["predictions"] == native["predictions"]
    bad = call(app, "POST", "/v1/models/ctr:predict", json={"instances": [{"age": {}}]})
    assert bad.status_code == 400
    assert bad.json()["fields"][0]["field"] == "instances[0].features.age"
    assert call(app, "POST", "/v1/models/ctr:predict", json={"rows": []}).status_code == 400
    assert call(app, "POST", "/v1/models/other:predict", json={}).status_code == 404
    assert call(app, "GET", "/v1/models/ctr:predict").status_code == 405


def test_protocol_routes_need_the_token_but_health_does_not() -> None:
    _model, served = trained("binary")
    app = app_for(served, token="s3cret")
    assert call(app, "GET", "/v2/health/live").status_code == 200
    assert call(app, "GET", "/v2/health/ready").status_code == 200
    assert call(app, "GET", "/v2/models/ctr").status_code == 401
    assert call(app, "POST", "/v2/models/ctr/infer", json={}).status_code == 401
    assert call(app, "POST", "/v1/models/ctr:predict", json={}).status_code == 401


# -- metrics ----------------------------------------------------------------------------------

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def scrape(app: PredictionApp) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    r = call(app, "GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def test_metrics_come_through_prometheus_client_with_process_and_python_metrics() -> None:
    _model, served = trained("binary")
    app = app_for(served)
    post_one(app, EVENTS[0])
    call(app, "POST", "/v1/predict", json={"features": 3})
    call(app, "GET", "/v2/health/live")
    families = scrape(app)
    for name in (
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "python_info",
        "python_gc_collections",
    ):
        assert name in families, name
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["streamlearn_requests"].samples
    }
    assert requests[("/v1/predict", "200")] == 1
    assert requests[("/v1/predict", "422")] == 1
    assert requests[("/v2/health/live", "200")] == 1
    latency = families["streamlearn_request_duration_seconds"]
    counts = {
        s.labels["route"]: s.value for s in latency.samples if s.name.endswith("_count")
    }
    assert counts["/v1/predict"] == 2 and counts["/v2/health/live"] == 1
    assert families["streamlearn_predictions"].samples[0].value == 1
    version = families["streamlearn_model_version"].samples[0]
    assert version.labels == {"model": "ctr"} and version.value == 1
    assert 0 <= families["streamlearn_model_age_seconds"].samples[0].value < 60
    published = families["streamlearn_model_published_timestamp_seconds"].samples[0].value
    assert published == pytest.approx(served.created_at)


def test_metric_names_follow_the_prometheus_conventions() -> None:
    from streamlearn.serving.prometheus import METRIC_NAMES

    _model, served = trained("binary")
    app = app_for(served)
    post_one(app, EVENTS[0])
    families = scrape(app)
    ours = {n: f for n, f in families.items() if n.startswith("streamlearn_")}
    exposed = set()
    for name, family in ours.items():
        assert NAME.match(name), name
        assert family.documentation, name
        if family.type == "counter":
            exposed.add(name + "_total")
            assert all(s.name == name + "_total" for s in family.samples), name
        else:
            exposed.add(name)
            assert not name.endswith("_total"), name
        if family.type == "histogram":
            assert name.endswith("_seconds")
        if "age" in name or "duration" in name or "timestamp" in name:
            assert name.endswith("_seconds"), name  # base units
        for sample in family.samples:
            assert all(NAME.match(label) for label in sample.labels), sample
    assert exposed == set(METRIC_NAMES)


def test_the_request_path_uses_no_prometheus_client_metric_object() -> None:
    """The hot path counts plain integers: no Counter/Histogram with their locks."""
    _model, served = trained("binary")
    app = app_for(served)
    from prometheus_client import metrics as client_metrics

    calls: list[str] = []
    original = client_metrics.Histogram.observe
    client_metrics.Histogram.observe = lambda *a, **k: calls.append("observe")  # type: ignore[method-assign]
    try:
        post_one(app, EVENTS[0])
    finally:
        client_metrics.Histogram.observe = original  # type: ignore[method-assign]
    assert calls == []
    assert app.metrics.requests[("/v1/predict", 200)] == 1



# -- the protocols never answer 5xx to what a client sends ---------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
DATATYPES = st.sampled_from(["BOOL", "BYTES", "INT8", "INT64", "UINT64", "FP16", "FP64", "X"])
TENSORS = st.fixed_dictionaries(
    {
        "name": st.text(max_size=3) | SCALARS,
        "datatype": DATATYPES | SCALARS,
        "shape": st.lists(st.integers(-1, 4), max_size=3) | SCALARS,
        "data": st.lists(SCALARS | st.lists(SCALARS, max_size=2), max_size=5) | SCALARS,
    }
)
V2_REQUESTS = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS, max_size=3) | SCALARS},
    optional={
        "id": SCALARS,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=14)}), max_size=2),
    },
)
TF_REQUESTS = st.fixed_dictionaries(
    {"instances": st.lists(st.dictionaries(st.text(max_size=3), SCALARS, max_size=3), max_size=3)}
)
_PROTOCOL_APP: list[PredictionApp] = []


def protocol_app() -> PredictionApp:
    if not _PROTOCOL_APP:
        _PROTOCOL_APP.append(app_for(trained("binary")[1], max_events=3))
    return _PROTOCOL_APP[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=V2_REQUESTS | TF_REQUESTS, v2=st.booleans())
def test_the_protocols_answer_any_request_without_a_5xx(doc: dict[str, Any], v2: bool) -> None:
    path = "/v2/models/ctr/infer" if v2 else "/v1/models/ctr:predict"
    r = call(protocol_app(), "POST", path, content=orjson.dumps(doc))
    assert r.status_code in (200, 400, 413), (r.status_code, r.text)
    if r.status_code != 200:
        assert r.json()["error"] and r.json()["fields"]
