"""Feature crosses (``crosses``, like Vowpal Wabbit's ``-q``): one definition
(``streamlearn.contract.cross_entry``), the same entries from every Python encoder (the
corpus covers the reference, the training and serving decoders and the JVM), learned and
served."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from streamlearn.contract import Rejection
from streamlearn.contract.reference import Settings, encode_event
from streamlearn.errors import ConfigError, ValidationError
from streamlearn.features import FeatureHasher
from streamlearn.generators import INTERACTION_PAIRS, interactions
from streamlearn.learners import FMClassifier, LogisticRegression
from streamlearn.metrics import LogLoss, progressive_score
from streamlearn.optim import Normalized
from streamlearn.serving.columns import ColumnEncoder
from streamlearn.serving.learner_predictor import LearnerPredictor

CROSSES = (("u", "i"), ("tags", "x"), ("i", "flag"), ("age", "u"))


def _event(rng: random.Random) -> dict[str, Any]:
    """Some of the crossed features (strings, lists, numbers, booleans, a dense one)."""
    pool = {
        "u": lambda: f"u{rng.randrange(30)}",
        "i": lambda: f"i{rng.randrange(30)}",
        "tags": lambda: [f"t{rng.randrange(9)}" for _ in range(rng.randrange(4))],
        "x": lambda: round(rng.uniform(-3, 3), 3),
        "flag": lambda: rng.random() < 0.5,
        "age": lambda: rng.randrange(90),
        "other": lambda: "o",
    }
    names = [n for n in pool if rng.random() < 0.75] or ["other"]
    rng.shuffle(names)
    return {n: pool[n]() for n in names}


def _rows(batch: Any, i: int) -> list[tuple[int, float]]:
    lo, hi = batch.offsets[i], batch.offsets[i + 1]
    return list(zip(batch.indices[lo:hi].tolist(), batch.values[lo:hi].tolist(), strict=True))


def test_the_batch_path_crosses_as_the_reference_does() -> None:
    rng = random.Random(3)
    events = [_event(rng) for _ in range(400)]
    hasher = FeatureHasher(bits=10, dense=["age"], crosses=CROSSES)
    settings = Settings(bits=10, dense=("age",), crosses=CROSSES)
    for _ in range(2):  # the second time through the remembered schemas and layouts
        batch = hasher.encode(events)
        for i, x in enumerate(events):
            [want] = encode_event({"features": x, "label": 1}, settings).events
            assert _rows(batch, i) == [(s, v) for s, v, _ in want.rows], x
            assert _rows(hasher.encode_one(x), 0) == _rows(batch, i)
        few = hasher.encode(events[:3])  # a small batch: assembled in plain Python
        assert [_rows(few, i) for i in range(3)] == [_rows(batch, i) for i in range(3)]
        np.testing.assert_array_equal(few.numeric, batch.numeric[:batch.offsets[3]])
    own = FeatureHasher(bits=10, dense=["age"]).encode(events)
    assert len(batch.indices) > len(own.indices) + 300
    assert not batch.numeric[own.offsets[1]:batch.offsets[1]].any(), "crossed: not numeric"


def test_columns_cross_as_the_mappings_do() -> None:
    rng = random.Random(5)
    events = [_event(rng) for _ in range(300)]
    names = ["u", "tags", "x", "i", "flag", "age", "other"]
    columns = {n: pa.array([x.get(n) for x in events]) for n in names}  # null: absent
    hasher = FeatureHasher(bits=10, dense=["age"], crosses=CROSSES)
    got = ColumnEncoder(hasher).encode(columns, len(events))
    ordered = [{n: x[n] for n in names if n in x} for x in events]  # the columns' order
    want = hasher.encode(ordered)
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.values, want.values)


def test_crosses_are_checked_and_an_event_crossing_too_many_is_rejected() -> None:
    for bad in (["ab"], [("a", "a")], [("a", "b"), ("a", "b")], [("a", "b", "c")], "ab",
                [("a", "")], [(f"a{i}", "b") for i in range(65)]):
        with pytest.raises(ValidationError, match="crosses"):
            FeatureHasher(crosses=bad)
        with pytest.raises(ConfigError, match="crosses"):
            LogisticRegression(crosses=bad)
    hasher = FeatureHasher(bits=8, crosses=[("a", "b")])
    many = [str(i) for i in range(101)]
    events = [{"a": "x", "b": "y"}] * 6 + [{"a": many, "b": many}]
    with pytest.raises(Rejection) as err:
        hasher.encode(events)
    assert (err.value.code, err.value.index) == ("features.too_many_crossed", 6)
    assert "10201" in str(err.value)


def test_a_cross_learns_what_a_linear_model_cannot() -> None:
    events = list(interactions(40_000, seed=1))
    xs, ys = [e["features"] for e in events], [e["label"] for e in events]

    def loss(**crosses: Any) -> float:
        model = LogisticRegression(Normalized(0.5), update="event", intercept_lr=None,
                                   bits=18, **crosses)
        stream = zip(xs, ys, strict=True)
        return progressive_score(model, stream, [LogLoss()], batch_size=1000)["LogLoss"]

    linear, crossed = loss(), loss(crosses=INTERACTION_PAIRS)
    assert crossed < linear - 0.02, (crossed, linear)


@pytest.mark.parametrize("make", [
    lambda: LogisticRegression(Normalized(0.5), update="event", intercept_lr=None, bits=10,
                               dense=["age"], crosses=CROSSES),
    lambda: FMClassifier(k=2, bits=10, crosses=CROSSES),
])
def test_a_crossed_learner_is_served_as_it_predicts(make: Any) -> None:
    rng = random.Random(11)
    events = [_event(rng) for _ in range(500)]
    model = make()
    model.learn_many(events, [int(len(x) % 2 == 0) for x in events])
    predictor = LearnerPredictor(model, version=1, created_at=0.0, classes=model.classes_)
    assert predictor._scorer is None, "the scorers and the C path do not cross: the learner does"
    want = np.asarray(model.predict_proba_many(events))[:, 1]
    got = predictor.predict_features(events)
    np.testing.assert_allclose(np.asarray(got.probabilities)[:, 1], want, rtol=1e-12)
    names = ["u", "tags", "x", "i", "flag", "age", "other"]
    ordered = [{n: x[n] for n in names if n in x} for x in events]
    columns = {n: pa.array([x.get(n) for x in events]) for n in names}
    by_columns = predictor.predict_columns(columns, len(events))
    np.testing.assert_allclose(
        np.asarray(by_columns.probabilities)[:, 1],
        np.asarray(model.predict_proba_many(ordered))[:, 1], rtol=1e-12,
    )


def test_the_server_refuses_an_event_crossing_too_many_naming_the_rule() -> None:
    from streamlearn.serving import ModelWatcher, PredictionApp
    from tests.test_serving_app import call

    model = LogisticRegression(bits=8, crosses=[("a", "b")])
    model.learn_one({"a": "x", "b": "y"}, True)

    class Source:
        name = "m"

        def serving_version(self) -> int:
            return 1

        def load(self, version: int) -> LearnerPredictor:
            return LearnerPredictor(model, version=version, created_at=0.0, classes=(0, 1))

        def versions(self) -> list[dict]:
            return [{"version": 1}]

    watcher = ModelWatcher(Source())
    watcher.poll_once()
    app = PredictionApp(watcher)
    ok = call(app, "POST", "/v1/predict", json={"features": {"a": "x", "b": "y"}})
    assert ok.status_code == 200, ok.text
    many = [str(i) for i in range(101)]
    refused = call(app, "POST", "/v1/predict", json={"features": {"a": many, "b": many}})
    assert refused.status_code == 422
    assert refused.json()["fields"][0]["code"] == "features.too_many_crossed"


def test_an_event_crossing_two_huge_lists_is_refused_before_any_pair_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each list is one feature (within max_features); their cross would be 10^10
    entries: counted first, refused before one pair is made."""
    import streamlearn.features as features

    def no_pair(*_args: Any) -> tuple[int, float]:
        raise AssertionError("a crossed entry was made before the count was checked")

    monkeypatch.setattr(features, "cross_entry", no_pair)
    many = [str(i) for i in range(100_000)]
    with pytest.raises(Rejection, match="10000000000"):
        FeatureHasher(bits=8, crosses=[("a", "b")]).encode_one({"a": many, "b": many})
