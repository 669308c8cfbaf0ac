"""ModelDelta, DeltaTracker and Merger: exactness, rebasing, classes, staleness, errors."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.errors import ConfigError, StateError, ValidationError
from streamlearn.learners import (
    LinearRegression,
    LogisticRegression,
    RiverLearner,
    SoftmaxRegression,
    learner_from_state,
)
from streamlearn.merge import DeltaTracker, Merger, ModelDelta
from streamlearn.optim import FTRL, SGD, AdaGrad, Adam, Normalized
from streamlearn.state import ModelState


def _events(seed: int, n: int, users: list[str], label=None):
    rng = np.random.default_rng(seed)
    xs = [
        {"user": users[int(rng.integers(len(users)))], "item": f"i{int(rng.integers(30))}",
         "n0": float(rng.normal()), "n1": float(rng.normal(3.0, 2.0))}
        for _ in range(n)
    ]
    ys = [bool(rng.random() < 0.5) for _ in range(n)] if label is None else [
        label(rng) for _ in range(n)]
    return xs, ys


def _model(opt, **kw):
    kw.setdefault("bits", 10)
    kw.setdefault("dense", ["n0", "n1"])
    if isinstance(opt, FTRL):
        return LogisticRegression(opt, **kw)
    kw.setdefault("l1", 0.001)
    return LogisticRegression(opt, **kw)


OPTIMIZERS = [
    pytest.param(lambda: SGD(0.1), id="SGD"),
    pytest.param(lambda: AdaGrad(0.1), id="AdaGrad"),
    pytest.param(lambda: Adam(0.01), id="Adam"),
    pytest.param(lambda: FTRL(alpha=0.1, l1=0.01, l2=0.1), id="FTRL"),
]


def _assert_same_state(a: ModelState, b: ModelState) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# -- ModelDelta -------------------------------------------------------------------


def test_delta_round_trips_through_bytes_with_2d_arrays_and_extra():
    model = SoftmaxRegression(Adam(0.01), bits=8, scale=True)
    tracker = DeltaTracker(model, base_version=3)
    xs, _ = _events(1, 40, ["a", "b"])
    model.learn_many(xs, [i % 3 for i in range(40)])
    delta = tracker.take(learner_id="7", extra={"offsets": {"0": 12}})
    again = ModelDelta.from_bytes(delta.to_bytes())
    assert (again.learner_id, again.base_version, again.n_events, again.n_steps) == (
        "7", 3, 40, 1)
    assert again.extra == {"offsets": {"0": 12}}
    assert again.meta["classes"] == [0, 1, 2]
    np.testing.assert_array_equal(again.slots, delta.slots)
    assert sorted(again.sparse) == sorted(delta.sparse)
    for name, values in delta.sparse.items():
        np.testing.assert_array_equal(again.sparse[name], values)
    assert again.sparse["weights"].shape == (len(delta.slots), 3)
    for name, values in delta.dense.items():
        np.testing.assert_array_equal(again.dense[name], values)


def test_delta_bytes_are_compact_for_a_sparse_change():
    model = LogisticRegression(SGD(0.1), bits=20)
    tracker = DeltaTracker(model)
    model.learn_many([{"w": f"t{i}"} for i in range(100)], [True] * 100)
    delta = tracker.take()
    assert delta.nnz == 100
    assert len(delta.to_bytes()) < 100 * (4 + 8) + 4096  # a slot and a weight per row


@pytest.mark.parametrize("blob", [b"", b"not arrow", ModelState({"w": np.zeros(2)}).to_bytes()])
def test_delta_from_bytes_refuses_what_is_not_a_delta(blob):
    with pytest.raises(StateError, match="model delta"):
        ModelDelta.from_bytes(blob)


# -- DeltaTracker -------------------------------------------------------------------


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
def test_take_holds_exactly_the_changed_rows_and_deltas_do_not_overlap(make_opt):
    model = _model(make_opt(), scale=True)
    start = model.state()
    tracker = DeltaTracker(model)
    xs, ys = _events(2, 50, ["a", "b", "c"])
    model.learn_many(xs[:25], ys[:25])
    first = tracker.take()
    model.learn_many(xs[25:], ys[25:])
    second = tracker.take()
    empty = tracker.take()
    assert (first.n_events, second.n_events, empty.n_events) == (25, 25, 0)
    assert empty.nnz == 0 and all(not v.any() for v in empty.dense.values())
    now = model.state()
    for name in (k for k in first.sparse if not k.startswith("scaler.")):
        total = start.arrays[name].copy()
        for d in (first, second):
            total[d.slots] += d.sparse[name]
        np.testing.assert_allclose(total, now.arrays[name], atol=1e-12, err_msg=name)
    changed = np.flatnonzero((now.arrays["weights"] != start.arrays["weights"])
                             | (now.arrays["scaler.count"] != 0))
    assert set(changed) <= set(first.slots) | set(second.slots)


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_take_of_the_touched_slots_equals_the_full_comparison(make_opt, kind):
    """Learners change no slot outside their batches: comparing only those is exact."""
    opt = make_opt()
    penalty = {} if isinstance(opt, FTRL) else {"l2": 0.01}
    if kind == "softmax":
        full_model = SoftmaxRegression(opt, bits=8, dense=["n0"], scale=True, **penalty)
    else:
        full_model = _model(opt, scale=True, **penalty)
    fast_model = full_model.clone()
    full, fast = DeltaTracker(full_model), DeltaTracker(fast_model)
    label = (lambda rng: ["x", "y", "z"][int(rng.integers(3))]) if kind == "softmax" else None
    for seed in range(3):
        xs, ys = _events(10 + seed, 40, ["a", "b", "c", "d"], label)
        batch = fast_model.encode(xs)
        full_model.learn_many(xs, ys)
        fast_model.learn_many(batch, ys)
        a, b = full.take(), fast.take(touched=batch.indices)
        assert a.nnz > 0
        np.testing.assert_array_equal(a.slots, b.slots)
        assert set(a.sparse) == set(b.sparse) and set(a.dense) == set(b.dense)
        for name in a.sparse:
            np.testing.assert_array_equal(a.sparse[name], b.sparse[name], err_msg=name)
        for name in a.dense:
            np.testing.assert_array_equal(a.dense[name], b.dense[name], err_msg=name)


def test_tracker_refuses_a_learner_that_cannot_merge():
    from river import linear_model

    with pytest.raises(StateError, match="not mergeable"):
        DeltaTracker(RiverLearner(linear_model.LogisticRegression()))


def test_take_validates_its_arguments():
    tracker = DeltaTracker(LogisticRegression(bits=4))
    with pytest.raises(ValidationError, match="learner_id"):
        tracker.take(learner_id="")
    with pytest.raises(ValidationError, match="extra"):
        tracker.take(extra={"bad": object()})
    with pytest.raises(ValidationError, match="base_version"):
        DeltaTracker(LogisticRegression(bits=4), base_version=-1)


# -- Merger: exactness ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["hybrid", "average"])
@pytest.mark.parametrize("make_opt", OPTIMIZERS)
def test_one_learner_merged_is_that_learner(make_opt, strategy):
    """With one learner, every strategy must reproduce it exactly, delta after delta."""
    model = _model(make_opt(), scale=True)
    merger = Merger(model.state(), version=0, strategy=strategy)
    tracker = DeltaTracker(model)
    for k in range(3):
        xs, ys = _events(10 + k, 30, ["a", "b", "c", "d"])
        model.learn_many(xs, ys)
        merger.add(ModelDelta.from_bytes(tracker.take().to_bytes()))
    merged = merger.state()
    _assert_same_state(merged, model.state())
    assert merged.meta["n_learned"] == model.n_learned == merger.n_events == 90
    assert merged.meta["n_steps"] == 3
    xs, _ = _events(99, 5, ["a", "e"])
    again = learner_from_state(merged)
    np.testing.assert_allclose(again.predict_proba_many(xs), model.predict_proba_many(xs))


def test_hybrid_sums_disjoint_sparse_learning_and_averages_dense_slots():
    base = LogisticRegression(SGD(0.5), bits=10, dense=["n0"])
    merger = Merger(base.state(), version=0, n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    learners[0].learn_many([{"user": "a", "n0": 1.0}] * 4, [True] * 4)
    learners[1].learn_many([{"user": "b", "n0": 1.0}] * 4, [False] * 4)
    deltas = [t.take(learner_id=str(i)) for i, t in enumerate(trackers)]
    for d in deltas:
        merger.add(d)
    w = merger.state().arrays["weights"]
    hashed = 1 << 10
    for learner, d in zip(learners, deltas, strict=True):
        own = d.slots[d.slots < hashed]
        np.testing.assert_allclose(w[own], learner.weights[own])  # summed: kept in full
    np.testing.assert_allclose(w[hashed], (learners[0].weights[hashed]
                                           + learners[1].weights[hashed]) / 2)
    np.testing.assert_allclose(
        merger.state().arrays["intercept"],
        (learners[0].state().arrays["intercept"] + learners[1].state().arrays["intercept"]) / 2,
    )


def test_average_strategy_is_model_averaging_by_events():
    base = LinearRegression(SGD(0.05), bits=8)
    merger = Merger(base.state(), version=0, strategy="average", n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    for i, learner in enumerate(learners):
        for _ in range(4):
            learner.learn_many([{"a": 1.0, "b": float(i)}] * 10, [1.0 + i] * 10)
        merger.add(trackers[i].take(learner_id=str(i)))
    expected = (learners[0].weights + learners[1].weights) / 2
    np.testing.assert_allclose(merger.state().arrays["weights"], expected)


def test_adam_moments_of_a_shared_slot_are_averaged_not_summed():
    base = LogisticRegression(Adam(0.01), bits=8, intercept=False)
    merger = Merger(base.state(), version=0, n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    for i, learner in enumerate(learners):
        learner.learn_many([{"shared": "x"}] * 3, [bool(i)] * 3)
        merger.add(trackers[i].take(learner_id=str(i)))
    assert trackers[0].take().nnz == 0  # nothing new since its delta
    (slot,) = np.flatnonzero(learners[0].weights)
    m = [lr.state().arrays["adam.m"][slot] for lr in learners]
    v = [lr.state().arrays["adam.v"][slot] for lr in learners]
    merged = merger.state().arrays
    assert merged["adam.m"][slot] == pytest.approx(m[0] + m[1] / 2)  # 2nd: 2 contributors
    assert merged["adam.v"][slot] == pytest.approx(v[0] + v[1] / 2)
    w = [lr.weights[slot] for lr in learners]
    assert merged["weights"][slot] == pytest.approx(w[0] + w[1])


@pytest.mark.parametrize("strategy", ["shared", "hybrid"])
def test_shared_averages_a_hashed_slot_over_its_learners_and_sums_an_owned_one(strategy):
    """``shared``: a hashed slot two learners touched moves by the mean of their moves
    (the second delta there counts half), a slot one learner owns by all of its move;
    ``hybrid`` sums both."""
    base = LogisticRegression(AdaGrad(0.1), bits=8, intercept=False)
    merger = Merger(base.state(), version=0, strategy=strategy, n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    for i, learner in enumerate(learners):
        learner.learn_many([{"shared": "x", "user": f"u{i}"}] * 3, [bool(i)] * 3)
        merger.add(trackers[i].take(learner_id=str(i)))
    shared = int(np.flatnonzero(learners[0].weights * learners[1].weights)[0])
    owned = [int(np.flatnonzero(lr.weights)[np.flatnonzero(lr.weights) != shared][0])
             for lr in learners]
    merged = merger.state().arrays
    w = [lr.weights[shared] for lr in learners]
    g2 = [lr.state().arrays["adagrad.g2"][shared] for lr in learners]
    second = 0.5 if strategy == "shared" else 1.0  # the 2nd delta found 2 contributors
    assert merged["weights"][shared] == pytest.approx(w[0] + second * w[1])
    assert merged["adagrad.g2"][shared] == pytest.approx(g2[0] + second * g2[1])
    for lr, slot in zip(learners, owned, strict=True):
        assert merged["weights"][slot] == pytest.approx(lr.weights[slot])


def test_the_job_names_the_mergers_strategies():
    from streamlearn.merge import STRATEGIES
    from streamlearn.training import config

    assert set(config.STRATEGIES) == set(STRATEGIES)


@pytest.mark.parametrize(
    "opt", [AdaGrad(0.1), Normalized(0.5), FTRL(alpha=0.1)], ids=lambda o: type(o).__name__
)
def test_progress_sums_small_steps_and_averages_moves_that_went_the_way(opt):
    """``strategy="progress"``, 4 learners that all touch two slots, after a first round of
    deltas: of the next delta, the slot one event moved (a small step) counts nearly
    whole, as a sum would count it; the slot 3,000 events took to its optimum counts a
    quarter, as the mean of four such moves would (``shared`` and ``hybrid`` would count
    this learner's first move there whole)."""
    rng = np.random.default_rng(3)
    base = LogisticRegression(opt, bits=10, update="event", intercept=False)
    merger = Merger(base.state(), version=0, strategy="progress", n_learners=4)
    learners = [base.clone() for _ in range(4)]
    trackers = [DeltaTracker(lr) for lr in learners]

    def learn(i):
        learners[i].learn_many([{"busy": "x"}] * 3000, rng.random(3000) < 0.7)
        learners[i].learn_many([{"rare": "y"}], [True])
        return trackers[i].take(learner_id=str(i))

    for i in range(4):  # the first round: every learner touched busy and rare
        merger.add(learn(i))
    version = merger.commit()
    trackers[0].rebase(learners[0], merger.state(), version)  # its progress counts anew
    delta = learn(0)
    name = "ftrl.z" if isinstance(opt, FTRL) else "weights"  # FTRL's weights follow (z, n)
    before = merger.state().arrays
    merger.add(delta)
    got = merger.state().arrays[name] - before[name]
    busy, rare = (int(base.encode([{key: value}]).indices[0])
                  for key, value in (("busy", "x"), ("rare", "y")))
    rows = {int(s): r for r, s in enumerate(delta.slots)}
    moved = delta.sparse[name]
    assert got[busy] == pytest.approx(moved[rows[busy]] / 4, rel=0.05)
    assert 0.6 < got[rare] / moved[rows[rare]] < 1.0
    if isinstance(opt, AdaGrad):  # the rule, written out: f = lr * dG / sqrt(G)
        dg = delta.sparse["adagrad.g2"][rows[rare]]
        f = 0.1 * dg / (np.sqrt(before["adagrad.g2"][rare] + dg) + 1e-8)
        assert got[rare] == pytest.approx(moved[rows[rare]] * (1 - (1 - f) ** 4) / (4 * f))


def test_progress_counts_a_learners_deltas_since_its_base_version_together():
    """Deltas a learner sends before it sees the others again (the same base version, as
    in the training job between versions) share their progress: its second delta on a
    slot counts less than its first, though alone it went less far."""
    rng = np.random.default_rng(5)
    base = LogisticRegression(AdaGrad(0.1), bits=10, update="event", intercept=False)
    merger = Merger(base.state(), version=0, strategy="progress", n_learners=4)
    learner = base.clone()
    tracker = DeltaTracker(learner)
    slot = int(base.encode([{"busy": "x"}]).indices[0])
    counted = []
    for _ in range(2):
        learner.learn_many([{"busy": "x"}] * 40, rng.random(40) < 0.7)
        delta = tracker.take(learner_id="0")
        assert delta.base_version == 0
        before = merger.state().arrays["weights"][slot]
        merger.add(delta)
        move = delta.sparse["weights"][list(delta.slots).index(slot)]
        counted.append((merger.state().arrays["weights"][slot] - before) / move)
    assert counted[1] < counted[0] < 1.0


def test_ftrl_weights_follow_the_merged_z_and_n():
    opt = FTRL(alpha=0.2, l1=0.05, l2=0.1)
    base = LogisticRegression(opt, bits=8)
    merger = Merger(base.state(), version=0, strategy="ftrl", n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    for i, learner in enumerate(learners):
        xs, ys = _events(20 + i, 40, ["a", "b"])
        learner.learn_many(xs, ys)
        merger.add(trackers[i].take(learner_id=str(i)))
    s = merger.state().arrays
    np.testing.assert_allclose(s["ftrl.z"], sum(lr.state().arrays["ftrl.z"] for lr in learners))
    np.testing.assert_allclose(s["ftrl.n"], sum(lr.state().arrays["ftrl.n"] for lr in learners))
    shrunk = np.sign(s["ftrl.z"]) * np.maximum(np.abs(s["ftrl.z"]) - 0.05, 0)
    np.testing.assert_allclose(s["weights"], -shrunk / ((1.0 + np.sqrt(s["ftrl.n"])) / 0.2 + 0.1))


def test_scaler_statistics_merge_exactly():
    base = LinearRegression(SGD(0.01), bits=6, dense=["x"], scale=True)
    merger = Merger(base.state(), version=0, n_learners=3)
    rng = np.random.default_rng(5)
    values = [rng.normal(k, k + 1.0, 17 + k) for k in range(3)]
    learners = [base.clone() for _ in values]
    trackers = [DeltaTracker(x) for x in learners]
    for i, (learner, vals) in enumerate(zip(learners, values, strict=True)):
        learner.learn_many([{"x": float(v)} for v in vals[:5]], [0.0] * 5)
        merger.add(trackers[i].take(learner_id=str(i)))
        learner.learn_many([{"x": float(v)} for v in vals[5:]], [0.0] * (len(vals) - 5))
        merger.add(trackers[i].take(learner_id=str(i)))
    every = np.concatenate(values)
    s = merger.state().arrays
    slot = base.n_slots - 1
    assert s["scaler.count"][slot] == len(every)
    assert s["scaler.mean"][slot] == pytest.approx(every.mean())
    assert s["scaler.var"][slot] == pytest.approx(every.var())


# -- rebasing -------------------------------------------------------------------------


@pytest.mark.parametrize("make_opt", OPTIMIZERS)
def test_rebase_keeps_what_the_learner_learned_since_its_last_take(make_opt):
    base = _model(make_opt(), scale=True)
    merger = Merger(base.state(), version=0, n_learners=2)
    a, b = base.clone(), base.clone()
    ta, tb = DeltaTracker(a), DeltaTracker(b)
    xs, ys = _events(30, 60, ["a", "b", "c"])
    a.learn_many(xs[:20], ys[:20])
    merger.add(ta.take(learner_id="a"))
    b.learn_many(xs[20:40], ys[20:40])
    merger.add(tb.take(learner_id="b"))
    version = merger.commit()
    unsent_before = a.state()
    a.learn_many(xs[40:], ys[40:])  # not sent yet
    own = {k: a.state().arrays[k] - unsent_before.arrays[k] for k in a.state().arrays}
    ta.rebase(a, merger.state(), version)
    rebased = a.state()
    assert rebased.meta["n_learned"] == merger.n_events + 20
    assert ta.base_version == version
    for name, change in own.items():
        if name.startswith("scaler.") or (name == "weights" and "ftrl.z" in own):
            continue
        np.testing.assert_allclose(rebased.arrays[name], merger.state().arrays[name] + change,
                                   atol=1e-12, err_msg=name)
    counted = merger.state().arrays["scaler.count"].sum()
    assert rebased.arrays["scaler.count"].sum() == counted + 2 * 20  # two numbers per event
    nxt = ta.take(learner_id="a")
    assert nxt.base_version == version and nxt.n_events == 20
    merger.add(nxt)
    hashed = 1 << base.bits  # summed there, so a's unsent work arrives in full
    np.testing.assert_allclose(merger.state().arrays["weights"][:hashed], a.weights[:hashed])


def test_softmax_learners_that_saw_different_classes_align_by_label():
    base = SoftmaxRegression(SGD(0.5), bits=8, intercept=False)
    merger = Merger(base.state(), version=0, n_learners=2)
    a, b = base.clone(), base.clone()
    ta, tb = DeltaTracker(a), DeltaTracker(b)
    a.learn_many([{"u": "x"}, {"u": "y"}], ["cat", "dog"])
    b.learn_many([{"u": "z"}, {"u": "w"}], ["bird", "cat"])
    merger.add(ta.take(learner_id="a"))
    merger.add(tb.take(learner_id="b"))
    state = merger.state()
    assert state.meta["classes"] == ["cat", "dog", "bird"]
    w = state.arrays["weights"]
    for learner in (a, b):
        rows = np.flatnonzero(learner.weights.any(axis=1))
        assert len(rows) == 2
        cols = [state.meta["classes"].index(c) for c in learner.classes_]
        np.testing.assert_allclose(w[np.ix_(rows, cols)], learner.weights[rows])
        missing = [i for i, c in enumerate(state.meta["classes"]) if c not in learner.classes_]
        assert not w[np.ix_(rows, missing)].any()
    tb.rebase(b, state, merger.commit())
    assert b.classes_ == ["cat", "dog", "bird"]
    b.learn_many([{"u": "q"}], ["fish"])
    merger.add(tb.take(learner_id="b"))
    assert merger.state().meta["classes"] == ["cat", "dog", "bird", "fish"]
    _assert_same_state(merger.state(), b.state())


# -- staleness and errors ---------------------------------------------------------------


def test_staleness_policy_rebases_recent_deltas_and_down_weights_old_ones():
    base = LogisticRegression(SGD(0.5), bits=6, intercept=False)
    learner = base.clone()
    tracker = DeltaTracker(learner, base_version=1)
    learner.learn_one({"u": "a"}, True)
    delta = tracker.take()
    (slot,) = delta.slots
    for version, weight in ((1, 1.0), (3, 1.0), (5, 0.6)):
        merger = Merger(base.state(), version=version, staleness_tolerance=2)
        merger.add(delta)
        got = merger.state().arrays["weights"][slot]
        assert got == pytest.approx(weight * delta.sparse["weights"][0])
    merger = Merger(base.state(), version=0)
    with pytest.raises(StateError, match="newer than the merger"):
        merger.add(delta)


def test_commit_numbers_versions_upwards():
    merger = Merger(LogisticRegression(bits=4).state(), version=4)
    assert merger.commit() == 5
    assert merger.commit(9) == 9 and merger.version == 9
    with pytest.raises(ValidationError, match="greater than the current 9"):
        merger.commit(9)


def test_merger_refuses_bad_settings_and_foreign_deltas():
    state = LogisticRegression(SGD(0.1), bits=6).state()
    with pytest.raises(ConfigError, match="strategy"):
        Merger(state, strategy="median")
    with pytest.raises(ConfigError, match="'ftrl' with SGD"):
        Merger(state, strategy="ftrl")
    with pytest.raises(ConfigError, match="staleness_tolerance"):
        Merger(state, staleness_tolerance=-1)
    with pytest.raises(ValidationError, match="global_state"):
        Merger(state.to_bytes())  # type: ignore[arg-type]
    merger = Merger(state)
    other = LogisticRegression(SGD(0.2), bits=6)
    with pytest.raises(StateError, match=r"differ from the global model's in \['optimizer'\]"):
        merger.add(DeltaTracker(other).take())
    with pytest.raises(StateError, match="cannot merge into"):
        merger.add(DeltaTracker(LinearRegression(SGD(0.1), bits=6)).take())
    with pytest.raises(ValidationError, match="delta"):
        merger.add(b"bytes")  # type: ignore[arg-type]
    from river import linear_model

    river = RiverLearner(linear_model.LogisticRegression())
    with pytest.raises(StateError, match="no state"):
        Merger(river.state())


def test_merger_refuses_slots_out_of_range_or_unsorted():
    model = LogisticRegression(SGD(0.1), bits=4)
    merger = Merger(model.state())
    delta = DeltaTracker(model).take()
    for slots in (np.array([3, 1]), np.array([0, model.n_slots])):
        bad = ModelDelta(delta.learner_id, 0, 1, 1, slots, {"weights": np.ones(2)}, {},
                         delta.meta)
        with pytest.raises(ValidationError, match="slots"):
            merger.add(bad)


# -- the rule table: every array declares how it merges -------------------------------------


def _every_learner():
    """A learner of every kind × optimiser × variant whose arrays differ."""
    from streamlearn.learners import FMClassifier, FMRegressor, LogisticMixture
    from streamlearn.optim import Normalized

    out = [LogisticMixture(bits=4, intercept_lr=None, scale=True)]
    for cls in (LinearRegression, LogisticRegression, SoftmaxRegression):
        for opt in (SGD(), AdaGrad(), Adam(), FTRL(), Normalized()):
            penal = {} if isinstance(opt, FTRL) else {"l1": 0.01}
            for kw in ({}, {"intercept_lr": None}, {"scale": True, **penal}):
                out.append(cls(opt, bits=4, update="event", **kw))
    for cls in (FMRegressor, FMClassifier):
        for opt in (SGD(), AdaGrad(), FTRL(), Normalized(invariant=False)):
            for fopt in (SGD(), AdaGrad(), FTRL()):
                out.append(cls(opt, factor_optimizer=fopt, bits=4, intercept_lr=None, k=2))
    return out


def test_every_array_of_every_learner_declares_its_merge_rule():
    from streamlearn.merge import MERGE_RULES, RULES, merge_rule

    names = set()
    for learner in _every_learner():
        for name in learner.state().arrays:
            assert merge_rule(name) in RULES, name
            names.add(name)
    assert set(MERGE_RULES.values()) <= set(RULES)
    # every entry of the table is used by some learner, and the named rules hold
    assert {n for n in MERGE_RULES} <= names
    assert {n: merge_rule(n) for n in ("normalized.scale", "normalized.n",
                                      "intercept.normalized.g2", "factors.ftrl.n",
                                      "factors.adagrad.g2", "mixture.loss")} == {
        "normalized.scale": "max", "normalized.n": "sum", "intercept.normalized.g2": "learned",
        "factors.ftrl.n": "ftrl", "factors.adagrad.g2": "learned", "mixture.loss": "sum"}
    with pytest.raises(StateError, match="no merge rule"):
        merge_rule("mystery.array")


def _two_normalized_learners(strategy="hybrid"):
    """Two per-event Normalized learners from one base, on disjoint events
    whose shared features have different largest values."""
    from streamlearn.optim import Normalized

    base = LogisticRegression(Normalized(0.5), bits=8, dense=["n0"], update="event",
                              intercept_lr=None)
    base.learn_many([{"n0": 0.5, "c": "a"}], [True])
    merger = Merger(base.state(), version=0, strategy=strategy, n_learners=2)
    learners = [base.clone(), base.clone()]
    for lr in learners:
        lr.load_state(base.state())
    trackers = [DeltaTracker(lr, base_version=0) for lr in learners]
    rng = np.random.default_rng(4)
    for i, lr in enumerate(learners):
        top = 3.0 if i == 0 else 7.0
        xs = [{"n0": float(rng.uniform(-top, top)), "c": "ab"[j % 2], f"own{i}": 1.0 + i}
              for j in range(30)]
        lr.learn_many(xs, [bool(rng.random() < 0.5) for _ in xs])
    return base, learners, trackers, merger


@pytest.mark.parametrize("strategy", ["hybrid", "average"])
def test_normalized_scale_merges_as_a_maximum_and_n_as_a_sum(strategy):
    base, learners, trackers, merger = _two_normalized_learners(strategy)
    for i, tracker in enumerate(trackers):
        merger.add(ModelDelta.from_bytes(tracker.take(learner_id=str(i)).to_bytes()))
    merged = merger.state().arrays
    scales = [lr.state().arrays["normalized.scale"] for lr in learners]
    np.testing.assert_array_equal(merged["normalized.scale"], np.maximum(*scales))
    shared = base.n_slots - 1  # n0, raised by both learners
    assert 0.5 < scales[0][shared] < scales[1][shared] == merged["normalized.scale"][shared]
    n0 = base.state().arrays["normalized.n"]
    ns = [lr.state().arrays["normalized.n"] for lr in learners]
    np.testing.assert_allclose(merged["normalized.n"], n0 + (ns[0] - n0) + (ns[1] - n0))
    assert merged["normalized.n"][1] == 61  # the events' total weight: 1 + 30 + 30


def test_rebase_keeps_the_larger_scale_and_adds_its_own_sums():
    base, learners, trackers, merger = _two_normalized_learners()
    merger.add(trackers[1].take(learner_id="1"))
    version = merger.commit()
    mine = learners[0].state().arrays
    trackers[0].rebase(learners[0], merger.state(), version)
    after = learners[0].state().arrays
    glob = merger.state().arrays
    np.testing.assert_array_equal(after["normalized.scale"],
                                  np.maximum(glob["normalized.scale"], mine["normalized.scale"]))
    n0 = base.state().arrays["normalized.n"]
    np.testing.assert_allclose(after["normalized.n"], glob["normalized.n"] + mine["normalized.n"]
                               - n0)
    # its next delta carries its own learning only, and the maximum stays a maximum
    learners[0].learn_many([{"n0": 9.0}], [True])
    merger.add(trackers[0].take(learner_id="0"))
    assert merger.state().arrays["normalized.scale"][base.n_slots - 1] == 9.0
    assert merger.state().arrays["normalized.n"][1] == 1 + 30 + 31


@pytest.mark.parametrize("strategy", ["ftrl", "hybrid"])
def test_ftrl_intercept_learned_by_its_own_rule_is_recomputed_from_z_and_n(strategy):
    opt = FTRL(alpha=0.3, beta=0.5, l1=0.2, l2=0.1)
    base = LogisticRegression(opt, bits=8, intercept_lr=None, update="event")
    merger = Merger(base.state(), version=0, strategy=strategy, n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    for i, learner in enumerate(learners):
        xs, ys = _events(30 + i, 50, ["a", "b"], label=lambda r: bool(r.random() < 0.8))
        learner.learn_many(xs, ys)
        merger.add(trackers[i].take(learner_id=str(i)))
    s = merger.state().arrays
    z, n = s["intercept.ftrl.z"], s["intercept.ftrl.n"]
    if strategy == "ftrl":  # sums of per-event terms: summed
        np.testing.assert_allclose(
            z, sum(lr.state().arrays["intercept.ftrl.z"] for lr in learners))
    # never penalised: the closed form without l1 and l2
    np.testing.assert_allclose(s["intercept"], -z / ((0.5 + np.sqrt(n)) / 0.3), rtol=1e-12)
    assert abs(s["intercept"][0]) > 0.01
    # a learner rebased on it predicts from the same intercept
    trackers[0].rebase(learners[0], merger.state(), merger.commit())
    np.testing.assert_allclose(learners[0].state().arrays["intercept"], s["intercept"])


def test_fm_ftrl_factors_are_recomputed_from_their_z_and_n():
    from streamlearn.learners import FMClassifier

    fopt = FTRL(alpha=0.05, beta=1.0, l1=0.001, l2=0.01)
    base = FMClassifier(AdaGrad(0.1), factor_optimizer=fopt, k=2, bits=8, init_std=0.2)
    merger = Merger(base.state(), version=0, n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(x) for x in learners]
    for i, learner in enumerate(learners):
        xs, ys = _events(40 + i, 60, ["a", "b", "c"])
        learner.learn_many(xs, ys)
        merger.add(trackers[i].take(learner_id=str(i)))
    s = merger.state().arrays
    z, n = s["factors.ftrl.z"], s["factors.ftrl.n"]
    shrunk = np.sign(z) * np.maximum(np.abs(z) - 0.001, 0)
    np.testing.assert_allclose(s["factors"], -shrunk / ((1.0 + np.sqrt(n)) / 0.05 + 0.01),
                               rtol=1e-12, atol=1e-15)
    assert (s["factors"] != base.factors).any()


def test_merger_rule_overrides_are_validated():
    from streamlearn.optim import Normalized

    state = LogisticRegression(Normalized(), bits=6, update="event").state()
    with pytest.raises(ConfigError) as info:
        Merger(state, rules={"nope": "sum"})
    assert info.value.field == "rules"
    with pytest.raises(ConfigError) as info:
        Merger(state, rules={"normalized.scale": "sum"})  # a maximum is not a sum of deltas
    assert info.value.field == "rules.normalized.scale"
    with pytest.raises(ConfigError):
        Merger(state, rules={"weights": "max"})
    Merger(state, rules={"weights": "average"})


def _scale_and_n_check():
    test_normalized_scale_merges_as_a_maximum_and_n_as_a_sum("hybrid")


RULE_MUTATIONS = {
    # array: (the rule put in its place, the check that must then fail)
    "normalized.scale": ("learned", _scale_and_n_check),
    "normalized.n": ("learned", _scale_and_n_check),
    "ftrl.z": ("learned", test_ftrl_weights_follow_the_merged_z_and_n),
    "adam.m": ("learned", test_adam_moments_of_a_shared_slot_are_averaged_not_summed),
    "scaler.mean": ("learned", test_scaler_statistics_merge_exactly),
    "weights": ("average", test_hybrid_sums_disjoint_sparse_learning_and_averages_dense_slots),
}


@pytest.mark.parametrize("array", list(RULE_MUTATIONS))
def test_a_changed_merge_rule_is_caught(array, monkeypatch):
    """Each declared rule matters: with another rule in the table for that
    array, the test of its behaviour fails."""
    import streamlearn.merge as merge

    rule, check = RULE_MUTATIONS[array]
    check()
    monkeypatch.setitem(merge.MERGE_RULES, array, rule)
    with pytest.raises(AssertionError):
        check()


def test_dropping_the_ftrl_intercept_recomputation_is_caught(monkeypatch):
    import streamlearn.merge as merge

    original = merge._ftrl_targets
    monkeypatch.setattr(merge, "_ftrl_targets", lambda meta, arrays: [
        t for t in original(meta, arrays) if t[0] != "intercept"])
    with pytest.raises(AssertionError):
        test_ftrl_intercept_learned_by_its_own_rule_is_recomputed_from_z_and_n("hybrid")


def test_summing_the_intercepts_ftrl_z_is_caught(monkeypatch):
    import streamlearn.merge as merge

    monkeypatch.setitem(merge.MERGE_RULES, "ftrl.z", "learned")
    with pytest.raises(AssertionError):
        test_ftrl_intercept_learned_by_its_own_rule_is_recomputed_from_z_and_n("ftrl")


def test_averaging_fm_factors_instead_of_summing_is_caught(monkeypatch):
    import streamlearn.merge as merge
    from tests.test_fm import test_fm_deltas_merge_factors_by_their_rule

    monkeypatch.setitem(merge.MERGE_RULES, "factors", "average")
    with pytest.raises(AssertionError):
        test_fm_deltas_merge_factors_by_their_rule()


@pytest.mark.parametrize("make_opt", [lambda: AdaGrad(0.1), lambda: FTRL(alpha=0.2)],
                         ids=["AdaGrad", "FTRL"])
def test_softmax_intercept_accumulators_align_by_class_label(make_opt):
    """With intercept_lr=None the intercept's own accumulators have one value
    per class: learners that found different classes merge and rebase them
    column by column, like the intercept."""
    base = SoftmaxRegression(make_opt(), bits=6, intercept_lr=None, update="event")
    base.learn_many([{"a": 1.0}], ["x"])
    merger = Merger(base.state(), n_learners=2)
    learners = [learner_from_state(base.state()), learner_from_state(base.state())]
    trackers = [DeltaTracker(lr) for lr in learners]
    learners[0].learn_many([{"a": 1.0}, {"b": 1.0}], ["x", "y"])
    learners[1].learn_many([{"a": 1.0}, {"c": 1.0}], ["z", "x"])
    for i, tracker in enumerate(trackers):
        merger.add(tracker.take(learner_id=str(i)))
    state = merger.state()
    assert state.meta["classes"] == ["x", "y", "z"]
    name = f"intercept.{make_opt().name}.{'g2' if isinstance(make_opt(), AdaGrad) else 'n'}"
    acc = state.arrays[name]
    assert acc.shape == (3,)
    mine = [lr.state().arrays[name] for lr in learners]
    start = base.state().arrays[name][0]
    # small arrays average by event share (1/2 each here): class x gets both
    # learners' changes, y only the first's (its column 1), z only the second's
    assert learners[1].classes_ == ["x", "z"]
    assert acc[0] == pytest.approx(start + 0.5 * (mine[0][0] - start) + 0.5 * (mine[1][0] - start))
    assert acc[1] == pytest.approx(0.5 * mine[0][1]) and acc[2] == pytest.approx(0.5 * mine[1][1])
    assert acc[1] > 0 and acc[2] > 0
    trackers[0].rebase(learners[0], state, merger.commit())
    assert learners[0].classes_ == ["x", "y", "z"]
    np.testing.assert_allclose(learners[0].state().arrays[name], acc)
    assert np.isfinite(learner_from_state(state).predict_proba_many([{"a": 1.0}])).all()
