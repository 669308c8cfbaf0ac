"""Racing writers and polling readers in separate processes.

Two writers commit 100 versions each into one model while four reader
processes loop over ``latest()`` + ``get()`` and the test process prunes with
``retain()``. Every version a reader loads must decode and match its commit
record, the latest version a reader sees must never go down, and no version
number may be handed out twice.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pyarrow as pa
import pytest

try:  # tests/ is a package in the full suite, a plain directory when run alone
    from tests.s3_server import s3_server, s3_uri  # noqa: F401  (pytest fixtures)
except ModuleNotFoundError:
    from s3_server import s3_server, s3_uri  # noqa: F401

from streamlearn.errors import VersionNotFound
from streamlearn.store import Lineage, ModelStore

MODEL = "race"


def writer(uri: str, writer_id: int, count: int, out: mp.Queue) -> None:
    store = ModelStore(uri, model=MODEL)
    versions = []
    for i in range(count):
        tag = writer_id * 10_000 + i
        table = pa.table({"w": np.full(2048, float(tag)), "i": np.arange(2048, dtype=np.int64)})
        lineage = Lineage(events=i, learners=(f"writer-{writer_id}",), metrics={"tag": tag})
        versions.append(store.commit(table, lineage))
    out.put(("writer", writer_id, versions))


def reader(uri: str, reader_id: int, stop: mp.Event, out: mp.Queue) -> None:
    store = ModelStore(uri, model=MODEL)
    seen = 0
    loads = not_found = 0
    errors: list[str] = []
    while not stop.is_set():
        try:
            latest = store.latest()
        except VersionNotFound:  # nothing committed yet
            continue
        if latest < seen:
            errors.append(f"latest went down from {seen} to {latest}")
        seen = max(seen, latest)
        try:
            model = store.get(latest)
        except VersionNotFound:
            not_found += 1  # pruned between latest() and get(): allowed, and said clearly
            continue
        except Exception as exc:  # anything else is a failure to decode
            errors.append(f"get({latest}): {type(exc).__name__}: {exc}")
            continue
        w = model.table.column("w").to_numpy()
        tag = model.lineage.metrics["tag"]
        if model.version != latest or len(w) != 2048 or not np.all(w == tag):
            errors.append(f"version {latest}: content does not match its lineage (tag {tag})")
        loads += 1
    out.put(
        (
            "reader",
            reader_id,
            {"loads": loads, "not_found": not_found, "max": seen, "errors": errors[:5]},
        )
    )


def run_race(uri: str, writers: int, per_writer: int, readers: int, prune: bool) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    reader_procs = [
        ctx.Process(target=reader, args=(uri, r, stop, out), daemon=True) for r in range(readers)
    ]
    writer_procs = [
        ctx.Process(target=writer, args=(uri, w, per_writer, out), daemon=True)
        for w in range(writers)
    ]
    for p in reader_procs + writer_procs:
        p.start()
    store = ModelStore(uri, model=MODEL)
    deadline = time.monotonic() + 240
    while any(p.is_alive() for p in writer_procs) and time.monotonic() < deadline:
        if prune and store.head().latest:
            store.retain(keep_last=10)
        time.sleep(0.05)
    time.sleep(0.3)  # let readers see the final head
    stop.set()
    results = [out.get(timeout=60) for _ in range(writers + readers)]
    for p in reader_procs + writer_procs:
        p.join(timeout=30)
        assert p.exitcode == 0, f"a worker process failed (exit code {p.exitcode})"

    total = writers * per_writer
    claimed = [v for kind, _, vs in results if kind == "writer" for v in vs]
    assert sorted(claimed) == list(range(1, total + 1)), "a version number was used twice or lost"
    stats = [s for kind, _, s in results if kind == "reader"]
    for s in stats:
        assert s["errors"] == [], s["errors"]
        assert s["loads"] > 0
        assert s["max"] == total
    infos = store.list()
    assert [i.version for i in infos] == list(range(1, total + 1))
    by_writer = {
        w: [i.version for i in infos if i.lineage.learners == (f"writer-{w}",)]
        for w in range(writers)
    }
    for w, versions in by_writer.items():
        got = [v for kind, wid, vs in results if kind == "writer" and wid == w for v in vs]
        assert versions == got  # each commit record belongs to the writer that claimed it
    assert store.get().lineage.metrics["tag"] in {
        w * 10_000 + per_writer - 1 for w in range(writers)
    }


def test_two_writers_four_readers_local(tmp_path) -> None:
    run_race(str(tmp_path / "store"), writers=2, per_writer=100, readers=4, prune=True)


@pytest.mark.parametrize("readers", [2])
def test_one_writer_readers_s3(s3_uri: str, readers: int) -> None:  # noqa: F811
    # pyarrow's S3 has no conditional write, so the S3 guarantee is for one writer per model
    run_race(s3_uri, writers=1, per_writer=30, readers=readers, prune=True)
