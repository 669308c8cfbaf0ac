"""Versions that cost what changed: the merger's delta versions and the learners' sparse rebase.

The merger commits the slots its deltas touched since the last version
(``Merger.changes``); a learner rebases on the union of the versions' changes
(``DeltaTracker.rebase_changes``). Both must give exactly what the whole-model
design gives: every version materialised from its snapshot and deltas equals
what a snapshot of the merger would hold, and a sparse rebase equals a rebase
on the whole stored model.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.learners import (
    FMClassifier,
    LogisticMixture,
    LogisticRegression,
    SoftmaxRegression,
)
from streamlearn.merge import DeltaTracker, Merger
from streamlearn.optim import FTRL, SGD, AdaGrad, Adam
from streamlearn.state import ModelState
from streamlearn.store import ModelStore


def _events(rng, n: int, users: int, label=None):
    xs = [
        {"user": f"u{int(rng.integers(users))}", "item": f"i{int(rng.integers(30))}",
         "n0": float(rng.normal()), "n1": float(rng.normal(3.0, 2.0))}
        for _ in range(n)
    ]
    ys = [bool(rng.random() < 0.5) for _ in range(n)] if label is None else [
        label(rng) for _ in range(n)]
    return xs, ys


MODELS = {
    "SGD+l1": lambda: LogisticRegression(SGD(0.1), bits=10, dense=["n0", "n1"], l1=0.001),
    "AdaGrad+scale": lambda: LogisticRegression(AdaGrad(0.1), bits=10, dense=["n0", "n1"],
                                                scale=True),
    "Adam": lambda: LogisticRegression(Adam(0.01), bits=10, dense=["n0", "n1"]),
    "FTRL": lambda: LogisticRegression(FTRL(alpha=0.1, l1=0.01, l2=0.1), bits=10,
                                       dense=["n0", "n1"], intercept_lr=None),
    "softmax": lambda: SoftmaxRegression(AdaGrad(0.1), bits=9, classes=["a", "b", "c"]),
    "FM": lambda: FMClassifier(bits=9, k=3),
    "mixture": lambda: LogisticMixture(bits=10, dense=["n0", "n1"], intercept_lr=None),
}


def _label(name):
    return (lambda rng: ["a", "b", "c"][int(rng.integers(3))]) if name == "softmax" else None


def _as_state(store: ModelStore, version: int) -> ModelState:
    return ModelState.from_arrow(store.get(version).table)


def _assert_equal(a: ModelState, b: ModelState, rtol: float = 0.0) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        if rtol:
            np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=rtol, atol=1e-12,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)


# -- the merger's versions -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_chain_of_merger_deltas_materialises_as_the_snapshots_would(tmp_path, name):
    """Random rounds of three learners' deltas, committed as deltas (a snapshot now and
    then): every version, read back from a fresh handle, equals the merger's whole model
    at that version, array for array; so after retention, compaction and a rollback."""
    rng = np.random.default_rng(sorted(MODELS).index(name))
    model = MODELS[name]()
    merger = Merger(model.state(), version=0, n_learners=3)
    learners = [model.clone() for _ in range(3)]
    trackers = [DeltaTracker(lr, 0) for lr in learners]
    store = ModelStore(str(tmp_path), model="m")
    expected: dict[int, ModelState] = {}
    version = store.commit(merger.view().to_arrow())
    merger.commit(version)
    expected[version] = merger.state()
    kinds = []
    for round_ in range(14):
        for i in rng.permutation(3):
            xs, ys = _events(rng, int(rng.integers(1, 40)), users=200, label=_label(name))
            learners[i].learn_many(xs, ys)
            merger.add(trackers[i].take(learner_id=str(i)))
        assert merger.whole_reason() is None
        if round_ in (4, 8):
            version = store.commit(merger.view().to_arrow())
        else:
            changes = merger.changes()
            assert set(changes.slots) <= set(range(learners[0].n_slots))
            version = store.commit_delta(changes, parent=version)
        kinds.append(store.info(version).kind)
        merger.commit(version)
        expected[version] = merger.state()
    assert kinds.count("delta") >= 8
    fresh = ModelStore(str(tmp_path), model="m")
    for v, state in expected.items():
        got = _as_state(fresh, v)
        _assert_equal(got, state)
        assert got.meta == state.meta
    # the deltas hold only the touched slots, far fewer than the model's
    sizes = [i.size_bytes for i in fresh.list() if i.kind == "delta"]
    assert max(sizes) < fresh.info(1).size_bytes / 2

    snapshot = version - 5  # round 8's
    assert store.info(snapshot).kind == "snapshot"
    deleted = store.retain(keep_last=3)
    assert deleted == list(range(1, snapshot)), "the chain of the newest 3 is kept whole"
    latest = store.latest()
    for v in range(snapshot, latest + 1):
        _assert_equal(_as_state(ModelStore(str(tmp_path), model="m"), v), expected[v])
    back = store.rollback(latest - 1)
    _assert_equal(_as_state(store, back), expected[latest - 1])
    compacted = store.compact()
    _assert_equal(_as_state(store, compacted), expected[latest - 1])


def test_a_new_class_makes_the_next_version_whole():
    """Discovered classes widen every 2-d array: a delta cannot say that, so the merger
    asks for a snapshot until the next commit."""
    model = SoftmaxRegression(AdaGrad(0.1), bits=8)
    learner = model.clone()
    learner.learn_many([{"x": "a"}], ["cat"])
    merger = Merger(model.state(), version=0)
    tracker = DeltaTracker(model.clone(), 0)
    learner2 = tracker.learner
    learner2.learn_many([{"x": "a"}, {"x": "b"}], ["cat", "dog"])
    assert merger.whole_reason() is None
    merger.add(tracker.take())
    assert "new classes" in merger.whole_reason()
    merger.commit()
    assert merger.whole_reason() is None and len(merger.changed_slots()) == 0


def test_changed_slots_are_the_union_of_the_deltas_since_the_commit():
    model = LogisticRegression(AdaGrad(0.1), bits=8)
    merger = Merger(model.state(), version=0, n_learners=2)
    a, b = model.clone(), model.clone()
    ta, tb = DeltaTracker(a), DeltaTracker(b)
    a.learn_many([{"u": "x"}], [True])
    b.learn_many([{"u": "y"}, {"u": "x"}], [False, True])
    da, db = ta.take(learner_id="a"), tb.take(learner_id="b")
    merger.add(da)
    merger.add(db)
    assert merger.changed_slots().tolist() == sorted(set(da.slots) | set(db.slots))
    before = merger.state()
    changes = merger.changes()
    # the whole model differs from its previous version only at those slots
    fresh = model.state()
    differs = np.flatnonzero(before.arrays["weights"] != fresh.arrays["weights"])
    assert set(differs) <= set(changes.slots.tolist())
    np.testing.assert_array_equal(changes.rows["weights"], before.arrays["weights"][changes.slots])
    merger.commit()
    assert len(merger.changed_slots()) == 0


# -- the learners' sparse rebase --------------------------------------------------------


def _rebase_both(full, sparse, store, version, reflected=None):
    """Rebase one learner on the whole stored model, the other on the changes since its base."""
    (fl, ft), (sl, st) = full, sparse
    ft.rebase(fl, _as_state(store, version), version, reflected)
    update = store.changes(since=st.base_version, upto=version)
    if update.reload is not None:
        st.rebase(sl, _as_state(store, version), version, reflected)
        return False
    assert st.rebase_changes(sl, update.changes, version, reflected)
    return True


@pytest.mark.parametrize("mode", ["take-then-rebase", "untaken-changes", "in-flight"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_sparse_rebase_equals_the_rebase_on_the_whole_model(tmp_path, name, mode):
    """Two copies of one learner learn the same events; a second learner feeds the merger
    too; versions are committed as deltas (a snapshot now and then). One copy rebases on
    the whole stored model, the other on the changes since its base: their arrays stay
    equal. Sent but not yet committed slots go back to the global model's values, as
    the whole-model rebase does, and changes not taken yet are kept.

    Exact when every change was taken before the rebase (the job's case) and no scaler
    (the whole-model rebase recomputes every slot's variance, which can move it by a
    rounding); otherwise equal to 1e-9.

    ``in-flight``: the learner's deltas reach the merger late (a queue of 0 to 3), and
    each rebase says how many of them the version holds; both keep the others on top."""
    untaken, in_flight = mode == "untaken-changes", mode == "in-flight"
    rng = np.random.default_rng(10 + sorted(MODELS).index(name))
    model = MODELS[name]()
    merger = Merger(model.state(), version=0, n_learners=2)
    store = ModelStore(str(tmp_path), model="m")
    version = store.commit(merger.view().to_arrow())
    merger.commit(version)
    base = _as_state(store, version)
    a, b, other = model.clone(), model.clone(), model.clone()
    for learner in (a, b, other):
        learner.load_state(base)
    ta, tb, to = DeltaTracker(a, version), DeltaTracker(b, version), DeltaTracker(other, version)
    exact = mode == "take-then-rebase" and name != "AdaGrad+scale"
    sparse_rebases = 0
    queue: list = []  # in flight: taken, not yet at the merger
    taken = merged = committed = 0  # of a's deltas: taken, folded, in a version
    for _ in range(40):
        xs, ys = _events(rng, int(rng.integers(1, 30)), users=300, label=_label(name))
        a.learn_many(xs, ys)
        b.learn_many(xs, ys)
        if not untaken or rng.random() < 0.6:
            da, db = ta.take(learner_id="a", tag=taken), tb.take(learner_id="a", tag=taken)
            taken += 1
            if exact:
                np.testing.assert_array_equal(da.slots, db.slots)
            queue.append(da)
        while queue and (not in_flight or len(queue) > rng.integers(0, 4)):
            merger.add(queue.pop(0))
            merged += 1
        xs, ys = _events(rng, int(rng.integers(1, 30)), users=300, label=_label(name))
        other.learn_many(xs, ys)
        merger.add(to.take(learner_id="o"))
        if rng.random() < 0.5:  # a version
            if rng.random() < 0.1:
                version = store.commit(merger.view().to_arrow())
            else:
                version = store.commit_delta(merger.changes(), parent=version)
            merger.commit(version)
            committed = merged
        if rng.random() < 0.6 and version > ta.base_version:  # the learners rebase
            if untaken and rng.random() < 0.5:  # learned, not taken yet
                xs, ys = _events(rng, 5, users=300, label=_label(name))
                a.learn_many(xs, ys)
                b.learn_many(xs, ys)
            assert ta.pending_tags == tb.pending_tags
            # the oldest deltas taken and not rebased past, which the version holds
            reflected = sum(t < committed for t in ta.pending_tags) if in_flight else None
            sparse_rebases += _rebase_both((a, ta), (b, tb), store, version, reflected)
            to.rebase(other, _as_state(store, version), version)
            sa, sb = a.state(), b.state()
            _assert_equal(sa, sb, rtol=0.0 if exact else 1e-9)
            assert (sa.meta["n_learned"], sa.meta["n_steps"]) == (
                sb.meta["n_learned"], sb.meta["n_steps"])
            assert ta.base_version == tb.base_version == version
    assert sparse_rebases >= 5


def test_sent_slots_not_yet_committed_go_back_to_the_global_values(tmp_path):
    """The learner's own sent delta is not in the version it rebases on: the whole-model
    rebase resets those slots to the global model (the delta comes back with the
    version that merges it), and so does the sparse one."""
    model = LogisticRegression(SGD(0.5), bits=8, intercept=False)
    store = ModelStore(str(tmp_path), model="m")
    merger = Merger(model.state(), version=0)
    v1 = store.commit(merger.view().to_arrow())
    merger.commit(v1)
    learner, other = model.clone(), model.clone()
    tracker, tracker_o = DeltaTracker(learner, v1), DeltaTracker(other, v1)
    learner.learn_many([{"u": "mine"}] * 3, [True] * 3)
    tracker.take()  # sent, but the merger has not folded it yet
    other.learn_many([{"u": "theirs"}] * 3, [False] * 3)
    merger.add(tracker_o.take(learner_id="o"))
    v2 = store.commit_delta(merger.changes(), parent=v1)
    mine = int(np.flatnonzero(learner.weights)[0])
    assert learner.weights[mine] != 0
    update = store.changes(since=v1)
    assert mine not in update.changes.slots
    assert tracker.rebase_changes(learner, update.changes, v2)
    assert learner.weights[mine] == 0.0
    np.testing.assert_array_equal(learner.weights, _as_state(store, v2).arrays["weights"])


def test_rebase_changes_declines_what_it_cannot_do_sparsely(tmp_path):
    """A learner that found a class the global model lacks is rebased on the whole model."""
    model = SoftmaxRegression(AdaGrad(0.1), bits=8)
    model.learn_many([{"x": "a"}], ["cat"])
    store = ModelStore(str(tmp_path), model="m")
    v1 = store.commit(model.state())
    learner = model.clone()
    learner.load_state(_as_state(store, v1))
    tracker = DeltaTracker(learner, v1)
    learner.learn_many([{"x": "b"}], ["dog"])  # a class the global model has not seen
    state = _as_state(store, v1).copy()
    state.arrays["weights"][3] += 1.0
    from streamlearn.store import Changes

    v2 = store.commit_delta(Changes.gather(state, [3]), parent=v1)
    before = learner.state()
    assert not tracker.rebase_changes(learner, store.changes(since=v1).changes, v2)
    _assert_equal(learner.state(), before)
    assert tracker.base_version == v1


def test_adam_contributor_counts_are_cleared_sparsely_and_forgotten_after_two_windows():
    """The hybrid merger divides a hashed slot's Adam moments by the learners that touched
    it lately (this window and the last, a window being 2 deltas per learner). Clearing
    the old window only where it was set must forget a slot nobody touched for two
    windows: a lone learner then moves it by its whole delta again."""
    from streamlearn.merge import ModelDelta

    state = LogisticRegression(Adam(0.01), bits=6, intercept=False).state()
    meta = {k: state.meta.get(k) for k in ("kind", "params", "classes", "bits", "n_slots")}
    merger = Merger(state, version=0, n_learners=2)

    def add(learner_id: str, slot: int) -> float:
        before = merger.state().arrays["adam.m"][slot]
        sparse = {"weights": np.zeros(1), "adam.m": np.ones(1), "adam.v": np.ones(1)}
        merger.add(ModelDelta(learner_id, 0, 1, 1, np.array([slot]), sparse, {}, meta))
        return float(merger.state().arrays["adam.m"][slot] - before)

    assert add("a", 5) == 1.0
    assert add("b", 5) == 0.5  # two learners on slot 5 lately: the mean of their moves
    for i in range(8):  # two windows without slot 5
        add("ab"[i % 2], 1)
    assert add("b", 5) == 1.0


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"AdaGrad+scale"}))
def test_a_lone_learner_whose_deltas_arrive_late_learns_as_if_it_never_merged(tmp_path, name):
    """One learner, its deltas folded one or two versions late (as in the job, where the
    version a learner rebases on right after a take never holds that take): told how many
    the version holds, it keeps the others and stays, version after version, the model
    it would be learning alone. Told nothing, it drops them and learns them again (the
    old behaviour): a different model. (A scaler's statistics are not kept in flight:
    its learners rebase as if told nothing.)"""
    rng = np.random.default_rng(40 + sorted(MODELS).index(name))
    model = MODELS[name]()
    # batches of varying sizes: the one learner of n_learners=1 has an event share of 1
    # at every delta, whatever its size
    batches = [_events(rng, int(rng.integers(5, 40)), users=200, label=_label(name))
               for _ in range(30)]

    def run(tell: bool):
        store = ModelStore(str(tmp_path / f"tell-{tell}"), model="m")
        merger = Merger(model.state(), version=0, n_learners=1)
        version = store.commit(merger.view().to_arrow())
        merger.commit(version)
        alone, learner = model.clone(), model.clone()
        tracker = DeltaTracker(learner, version)
        queue, taken, committed = [], 0, 0
        for i, (xs, ys) in enumerate(batches):
            alone.learn_many(xs, ys)
            learner.learn_many(xs, ys)
            queue.append(tracker.take(learner_id="a", tag=taken))
            taken += 1
            lag = 1 + i % 2  # the newest one or two stay in flight
            while len(queue) > lag:
                merger.add(queue.pop(0))
            version = store.commit_delta(merger.changes(), parent=version)
            merger.commit(version)
            committed = taken - len(queue)
            reflected = sum(t < committed for t in tracker.pending_tags) if tell else None
            update = store.changes(since=tracker.base_version, upto=version)
            assert tracker.rebase_changes(learner, update.changes, version, reflected)
        return alone.state(), learner.state()

    alone, told = run(tell=True)
    _assert_equal(told, alone, rtol=1e-9)
    _, untold = run(tell=False)
    assert any(not np.allclose(untold.arrays[k], alone.arrays[k], rtol=1e-6, atol=1e-9)
               for k in alone.arrays)
