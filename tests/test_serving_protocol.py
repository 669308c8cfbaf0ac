"""The optional protocols of a served predictor: the fast paths
(:class:`FastPredictor`) and following deltas (:class:`Follower`).

The app takes each fast path in the documented order, treats ``None`` as "not
on this path" and ``False`` from ``predict_event`` as "answer with
``predict_one`` (or ``predict_fast``), then ``remember``"; a predictor lacking any member is served
by the validating path alone. Whether a predictor has them is found out once
per loaded version, never per request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from streamlearn.learners import LogisticRegression
from streamlearn.serving import ModelWatcher, PredictionApp, Predictions
from streamlearn.serving.learner_predictor import LearnerPredictor
from streamlearn.serving.model import FastPredictor, Follower, Predictor
from streamlearn.serving.watcher import Served

EVENT = {"age": 31.0, "country": "FR"}


class Partial:
    """A predictor with every fast path but ``remember``, each answering as
    told (``None`` unless told) and noting its calls."""

    def __init__(self, version: int = 1, **answers: Any) -> None:
        self.version = version
        self.created_at = time.time()
        self.lineage: dict[str, Any] = {}
        self.classes = None
        self.answers = answers
        self.calls: list[str] = []

    def _answer(self, name: str) -> Any:
        self.calls.append(name)
        return self.answers.get(name)

    def predict_event(self, body: bytes) -> Any:
        return self._answer("predict_event")

    def predict_one(self, features: Any) -> Any:
        return self._answer("predict_one")

    def predict_fast(self, features: Any) -> Any:
        return self._answer("predict_fast")

    def predict_features(self, features: Any) -> Predictions:
        self.calls.append("predict_features")
        return Predictions(values=[-1.0] * len(features))

    def predict_columns(self, columns: Any, n_rows: int) -> Predictions:
        self.calls.append("predict_columns")
        return Predictions(values=[-1.0] * n_rows)


class Recorder(Partial):
    """A predictor with every fast path."""

    def remember(self, features: Any) -> None:
        self._answer("remember")


class Versions:
    name = "m"

    def __init__(self, *predictors: Any) -> None:
        self.by_version = {p.version: p for p in predictors}
        self.serving = max(self.by_version)

    def serving_version(self) -> int:
        return self.serving

    def load(self, version: int) -> Any:
        return self.by_version[version]

    def versions(self) -> list[dict[str, Any]]:
        return [{"version": v} for v in sorted(self.by_version)]


def app_of(*predictors: Any) -> PredictionApp:
    watcher = ModelWatcher(Versions(*predictors))
    assert watcher.poll_once()
    return PredictionApp(watcher)


def post(app: PredictionApp, body: Any, path: str = "/v1/predict") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=body)

    return asyncio.run(go())


def test_the_learner_predictor_has_every_fast_path_and_follows() -> None:
    model = LogisticRegression(bits=8)
    model.learn_many([EVENT, {"age": 5.0}], [True, False])
    served = Served.of(LearnerPredictor(model, 1, 0.0, classes=model.classes_))
    assert isinstance(served.predictor, FastPredictor) and isinstance(served.predictor, Follower)
    assert served.fast is served.predictor and served.follower is served.predictor
    assert isinstance(Recorder(), FastPredictor) and not isinstance(Recorder(), Follower)


def test_the_fast_paths_are_taken_in_order_and_none_means_the_next_one() -> None:
    one = (7.0, None, 2)
    body_first = Recorder(predict_event=(one, None, None, None))
    doc = post(app_of(body_first), {"features": EVENT}).json()
    assert body_first.calls == ["predict_event"] and doc["prediction"] == 7.0
    assert doc["known_features"] == 2 and "id" not in doc and "key" not in doc
    # the event's id and key, read from the body with it, are echoed as the Python path does
    with_id = Recorder(predict_event=(one, "e-1", 42, 1700000000))
    doc = post(app_of(with_id), {"features": EVENT, "id": "e-1", "key": 42}).json()
    assert with_id.calls == ["predict_event"]
    assert (doc["prediction"], doc["id"], doc["key"]) == (7.0, "e-1", 42)
    assert list(doc)[-2:] == ["id", "key"]

    then_one = Recorder(predict_one=one)  # the body: None, not on this path
    assert post(app_of(then_one), {"features": EVENT}).json()["prediction"] == 7.0
    assert then_one.calls == ["predict_event", "predict_one"]  # nothing remembered

    missed = Recorder(predict_event=False, predict_one=one)  # the table lacks a name
    assert post(app_of(missed), {"features": EVENT}).json()["prediction"] == 7.0
    assert missed.calls == ["predict_event", "predict_one", "remember"]
    # with an id, the decoded event is answered by predict_fast, then remembered
    missed = Recorder(predict_event=False, predict_fast=Predictions(values=[5.0]))
    doc = post(app_of(missed), {"features": EVENT, "id": "e-2"}).json()
    assert (doc["prediction"], doc["id"]) == (5.0, "e-2")
    assert missed.calls == ["predict_event", "predict_fast", "remember"]

    batch = Recorder(predict_fast=Predictions(values=[5.0, 6.0]))
    doc = post(app_of(batch), {"events": [{"features": EVENT}] * 2}).json()
    assert doc["predictions"] == [5.0, 6.0]
    assert batch.calls == ["predict_event", "predict_fast"]

    nothing = Recorder()  # every fast path says None: the validating path answers
    assert post(app_of(nothing), {"features": EVENT}).json()["prediction"] == -1.0
    assert nothing.calls == ["predict_event", "predict_one", "predict_fast", "predict_features"]


def test_a_predictor_lacking_a_member_is_served_by_the_validating_path_alone() -> None:
    partial = Partial(predict_event=((7.0, None, 2), None, None, None), predict_one=(7.0, None, 2))
    served = Served.of(partial)
    assert isinstance(partial, Predictor) and served.fast is None and served.follower is None
    assert post(app_of(partial), {"features": EVENT}).json()["prediction"] == -1.0
    assert partial.calls == ["predict_features"]


def test_fast_paths_are_found_out_once_per_version_not_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[int] = []
    of = Served.of

    def counted(cls: type[Served], predictor: Any) -> Served:
        checked.append(predictor.version)
        return of(predictor)

    monkeypatch.setattr(Served, "of", classmethod(counted))
    v1 = Recorder(1, predict_event=((1.0, None, 1), None, None, None))
    v2 = Recorder(2, predict_event=((2.0, None, 1), None, None, None))
    app = app_of(v1, v2)
    assert checked == [2]
    for _ in range(5):
        assert post(app, {"features": EVENT}).json()["prediction"] == 2.0
    assert post(app, {"features": EVENT}, "/v1/predict?version=1").json()["version"] == 1
    assert post(app, {"features": EVENT}, "/v1/predict?version=1").json()["version"] == 1
    assert checked == [2, 1]  # version 1 once, when it was loaded; then from the cache

