"""Delta versions: materialised exactly, followed cheaply, kept by retention, refused when wrong."""

from __future__ import annotations

import os
import tempfile
import uuid
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:  # tests/ is a package in the full suite, a plain directory when run alone
    from tests.s3_server import s3_server  # noqa: F401  (a pytest fixture)
except ModuleNotFoundError:
    from s3_server import s3_server  # noqa: F401

from streamlearn.errors import StoreError, ValidationError, VersionNotFound
from streamlearn.state import ModelState
from streamlearn.store import (
    BrokenChain,
    Changes,
    Lineage,
    ModelStore,
    SnapshotPolicy,
    StaleParent,
)

N = 64


def base_state(seed: int = 0, n: int = N) -> ModelState:
    rng = np.random.default_rng(seed)
    arrays = {
        "weights": rng.normal(size=n),
        "adagrad.g2": rng.random(n),
        "factors": rng.normal(size=(n, 3)).astype(np.float32),
        "scaler.count": rng.integers(0, 5, n),
        "intercept": rng.normal(size=2),
        "l1.total": np.zeros(1),
    }
    return ModelState(arrays, {"kind": "Demo", "n_slots": n, "n_learned": 0, "classes": [0, 1]})


def stepped(state: ModelState, slots: list[int], seed: int) -> ModelState:
    """``state`` after learning that changed ``slots`` (and the small arrays)."""
    rng = np.random.default_rng(seed)
    new = state.copy()
    k = len(slots)
    a = new.arrays
    a["weights"][slots] = rng.normal(size=k)
    if k:
        a["weights"][slots[0]] = np.nan if seed % 7 == 0 else a["weights"][slots[0]]
    a["adagrad.g2"][slots] += rng.random(k)
    a["factors"][slots] = rng.normal(size=(k, 3)).astype(np.float32)
    a["scaler.count"][slots] += 1
    a["intercept"] = rng.normal(size=2)
    a["l1.total"] = a["l1.total"] + 0.25
    new.meta["n_learned"] = state.meta["n_learned"] + k
    return new


def assert_same(table: pa.Table, ref: ModelState, where: str) -> None:
    got = ModelState.from_arrow(table)
    assert sorted(got.arrays) == sorted(ref.arrays), where
    for name, want in ref.arrays.items():
        have = got.arrays[name]
        assert have.dtype == want.dtype and have.shape == want.shape, (where, name)
        assert np.array_equal(have, want, equal_nan=True), (where, name)
    assert got.meta == ref.meta, where


OPS = st.lists(
    st.tuples(
        st.sampled_from(["delta", "delta", "delta", "delta", "snapshot", "compact", "rollback",
                         "retain"]),
        st.lists(st.integers(0, N - 1), max_size=12, unique=True),
        st.integers(0, 2**31),
    ),
    min_size=1,
    max_size=14,
)


def run_ops(uri: str, ops: list[tuple[str, list[int], int]], check_each: bool) -> None:
    """Apply ``ops``, keeping what the full-snapshot design would have stored for
    every version, then check every stored version against it: through the
    caching handle, a fresh handle, and a follower's changes."""
    store = ModelStore(uri, model="m")
    ref: dict[int, ModelState] = {}
    v = store.commit(base_state())
    ref[v] = base_state()
    for op, slots, seed in ops:
        latest = store.latest()
        if op == "delta":
            new = stepped(ref[latest], sorted(slots), seed)
            v = store.commit_delta(
                Changes.gather(new, sorted(slots)), Lineage(events=seed), parent=latest
            )
            ref[v] = new
        elif op == "snapshot":
            new = stepped(ref[latest], sorted(slots), seed)
            v = store.commit(new)
            ref[v] = new
        elif op == "compact":
            v = store.compact()
            ref[v] = ref[latest]
        elif op == "rollback":
            kept = [i.version for i in store.list() if i.available]
            to = kept[seed % len(kept)]
            v = store.rollback(to)
            ref[v] = ref[to]
        else:
            keep = 1 + seed % 4
            before = {i.version for i in store.list() if i.available}
            deleted = store.retain(keep_last=keep)
            infos = store.list()
            after = {i.version for i in infos if i.available}
            assert after == before - set(deleted)
            assert after >= before & {i.version for i in infos[-keep:]}
        if check_each:
            assert_same(store.get(store.latest()).table, ref[store.latest()], f"after {op}")
    latest = store.latest()
    fresh = ModelStore(uri, model="m")  # no cache: from the nearest snapshot
    available = [i.version for i in store.list() if i.available]
    for version in available:
        assert_same(fresh.get(version).table, ref[version], f"fresh get({version})")
        assert_same(store.get(version).table, ref[version], f"cached get({version})")
        update = store.changes(since=version)
        assert update.version == latest
        if update.reload is None:
            held = ref[version].copy()
            update.changes.apply_to(held)
            assert_same(ModelState(held.arrays, held.meta).to_arrow(), ref[latest],
                        f"follower from {version}")
        else:
            assert_same(store.get(update.version).table, ref[latest], "reload")
    for info in store.list():
        if not info.available:
            with pytest.raises(VersionNotFound):
                fresh.get(info.version)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_materialised_versions_equal_full_snapshots_local(ops) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as root:
        run_ops(os.path.join(root, "models"), ops, check_each=True)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=OPS.filter(lambda ops: len(ops) <= 7))
def test_materialised_versions_equal_full_snapshots_s3(ops, s3_server) -> None:  # noqa: F811
    run_ops(s3_server.uri(f"stores/{uuid.uuid4().hex[:10]}"), ops, check_each=False)


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"), model="ctr")


def test_delta_file_is_plain_arrow_and_small(store: ModelStore) -> None:
    state = base_state(n=2**20)
    v1 = store.commit(state)
    slots = np.sort(np.random.default_rng(1).choice(2**20, 1000, replace=False))
    new = stepped(state, slots.tolist(), 3)
    v2 = store.commit_delta(Changes.gather(new, slots), Lineage(events=5000), parent=v1)
    info, snap = store.info(v2), store.info(v1)
    assert (info.kind, info.parent, info.base, info.chain["deltas"]) == ("delta", v1, v1, 1)
    # 1,000 slots of a 2^20-slot model: the delta is tens of KB (40 bytes a slot: the slot
    # and four per-slot arrays, plus a few KB of schema), the snapshot tens of MB
    assert info.size_bytes < 1000 * 40 + 8_000 < 30_000_000 < snap.size_bytes
    big = np.sort(np.random.default_rng(2).choice(2**20, 10_000, replace=False))
    v3 = store.commit_delta(Changes.gather(stepped(new, big.tolist(), 4), big), parent=v2)
    assert 7 < store.info(v3).size_bytes / info.size_bytes < 11  # proportional to the slots
    # pyarrow alone reads it: one row per changed slot, small arrays in the schema
    with open(os.path.join(store.root, "ctr", info.file), "rb") as f:
        table = ipc.open_file(f).read_all()
    assert table.column("slot").to_numpy().tolist() == slots.tolist()
    assert np.array_equal(table.column("weights").to_numpy(), new.arrays["weights"][slots])
    factors = table.column("factors").combine_chunks().flatten().to_numpy().reshape(-1, 3)
    assert np.array_equal(factors, new.arrays["factors"][slots])
    import json

    header = json.loads(table.schema.metadata[b"streamlearn.delta"])
    assert header["parent"] == v1 and header["base"] == v1 and header["n_slots"] == 2**20
    assert header["small"]["intercept"]["values"] == new.arrays["intercept"].tolist()
    assert json.loads(table.schema.metadata[b"streamlearn.meta"])["n_learned"] == 1000
    assert_same(store.get(v2).table, new, "v2")


def test_following_a_chain_writes_in_place_and_never_changes_a_loaded_version(
    store: ModelStore,
) -> None:
    state = base_state(n=4096)
    v = store.commit(state)
    states = {v: state}
    for i in range(6):
        new = stepped(states[v], [i, 100 + i], i + 1)
        v = store.commit_delta(Changes.gather(new, [i, 100 + i]), parent=v)
        states[v] = new
    reader = ModelStore(store.root, model="ctr")
    held = reader.get(3)  # kept by the caller: later versions must not change it
    assert_same(held.table, states[3], "v3")
    weights = None
    for version in (4, 5, 6, 7):
        got = reader.get(version)
        assert_same(got.table, states[version], f"v{version}")
        del got
        if version > 4:  # no table of the previous version alive: written in place, no copy
            assert weights() is reader._cache.arrays["weights"]
        weights = weakref.ref(reader._cache.arrays["weights"])
    assert_same(held.table, states[3], "v3 after following")  # copy-on-write kept it intact
    reader.drop_cache()
    assert reader._cache is None
    assert_same(reader.get(6).table, states[6], "v6 from the snapshot again")
    # changes() reads the deltas alone: it works with the snapshot file gone
    os.unlink(os.path.join(store.root, "ctr", store.info(1).file))
    update = store.changes(since=2)
    assert update.reload is None and update.version == 7
    assert update.changes.slots.tolist() == [1, 2, 3, 4, 5, 101, 102, 103, 104, 105]
    assert np.array_equal(update.changes.rows["weights"], states[7].arrays["weights"][
        update.changes.slots], equal_nan=True)


def test_delta_arguments_are_checked(store: ModelStore) -> None:
    state = base_state()
    v1 = store.commit(state)
    good = Changes.gather(stepped(state, [1, 2], 1), [1, 2])
    with pytest.raises(ValidationError, match="field `slots`.*ascending distinct"):
        Changes([2, 1], {"weights": np.zeros(2)})
    with pytest.raises(ValidationError, match=r"field `rows\['weights'\]`.*2 rows"):
        Changes([1, 2], {"weights": np.zeros(3)})
    with pytest.raises(ValidationError, match="field `changes.slots`.*64 slots"):
        store.commit_delta(Changes.gather(base_state(n=128), [100]), parent=v1)
    rows = dict(good.rows)
    rows["weights"] = rows["weights"].astype(np.float32)
    with pytest.raises(ValidationError, match=r"changes.rows\['weights'\].*<f8"):
        store.commit_delta(Changes(good.slots, rows, good.small, good.meta), parent=v1)
    del rows["weights"]
    with pytest.raises(ValidationError, match="field `changes.rows`.*per-slot arrays"):
        store.commit_delta(Changes(good.slots, rows, good.small, good.meta), parent=v1)
    small = dict(good.small, intercept=np.zeros(3))
    with pytest.raises(ValidationError, match=r"changes.small\['intercept'\].*shape \(2,\)"):
        store.commit_delta(Changes(good.slots, good.rows, small, good.meta), parent=v1)
    with pytest.raises(ValidationError, match="changes.meta"):
        store.commit_delta(Changes(good.slots, good.rows, good.small, None), parent=v1)
    with pytest.raises(ValidationError, match="lineage.parents"):
        store.commit_delta(good, Lineage(parents=(7,)), parent=v1)
    v2 = store.commit_delta(good, parent=v1)
    with pytest.raises(StaleParent, match="latest version is 2"):
        store.commit_delta(good, parent=v1)
    other = store.with_model("plain")
    p = other.commit(pa.table({"w": [1.0, 2.0]}))
    with pytest.raises(StoreError, match="not a model state"):
        other.commit_delta(good, parent=p)
    assert store.latest() == v2 and store.info(v2).kind == "delta"


def test_missing_or_damaged_delta_is_a_clear_error(store: ModelStore) -> None:
    state = base_state()
    v = store.commit(state)
    for i in range(4):
        state = stepped(state, [i], i)
        v = store.commit_delta(Changes.gather(state, [i]), parent=v)
    follower = ModelStore(store.root, model="ctr")
    served = follower.get(5)  # the last good version, still served
    d3 = os.path.join(store.root, "ctr", store.info(3).file)
    with open(d3, "rb") as f:
        data = f.read()
    with open(d3, "wb") as f:
        f.write(data[: len(data) // 2])  # damaged
    fresh = ModelStore(store.root, model="ctr")
    with pytest.raises(BrokenChain, match="model 'ctr' version 3: its delta file .* is damaged"
                       r".*version 5 is materialised from it") as err:
        fresh.get(5)
    assert (err.value.model, err.value.version) == ("ctr", 3)
    with pytest.raises(BrokenChain, match="model 'ctr' version 3"):
        fresh.changes(since=2)
    os.unlink(d3)
    with pytest.raises(BrokenChain, match="model 'ctr' version 3: its delta file .* is missing"):
        ModelStore(store.root, model="ctr").get(4)
    assert_same(served.table, state, "served")  # the follower's version is unaffected
    # the writer's next commit is a snapshot, and the chain is whole again after it
    policy = SnapshotPolicy(max_delta_bytes_ratio=None)
    assert policy.due(store.chain()) is None
    policy.request_snapshot("version 3 unreadable")
    assert policy.due(store.chain()) == "requested: version 3 unreadable"
    v6 = store.commit(state)
    assert_same(ModelStore(store.root, model="ctr").get(v6).table, state, "after snapshot")
    # the latest version's own file missing: a delta on it is refused (commit a snapshot)
    os.unlink(os.path.join(store.root, "ctr", store.info(v6).file))
    with pytest.raises(BrokenChain, match="version 6: its snapshot file .* is missing"):
        store.commit_delta(Changes.gather(state, [1]), parent=v6)


def test_retention_keeps_chains_and_compaction_frees_them(store: ModelStore) -> None:
    state = base_state()
    v = store.commit(state)
    states = {v: state}
    for i in range(8):
        states[v + 1] = stepped(states[v], [i, i + 9], i)
        v = store.commit_delta(Changes.gather(states[v + 1], [i, i + 9]), parent=v)
    assert store.retain(keep_last=2) == []  # 8 and 9 need every delta back to snapshot 1
    assert store.rollback(5) == 10  # rollback to a delta version: a snapshot equal to it
    assert_same(store.get(10).table, states[5], "rollback")
    assert store.info(10).kind == "rollback" and store.chain().deltas == 0
    states[10] = states[5]
    states[11] = stepped(states[10], [3], 11)
    store.commit_delta(Changes.gather(states[11], [3]), parent=10)
    assert store.retain(keep_last=2) == list(range(1, 10))
    assert store.compact() == 12 and store.info(12).kind == "compact"
    states[12] = states[11]
    assert store.compact() == 12  # already a snapshot: nothing written
    update = store.changes(since=11)  # a follower at 11 needs no reload across a compaction
    assert update.reload is None and update.version == 12 and len(update.changes) == 0
    states[13] = stepped(states[11], [5, 6], 13)
    store.commit_delta(Changes.gather(states[13], [5, 6]), parent=12)
    update = store.changes(since=11)
    assert update.reload is None and update.changes.slots.tolist() == [5, 6]
    assert store.retain(keep_last=1) == [10, 11]
    for version in (12, 13):
        assert_same(ModelStore(store.root, model="ctr").get(version).table, states[version], "")
    assert store.changes(since=11).reload is None  # 11 is pruned but the chain from it is whole
    store.pin(12)
    assert store.changes(since=13).reload == "version 12 is older than 13: load version 12 whole"


def test_snapshot_policy_reads_the_chain(store: ModelStore) -> None:
    state = base_state()
    policy = SnapshotPolicy(max_deltas=3, max_delta_bytes_ratio=None, max_age_s=None)
    assert policy.due(store.chain()) == "no version yet"
    v = store.commit(state)
    kinds = []
    for i in range(7):
        state = stepped(state, [i], i)
        if policy.due(store.chain()):
            v = store.commit(state)
        else:
            v = store.commit_delta(Changes.gather(state, [i]), parent=v)
        kinds.append(store.info(v).kind)
    assert kinds == ["delta"] * 3 + ["snapshot"] + ["delta"] * 3
    chain = store.chain()
    assert (chain.base, chain.deltas) == (5, 3)
    assert chain.delta_bytes == sum(store.info(x).size_bytes for x in (6, 7, 8))
    by_bytes = SnapshotPolicy(max_deltas=None, max_delta_bytes_ratio=0.01, max_age_s=None)
    assert "delta bytes since snapshot 5" in by_bytes.due(chain)
    by_age = SnapshotPolicy(max_deltas=None, max_delta_bytes_ratio=None, max_age_s=60)
    assert by_age.due(chain, now=chain.snapshot_created_at + 30) is None
    assert "s old" in by_age.due(chain, now=chain.snapshot_created_at + 61)
    with pytest.raises(ValidationError, match="max_deltas"):
        SnapshotPolicy(max_deltas=0)


def test_the_documented_example_runs(tmp_path, monkeypatch) -> None:
    """docs/store.md's delta example, run as it is written."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "store.md").read_text()
    blocks = text.split("```python\n")[1:]
    marker = "store.changes(since=follower_version)"
    example = next(b.split("```")[0] for b in blocks if marker in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/store.md", "exec"), {})


def test_deltas_under_the_writer_lease(store: ModelStore) -> None:
    from streamlearn.store import WriterBusy, WriterFenced

    state = base_state()
    lease = store.acquire_writer("trainer-1")
    v1 = store.commit(state, lease=lease)
    state = stepped(state, [1], 1)
    v2 = store.commit_delta(Changes.gather(state, [1]), parent=v1, lease=lease)
    assert store.info(v2).writer_token == lease.token
    with pytest.raises(WriterBusy):
        store.commit_delta(Changes.gather(state, [1]), parent=v2)
    again = store.acquire_writer("trainer-1")  # restarted: the old lease is fenced out
    with pytest.raises(WriterFenced):
        store.commit_delta(Changes.gather(state, [1]), parent=v2, lease=lease)
    assert store.latest() == v2
    state = stepped(state, [2], 2)
    v3 = store.commit_delta(Changes.gather(state, [2]), parent=v2, lease=again)
    assert_same(ModelStore(store.root, model="ctr").get(v3).table, state, "v3")


def test_a_version_committed_meanwhile_refuses_the_delta(store: ModelStore, monkeypatch) -> None:
    state = base_state()
    v1 = store.commit(state)
    rival = ModelStore(store.root, model="ctr")
    check = store._check_changes

    def check_then_race(*args):  # another writer wins a number after our parent check
        check(*args)
        rival.commit(state)

    monkeypatch.setattr(store, "_check_changes", check_then_race)
    with pytest.raises(StaleParent, match="version 3 was refused: .* version 2 was committed"):
        store.commit_delta(Changes.gather(stepped(state, [1], 1), [1]), parent=v1)
    assert store.latest() == 2
    assert [(i.version, i.kind, i.available) for i in store.list()] == [
        (1, "snapshot", True), (2, "snapshot", True), (3, "refused", False)]
    with pytest.raises(VersionNotFound, match="version 3 was discarded"):
        store.get(3)
    monkeypatch.undo()
    assert store.commit_delta(Changes.gather(state, [1]), parent=2) == 4


def test_a_first_snapshot_with_its_changes_on_the_initial_state(store: ModelStore) -> None:
    """A follower that holds only the initial state takes the first snapshot and the
    deltas after it as changes, when it names the same initial state; else it reloads."""
    initial = base_state(seed=3, n=4096)
    first = stepped(initial, [2, 40], 1)
    with pytest.raises(ValidationError, match="from_initial"):
        store.commit(first, from_initial=("", Changes.gather(first, [2, 40])))
    with pytest.raises(ValidationError, match="changes.rows"):
        store.commit(first, from_initial=("cfg-a", Changes(np.array([2]), {}, {}, first.meta)))
    with pytest.raises(ValidationError, match="from_initial"):
        store.commit(b"opaque", from_initial=("cfg-a", Changes.gather(first, [2, 40])))
    v1 = store.commit(first, from_initial=("cfg-a", Changes.gather(first, [2, 40])))
    second = stepped(first, [5], 2)
    v2 = store.commit_delta(Changes.gather(second, [5]), parent=v1)
    info = store.info(v1)
    assert info.kind == "snapshot" and info.from_initial is not None
    assert info.from_initial["initial"] == "cfg-a"
    assert info.from_initial["size_bytes"] < info.size_bytes / 4  # the changes, not the model
    update = store.changes(since=0, initial="cfg-a")
    assert update.reload is None and update.version == v2
    assert update.changes.slots.tolist() == [2, 5, 40]
    held = update.changes.apply_to(initial.copy())
    assert_same(store.get(v2).table, held, "initial + changes")
    assert store.changes(since=0, upto=v1, initial="cfg-a").changes.slots.tolist() == [2, 40]
    # another initial state, or none named: the snapshot is read whole
    assert store.changes(since=0, initial="cfg-b").reload.startswith("version 1 is a snapshot")
    assert store.changes(since=0).reload.startswith("version 1 is a snapshot")
    # a later snapshot has none: a follower at 0 reloads past it
    store.commit(second)
    assert store.changes(since=0, initial="cfg-a").reload.startswith("version 3 is a snapshot")
    # retention deletes the second file with its version
    versions = os.path.join(store.root, "ctr", "versions")
    assert sum(name.endswith(".initial.arrow") for name in os.listdir(versions)) == 1
    assert store.retain(keep_last=1) == [1, 2]
    assert not any(name.endswith(".initial.arrow") for name in os.listdir(versions))


def test_retention_of_a_model_with_no_version_does_nothing(tmp_path) -> None:
    empty = ModelStore(str(tmp_path / "models"), model="nothing-yet")
    assert empty.retain(keep_last=3) == []
    assert empty.list() == []


def test_an_update_carries_its_versions_lineage_read_with_it(tmp_path):
    """A follower learns what the version it moves to reflects from the same answer (the
    training job's learners count their deltas in it), whether it gets changes or is told
    to reload; nothing read, nothing given."""
    from streamlearn.store import Lineage

    state = ModelState({"weights": np.zeros(8), "intercept": np.zeros(1)}, {"n_slots": 8})
    store = ModelStore(str(tmp_path), model="m")
    v1 = store.commit(state, lineage=Lineage(offsets={"t": {0: 5}}, events=5))
    state.arrays["weights"][2] = 1.0
    v2 = store.commit_delta(Changes.gather(state, [2]), parent=v1,
                             lineage=Lineage(offsets={"t": {0: 9}}, events=9))
    v3 = store.commit(state, lineage=Lineage(offsets={"t": {0: 12}}, events=12))
    for since, upto in ((v1, v2), (v1, v3), (v2, v3)):
        update = store.changes(since=since, upto=upto)
        assert update.lineage == store.info(upto).lineage
    assert (update.reload is not None, update.lineage.offsets) == (True, {"t": {0: 12}})
    assert store.changes(since=v3).lineage is None  # nothing to read
