"""The writer lease as a user meets it: a process holds it, the CLI names it, unlock breaks it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

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
    ModelStore(store_dir, model="ctr").publish(pa.table({"w": [1.0]}), Lineage(events=5))
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
