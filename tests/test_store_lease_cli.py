"""The writer lease as a user meets it: a process holds it, the CLI names it, unlock breaks it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

try:  # tests/ is a package in the full suite, a plain directory when run alone
    from tests.s3_server import s3_server, s3_uri  # noqa: F401  (pytest fixtures)
except ModuleNotFoundError:
    from s3_server import s3_server, s3_uri  # noqa: F401

from streamlearn.store import Lineage, ModelStore

CLI = [str(Path(sys.executable).parent / "streamlearn")]

HOLDER = """
import sys, time
from streamlearn.store import ModelStore
lease = ModelStore(sys.argv[1], model="ctr").acquire_writer("trainer-1", lease_ms=600_000)
print(lease.token, flush=True)
time.sleep(600)
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_a_dead_writer_is_named_then_unlocked(tmp_path) -> None:
    store_dir = str(tmp_path / "models")
    ModelStore(store_dir, model="ctr").commit(pa.table({"w": [1.0]}), Lineage(events=5))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_dir], stdout=subprocess.PIPE, text=True
    )
    try:
        token = int(holder.stdout.readline())
        common = ["--store", store_dir, "--model", "ctr"]
        shown = run("models", "writer", *common)
        assert shown.returncode == 0, shown.stderr
        assert "live writer 'trainer-1'" in shown.stdout and f"pid {holder.pid}" in shown.stdout
        # the process dies holding its lease (kill -9): the model stays locked ...
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        refused = run("models", "rollback", "1", *common)
        assert refused.returncode == 1 and refused.stdout == ""
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "'trainer-1' on host" in lines[0]
        assert f"pid {holder.pid} (token {token})" in lines[0]
        assert "streamlearn models unlock --model ctr" in lines[0]
        # ... until it is unlocked
        broke = run("models", "unlock", *common, "--json")
        assert broke.returncode == 0 and broke.stderr == "", broke.stderr
        assert json.loads(broke.stdout)["broken"]["writer_id"] == "trainer-1"
        after = run("models", "writer", *common, "--json")
        assert json.loads(after.stdout)["live"] is False
        again = run("models", "rollback", "1", *common)
        assert again.returncode == 0 and "version 2 restores version 1" in again.stdout
        gone = run("models", "unlock", *common)
        assert "no live writer lease" in gone.stdout
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        holder.stdout.close()


ZOMBIE = """
import sys, time
import pyarrow as pa
from streamlearn.store import Lineage, ModelStore, WriterFenced
store = ModelStore(sys.argv[1], model="ctr")
lease = store.acquire_writer("trainer-old", lease_ms=2000)
lease.keep_alive(every_s=0.3)
events = 0
while True:
    events += 100
    try:
        v = store.commit(pa.table({"w": [1.0]}), Lineage(events=events), lease=lease)
    except WriterFenced as exc:
        print("fenced", str(exc), flush=True)
        sys.exit(3)
    print("committed", v, flush=True)
    time.sleep(0.05)
"""


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_paused_writer_is_fenced_out_when_it_wakes(backend, tmp_path, request) -> None:
    """A writer process frozen (SIGSTOP) past its lease, as a long GC pause or a
    partition would, while another takes over: when it wakes, its commits are
    refused, and the model never goes back in events reflected."""
    uri = str(tmp_path / "models") if backend == "local" else request.getfixturevalue("s3_uri")
    with subprocess.Popen(
        [sys.executable, "-c", ZOMBIE, uri], stdout=subprocess.PIPE, text=True
    ) as old:
        try:
            for _ in range(3):
                assert old.stdout.readline().startswith("committed")
            old.send_signal(signal.SIGSTOP)
            store = ModelStore(uri, model="ctr")
            deadline = time.time() + 60
            while store.writer().live() and time.time() < deadline:
                time.sleep(0.2)
            new = store.acquire_writer("trainer-new", lease_ms=60_000)
            base = store.info(store.latest()).lineage.events
            for i in range(1, 4):
                store.commit(pa.table({"w": [2.0]}), Lineage(events=base + i * 1000), lease=new)
            old.send_signal(signal.SIGCONT)
            rest, _ = old.communicate(timeout=60)  # it must stop on its own
            assert old.returncode == 3, rest
        finally:
            if old.poll() is None:
                old.kill()
                old.wait(timeout=30)
    assert rest.splitlines()[-1].startswith("fenced model 'ctr': writer 'trainer-old'")
    infos = [i for i in store.list() if i.kind != "fenced"]
    events = [i.lineage.events for i in infos]
    assert events == sorted(events), events
    takeover = next(k for k, i in enumerate(infos) if i.writer_id == "trainer-new")
    assert all(i.writer_id == "trainer-new" for i in infos[takeover:])
    assert store.head().latest == infos[-1].version


def test_list_and_show_name_the_writer_and_discarded_versions(tmp_path, monkeypatch) -> None:
    from streamlearn.store import WriterFenced

    store_dir = str(tmp_path / "models")
    store = ModelStore(store_dir, model="ctr")
    zombie = store.acquire_writer("trainer-1")
    store.commit(pa.table({"w": [1.0]}), Lineage(events=5), lease=zombie)
    check = zombie.check

    def taken_over_meanwhile() -> None:
        check()
        ModelStore(store_dir, model="ctr").acquire_writer("trainer-2", force=True)

    monkeypatch.setattr(zombie, "check", taken_over_meanwhile)
    with pytest.raises(WriterFenced):
        store.commit(pa.table({"w": [0.0]}), Lineage(events=3), lease=zombie)
    common = ["--store", store_dir, "--model", "ctr"]
    shown = run("models", "show", "1", *common)
    assert "writer      trainer-1 (token 1)" in shown.stdout, shown.stdout
    listed = run("models", "list", "--all", *common).stdout.splitlines()
    assert listed[2].split()[:2] == ["2", "fenced"] and listed[2].endswith("discarded")
