"""The store's whole life cycle, on the local filesystem and on a real S3 server (moto)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

try:  # tests/ is a package in the full suite, a plain directory when run alone
    from tests.s3_server import s3_server, s3_uri, store_uri  # noqa: F401  (pytest fixtures)
except ModuleNotFoundError:
    from s3_server import s3_server, s3_uri, store_uri  # noqa: F401

from streamlearn.errors import VersionNotFound
from streamlearn.store import Lineage, ModelStore


def weights(seed: int, n: int = 64) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"w": rng.normal(size=n), "n": rng.integers(0, 9, size=n)})


def lineage(i: int) -> Lineage:
    return Lineage(
        offsets={"events": {0: 100 * i, 1: 90 * i}},
        events=190 * i,
        learners=("learner-0", "learner-1"),
        metrics={"log_loss": 0.7 - 0.01 * i},
        watermark_ms=1_700_000_000_000 + i,
    )


def test_commit_get_latest_list(store_uri: str) -> None:
    store = ModelStore(store_uri, model="ctr")
    with pytest.raises(VersionNotFound, match="no versions"):
        store.latest()
    assert store.list() == []
    versions = [store.commit(weights(i), lineage(i)) for i in range(1, 6)]
    assert versions == [1, 2, 3, 4, 5]
    assert store.latest() == store.current() == 5
    for i in (1, 3, 5):
        got = store.get(i)
        assert got.table.select(["w", "n"]).equals(weights(i))
        assert got.lineage.offsets == {"events": {0: 100 * i, 1: 90 * i}}
        assert got.lineage.events == 190 * i
        assert got.lineage.parents == ((i - 1,) if i > 1 else ())
        assert got.lineage.created_at is not None
    infos = store.list()
    assert [i.version for i in infos] == versions
    assert [i.lineage.metrics["log_loss"] for i in infos] == [0.7 - 0.01 * i for i in range(1, 6)]
    assert [i.current for i in infos] == [False] * 4 + [True]
    assert all(i.available for i in infos)
    assert store.models() == ["ctr"]
    with pytest.raises(VersionNotFound, match="does not exist yet; the latest is 5"):
        store.get(6)


def test_pin_rollback_retain(store_uri: str) -> None:
    store = ModelStore(store_uri, model="ctr")
    for i in range(1, 7):
        store.commit(weights(i), lineage(i))
    store.pin(2)
    assert store.head().pinned == 2 and store.current() == 2 and store.latest() == 6
    assert store.get().version == 2
    new = store.rollback(3)
    assert new == 7 and store.latest() == 7 and store.current() == 2  # the pin still wins
    back = store.get(7)
    assert back.info.kind == "rollback" and back.info.rollback_of == 3
    assert back.lineage.parents == (3,) and back.lineage.events == store.get(3).lineage.events
    assert back.table.select(["w", "n"]).equals(weights(3))
    store.unpin()
    assert store.current() == 7

    store.pin(4)
    deleted = store.retain(keep_last=2)
    assert deleted == [1, 2, 3, 5]
    infos = {i.version: i for i in store.list()}
    assert sorted(infos) == [1, 2, 3, 4, 5, 6, 7]  # history stays listed
    assert [v for v, i in infos.items() if i.available] == [4, 6, 7]
    assert infos[4].pinned and infos[4].current
    for gone in deleted:
        with pytest.raises(VersionNotFound, match="deleted by retention"):
            store.get(gone)
    assert store.get(4).table.select(["w", "n"]).equals(weights(4))
    with pytest.raises(VersionNotFound):
        store.pin(1)

    assert store.retain(keep_last=1, keep_pinned=False) == [4, 6]
    assert store.head().pinned is None and store.current() == 7


def test_stored_file_is_plain_arrow_with_lineage_in_schema(store_uri: str) -> None:
    store = ModelStore(store_uri, model="ctr")
    store.commit(weights(1), lineage(1))
    info = store.info(1)
    path = f"{store.root}/ctr/{info.file}"
    with store.filesystem.open_input_file(path) as f:  # pyarrow only, no project code
        table = ipc.open_file(f).read_all()
    meta = table.schema.metadata
    assert int(meta[b"streamlearn.store.version"]) == 1
    assert json.loads(meta[b"streamlearn.store.lineage"])["offsets"] == {
        "events": {"0": 100, "1": 90}
    }
    assert table.select(["w", "n"]).equals(weights(1))


def test_several_models_in_one_store(store_uri: str) -> None:
    a = ModelStore(store_uri, model="a")
    b = a.with_model("b")
    a.commit(weights(1))
    a.commit(weights(2))
    b.commit(weights(3))
    assert a.latest() == 2 and b.latest() == 1
    assert b.get(1).table.select(["w", "n"]).equals(weights(3))
    assert a.models() == ["a", "b"]
