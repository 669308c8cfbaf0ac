"""Factorization machines served: every route answers what the learner's own
predict gives, from a stored version, with hot swap; which path answered;
known features counted from weights and factors.

The FM is scored by ``FMScorer`` (numpy over the event's entries) and, for a
plain one-event body, by its native C table (shares and signed factors, the
pairwise term in C): the tests count the events each scored
(``FMScorer.events``, ``LearnerPredictor.native_hits``) and make the learner's
own ``predict_many`` fail if the server ever calls it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.learners import FMClassifier, FMRegressor, LogisticRegression, learner_from_state
from streamlearn.optim import AdaGrad
from streamlearn.serving import ModelWatcher, PredictionApp, StoreSource, linear_scorer
from streamlearn.serving.fm_scorer import FMScorer
from streamlearn.serving.learner_predictor import LearnerPredictor
from streamlearn.serving.linear_scorer import LinearScorer, native_available
from streamlearn.state import ModelState
from streamlearn.store import ModelStore
from tests.test_serving_fast import native_answer

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
CITIES = ["Lyon", "Oslo", "Kyoto", "Lima", "Quito"]
TAGS = ["a", "b", "c", "d"]


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    """Numbers (sometimes absent), strings, lists of strings and booleans."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        x: dict[str, Any] = {"age": float(rng.normal(0, 1)), "visits": int(rng.integers(0, 9))}
        if i % 7 != 3:
            x["score"] = float(rng.normal())
        if i % 3:
            x["city"] = CITIES[int(rng.integers(len(CITIES)))]
        if i % 4:
            x["tags"] = [TAGS[int(j)] for j in rng.integers(0, 4, size=int(rng.integers(0, 3)))]
        if i % 5:
            x["vip"] = bool(rng.integers(2))
        events.append(x)
    return events


def target(x: dict[str, Any], kind: str) -> Any:
    # an interaction: the city flips the sign of the age's effect
    inter = x["age"] * (1.0 if x.get("city") in ("Lyon", "Oslo") else -1.0)
    y = inter + 0.5 * x.get("score", 0.0)
    return y if kind == "regression" else y > 0


def trained_fm(kind: str, seed: int = 0, dense: tuple[str, ...] = ()) -> Any:
    cls = FMRegressor if kind == "regression" else FMClassifier
    model = cls(AdaGrad(0.1), k=4, bits=8, dense=list(dense), init_std=0.1,
                factor_optimizer=AdaGrad(0.1), seed=seed)
    events = make_events(600, seed=10 + seed)
    model.learn_many(events, [target(x, kind) for x in events])
    return model


def n_known(x: dict[str, Any]) -> int:
    """Features of ``x`` but empty lists (no slot at all), as a linear model counts them."""
    return sum(v != [] for v in x.values())


def served(model: Any) -> LearnerPredictor:
    classes = None if model.task == "regression" else model.classes_
    return LearnerPredictor(model, version=1, created_at=0.0, classes=classes)


def reference(model: Any, events: list[dict[str, Any]]) -> np.ndarray:
    """The learner's own answer: P(positive) of a classifier, the value of a regressor."""
    if model.task == "regression":
        return np.asarray(model.predict_many(events), dtype=np.float64)
    return np.asarray(model.predict_proba_many(events))[:, 1]


def no_learner_calls(predictor: LearnerPredictor) -> None:
    """The server must not fall back to the learner's own predict."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the learner's own predict was called")

    for name in ("predict_many", "predict_proba_many", "predict_one", "predict_proba_one"):
        setattr(predictor.learner, name, refuse)


def table_of(events: list[dict[str, Any]]) -> pa.Table:
    """One column per feature of any event, null where an event lacks it."""
    names = sorted({k for x in events for k in x})
    return pa.table({name: [x.get(name) for x in events] for name in names})


def column_dict(events: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    table = table_of(events)
    return dict(zip(table.column_names, table.columns, strict=True)), len(events)


@pytest.mark.parametrize("kind", ["regression", "binary"])
@pytest.mark.parametrize("dense", [(), ("age", "score")])
def test_fm_predictor_equals_the_learner_on_every_path(kind: str, dense: tuple[str, ...]) -> None:
    model = trained_fm(kind, dense=dense)
    events = make_events(200, seed=99)
    want = reference(model, events)
    predictor = served(model)
    assert type(predictor._scorer) is FMScorer
    assert (predictor._native is not None) == native_available()
    no_learner_calls(predictor)

    one = np.array([predictor.predict_one(x)[1 if kind == "binary" else 0] for x in events],
                   dtype=object)
    one = np.array([p[1] for p in one] if kind == "binary" else list(one), dtype=np.float64)
    many = predictor.predict_features(events)
    cols = predictor.predict_columns(*column_dict(events))
    for got in (many, cols):
        values = got.values if kind == "regression" else np.asarray(got.probabilities)[:, 1]
        np.testing.assert_allclose(np.asarray(values, dtype=np.float64), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(one, want, rtol=0, atol=1e-9)
    if kind == "binary":  # the label follows the probability, as the learner's
        restored = served(trained_fm(kind, dense=dense))
        assert list(many.values) == restored.learner.predict_many(events).tolist()
    assert predictor._scorer.events == 3 * len(events)
    assert predictor.native_hits == 0
    # every feature counts as known (initial factors are random draws) but an empty list
    assert list(many.known) == list(cols.known) == [n_known(x) for x in events]


def body_of(x: dict[str, Any]) -> bytes:
    return orjson.dumps({"features": x})


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
@pytest.mark.parametrize("kind", ["regression", "binary"])
@pytest.mark.parametrize("k", [1, 4, 37])
def test_fm_native_table_scores_one_event_bodies_as_the_learner(kind: str, k: int) -> None:
    cls = FMRegressor if kind == "regression" else FMClassifier
    model = cls(AdaGrad(0.1), k=k, bits=8, init_std=0.1, factor_optimizer=AdaGrad(0.1))
    train = make_events(400, seed=21)
    model.learn_many(train, [target(x, kind) for x in train])
    events = make_events(300, seed=22)
    want = reference(model, events)
    predictor = served(model)
    assert predictor._native.k == k
    no_learner_calls(predictor)
    in_c = in_python = 0
    for i, x in enumerate(events):
        got = native_answer(predictor, body_of(x))
        if got is False:  # a name or string not in the table yet: Python answers, then teaches it
            got = predictor.predict_one(x)
            predictor.remember(x)
            in_python += 1
        else:
            in_c += 1
        assert got is not None
        value, proba, known = got
        assert abs((value if kind == "regression" else proba[1]) - want[i]) < 1e-9
        assert known == predictor.predict_one(x)[2] == n_known(x)
    assert predictor.native_hits == in_c > 200  # most bodies were scored in C
    assert in_python > 0
    # every body again: all in C now, equal to the learner; with the event's id, the same
    for i, x in enumerate(events):
        value, proba, _known = native_answer(predictor, body_of(x))
        assert abs((value if kind == "regression" else proba[1]) - want[i]) < 1e-9
        with_id = predictor.predict_event(orjson.dumps({"id": f"e-{i}", "features": x}))
        assert with_id == ((value, proba, _known), f"e-{i}", None, None)
    assert predictor.native_hits == in_c + 2 * len(events)


def test_fm_without_the_extension_is_scored_in_python(monkeypatch: Any) -> None:
    monkeypatch.setattr(linear_scorer, "_NativeShares", None)
    model = trained_fm("binary")
    predictor = served(model)
    assert predictor._native is None and native_answer(predictor, b'{"features": {"a": 1}}') is None
    events = make_events(40, seed=4)
    got = [predictor.predict_one(x)[1][1] for x in events]
    np.testing.assert_allclose(got, reference(model, events), rtol=0, atol=1e-9)
    assert predictor._scorer.events == len(events)


def test_the_pairwise_term_is_in_the_score() -> None:
    """Without the factors' term the served score would be the linear part only."""
    model = trained_fm("regression")
    events = make_events(50, seed=5)
    state = model.state()
    state.arrays["factors"][:] = 0.0
    linear_only = learner_from_state(state)
    got = np.asarray(served(model).predict_features(events).values, dtype=np.float64)
    flat = np.asarray(served(linear_only).predict_features(events).values, dtype=np.float64)
    assert np.abs(got - flat).max() > 1e-3
    np.testing.assert_allclose(got, model.predict_many(events), rtol=0, atol=1e-9)


def test_known_features_count_weights_and_factors() -> None:
    """A feature is known when its slot has a non-zero weight or any non-zero factor."""
    model = FMClassifier(k=3, bits=10)
    state = model.state()
    w, v = state.arrays["weights"], state.arrays["factors"]
    w[:] = 0.0
    v[:] = 0.0
    hasher = FMScorer.from_learner(model).hasher
    only_weight, only_factor, neither = (hasher.slot_of(n)[0] for n in ("w", "f", "none"))
    assert len({only_weight, only_factor, neither}) == 3
    w[only_weight] = 0.7
    v[only_factor, 2] = -0.3
    city = hasher.slot_of("city", "Lyon")[0]
    v[city, 0] = 0.2
    predictor = served(learner_from_state(state))
    events = [
        {"w": 1.0, "f": 2.0, "none": 3.0},
        {"none": 1.0},
        {"f": 1.0, "city": "Lyon"},
        {"city": "Oslo", "tags": ["Lyon"]},  # another name's string: its own slot
        {"tags": []},  # no entry at all: the intercept alone
    ]
    want = [2, 0, 2, 0, 0]
    assert [predictor.predict_one(x)[2] for x in events] == want
    if native_available():  # the C table counts them alike
        for x in events:
            predictor.remember(x)
        assert [native_answer(predictor, body_of(x))[2] for x in events] == want
        assert predictor.native_hits == len(events)
    assert list(predictor.predict_features(events).known) == want
    cols = predictor.predict_columns(*column_dict(events))
    assert list(cols.known) == want
    model = predictor.learner
    proba = [predictor.predict_one(x)[1][1] for x in events]
    np.testing.assert_allclose(proba, model.predict_proba_many(events)[:, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(cols.probabilities)[:, 1], proba, rtol=0, atol=1e-12)


# -- the service: a store, the watcher, the app, every route ----------------------


def call(app: PredictionApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def arrow_body(events: list[dict[str, Any]]) -> bytes:
    table = table_of(events)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def v2_request(events: list[dict[str, Any]]) -> dict[str, Any]:
    """One tensor per feature, ``null`` where an event lacks it (no lists in v2)."""
    names = sorted({k for x in events for k in x})
    inputs = []
    for name in names:
        data = [x.get(name) for x in events]
        kind = {float: "FP64", int: "INT64", bool: "BOOL", str: "BYTES"}[
            type(next(d for d in data if d is not None))
        ]
        inputs.append({"name": name, "datatype": kind, "shape": [len(data)], "data": data})
    return {"inputs": inputs}


def answers_of(app: PredictionApp, events: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    """(P(positive) per event, known features per event) from every route."""
    out: dict[str, tuple[Any, Any]] = {}
    ones = [call(app, "POST", "/v1/predict", json={"features": x}) for x in events]
    assert all(r.status_code == 200 for r in ones), ones[0].text
    out["one"] = ([r.json()["probabilities"][1] for r in ones],
                  [r.json()["known_features"] for r in ones])
    env = call(app, "POST", "/v1/predict",
               json={"events": [{"features": x, "id": i} for i, x in enumerate(events)]})
    assert env.status_code == 200, env.text
    doc = env.json()
    assert doc["ids"] == list(range(len(events)))
    out["envelope"] = ([p[1] for p in doc["probabilities"]], doc["known_features"])
    arrow = call(app, "POST", "/v1/predict", content=arrow_body(events), headers=ARROW)
    assert arrow.status_code == 200, arrow.text
    out["arrow"] = ([p[1] for p in arrow.json()["probabilities"]],
                    arrow.json()["known_features"])
    plain = [{k: v for k, v in x.items() if type(v) is not list} for x in events]
    v2 = call(app, "POST", "/v2/models/ctr/infer", json=v2_request(plain))
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    out["v2"] = ([p[1] for p in outputs["probabilities"]["data"]],
                 outputs["known_features"]["data"])
    tf = call(app, "POST", "/v1/models/ctr:predict", json={"instances": events})
    assert tf.status_code == 200, tf.text
    out["tf"] = ([p[1] for p in tf.json()["probabilities"]], tf.json()["known_features"])
    return out


def test_every_route_serves_stored_fm_versions_with_hot_swap(tmp_path: Any) -> None:
    store = ModelStore(str(tmp_path), "ctr")
    linear = LogisticRegression(bits=8)
    events = make_events(300, seed=3)
    linear.learn_many(events, [target(x, "binary") for x in events])
    first, second = trained_fm("binary", seed=0), trained_fm("binary", seed=1)
    watcher = ModelWatcher(StoreSource(store, "ctr"))
    app = PredictionApp(watcher)
    asked = make_events(12, seed=42)

    store.commit(linear.state())  # version 1: a linear model, natively scored
    watcher.poll_once()
    lin = answers_of(app, asked)
    np.testing.assert_allclose(lin["one"][0], reference(linear, asked), rtol=0, atol=1e-12)

    for version, model in ((2, first), (3, second)):
        assert store.commit(model.state()) == version
        watcher.poll_once()
        current = watcher.current
        assert current.version == version and type(current._scorer) is FMScorer
        no_learner_calls(current)
        got = answers_of(app, asked)
        want = reference(model, asked)
        plain = [{k: v for k, v in x.items() if type(v) is not list} for x in asked]
        for route, (proba, known) in got.items():
            exp = reference(model, plain) if route == "v2" else want
            np.testing.assert_allclose(proba, exp, rtol=0, atol=1e-9, err_msg=route)
            assert known == [n_known(x) for x in (plain if route == "v2" else asked)], route
        # one-event bodies in C (once their names and strings were taught), the rest in numpy
        assert current._scorer.events > 0
        assert (current.native_hits > 0) == native_available()
    # the two FMs answer differently: the swap is seen
    assert np.abs(np.array(got["one"][0]) - reference(first, asked)).max() > 1e-6

    store.rollback(1)  # back to the linear model: its native table answers again
    watcher.poll_once()
    assert type(watcher.current._scorer) is LinearScorer
    back = answers_of(app, asked)
    assert back["one"] == lin["one"]
    if native_available():
        assert watcher.current.native_hits > 0


def test_a_regression_fm_answers_its_value_on_the_native_route(tmp_path: Any) -> None:
    store = ModelStore(str(tmp_path), "ctr")
    model = trained_fm("regression")
    store.commit(model.state())
    watcher = ModelWatcher(StoreSource(store, "ctr"))
    watcher.poll_once()
    app = PredictionApp(watcher)
    asked = make_events(20, seed=7)
    got = [call(app, "POST", "/v1/predict", json={"features": x}).json() for x in asked]
    np.testing.assert_allclose([d["prediction"] for d in got], reference(model, asked),
                               rtol=0, atol=1e-9)
    assert all("probabilities" not in d for d in got)
    # a bad value is still named by the validating path
    bad = call(app, "POST", "/v1/predict", json={"features": {"age": {"x": 1}}})
    assert bad.status_code == 422
    assert orjson.loads(bad.content)["fields"][0]["field"] == "event.features.age"


def test_fm_state_round_trip_keeps_the_factors() -> None:
    model = trained_fm("binary")
    state = ModelState.from_bytes(model.state().to_bytes())
    rebuilt = learner_from_state(state)
    predictor = served(rebuilt)
    events = make_events(30, seed=8)
    got = np.asarray(predictor.predict_features(events).probabilities)[:, 1]
    np.testing.assert_allclose(got, reference(model, events), rtol=0, atol=1e-12)


# -- the native table against the Python path, on drawn bodies ----------------------

FM_NATIVE = None if not native_available() else trained_fm("binary", seed=2)
WORDS = ["Lyon", "Oslo", "", "a b", "é", "🙂"]
fm_names = st.sampled_from(["age", "visits", "score", "city", "tags", "vip"]) | st.text(
    max_size=5
)
fm_values = (
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.booleans()
    | st.sampled_from(WORDS + CITIES)
    | st.lists(st.sampled_from(WORDS + TAGS), max_size=4)
)
fm_odd = (
    st.none() | st.floats() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)
    | st.lists(st.integers(), min_size=1, max_size=2)
)


def dump(features: dict[str, Any], spaced: bool) -> bytes:
    doc = {"features": features}
    try:
        text = orjson.dumps(doc)
    except TypeError:  # integers past 64 bits
        text = json.dumps(doc, ensure_ascii=False).encode()
    return text.replace(b":", b" :\n ", 1) if spaced else text


def agree(got: Any, want: Any) -> None:
    value, proba, known = got
    assert known == want[2]
    assert value == want[0]
    assert abs(proba[1] - want[1][1]) <= 1e-9


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
@settings(max_examples=300, deadline=None)
@given(
    features=st.dictionaries(fm_names, fm_values, max_size=10)
    | st.dictionaries(fm_names, fm_values | fm_odd, max_size=5),
    spaced=st.booleans(),
)
def test_drawn_bodies_get_the_python_answer_from_the_fm_table_or_step_aside(
    features: dict[str, Any], spaced: bool
) -> None:
    predictor = served(FM_NATIVE)
    body = dump(features, spaced)
    want = predictor.predict_one(features)  # None: not a plain event, the validation names it
    got = native_answer(predictor, body)
    if got is False and want is not None:
        predictor.remember(features)
        got = native_answer(predictor, body)
    if got is None or got is False:
        return  # stepped aside: the Python path answers
    assert want is not None  # never a score for an event the Python path refuses
    agree(got, want)


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
@settings(max_examples=300, deadline=None)
@given(
    features=st.dictionaries(
        st.sampled_from(["age", "city", "tags"]) | st.text("abcxyz_019", min_size=1, max_size=4),
        fm_values, min_size=1, max_size=12,
    ),
    spaced=st.booleans(),
)
def test_a_plain_body_is_scored_by_the_fm_table_once_remembered(
    features: dict[str, Any], spaced: bool
) -> None:
    predictor = served(FM_NATIVE)
    want = predictor.predict_one(features)
    predictor.remember(features)
    got = native_answer(predictor, dump(features, spaced))
    assert predictor.native_hits == 1
    agree(got, want)


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
def test_the_fm_table_starts_afresh_past_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_scorer, "_CACHE_LIMIT", 20)
    model = trained_fm("regression")
    predictor = served(model)
    events = [{"age": float(i), "city": f"c{i}", f"n{i % 30}": 1.0} for i in range(100)]
    want = model.predict_many(events)
    for _ in range(2):
        for i, x in enumerate(events):
            got = native_answer(predictor, body_of(x))
            if got is False:
                got = predictor.predict_one(x)
                predictor.remember(x)
                assert abs(native_answer(predictor, body_of(x))[0] - want[i]) < 1e-9
            assert len(predictor._native) <= 20
            assert abs(got[0] - want[i]) < 1e-9
    assert predictor.native_hits >= len(events)


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
def test_the_fm_table_frees_the_factors_it_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    monkeypatch.setattr(linear_scorer, "_CACHE_LIMIT", 50)
    model = FMRegressor(k=64, bits=8)  # 512 bytes of factors per entry
    predictor = served(model)
    table = predictor._scorer

    def teach() -> None:  # 200 strings over and over: the table starts afresh every 49
        for i in range(3000):
            table.remember({"city": f"c{i % 200}", "age": 1.0})

    teach()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        teach()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(predictor._native) <= 50
    # leaking the factors of dropped entries would keep 3,000 x 2 x 512 bytes, ~3 MB
    assert grown < 200_000, f"{grown} bytes kept by a table of at most 50 entries"
