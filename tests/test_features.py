"""Feature hashing, micro-batches and the online scaler."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from streamlearn.errors import ValidationError
from streamlearn.features import FeatureBatch, FeatureHasher, OnlineScaler, feature_slot


def _events(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {
            "age": rng.randint(18, 90),
            "score": rng.gauss(0, 3),
            "city": rng.choice("ABCDEFG"),
            "tags": rng.sample(["x", "y", "z", "w"], rng.randint(0, 3)),
            "vip": rng.random() < 0.5,
        }
        if i % 3 == 0:
            x[f"rare{i}"] = "v"  # names seen once
            x["f32"] = np.float32(1.5)
        out.append(x)
    return out


def _same(a: FeatureBatch, b: FeatureBatch):
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    assert a.n_slots == b.n_slots


def _concat(batches):
    offsets = [0]
    for b in batches:
        offsets.extend((b.offsets[1:] + offsets[-1]).tolist())
    return FeatureBatch(
        np.concatenate([b.indices for b in batches]),
        np.concatenate([b.values for b in batches]),
        np.array(offsets),
        np.concatenate([b.numeric for b in batches]),
        batches[0].n_slots,
    )


@pytest.mark.parametrize("dense", [(), ("age", "score")])
def test_small_batches_encode_exactly_like_large_ones(dense):
    events = _events(60)
    big = FeatureHasher(bits=12, dense=dense).encode(events)
    small = FeatureHasher(bits=12, dense=dense)
    _same(big, _concat([small.encode_one(x) for x in events]))
    _same(big, _concat([small.encode(events[i : i + 3]) for i in range(0, 60, 3)]))
    # and once the caches are warm, the batch path gives the same again
    warm = FeatureHasher(bits=12, dense=dense)
    warm.encode(events)
    _same(big, warm.encode(events))


def test_hashing_is_the_same_in_other_processes():
    events = _events(20, seed=5)
    mine = FeatureHasher(bits=16).encode(events)
    code = (
        "import json, sys; from streamlearn.features import FeatureHasher, feature_slot;"
        "ev = json.loads(sys.stdin.read());"
        "b = FeatureHasher(bits=16).encode(ev);"
        "print(json.dumps([b.indices.tolist(), b.values.tolist(), feature_slot('city', 'A', 16)]))"
    )
    plain = json.loads(
        json.dumps(
            [
                {k: (float(v) if isinstance(v, np.floating) else v) for k, v in x.items()}
                for x in events
            ]
        )
    )
    for seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(plain),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        indices, values, slot = json.loads(out.stdout)
        assert indices == mine.indices.tolist() and values == mine.values.tolist()
        assert tuple(slot) == feature_slot("city", "A", 16)


def test_what_each_kind_of_value_becomes():
    h = FeatureHasher(bits=20)
    b = h.encode_one({"n": 2.5, "s": "red", "l": ["a", "b"], "t": True, "f": False})
    assert b.offsets.tolist() == [0, 6]
    assert np.abs(b.values).tolist() == [2.5, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert b.numeric.tolist() == [True, False, False, False, False, False]
    # one-hot names=value: the same as a list of one, different from another value
    assert h.encode_one({"l": "a"}).indices[0] == b.indices[2]
    assert h.encode_one({"s": "blue"}).indices[0] != b.indices[1]
    # booleans and numbers of one name share its slot
    assert h.encode_one({"t": 1.0}).indices[0] == b.indices[4]
    slot, sign = feature_slot("s", "red", bits=20)
    assert (b.indices[1], b.values[1]) == (slot, sign)


def test_signs_are_balanced_and_collisions_rare():
    h = FeatureHasher(bits=20)
    b = h.encode([{"id": f"user-{i}"} for i in range(20000)])
    assert 0.45 < (b.values > 0).mean() < 0.55
    assert len(np.unique(b.indices)) > 19700  # ~190 collisions expected at 2**20


def test_dense_features_have_their_own_slots():
    h = FeatureHasher(bits=4, dense=["age", "income"])
    b = h.encode([{"age": 30, "income": 2.0, "x": 1.0}])
    assert b.indices[:2].tolist() == [16, 17] and b.values[:2].tolist() == [30.0, 2.0]
    for batch in ([{"age": "old"}], [{"x": "old"}, {"age": "old"}] * 5):
        with pytest.raises(ValidationError) as info:
            h.encode(batch)
        assert info.value.field == "features.age"


@pytest.mark.parametrize("n", [1, 10])
@pytest.mark.parametrize(
    "bad, field",
    [
        ({"tags": ["a"], "x": None}, "features.x"),
        ({"tags": ["a", 3]}, "features.tags"),
        ({"x": 10**400}, "features.x"),
        ({"x": np.nan}, "features.x"),
        ({"x": b"bytes"}, "features.x"),
        ({"": 1.0}, "features"),
    ],
    ids=["none-with-list", "list-of-mixed", "huge-int", "numpy-nan", "bytes", "empty-name"],
)
def test_bad_values_name_field_and_event(n, bad, field):
    events = [{"tags": ["q"], "x": 1.0}] * n + [bad]
    with pytest.raises(ValidationError) as info:
        FeatureHasher(bits=8).encode(events)
    assert info.value.field == field and f"event {n}" in str(info.value)


def test_a_single_mapping_is_not_a_batch():
    with pytest.raises(ValidationError) as info:
        FeatureHasher().encode({"a": 1.0})
    assert info.value.field == "xs"


def test_feature_batch_from_arrays_checks_its_arrays():
    ok = FeatureBatch.from_arrays([1, 2], [1.0, 2.0], [0, 1, 2], n_slots=4)
    assert ok.n_rows == 2 and ok.rows().tolist() == [0, 1]
    for kwargs, field in [
        (dict(indices=[1, 9], values=[1.0, 2.0], offsets=[0, 2], n_slots=4), "indices"),
        (dict(indices=[1, 2], values=[1.0, 2.0], offsets=[0, 3], n_slots=4), "offsets"),
        (dict(indices=[1, 2], values=[1.0], offsets=[0, 2], n_slots=4), "values"),
        (dict(indices=[1, 2], values=[1.0, np.inf], offsets=[0, 2], n_slots=4), "values"),
    ]:
        with pytest.raises(ValidationError) as info:
            FeatureBatch.from_arrays(**kwargs)
        assert info.value.field == field


@pytest.mark.parametrize("small", [None, 4, 64])
def test_groups_find_equal_slots_without_sorting(small):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 1000, 5000)  # many repeats; a table of 4 makes buckets collide
    b = FeatureBatch.from_arrays(idx, np.ones(5000), [0, 2500, 5000], n_slots=1000)
    table = None if small is None else np.full(small, -7, np.int64)
    rep, firsts = b.groups(np.full(1000, -99, np.int64), table)
    assert sorted(idx[firsts].tolist()) == np.unique(idx).tolist()
    np.testing.assert_array_equal(idx[rep], idx)


def test_scaler_matches_river_one_event_at_a_time():
    from river import preprocessing

    rng = random.Random(2)
    h = FeatureHasher(bits=6, dense=["a", "b"])
    ours = OnlineScaler(h.n_slots)
    theirs = preprocessing.StandardScaler()
    for _ in range(300):
        x = {"a": rng.gauss(5, 2), "b": rng.expovariate(1.0)}
        if rng.random() < 0.3:
            del x["b"]  # vanishing feature: its statistics wait
        b = h.encode_one(x)
        ours.update(b)
        theirs.learn_one(x)
        expected = theirs.transform_one(x)
        np.testing.assert_allclose(ours.transform(b), [expected[k] for k in x], rtol=1e-9)


def test_scaler_batch_update_equals_sequential_updates():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 5, 200)  # many repeats of few slots, several per row
    vals = rng.normal(3, 2, 200)
    offsets = np.arange(0, 201, 4)
    batch = FeatureBatch.from_arrays(idx, vals, offsets, n_slots=5)
    together, one_by_one = OnlineScaler(5), OnlineScaler(5)
    together.update(FeatureBatch.from_arrays(idx[:20], vals[:20], [0, 20], n_slots=5))
    together.update(batch)
    for j in list(range(20)) + list(range(200)):
        v, i = (vals[j], idx[j])
        one_by_one.update(FeatureBatch.from_arrays([i], [v], [0, 1], n_slots=5))
    np.testing.assert_allclose(together.mean, one_by_one.mean, rtol=1e-10)
    np.testing.assert_allclose(together.var, one_by_one.var, rtol=1e-10)
    np.testing.assert_array_equal(together.count, one_by_one.count)


def test_scaler_leaves_non_numeric_entries_alone():
    h = FeatureHasher(bits=6)
    s = OnlineScaler(h.n_slots)
    b = h.encode([{"x": 1.0, "c": "red", "t": True}, {"x": 3.0, "c": "red", "t": False}])
    s.update(b)
    out = s.transform(b)
    assert np.abs(out[[0, 3]]).tolist() == [1.0, 1.0]  # standardised x
    np.testing.assert_array_equal(out[[1, 2, 4, 5]], b.values[[1, 2, 4, 5]])


# -- the batch path against a per-entry reference -------------------------------------

_WORDS = ["FR", "DE", "", "ü-ñ", "1.5", "True", "a=b", "x" * 40, "v7"]


def _reference(events, bits, dense=()):
    """The encoding spelled out one entry at a time with :func:`feature_slot`."""
    n_hashed = 1 << bits
    idx, vals, num, offsets = [], [], [], [0]
    for x in events:
        for k, v in x.items():
            if k in dense:
                entries = [(n_hashed + dense.index(k), 1, float(v), type(v) is not bool)]
            elif type(v) is str:
                entries = [(*feature_slot(k, v, bits), 1.0, False)]
            elif type(v) is list:
                entries = [(*feature_slot(k, item, bits), 1.0, False) for item in v]
            elif type(v) is bool:
                entries = [(*feature_slot(k, bits=bits), 1.0 if v else 0.0, False)]
            else:
                entries = [(*feature_slot(k, bits=bits), float(v), True)]
            for slot, sign, value, numeric in entries:
                idx.append(slot)
                vals.append(sign * value)
                num.append(numeric)
        offsets.append(len(idx))
    return idx, vals, num, offsets


def _assert_reference(batch, events, bits, dense=()):
    idx, vals, num, offsets = _reference(events, bits, dense)
    assert batch.indices.dtype == np.int64 and batch.offsets.dtype == np.int64
    assert batch.values.dtype == np.float64 and batch.numeric.dtype == bool
    assert batch.indices.tolist() == idx
    assert batch.values.tolist() == vals
    assert np.signbit(batch.values).tolist() == np.signbit(vals).tolist()  # -0.0 too
    assert batch.numeric.tolist() == num
    assert batch.offsets.tolist() == offsets


def _value(rng, kind):
    if kind == "string":
        return rng.choice(_WORDS) if rng.random() < 0.7 else f"s{rng.randint(0, 10**6)}"
    if kind == "number":
        return rng.choice([rng.gauss(0, 10), rng.randint(-10**6, 10**6), -0.0, 1e300,
                           rng.randint(-2**62, 2**62)])
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "list":
        return [rng.choice(_WORDS) for _ in range(rng.randint(0, 3))]
    return rng.choice([np.float32(1.5), np.float64(-2.25), np.int64(7)])  # numpy numbers


_KINDS = ["string", "number", "boolean", "list", "numpy"]


def _schema_batches(rng, n_batches, dense):
    """Batches whose events share names and kinds (the fast path), one event now
    and then holding another kind."""
    width = rng.randint(1, 8)
    names = rng.sample(["a", "b", "c", "d", "é", "x y", "n0", "n1", "k=v"], width)
    kinds = [rng.choice(["number", "boolean"]) if k in dense else
             rng.choice(["string", "string", "number", "boolean"]) for k in names]
    for _ in range(n_batches):
        events = [{k: _value(rng, kind) for k, kind in zip(names, kinds, strict=True)}
                  for _ in range(rng.choice([5, 6, 40, 300]))]
        if rng.random() < 0.4:  # one misfit: a kind the position did not hold before
            name = rng.choice([k for k in names if k not in dense] or names)
            kind = rng.choice(_KINDS if name not in dense else ["number", "boolean", "numpy"])
            events[rng.randrange(len(events))][name] = _value(rng, kind)
        yield events


def _mixed_batch(rng, dense):
    events = []
    for _ in range(rng.randint(1, 120)):
        names = rng.sample(["a", "b", "c", "d", "é", "x y", "n0", "n1", "k=v"], rng.randint(1, 9))
        x = {k: _value(rng, rng.choice(["number", "boolean", "numpy"]) if k in dense
                       else rng.choice(_KINDS)) for k in names}
        if rng.random() < 0.2:
            x[f"rare{rng.randint(0, 10**6)}"] = "v"
        events.append(x)
    return events


@pytest.mark.parametrize("seed", range(6))
def test_batches_encode_as_feature_slot_spells_out(seed, monkeypatch):
    laid_out = []
    fast = FeatureHasher._encode_laid_out

    def counted(self, *args):
        batch = fast(self, *args)
        laid_out.append(batch is not None)
        return batch

    monkeypatch.setattr(FeatureHasher, "_encode_laid_out", counted)
    rng = random.Random(seed)
    for _ in range(12):
        bits = rng.choice([1, 3, 12, 20, 30])
        dense = rng.choice([(), ("n0",), ("n0", "b")])
        hasher = FeatureHasher(bits=bits, dense=dense, cache_size=rng.choice([3, 1 << 20]))
        for events in _schema_batches(rng, 6, dense):
            _assert_reference(hasher.encode(events), events, bits, dense)
            mixed = _mixed_batch(rng, dense)
            _assert_reference(hasher.encode(mixed), mixed, bits, dense)
    assert any(laid_out) and not all(laid_out)  # both ways were taken


def _pinned_events():
    """A fixed mixed batch built without a random generator (the same in every Python)."""
    out = []
    for i in range(600):
        x = {
            "country": _WORDS[i % 8],
            "age": (i * 37) % 91,
            "score": ((i * 7919) % 2000) / 8.0 - 125.0,
            "vip": i % 3 == 0,
            "tags": [_WORDS[(i + j) % 8] for j in range(i % 4)],
            "é": -0.0 if i % 5 == 0 else 1e300 / (i + 1),
            "id": f"user-{i * 104729 % 1000}",
        }
        if i % 7 == 0:
            x["rare"] = f"r{i}"
        out.append(x)
    return out


def _digest(batch):
    h = hashlib.sha256()
    for a, dtype in ((batch.indices, "<i8"), (batch.values, "<f8"), (batch.offsets, "<i8"),
                     (batch.numeric, "u1")):
        h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
    return h.hexdigest()


def test_encoded_bytes_are_pinned():
    """Stored models and other implementations of this hashing rely on these exact
    bytes; the digests were taken before the batch path was rewritten for speed."""
    events = _pinned_events()
    assert _digest(FeatureHasher(bits=20).encode(events)) == (
        "cdbda5bc12bb8456d8dc489e1efaef8ffa795a3f897d6ad2bcff2a1152380493"
    )
    assert _digest(FeatureHasher(bits=10, dense=["age", "vip"]).encode(events)) == (
        "1f53170ea8370b7a17250414b30a3b74e10011be9ec86b5c1b0fba509f97d529"
    )
    shared = [{k: v for k, v in x.items() if k not in ("tags", "rare")} for x in events]
    hasher = FeatureHasher(bits=20, dense=["score"])
    for _ in range(2):  # learns the schema, then takes the fast path
        assert _digest(hasher.encode(shared)) == (
            "0971d97f2ff4b56b6c3a6c9368e94a81f2a38322d519be6b150ce1d074750c3c"
        )


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"x": float("nan")}, "features.x"),
        ({"x": float("-inf")}, "features.x"),
        ({"x": 10**400}, "features.x"),
        ({"x": None}, "features.x"),
        ({"x": b"bytes"}, "features.x"),
        ({"x": {"nested": 1.0}}, "features.x"),
        ({"x": [1, 2]}, "features.x"),
        ({"c": None}, "features.c"),
        ({"c": ["a", None]}, "features.c"),
        ({"c": np.nan}, "features.c"),
        ({"t": None}, "features.t"),
        ({"age": "old"}, "features.age"),
    ],
    ids=["nan", "inf", "huge-int", "none", "bytes", "dict", "list-of-numbers",
         "none-for-string", "list-with-none", "nan-for-string", "none-for-boolean",
         "string-for-dense"],
)
def test_bad_values_in_a_known_schema_name_field_and_event(bad, field):
    hasher = FeatureHasher(bits=8, dense=["age"])
    good = [{"age": 30 + i, "c": f"v{i % 3}", "x": i / 7, "t": i % 2 == 0} for i in range(50)]
    for _ in range(2):  # the schema and its kinds are known: the fast path
        hasher.encode(good)
    for at in (0, 17, 49):
        events = [dict(x) for x in good]
        events[at].update(bad)
        with pytest.raises(ValidationError) as info:
            hasher.encode(events)
        assert info.value.field == field and f"event {at}" in str(info.value)
    _assert_reference(hasher.encode(good), good, 8, ("age",))  # still right afterwards


def test_bad_batches_now_and_then_do_not_stop_the_fast_path(monkeypatch):
    laid_out = []
    fast = FeatureHasher._encode_laid_out

    def counted(self, *args):
        batch = fast(self, *args)
        laid_out.append(batch is not None)
        return batch

    monkeypatch.setattr(FeatureHasher, "_encode_laid_out", counted)
    hasher = FeatureHasher(bits=10)
    good = [{"c": f"v{i % 5}", "x": i / 3} for i in range(20)]
    bad = [dict(x) for x in good]
    bad[7]["x"] = None
    for _ in range(30):  # a rejected batch between good ones (its events go elsewhere)
        _assert_reference(hasher.encode(good), good, 10)
        with pytest.raises(ValidationError):
            hasher.encode(bad)
    assert laid_out[-2:] == [True, False]  # the last good batch was still encoded by position
