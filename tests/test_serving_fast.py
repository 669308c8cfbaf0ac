"""The serving fast paths give the learners' own predictions, and step aside
for anything they do not handle.

``LinearScorer`` (one event in plain Python, many events, Arrow columns) is
checked against the learner's ``predict_proba_many`` / ``predict_many`` for
the three linear learners, with and without scaling and dense features; the
single-feature hash against the numpy one; the app's fast JSON path against
the validating one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from streamlearn.errors import ValidationError
from streamlearn.features import FeatureHasher, _mix, _mix_one, feature_slot
from streamlearn.learners import LinearRegression, LogisticRegression, SoftmaxRegression
from streamlearn.optim import SGD
from streamlearn.serving import ModelWatcher, PredictionApp
from streamlearn.serving.learner_predictor import LearnerPredictor
from streamlearn.serving.linear_scorer import LinearScorer
from streamlearn.serving.request_body import check_json, plain_features

CITIES = ["Lyon", "Oslo", "Kyoto", "Lima"]
TAGS = ["a", "b", "c"]


def make_events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        x: dict[str, Any] = {"age": float(rng.normal(40, 10)), "visits": int(rng.integers(0, 9))}
        if i % 7 != 3:  # absent now and then: a null in the Arrow column
            x["score"] = float(rng.normal())
        if i % 3:
            x["city"] = CITIES[int(rng.integers(4))]
        if i % 4:
            x["tags"] = [TAGS[int(j)] for j in rng.integers(0, 3, size=int(rng.integers(0, 3)))]
        if i % 5:
            x["vip"] = bool(rng.integers(2))
        events.append(x)
    return events


def labels(events: list[dict[str, Any]], kind: str) -> list[Any]:
    if kind == "regression":
        return [e["age"] / 10 + e.get("score", 0.0) for e in events]
    if kind == "binary":
        return [e.get("score", 0.0) > 0 for e in events]
    return [("low", "mid", "high")[min(int(e["age"] // 20), 2)] for e in events]


def trained(kind: str, scale: bool, dense: tuple[str, ...]) -> Any:
    cls = {"regression": LinearRegression, "binary": LogisticRegression}.get(
        kind, SoftmaxRegression
    )
    model = cls(optimizer=SGD(0.05), bits=6, dense=list(dense), scale=scale)
    events = make_events(300, seed=1)
    for start in range(0, 300, 30):
        chunk = events[start : start + 30]
        model.learn_many(chunk, labels(chunk, kind))
    return model


def predictor(model: Any) -> LearnerPredictor:
    classes = None if model.task == "regression" else model.classes_
    return LearnerPredictor(model, version=1, created_at=0.0, classes=classes)


def native_answer(served: Any, body: bytes) -> Any:
    """The answer of ``served.predict_event(body)`` without the event's fields (False and
    None as they come)."""
    got = served.predict_event(body)
    return got[0] if got else got


def expected(model: Any, events: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
    if model.task == "regression":
        return model.predict_many(events).tolist(), None
    return model.predict_many(events).tolist(), model.predict_proba_many(events)


def to_table(events: list[dict[str, Any]]) -> pa.Table:
    names = ["age", "visits", "score", "city", "tags", "vip"]
    data = {name: [e.get(name) for e in events] for name in names}
    table = pa.table(data)
    city = table.column("city").combine_chunks().dictionary_encode()
    return table.set_column(3, "city", city)  # a dictionary column, as clients may send


CASES = [
    (kind, scale, dense)
    for kind in ("regression", "binary", "multiclass")
    for scale in (False, True)
    for dense in ((), ("age",))
]


@pytest.mark.parametrize(("kind", "scale", "dense"), CASES)
def test_fast_paths_predict_what_the_learner_predicts(
    kind: str, scale: bool, dense: tuple[str, ...]
) -> None:
    model = trained(kind, scale, dense)
    served = predictor(model)
    events = make_events(40, seed=2)
    values, proba = expected(model, events)
    for i in (0, 1, 3, 7):  # one event at a time: the plain-Python path
        one = served.predict_fast([events[i]])
        assert one is not None and len(one) == 1
        if proba is None:
            np.testing.assert_allclose(one.values, values[i : i + 1], rtol=1e-12, atol=1e-12)
        else:
            assert list(one.values) == values[i : i + 1]
            np.testing.assert_allclose(one.probabilities, proba[i : i + 1], rtol=1e-12)
    many = served.predict_features(events)
    columns = served.predict_columns(dict(zip(*_named(to_table(events)), strict=True)), 40)
    for got in (many, columns):
        if proba is None:
            np.testing.assert_allclose(got.values, values, rtol=1e-12, atol=1e-12)
        else:
            assert list(got.values) == values
            np.testing.assert_allclose(got.probabilities, proba, rtol=1e-12)


def _named(table: pa.Table) -> tuple[list[str], list[Any]]:
    return table.column_names, table.columns


@pytest.mark.parametrize(
    "features",
    [
        {},
        {"age": [1]},
        {"age": None},
        {"age": {"x": 1}},
        {"": 1.0},
        {"age": 10**400},
        {"tags": ["a", 3]},
    ],
)
def test_the_fast_path_steps_aside_and_the_learner_names_the_problem(features: dict) -> None:
    served = predictor(trained("binary", False, ()))
    assert served.predict_fast([features]) is None
    assert served.predict_fast([{"age": 1.0}, features]) is None
    with pytest.raises(ValidationError):
        served.predict_features([features])


def test_a_string_under_a_dense_name_is_refused_on_every_path() -> None:
    served = predictor(trained("regression", False, ("age",)))
    assert served.predict_fast([{"age": "old"}]) is None
    with pytest.raises(ValidationError) as err:
        served.predict_features([{"age": "old"}])
    assert err.value.field == "features.age"
    with pytest.raises(ValidationError) as err:
        served.predict_columns({"age": pa.array(["old", "young"])}, 2)
    assert err.value.field == "columns.age"


def test_columns_of_nulls_only_and_of_no_rows() -> None:
    model = trained("binary", True, ())
    served = predictor(model)
    table = {"age": pa.array([None, None], pa.float64()), "city": pa.array([None, "Oslo"])}
    got = served.predict_columns(table, 2)
    np.testing.assert_allclose(
        got.probabilities, model.predict_proba_many([{"tags": []}, {"city": "Oslo"}]), rtol=1e-12
    )
    empty = served.predict_columns({"age": pa.array([], pa.float64())}, 0)
    assert len(empty) == 0


def test_a_scorer_is_made_only_for_the_linear_learners() -> None:
    assert LinearScorer.from_learner(object()) is None
    assert LinearScorer.from_learner(SoftmaxRegression(bits=4)) is None  # no class yet
    scorer = LinearScorer.from_learner(trained("multiclass", False, ()))
    assert scorer is not None and scorer.n_outputs == 3
    with pytest.raises(TypeError):
        scorer.score_one({"age": 1.0})


def test_single_feature_hash_equals_the_numpy_one() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 53, size=500)
    b = rng.integers(0, 1 << 53, size=500)
    mixed = _mix(a, b).tolist()
    assert [_mix_one(int(x), int(y)) for x, y in zip(a, b, strict=True)] == mixed


def test_slot_of_and_slots_of_agree_with_feature_slot() -> None:
    hasher = FeatureHasher(bits=12, dense=["age"])
    for value in ("FR", "DE", "é", ""):
        slot, sign = feature_slot("country", value, bits=12)
        assert hasher.slot_of("country", value) == (slot, float(sign))
    slots, signs = hasher.slots_of("city", ["Oslo", "Lyon", "Oslo"])
    assert [hasher.slot_of("city", v) for v in ("Oslo", "Lyon", "Oslo")] == list(
        zip(slots.tolist(), signs.tolist(), strict=True)
    )
    assert hasher.slot_of("age") == (4096, 1.0)
    for bad in (lambda: hasher.slot_of("age", "old"), lambda: hasher.slots_of("age", ["x"])):
        with pytest.raises(ValidationError) as err:
            bad()
        assert err.value.field == "features.age"
    with pytest.raises(ValidationError):
        hasher.slot_of("")


def test_plain_features_checks_the_shape_and_leaves_values_to_the_fast_path() -> None:
    assert plain_features({"features": {"a": [1]}}, 10) == ([{"a": [1]}], True)
    assert plain_features({"features": {"a": 1}, "ts": -1}, 10) is None
    assert plain_features({"events": [{"features": {}}] * 3}, 2) is None
    assert plain_features({"events": [], "x": 1}, 10) is None
    assert plain_features([1], 10) is None
    with pytest.raises(ValidationError):
        check_json({"features": {"a": 1}, "ts": -1}, 10)


class OneVersion:
    name = "m"

    def __init__(self, served: LearnerPredictor) -> None:
        self.served = served

    def serving_version(self) -> int:
        return 1

    def load(self, version: int) -> LearnerPredictor:
        return self.served

    def versions(self) -> list[dict[str, Any]]:
        return [{"version": 1}]


def post(app: PredictionApp, body: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/predict", json=body)

    return asyncio.run(go())


def test_the_app_answers_fast_and_slow_requests_alike() -> None:
    model = trained("binary", True, ())
    served = predictor(model)
    watcher = ModelWatcher(OneVersion(served))
    watcher.poll_once()
    app = PredictionApp(watcher)
    events = make_events(6, seed=4)
    proba = model.predict_proba_many(events)
    fast = post(app, {"features": events[0]}).json()
    slow = post(app, {"features": events[0], "id": "e-1", "ts": int(time.time() * 1000)}).json()
    for doc in (fast, slow):
        np.testing.assert_allclose(doc["probabilities"], proba[0], rtol=1e-12)
        assert doc["prediction"] == model.predict_one(events[0])
    batch = post(app, {"events": [{"features": e} for e in events]}).json()
    np.testing.assert_allclose(batch["probabilities"], proba, rtol=1e-12)
    bad = post(app, {"events": [{"features": events[0]}, {"features": {"age": [1.0]}}]})
    assert bad.status_code == 422
    assert bad.json()["fields"][0]["field"] == "events[1].features.age"
    empty = post(app, {"features": {}})
    assert empty.status_code == 422


ONE_OUTPUT = [
    (kind, scale, dense)
    for kind in ("regression", "binary")
    for scale in (False, True)
    for dense in ((), ("age",))
]

# one name carrying a number, a string, a list and a boolean in turn
MIXED = [
    {"city": 3.0, "age": 30},
    {"city": "Lyon", "age": 41.5, "score": -0.5},
    {"city": ["Lyon", "Oslo"], "vip": False, "age": 52.0},
    {"city": True, "tags": ["a", "a"], "age": 18, "score": 1.5},
    {"city": "Kyoto", "visits": 7, "vip": True, "tags": [], "age": 60.0},
    {"visits": 2, "tags": "b", "age": 33.0, "score": 0.25},  # a string where lists were seen
]


def trained_mixed(kind: str, scale: bool, dense: tuple[str, ...]) -> Any:
    """A model that learned from MIXED too, so that every share it uses is non-zero."""
    model = trained(kind, scale, dense)
    for _ in range(5):
        model.learn_many(MIXED, labels(MIXED, kind))
    return model


def assert_one_matches(served: LearnerPredictor, model: Any, events: list[dict[str, Any]]) -> None:
    values, proba = expected(model, events)
    for i, x in enumerate(events):
        got = served.predict_one(x)
        assert got is not None, x
        value, p, _known = got
        if proba is None:
            assert p is None
            assert value == pytest.approx(values[i], rel=1e-12, abs=1e-12)
        else:
            assert value == values[i]
            np.testing.assert_allclose(p, proba[i], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("kind", "scale", "dense"), ONE_OUTPUT)
def test_one_event_in_plain_python_predicts_what_the_learner_predicts(
    kind: str, scale: bool, dense: tuple[str, ...]
) -> None:
    model = trained_mixed(kind, scale, dense)
    served = predictor(model)
    events = make_events(60, seed=5) + MIXED
    for _ in range(2):  # first learning each name's share, then from the shares learned
        assert_one_matches(served, model, events)


def test_one_event_steps_aside_for_values_it_does_not_score_and_keeps_scoring() -> None:
    model = trained_mixed("binary", False, ("age",))
    served = predictor(model)
    assert_one_matches(served, model, MIXED)  # "city" is known with strings and numbers now
    for features in (
        {"city": ["Lyon", 3]},
        {"city": None},
        {"city": {"x": 1}},
        {"age": "old"},  # a string under a dense name
        {"age": 10**400},
        {"": "x"},
        {"": 1.0},
        {},
    ):
        assert served.predict_one(features) is None, features
        assert served.predict_fast([features]) is None, features
    assert_one_matches(served, model, MIXED)
    softmax = predictor(trained("multiclass", False, ()))
    assert softmax.predict_one(MIXED[1]) is None  # several outputs: the numpy path
    assert softmax.predict_fast([MIXED[1]]) is not None


@pytest.mark.parametrize(
    ("kind", "scale"), [("regression", False), ("binary", False), ("binary", True)]
)
def test_the_app_answers_one_event_without_the_learner_and_as_the_learner_would(
    kind: str, scale: bool
) -> None:
    model = trained(kind, scale, ())
    served = predictor(model)
    watcher = ModelWatcher(OneVersion(served))
    watcher.poll_once()
    app = PredictionApp(watcher)
    events = make_events(8, seed=6)
    values, proba = expected(model, events)
    general = [post(app, {"features": e, "id": f"e-{i}"}).json() for i, e in enumerate(events)]

    def refuse(*args: Any) -> Any:
        raise AssertionError("the learner was asked")

    served.learner.predict_many = refuse  # the one-event path never calls the learner
    served.learner.predict_proba_many = refuse
    same = ("model", "version", "classes")
    for i, e in enumerate(events):
        doc = post(app, {"features": e}).json()
        assert general[i]["id"] == f"e-{i}"  # echoed
        assert set(doc) == set(general[i]) - {"id"}
        assert {k: doc.get(k) for k in same} == {k: general[i].get(k) for k in same}
        assert doc["known_features"] == general[i]["known_features"]
        if proba is None:
            assert doc["prediction"] == pytest.approx(values[i], rel=1e-12, abs=1e-12)
        else:
            assert doc["prediction"] == values[i]
            np.testing.assert_allclose(doc["probabilities"], proba[i], rtol=1e-12)
    text = app.metrics.render()
    assert 'streamlearn_requests_total{route="/v1/predict",status="200"} 16' in text
    assert 'streamlearn_predictions_total{model="m"} 16' in text
    assert 'streamlearn_request_duration_seconds_count{route="/v1/predict"} 16.0' in text
    bad = post(app, {"features": {"age": 1.0, "city": ["Lyon", 3]}})
    assert bad.status_code == 422
    assert bad.json()["fields"][0]["field"] == "event.features.city"


def test_remembered_shares_stay_within_their_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlearn.serving.linear_scorer as linear_scorer

    monkeypatch.setattr(linear_scorer, "_CACHE_LIMIT", 50)
    model = trained_mixed("binary", False, ())
    served = predictor(model)
    scorer = served._one
    events = [
        {"age": float(i), "city": f"c{i}", "tags": [f"t{i}", f"u{i}"], f"n{i % 70}": 1.0}
        for i in range(400)
    ]
    for _ in range(2):
        assert_one_matches(served, model, events)
        assert len(scorer._num) <= 51 and len(scorer._str) <= 51
        by_value = sum(len(c._by_value) for c in scorer._num.values() if hasattr(c, "_by_value"))
        assert by_value <= 50 + 2  # the budget, and the event being scored when it ran out
