"""ModelState: Arrow IPC round trips, refusals, and the River adapter's trust flag."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from streamlearn.errors import StateError
from streamlearn.learners import (
    LinearRegression,
    LogisticRegression,
    RiverLearner,
    SoftmaxRegression,
    learner_from_state,
)
from streamlearn.optim import FTRL, Adam
from streamlearn.state import ModelState


def test_round_trip_keeps_names_shapes_dtypes_and_meta():
    arrays = {
        "weights": np.arange(12.0).reshape(6, 2),
        "intercept": np.array([0.5, -0.5]),
        "counts": np.arange(3, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((4, 0)),
    }
    meta = {"kind": "X", "classes": [True, "b", 3], "nested": {"a": [1, 2]}}
    back = ModelState.from_bytes(ModelState(arrays, meta).to_bytes())
    assert back.meta == meta and list(back.arrays) == list(arrays)
    for name, a in arrays.items():
        assert back.arrays[name].dtype == a.dtype and back.arrays[name].shape == a.shape
        np.testing.assert_array_equal(back.arrays[name], a)


def test_reading_is_zero_copy_for_large_float_arrays():
    w = np.random.default_rng(0).normal(size=1 << 20)
    data = ModelState({"weights": w}, {"kind": "X"}).to_bytes()
    back = ModelState.from_bytes(pa.py_buffer(data))
    assert not back.arrays["weights"].flags.writeable  # a view of the buffer, not a copy
    np.testing.assert_array_equal(back.arrays["weights"], w)
    assert len(data) < w.nbytes + 4096


@pytest.mark.parametrize(
    "data",
    [b"", b"not arrow", pa.py_buffer(b"\x00" * 64).to_pybytes()],
    ids=["empty", "text", "zeros"],
)
def test_bad_bytes_raise_state_error(data):
    with pytest.raises(StateError):
        ModelState.from_bytes(data)


def test_foreign_arrow_and_future_formats_are_refused():
    table = pa.record_batch([pa.array([1, 2])], names=["a"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_batch(table)
    with pytest.raises(StateError, match="not a streamlearn model state"):
        ModelState.from_bytes(sink.getvalue())
    data = ModelState({"w": np.zeros(2)}, {"kind": "X"}).to_bytes()
    future = data.replace(b'"format": 1', b'"format": 9')
    with pytest.raises(StateError, match="format 9"):
        ModelState.from_bytes(future)


def test_meta_must_be_json():
    with pytest.raises(StateError, match="JSON"):
        ModelState({"w": np.zeros(1)}, {"kind": object()}).to_bytes()


def test_state_documents_its_arrays_for_merging():
    model = SoftmaxRegression(Adam(), bits=6, scale=True, l1=0.01, classes=["a", "b", "c"])
    model.learn_many([{"x": 1.0}, {"x": 2.0, "c": "k"}], ["a", "c"])
    state = model.state()
    assert {k: v.shape for k, v in state.arrays.items()} == {
        "weights": (64, 3),
        "intercept": (3,),
        "adam.m": (64, 3),
        "adam.v": (64, 3),
        "l1.cum": (64, 3),
        "l1.total": (1,),
        "scaler.mean": (64,),
        "scaler.var": (64,),
        "scaler.count": (64,),
    }
    meta = state.meta
    assert meta["kind"] == "SoftmaxRegression" and meta["classes"] == ["a", "b", "c"]
    assert meta["n_learned"] == 2 and meta["n_steps"] == 1 and meta["mergeable"] is True
    assert meta["params"]["optimizer"] == {"name": "Adam", "params": Adam().params()}
    json.dumps(meta)
    ftrl = LogisticRegression(FTRL(l1=1.0), bits=6).state()
    assert {"ftrl.z", "ftrl.n"} <= set(ftrl.arrays)


def test_averaged_states_load_and_predict():
    """What the merge step does: average arrays of two learners, rebuild, predict."""
    a, b = LogisticRegression(bits=8), LogisticRegression(bits=8)
    a.learn_many([{"x": 1.0, "c": "u"}] * 3, [True] * 3)
    b.learn_many([{"x": -1.0, "c": "v"}] * 3, [False] * 3)
    sa, sb = a.state(), b.state()
    merged = ModelState(
        {k: (sa.arrays[k] + sb.arrays[k]) / 2 for k in sa.arrays}, {**sa.meta, "n_learned": 6}
    )
    model = learner_from_state(ModelState.from_bytes(merged.to_bytes()))
    np.testing.assert_allclose(model.weights, (a.weights + b.weights) / 2)
    assert model.n_learned == 6
    a.load_state(merged)  # rebase a learner on the merged model
    assert a.predict_proba_one({"x": 1.0}) == model.predict_proba_one({"x": 1.0})


def test_loading_refuses_other_kinds_parameters_and_shapes():
    model = LogisticRegression(bits=6)
    with pytest.raises(StateError, match="LinearRegression"):
        model.load_state(LinearRegression(bits=6).state())
    with pytest.raises(StateError, match="bits"):
        model.load_state(LogisticRegression(bits=7).state())
    with pytest.raises(StateError, match="optimizer"):
        model.load_state(LogisticRegression(Adam(), bits=6).state())
    bad = model.state()
    bad.arrays["weights"] = np.zeros(3)
    with pytest.raises(StateError, match="shape"):
        model.load_state(bad)
    with pytest.raises(StateError, match="unknown kind"):
        learner_from_state(ModelState({}, {"kind": "Nope"}))


def test_a_river_learner_has_no_state_to_store_or_read():
    """A River model could only be written with pickle: a RiverLearner refuses to give or
    take a state, and a stored state of that kind is refused unread (nothing unpickled)."""
    from river import tree

    model = RiverLearner(tree.HoeffdingTreeClassifier())
    events = [({"x": float(i % 7), "c": "ab"[i % 2]}, i % 7 > 3) for i in range(200)]
    for x, y in events:
        model.learn_one(x, y)
    with pytest.raises(StateError, match="pickle"):
        model.state()
    # what an older store may hold: bytes that would run code if unpickled
    evil = np.frombuffer(b"cos\nsystem\n(S'exit 3'\ntR.", dtype=np.uint8).copy()
    stored = ModelState.from_bytes(ModelState(
        {"river.pickle": evil}, {"kind": "RiverLearner", "task": "binary"}).to_bytes())
    for read in (learner_from_state, RiverLearner.from_state, model.load_state):
        with pytest.raises(StateError, match="pickle"):
            read(stored)
    xs = [x for x, _ in events[:20]]
    assert len(model.predict_many(xs)) == 20 and model.n_learned == 200
    assert model.clone().n_learned == 0


def test_river_learner_refuses_encoded_batches_and_bad_features():
    from river import linear_model

    from streamlearn.errors import ConfigError, ValidationError

    model = RiverLearner(linear_model.LinearRegression())
    batch = LinearRegression(bits=4).encode([{"a": 1.0}])
    with pytest.raises(ConfigError):
        model.learn_many(batch, [1.0])
    with pytest.raises(ValidationError) as info:
        model.learn_one({"a": float("nan")}, 1.0)
    assert info.value.field == "features.a"


def test_large_state_round_trip_is_exact():
    model = LogisticRegression(Adam(), bits=20)
    model.learn_many(
        [{"f": f"v{i}", "x": i / 10} for i in range(500)], [i % 2 == 0 for i in range(500)]
    )
    again = learner_from_state(ModelState.from_bytes(model.state().to_bytes()))
    for name, a in model.state(copy=False).arrays.items():
        np.testing.assert_array_equal(again.state(copy=False).arrays[name], a)
