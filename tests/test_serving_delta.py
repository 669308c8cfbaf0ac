"""Serving delta versions: the watcher applies each delta to a spare predictor
(double buffering) instead of loading the model whole, and must then answer
exactly as a fresh load of the same version would, one version per request,
and keep serving through a broken delta chain."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamlearn.learners import (
    FMClassifier,
    FMRegressor,
    LinearRegression,
    LogisticRegression,
    SoftmaxRegression,
)
from streamlearn.optim import AdaGrad
from streamlearn.serving.learner_predictor import LearnerPredictor
from streamlearn.serving.linear_scorer import native_available
from streamlearn.serving.model import Step
from streamlearn.serving.store_source import StoreSource
from streamlearn.serving.stream_scoring import Scorer
from streamlearn.serving.watcher import ModelWatcher
from streamlearn.state import ModelState
from streamlearn.store import Changes, ModelStore
from tests.test_serving_fast import native_answer

COUNTRIES = ["FR", "DE", "JP", "US", "BR"]


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n):
        x: dict[str, Any] = {
            "age": float(rng.integers(0, 90)), "country": str(rng.choice(COUNTRIES))
        }
        if rng.random() < 0.5:
            x["tags"] = [str(t) for t in rng.choice(["a", "b", "c", "d"], rng.integers(0, 3))]
        if rng.random() < 0.5:
            x["member"] = bool(rng.random() < 0.5)
        if rng.random() < 0.3:
            x["ref"] = f"r{rng.integers(0, 50)}"
        events.append(x)
    return events


def trained(kind: str) -> Any:
    events = make_events(400, seed=1)
    if kind == "linear":
        model: Any = LinearRegression(bits=10)
        y: list[Any] = [x["age"] / 10.0 + (x["country"] == "FR") for x in events]
    elif kind == "linear-scaled":
        model = LinearRegression(bits=10, scale=True)
        y = [x["age"] / 10.0 + (x["country"] == "FR") for x in events]
    elif kind == "logistic":
        model = LogisticRegression(bits=10)
        y = [(x["age"] > 40) != (x["country"] == "FR") for x in events]
    elif kind == "softmax":
        model = SoftmaxRegression(bits=10)
        y = [x["country"] if x["country"] in ("FR", "DE") else "other" for x in events]
    elif kind == "fm-regression":
        model = FMRegressor(AdaGrad(0.1), k=3, bits=9, init_std=0.1, factor_optimizer=AdaGrad(0.1))
        y = [x["age"] / 10.0 for x in events]
    else:
        model = FMClassifier(AdaGrad(0.1), k=3, bits=9, init_std=0.1, factor_optimizer=AdaGrad(0.1))
        y = [x["age"] > 40 for x in events]
    model.learn_many(events, y)
    return model


def random_delta(state: ModelState, rng: np.random.Generator, hot: np.ndarray) -> Changes:
    """New random values (some exactly 0) at random slots and some of ``hot``
    (the slots the test events hit), in every per-slot array; a new intercept."""
    n = state.meta["n_slots"]
    slots = np.unique(np.concatenate([
        rng.integers(0, n, rng.integers(0, 40)),
        rng.choice(hot, rng.integers(1, min(len(hot), 12) + 1), replace=False),
    ]))
    for name, a in state.arrays.items():
        if a.shape[:1] != (n,) or name.startswith("intercept"):
            continue
        values = rng.normal(size=(len(slots),) + a.shape[1:])
        if "var" in name or "g2" in name or "count" in name or name.endswith(".n"):
            values = np.abs(values)
        values[rng.random(len(slots)) < 0.2] = 0.0
        a[slots] = values
    state.arrays["intercept"][...] = rng.normal(size=state.arrays["intercept"].shape)
    return Changes.gather(state, slots)


def hot_slots(model: Any, events: list[dict[str, Any]]) -> np.ndarray:
    batch = model.encode(events)
    return np.unique(batch.indices)


def columns_of(events: list[dict[str, Any]]) -> tuple[dict[str, pa.Array], int]:
    names = sorted({k for x in events for k in x})
    return {k: pa.array([x.get(k) for x in events]) for k in names}, len(events)


def answers(p: LearnerPredictor, events: list[dict[str, Any]]) -> list[Any]:
    """Everything the predictor answers for ``events`` by every path it has."""
    out: list[Any] = []
    many = p.predict_features(events)
    out.append((np.asarray(many.values).tolist(), np.asarray(many.known).tolist(),
                None if many.probabilities is None else np.asarray(many.probabilities).tolist()))
    cols = p.predict_columns(*columns_of(events))
    out.append((np.asarray(cols.values).tolist(), np.asarray(cols.known).tolist(),
                None if cols.probabilities is None else np.asarray(cols.probabilities).tolist()))
    for x in events:
        out.append(p.predict_one(x))
        body = native_answer(p, orjson.dumps({"features": x}))
        if body is False:  # not in the native table yet: Python answers, then teaches it
            p.remember(x)
            body = native_answer(p, orjson.dumps({"features": x}))
        out.append(body)
    return out


def arrays_of(p: LearnerPredictor) -> dict[str, np.ndarray]:
    return dict(p.learner.state(copy=False).arrays)


KINDS = ["linear", "linear-scaled", "logistic", "softmax", "fm-regression", "fm-classifier"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_chain_of_random_deltas_serves_what_a_fresh_load_serves(
    tmp_path: Path, kind: str
) -> None:
    model = trained(kind)
    store = ModelStore(str(tmp_path), "m")
    state = model.state()
    v = store.commit(state)
    watcher = ModelWatcher(StoreSource(store, "m"))
    assert watcher.poll_once()
    events = make_events(30, seed=2)
    hot = hot_slots(model, events)
    answers(watcher.current, events)  # fill the caches and the native table of version 1
    watcher.poll_once()  # between versions: the spare is made
    rng = np.random.default_rng(abs(hash(kind)) % 1000)
    for step in range(8):
        for _ in range(int(rng.integers(1, 3))):  # one or two deltas per poll
            v = store.commit_delta(random_delta(state, rng, hot), parent=v)
        assert watcher.poll_once()
        current = watcher.current
        assert current.version == v
        fresh = StoreSource(store, "m").load(v)
        for name, a in arrays_of(fresh).items():
            np.testing.assert_array_equal(arrays_of(current)[name], a, err_msg=name)
        assert answers(current, events) == answers(fresh, events), f"version {v}"
        if step % 3 == 2:
            watcher.poll_once()  # between versions: the spare catches up
    assert watcher.loaded == 1 and watcher.applied == 8  # never loaded whole again
    # the spare, caught up once released, holds the same arrays as the current
    watcher.poll_once()
    spare = watcher._spare
    assert spare is not None and not watcher._owed and spare.version == v
    assert spare is not watcher.current
    for name, a in arrays_of(watcher.current).items():
        np.testing.assert_array_equal(arrays_of(spare)[name], a, err_msg=name)
    del spare
    assert answers(watcher._spare, events) == answers(watcher.current, events)


def test_a_held_predictor_is_never_changed_and_each_answer_is_one_version(tmp_path: Path) -> None:
    """Requests on many threads while versions are committed: every answer's
    score is the one its version gives, and a predictor a request holds (here
    for the time of several versions) is never written."""
    import threading
    import time

    store = ModelStore(str(tmp_path), "m")
    model = LinearRegression(bits=8)
    state = model.state()
    a_slot, a_sign = model._hasher.slot_of("a")
    c_slot, c_sign = model._hasher.slot_of("c", "x")

    def at(version: int) -> ModelState:
        # version v scores {"a": 1, "c": "x"} as v (intercept) + v (a) + 2v (c) = 4v
        state.arrays["intercept"][:] = version
        state.arrays["weights"][a_slot] = version * a_sign
        state.arrays["weights"][c_slot] = 2 * version * c_sign
        return state

    v = store.commit(at(1))
    # a generous wait for a held spare: a loaded machine must not turn a delta into a load
    watcher = ModelWatcher(StoreSource(store, "m"), interval_s=0.01, spare_wait_s=30.0)
    watcher.start()
    x = {"a": 1.0, "c": "x"}
    body = orjson.dumps({"features": x})
    cols = columns_of([x])
    wrong: list[str] = []
    counts = [0]
    stop = threading.Event()

    def request(i: int) -> None:
        while not stop.is_set():
            p = watcher.current
            if i % 3 == 0:
                got = native_answer(p, body)
                if got is False:
                    got = p.predict_one(x)
                    p.remember(x)
                value = got[0]
            elif i % 3 == 1:
                value = float(p.predict_features([x, x]).values[1])
            else:
                value = float(p.predict_columns(*cols).values[0])
            if value != 4 * p.version:
                wrong.append(f"version {p.version} answered {value}")
            counts[0] += 1
            del p

    def slow_request() -> None:  # holds one predictor across several versions
        while not stop.is_set():
            p = watcher.current
            version, before = p.version, p.predict_one(x)[0]
            time.sleep(0.25)
            if (p.version, p.predict_one(x)[0]) != (version, before):
                wrong.append(f"a held predictor changed from version {version}")
            del p

    threads = [threading.Thread(target=request, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=slow_request))
    try:
        for t in threads:
            t.start()
        for version in range(2, 41):
            v = store.commit_delta(Changes.gather(at(version), sorted({a_slot, c_slot})), parent=v)
            time.sleep(0.03)
        deadline = time.monotonic() + 30
        while watcher.current.version != v and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        watcher.stop()
    assert watcher.current.version == v
    assert wrong == []
    assert counts[0] > 100
    assert watcher.applied >= 10 and watcher.loaded == 1
    assert watcher.current.predict_one(x)[0] == 4 * v


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_delta_keeps_the_last_good_version_served(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(str(tmp_path), "ctr")
    model = trained("logistic")
    state = model.state()
    rng = np.random.default_rng(3)
    events = make_events(10, seed=4)
    hot = hot_slots(model, events)
    v1 = store.commit(state)
    watcher = ModelWatcher(StoreSource(store, "ctr"))
    watcher.poll_once()
    v2 = store.commit_delta(random_delta(state, rng, hot), parent=v1)
    watcher.poll_once()
    good = answers(watcher.current, events)
    v3 = store.commit_delta(random_delta(state, rng, hot), parent=v2)
    path = tmp_path / "ctr" / store.info(v3).file
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b"not an arrow file")
    with caplog.at_level(logging.WARNING, logger="streamlearn.serving.watcher"):
        for _ in range(5):
            assert not watcher.poll_once()
    assert watcher.current.version == v2
    assert answers(watcher.current, events) == good
    lines = [r.getMessage() for r in caplog.records if r.name == "streamlearn.serving.watcher"]
    assert len(lines) == 1, lines
    assert "model 'ctr'" in lines[0] and f"version {v3}" in lines[0], lines[0]
    assert "still serving version 2" in lines[0]
    assert watcher.last_error is not None and "BrokenChain" in watcher.last_error
    # the writer's next commit is a snapshot: served again, as a fresh load
    v4 = store.commit(state)
    assert watcher.poll_once() and watcher.current.version == v4
    assert answers(watcher.current, events) == answers(StoreSource(store, "ctr").load(v4), events)
    assert watcher.last_error is None


def test_pins_and_rollbacks_are_honoured_between_deltas(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path), "m")
    model = trained("linear")
    state = model.state()
    rng = np.random.default_rng(5)
    events = make_events(10, seed=6)
    hot = hot_slots(model, events)
    v = store.commit(state)
    watcher = ModelWatcher(StoreSource(store, "m"))
    watcher.poll_once()
    for _ in range(3):
        v = store.commit_delta(random_delta(state, rng, hot), parent=v)
        watcher.poll_once()
    assert watcher.current.version == 4 and watcher.applied == 3

    def same_as_fresh() -> None:
        fresh = StoreSource(store, "m").load(watcher.current.version)
        assert answers(watcher.current, events) == answers(fresh, events)

    store.pin(2)  # backwards: version 2 loaded whole
    assert watcher.poll_once() and watcher.current.version == 2
    same_as_fresh()
    store.unpin()  # forwards again: version 4 is still loaded (the cache), no load
    loaded = watcher.loaded
    assert watcher.poll_once() and watcher.current.version == 4
    same_as_fresh()
    assert watcher.loaded == loaded
    store.pin(2)
    watcher.poll_once()
    watcher._cache.clear()  # as if version 4 had left the cache: 2 -> 4 is a delta
    store.unpin()
    applied = watcher.applied
    assert watcher.poll_once() and watcher.current.version == 4
    same_as_fresh()
    assert watcher.applied == applied + 1 and watcher.loaded == loaded
    r = store.rollback(3)  # a rollback is a snapshot: loaded whole
    loaded = watcher.loaded
    assert watcher.poll_once() and watcher.current.version == r
    assert watcher.loaded == loaded + 1
    same_as_fresh()
    v = store.commit_delta(random_delta(state, rng, hot), parent=r)
    assert watcher.poll_once() and watcher.current.version == v
    same_as_fresh()


class _BadChanges:
    """A source whose deltas do not fit the model: the watcher must load whole."""

    def __init__(self, source: StoreSource) -> None:
        self.inner = source
        self.name = source.name

    def serving_version(self) -> int | None:
        return self.inner.serving_version()

    def load(self, version: int) -> Any:
        return self.inner.load(version)

    def versions(self) -> list[dict[str, Any]]:
        return self.inner.versions()

    def advance(self, since: int, upto: int) -> Step:
        step = self.inner.advance(since, upto)
        changes = Changes(step.changes.slots, {"no such array": step.changes.rows["weights"]},
                          step.changes.small, step.changes.meta)
        return Step(since, upto, changes, None, step.created_at, step.lineage)


def test_a_delta_that_cannot_be_applied_is_loaded_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(str(tmp_path), "m")
    model = trained("logistic")
    state = model.state()
    events = make_events(10, seed=7)
    v = store.commit(state)
    watcher = ModelWatcher(_BadChanges(StoreSource(store, "m")))
    watcher.poll_once()
    watcher.poll_once()
    v = store.commit_delta(random_delta(state, np.random.default_rng(8), hot_slots(model, events)),
                            parent=v)
    with caplog.at_level(logging.WARNING, logger="streamlearn.serving.watcher"):
        assert watcher.poll_once()
    assert watcher.current.version == v and watcher.applied == 0 and watcher.loaded == 2
    assert any("could not apply version 2 on 1" in r.getMessage() for r in caplog.records)
    assert answers(watcher.current, events) == answers(StoreSource(store, "m").load(v), events)


def test_the_scoring_job_follows_deltas_with_the_same_mechanism(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path), "price")
    model = trained("linear")
    state = model.state()
    events = make_events(5, seed=9)
    v = store.commit(state)
    message = orjson.dumps({"events": [{"features": x} for x in events]})
    with Scorer.from_store(store, "price", topic="t") as scorer:
        scorer.score(message)
        for _ in range(3):
            v = store.commit_delta(
                random_delta(state, np.random.default_rng(v), hot_slots(model, events)), parent=v
            )
            # this poll, or the scorer's own polling thread just before it, takes version v
            scorer.watcher.poll_once()
            assert scorer.version == v
        out = scorer.score(message, partition=0, offset=1)
        assert out.version == v and scorer.watcher.applied == 3 and scorer.watcher.loaded == 1
    want = StoreSource(store, "price").load(v).predict_features(events).values
    assert [orjson.loads(r)["prediction"] for r in out.predictions] == list(want)


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
def test_the_native_table_is_rewritten_at_the_changed_slots_only(tmp_path: Path) -> None:
    """A body the native table scored before a delta is scored there after it
    (no relearning), with the new weights, and a share at an untouched slot
    is not redone."""
    store = ModelStore(str(tmp_path), "m")
    model = LinearRegression(bits=8)
    state = model.state()
    slot_a, sign_a = model._hasher.slot_of("a")
    slot_b, sign_b = model._hasher.slot_of("b")
    state.arrays["weights"][slot_a] = 2.0 * sign_a
    v = store.commit(state)
    watcher = ModelWatcher(StoreSource(store, "m"))
    watcher.poll_once()
    watcher.poll_once()
    x = {"a": 1.0, "b": 3.0}
    body = orjson.dumps({"features": x})
    p = watcher.current
    assert native_answer(p, body) is False
    p.remember(x)
    hits = p.native_hits
    assert native_answer(p, body)[0] == 2.0
    del p
    state.arrays["weights"][slot_a] = 7.0 * sign_a
    state.arrays["intercept"][:] = 0.5
    v = store.commit_delta(Changes.gather(state, [slot_a]), parent=v)
    watcher.poll_once()  # onto the spare, which never saw the body
    watcher.poll_once()  # the old current catches up, its table rewritten in place
    state.arrays["weights"][slot_b] = 0.25 * sign_b
    v = store.commit_delta(Changes.gather(state, [slot_b]), parent=v)
    assert watcher.poll_once()
    p = watcher.current
    assert p.native_hits == hits + 1  # the table that learned the body serves again
    assert native_answer(p, body)[:2] == (7.0 + 3.0 * 0.25 + 0.5, None)
    assert p.native_hits == hits + 2


def test_without_memory_for_the_spare_versions_are_loaded_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(self: LearnerPredictor) -> LearnerPredictor:
        raise MemoryError("no room for a second copy")

    monkeypatch.setattr(LearnerPredictor, "clone", no_memory)
    store = ModelStore(str(tmp_path), "m")
    model = trained("logistic")
    state = model.state()
    events = make_events(10, seed=11)
    v = store.commit(state)
    watcher = ModelWatcher(StoreSource(store, "m"))
    with caplog.at_level(logging.WARNING, logger="streamlearn.serving.watcher"):
        for _ in range(4):
            watcher.poll_once()
        v = store.commit_delta(
            random_delta(state, np.random.default_rng(12), hot_slots(model, events)), parent=v
        )
        assert watcher.poll_once()  # loaded whole, the copy not tried again for version 1
        for _ in range(3):
            v = store.commit_delta(
                random_delta(state, np.random.default_rng(v), hot_slots(model, events)), parent=v
            )
            assert watcher.poll_once()
            watcher.poll_once()
    assert watcher.current.version == v and watcher.applied == 0 and watcher.loaded == 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "could not copy version 1" in lines[0], lines
    assert answers(watcher.current, events) == answers(StoreSource(store, "m").load(v), events)


@pytest.mark.parametrize("kind", ["logistic", "linear-scaled", "softmax", "fm-classifier"])
def test_the_training_mergers_deltas_are_followed_without_reloading(
    tmp_path: Path, kind: str
) -> None:
    """The training job commits ``Merger.changes()``: its metadata must let
    the server follow every such version by a delta, answering as a fresh load."""
    from streamlearn.merge import DeltaTracker, Merger

    model = trained(kind)
    rng = np.random.default_rng(13)
    merger = Merger(model.state(), version=0, n_learners=2)
    learners = [model.clone() for _ in range(2)]
    trackers = [DeltaTracker(lr, 0) for lr in learners]
    store = ModelStore(str(tmp_path), "m")
    v = store.commit(merger.view().to_arrow())
    merger.commit(v)
    watcher = ModelWatcher(StoreSource(store, "m"))
    watcher.poll_once()
    watcher.poll_once()
    events = make_events(20, seed=14)
    for _ in range(5):
        for i in range(2):
            xs = make_events(int(rng.integers(5, 30)), seed=int(rng.integers(1 << 30)))
            if kind == "softmax":
                ys: list[Any] = [x["country"] if x["country"] in ("FR", "DE") else "other"
                                 for x in xs]
            elif kind == "linear-scaled":
                ys = [x["age"] / 10.0 for x in xs]
            else:
                ys = [x["age"] > 40 for x in xs]
            learners[i].learn_many(xs, ys)
            merger.add(trackers[i].take(learner_id=str(i)))
        v = store.commit_delta(merger.changes(), parent=v)
        merger.commit(v)
        assert watcher.poll_once() and watcher.current.version == v
        assert answers(watcher.current, events) == answers(StoreSource(store, "m").load(v), events)
    assert watcher.applied == 5 and watcher.loaded == 1
