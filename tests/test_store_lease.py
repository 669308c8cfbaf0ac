"""One writer per model: the lease, its expiry and the fencing token, on a local disk and on S3."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import socket
import threading
import time

import orjson
import pyarrow as pa
import pytest

try:  # tests/ is a package in the full suite, a plain directory when run alone
    from tests.s3_server import s3_server, s3_uri, store_uri  # noqa: F401  (pytest fixtures)
except ModuleNotFoundError:
    from s3_server import s3_server, s3_uri, store_uri  # noqa: F401

from streamlearn.errors import StoreError, ValidationError, VersionNotFound
from streamlearn.store import Lineage, ModelStore, WriterBusy, WriterFenced


def table(i: int) -> pa.Table:
    return pa.table({"w": [float(i)]})


def test_a_second_writer_is_refused_naming_the_first(store_uri: str) -> None:
    store = ModelStore(store_uri, model="ctr")
    first = store.acquire_writer("trainer-a", lease_ms=60_000)
    with pytest.raises(WriterBusy) as err:
        ModelStore(store_uri, model="ctr").acquire_writer("trainer-b", lease_ms=60_000)
    text = str(err.value)
    assert "\n" not in text
    for part in (
        "model 'ctr' has a live writer",
        "'trainer-a'",
        f"host {socket.gethostname()}",
        f"pid {os.getpid()}",
        f"(token {first.token})",
        "renewed 0.",
        "streamlearn models unlock --model ctr",
    ):
        assert part in text, (part, text)
    assert re.search(r"lease expires in (5\d|60)\.\d s", text), text
    assert err.value.holder.writer_id == "trainer-a"
    # nor may anyone commit without the lease while it is live
    with pytest.raises(WriterBusy, match="cannot commit"):
        store.commit(table(0))
    v = store.commit(table(1), Lineage(events=10), lease=first)
    info = store.info(v)
    assert (info.writer_id, info.writer_token) == ("trainer-a", first.token)
    record = orjson.loads(store._files.read(store._path(store._commit_rel(v))))
    assert record["writer"] == {"id": "trainer-a", "token": first.token}
    first.release()
    second = ModelStore(store_uri, model="ctr").acquire_writer("trainer-b")
    assert second.token == first.token + 1


def test_expiry_lets_another_writer_in_and_fences_the_old_one(store_uri: str) -> None:
    store = ModelStore(store_uri, model="m")
    old = store.acquire_writer("old", lease_ms=3000)
    v1 = store.commit(table(1), Lineage(events=100), lease=old)
    old.renew()
    with pytest.raises(WriterBusy):
        store.acquire_writer("new", lease_ms=3000)
    deadline = time.time() + 20
    while store.writer().live() and time.time() < deadline:  # the old writer stalls
        time.sleep(0.1)
    new = store.acquire_writer("new", lease_ms=60_000)
    assert new.token > old.token
    v2 = store.commit(table(2), Lineage(events=150), lease=new)
    # the zombie wakes up with an older, smaller model: refused, and it cannot renew
    with pytest.raises(WriterFenced, match=r"writer 'old' \(token 1\) was fenced out.*'new'"):
        store.commit(table(3), Lineage(events=120), lease=old)
    with pytest.raises(WriterFenced):
        old.renew()
    old.release()  # a no-op for a fenced writer: the new lease is untouched
    assert store.writer().writer_id == "new" and store.writer().live()
    infos = store.list()
    assert [i.version for i in infos] == [v1, v2] and store.latest() == v2
    events = [i.lineage.events for i in infos]
    assert events == sorted(events)


def test_the_same_writer_reacquires_at_once_and_fences_its_former_self(store_uri: str) -> None:
    store = ModelStore(store_uri, model="m")
    before = store.acquire_writer("job-7", lease_ms=60_000)
    store.commit(table(1), lease=before)
    after = ModelStore(store_uri, model="m").acquire_writer("job-7", lease_ms=60_000)
    assert after.token == before.token + 1
    with pytest.raises(WriterFenced):
        store.commit(table(2), lease=before)
    assert store.commit(table(3), lease=after) == 2


def test_renewal_keeps_a_short_lease_alive(store_uri: str) -> None:
    store = ModelStore(store_uri, model="m")
    lease = store.acquire_writer("w", lease_ms=1500)
    lease.keep_alive(every_s=0.2)
    time.sleep(3.0)  # well past the lease's first expiry
    with pytest.raises(WriterBusy):
        store.acquire_writer("other", lease_ms=1500)
    lease.release()
    assert not store.writer().live() and store.writer().state == "released"
    assert store.acquire_writer("other", lease_ms=600).token == lease.token + 1


def test_a_writer_fenced_between_its_checks_leaves_a_tombstone_not_a_version(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authoritative check runs after the commit record: a takeover in between is caught."""
    store = ModelStore(store_uri, model="m")
    zombie = store.acquire_writer("zombie", lease_ms=60_000)
    store.commit(table(1), Lineage(events=50), lease=zombie)
    check = zombie.check

    def check_then_lose() -> None:  # the takeover lands right after the early check
        check()
        ModelStore(store_uri, model="m").acquire_writer("taker", lease_ms=60_000, force=True)

    monkeypatch.setattr(zombie, "check", check_then_lose)
    with pytest.raises(WriterFenced):
        store.commit(table(2), Lineage(events=40), lease=zombie)
    monkeypatch.undo()
    assert store.latest() == 1  # HEAD never moved to the fenced version
    infos = store.list()
    assert [(i.version, i.kind, i.available) for i in infos] == [
        (1, "snapshot", True),
        (2, "fenced", False),
    ]
    with pytest.raises(VersionNotFound, match="version 2 was discarded.*'zombie'"):
        store.get(2)
    taker = store.acquire_writer("taker", lease_ms=60_000)
    assert store.commit(table(3), Lineage(events=60), lease=taker) == 3


def test_unlock_breaks_a_dead_writers_lease(store_uri: str) -> None:
    store = ModelStore(store_uri, model="m")
    dead = store.acquire_writer("dead", lease_ms=60_000)
    broken = store.unlock()
    assert broken is not None and broken.writer_id == "dead"
    assert not store.writer().live()
    with pytest.raises(WriterFenced):
        dead.renew()
    store.acquire_writer("next", lease_ms=60_000)


def test_bad_arguments_name_the_field(tmp_path) -> None:
    store = ModelStore(str(tmp_path), model="m")
    with pytest.raises(ValidationError, match="field `writer_id`"):
        store.acquire_writer("has space")
    with pytest.raises(ValidationError, match="field `lease_ms`.*got 5"):
        store.acquire_writer("w", lease_ms=5)
    lease = store.acquire_writer("w")
    with pytest.raises(StoreError, match="the lease given is for"):
        store.with_model("other").commit(table(1), lease=lease)


def _race(uri: str, writer: str, start_at: float, out) -> None:
    store = ModelStore(uri, model="race")
    while time.time() < start_at:
        pass
    try:
        lease = store.acquire_writer(writer, lease_ms=120_000)
        out.put((writer, lease.token))
    except WriterBusy:
        out.put((writer, None))


def test_concurrent_acquire_exactly_one_wins(store_uri: str) -> None:
    """Four processes acquire at the same moment: one wins, three are refused."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    uri = store_uri
    start_at = time.time() + 3.0  # spawned interpreters take a while to import
    procs = [ctx.Process(target=_race, args=(uri, f"w{i}", start_at, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [(w, t) for w, t in results if t is not None]
    assert len(winners) == 1, results
    holder = ModelStore(uri, model="race").writer()
    assert holder.live() and (holder.writer_id, holder.token) == winners[0]


@pytest.mark.parametrize("round_", range(4))
def test_acquirers_that_all_saw_a_free_lease_still_elect_one(
    store_uri: str, round_: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst interleaving, forced: every acquirer passes the "is it free?" check
    before any writes its lease file. The write-then-list rule still elects one."""
    import streamlearn.store.model_store as ms

    n = 4
    barrier = threading.Barrier(n, timeout=60)
    local = threading.local()
    real_new_claim = ms.new_claim

    def new_claim_after_all_checked(*args, **kwargs):
        if not getattr(local, "waited", False):
            local.waited = True
            barrier.wait()
        return real_new_claim(*args, **kwargs)

    monkeypatch.setattr(ms, "new_claim", new_claim_after_all_checked)
    results: dict[str, object] = {}

    def acquire(writer: str) -> None:
        try:
            results[writer] = ModelStore(store_uri, model="race").acquire_writer(writer).token
        except WriterBusy as exc:
            results[writer] = exc

    threads = [threading.Thread(target=acquire, args=(f"w{i}",)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = {w: t for w, t in results.items() if isinstance(t, int)}
    assert len(results) == n and len(winners) == 1, results
    holder = ModelStore(store_uri, model="race").writer()
    assert (holder.writer_id, holder.token) == next(iter(winners.items()))
    for loser in set(results) - set(winners):
        assert isinstance(results[loser], WriterBusy)
