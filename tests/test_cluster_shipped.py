"""The training job carries its Python to task managers that cannot see this machine's.

A standalone cluster of two task managers (one slot each) runs from a copy of the
Flink distribution in a temporary directory, in another working directory, with a
clean environment (no ``PATH`` or ``PYTHONPATH`` entry into the project or its venv,
``HOME`` elsewhere, the workers' default Python a bare ``python3``). ``streamlearn
train --cluster`` submits the job with its shipped environment
(:mod:`connectors.python_env`); the stream comes from a foreign client (kafka-python's
own producer, one plain JSON event per message, not the project's publisher).

- The task managers' embedded Python is the shipped one: the ``libpython`` and the
  streamlearn extension their JVMs map lie under the archive's extraction directory,
  and nothing they map lies in the project tree or its venv.
- ``kill -9`` of the task manager running the merger mid-stream, a replacement
  started: every event is reflected exactly once in the final version.
- Then, in the same job (one submission less for the suite), ``streamlearn jobs stop
  --savepoint`` mid-stream and ``streamlearn train --from-savepoint``: every event
  exactly once again, and no published version reflects fewer events than one
  published before it.
- A job the cluster cannot run is refused, naming the setting; no submission wrote
  the cluster's ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.kafka_io import create_topics, describe_topic
from streamlearn.cli import main
from streamlearn.generators import clicks
from streamlearn.store import ModelStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4


def _copy_distribution(target: Path) -> Path:
    """A copy of the Flink distribution inside the PyFlink wheel (hard links where the
    file system allows: the same bytes, another path)."""
    from connectors.paths import pyflink_home

    home = pyflink_home()

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for part in ("bin", "lib", "opt", "conf", "plugins"):
        shutil.copytree(home / part, target / part, copy_function=link_or_copy)
    return target


@pytest.fixture(scope="module")
def isolated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from connectors.flink_cluster import FlinkCluster
    from tests.conftest import free_port

    base = tmp_path_factory.mktemp("isolated")
    for name in ("home", "work", "tmp"):
        (base / name).mkdir()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(base / "home"),
           "LANG": "C.UTF-8"}
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    venv = Path(sys.prefix)
    assert not any(str(ROOT) in v or str(venv) in v for v in env.values()), env
    cluster = FlinkCluster(
        rest_port=free_port(), rpc_port=free_port(), slots=1, taskmanagers=2,
        taskmanager_memory="1280m", directory=base / "cluster",
        flink_home=_copy_distribution(base / "flink"), environment=env,
        workdir=base / "work", python="python3",
        settings={
            "pipeline.jars": [],  # nothing of the project's tree in the cluster's config
            "io.tmp.dirs": str(base / "tmp"),
            # a lost task manager is noticed within 2-4 s (two missed 1 s heartbeats)
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 4000,
            "heartbeat.rpc-failure-threshold": 2,
            **{f"env.java.opts.{role}": "-XX:TieredStopAtLevel=1"
               for role in ("jobmanager", "taskmanager")},
        },
    )
    try:
        cluster.start()
        cluster.config_at_start = (cluster.conf_dir / "config.yaml").read_bytes()
        yield cluster
    finally:
        cluster.stop()


class ForeignProducer(threading.Thread):
    """kafka-python's KafkaProducer: one plain JSON event per message, paced."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict], seconds: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events, self.seconds = bootstrap, topic, events, seconds
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                     linger_ms=5)
            start, step = time.monotonic(), max(1, len(self.events) // 40)
            for i, event in enumerate(self.events):
                producer.send(self.topic, json.dumps(event).encode())
                if (i + 1) % step == 0:
                    producer.flush()
                    ahead = (i + 1) / len(self.events) * self.seconds - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush()
            producer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _wait(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout_s:.0f} s")


def _events_in(store: ModelStore) -> int:
    latest = store.head().latest
    return store.get(latest).lineage.events if latest else 0


def _two_taskmanagers(cluster) -> None:
    """Two live task managers, registered, with free slots: one that died (killed by a test
    before, or crashed) is replaced, and its unregistration (a heartbeat timeout) waited out."""
    live = set(cluster._pids_alive())
    alive = sum(
        cluster._taskmanager_pid(f.name.removeprefix("flink-").removesuffix("-taskexecutor.pid"))
        in live for f in (cluster.dir / "pid").glob("flink-tm-*-taskexecutor.pid")
    )
    for _ in range(2 - alive):
        cluster.start_taskmanager()

    def ready() -> bool:
        status = cluster.status()
        return status.taskmanagers == 2 and status.slots_available >= 2

    _wait(ready, 60, "two task managers with free slots")


def _train(cluster, bootstrap: str, topic: str, tmp_path: Path, *extra: str) -> str:
    """``streamlearn train --cluster ... --detached``; returns the new job's id."""
    before = {j["id"] for j in cluster.jobs()}
    settings = {"checkpoint_ms": 500, "flush_ms": 50, "sync_ms": 200,
                "checkpoint_dir": str(tmp_path / "checkpoints")}
    args = ["train", "--cluster", cluster.address, "--detached", "--bootstrap", bootstrap,
            "--topic", topic, "--store", str(tmp_path / "models"), "--model", "clicks",
            "--parallelism", "2", "--set", "features.bits=14",
            "--set", "store.keep_versions=0", *extra]  # every version kept: all are checked
    for key, value in settings.items():
        args += ["--set", f"job.{key}={json.dumps(value)}"]
    started = time.monotonic()
    assert main(args) == 0
    print(f"\nsubmitted (train --cluster, shipped environment) in "
          f"{time.monotonic() - started:.1f} s")
    new = [j for j in cluster.jobs() if j["id"] not in before]
    assert len(new) == 1, cluster.jobs()
    return new[0]["id"]


def _first_version_and_checkpoint(cluster, job_id: str, store: ModelStore) -> None:
    def ready() -> bool:
        assert cluster.job(job_id)["state"] in ("RUNNING", "CREATED", "INITIALIZING"), (
            cluster._get(f"/jobs/{job_id}/exceptions")
        )
        done = cluster._get(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]
        return _events_in(store) > 0 and done >= 1

    _wait(ready, 240, "the job published no version and completed no checkpoint")


def _assert_exact(store: ModelStore, bootstrap: str, topic: str, n: int) -> None:
    time.sleep(1.5)  # a few publish intervals later: nothing counted twice
    final = store.get()
    assert final.lineage.events == n, "every event learned, none twice"
    ends = describe_topic(bootstrap, topic).end_offsets
    assert {int(p): o for p, o in final.lineage.offsets[topic].items()} == ends


def _assert_never_less(store: ModelStore) -> None:
    """No published version reflects fewer events than one published before it."""
    counts = [(info.version, store.get(info.version).lineage.events) for info in store.list()]
    assert len(counts) > 2
    for (v0, n0), (v1, n1) in zip(counts, counts[1:], strict=False):
        assert n1 >= n0, f"version {v1} reflects {n1} events, fewer than version {v0}'s {n0}"


def _mapped_files(pid: int) -> set[str]:
    return {line.split(maxsplit=5)[5].strip() for line in
            Path(f"/proc/{pid}/maps").read_text().splitlines() if len(line.split()) >= 6}


def test_shipped_job_learns_a_foreign_stream_survives_losing_the_merger_and_a_savepoint(
    isolated_cluster, kafka_broker, topic_name, tmp_path, capsys
):
    cluster, bootstrap = isolated_cluster, kafka_broker.bootstrap
    _two_taskmanagers(cluster)
    create_topics(bootstrap, {topic_name: PARTITIONS})
    events = list(clicks(12_000, seed=41))
    first = ForeignProducer(bootstrap, topic_name, events[:4_000], seconds=0)
    first.run()
    assert first.error is None, first.error
    store = ModelStore(str(tmp_path / "models"), "clicks")
    job_id = _train(cluster, bootstrap, topic_name, tmp_path)
    _first_version_and_checkpoint(cluster, job_id, store)

    # the workers run the shipped interpreter: what the task managers' JVMs map
    extracted = str(Path(cluster.settings["io.tmp.dirs"]).resolve())
    for resource_id in ("tm-0", "tm-1"):
        mapped = _mapped_files(cluster._taskmanager_pid(resource_id))
        libpython = [m for m in mapped if "libpython" in m]
        assert libpython and all(
            m.startswith(extracted) and "/pyenv/venv/lib/" in m for m in libpython
        ), libpython
        assert any(m.startswith(extracted) and "/site-packages/streamlearn/" in m
                   for m in mapped), sorted(m for m in mapped if m.startswith(extracted))
        assert not [m for m in mapped if m.startswith((str(ROOT), sys.prefix, sys.base_prefix))]

    producer = ForeignProducer(bootstrap, topic_name, events[4_000:], seconds=12)
    producer.start()
    placement = cluster.vertex_taskmanagers(job_id)
    merger = next(tms for name, tms in placement.items() if "merger" in name)
    time.sleep(1.0)  # mid-stream
    before = _events_in(store)
    cluster.kill_taskmanager(next(iter(merger)))
    killed_at = time.monotonic()
    cluster.start_taskmanager()

    def running_again() -> bool:
        job = cluster.job(job_id)
        failed = cluster._get(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
        return bool(failed) and job["state"] == "RUNNING" and all(
            v["status"] == "RUNNING" for v in job["vertices"]
        )

    _wait(running_again, 180, "the job did not run again after the kill")
    failover_s = time.monotonic() - killed_at
    _wait(lambda: _events_in(store) > before, 180, "the job did not publish again")
    _wait(lambda: _events_in(store) >= len(events), 180, "the job did not catch up")
    producer.join()
    assert producer.error is None, producer.error
    _assert_exact(store, bootstrap, topic_name, len(events))
    with capsys.disabled():
        print(f"\nmerger's task manager killed: the job ran again {failover_s:.1f} s later")

    # stop with a savepoint mid-stream, resume from it: every event once again
    more = list(clicks(6_000, seed=43))
    producer = ForeignProducer(bootstrap, topic_name, more, seconds=8)
    producer.start()
    time.sleep(2.0)  # mid-stream
    capsys.readouterr()
    assert main(["jobs", "stop", job_id[:8], "--savepoint", str(tmp_path / "savepoints"),
                 "--cluster", cluster.address]) == 0
    savepoint = capsys.readouterr().out.strip().splitlines()[-1]
    assert cluster.job(job_id)["state"] == "FINISHED"
    assert _events_in(store) < len(events) + len(more), "stopped mid-stream"
    # the stopped merger's writer lease is still renewed after its task ended (its embedded
    # interpreter outlives the task): the resumed job takes it over as the same writer
    held = ModelStore(str(tmp_path / "models"), "clicks").writer()
    assert held is not None and held.live()
    _two_taskmanagers(cluster)
    resumed = _train(cluster, bootstrap, topic_name, tmp_path, "--from-savepoint",
                     savepoint.removeprefix("file:"))
    try:
        _wait(lambda: _events_in(store) >= len(events) + len(more), 180,
              "the resumed job did not catch up")
        producer.join()
        assert producer.error is None, producer.error
        _assert_exact(store, bootstrap, topic_name, len(events) + len(more))
        _assert_never_less(store)
        now = ModelStore(str(tmp_path / "models"), "clicks").writer()
        assert now is not None and (now.writer_id, now.live()) == (held.writer_id, True)
        assert now.token > held.token  # acquired again: the old lease is fenced out
        capsys.readouterr()
        assert main(["jobs", "list", "--cluster", cluster.address]) == 0
        listed = capsys.readouterr().out
        assert f"{resumed}  RUNNING" in listed and f"{job_id}  FINISHED" in listed
    finally:
        assert main(["jobs", "cancel", resumed, "--cluster", cluster.address]) == 0
    assert cluster.job(resumed)["state"] == "CANCELED"


def test_the_cluster_is_used_as_it_runs(isolated_cluster, kafka_broker, topic_name, tmp_path,
                                        capsys):
    """A job the cluster cannot run is refused in one line naming the setting; no
    submission (the ones above included) wrote the cluster's configuration."""
    cluster = isolated_cluster
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    status, jobs_before = cluster.status(), cluster.jobs()
    capsys.readouterr()
    assert main(["train", "--cluster", cluster.address, "--bootstrap", kafka_broker.bootstrap,
                 "--topic", topic_name, "--store", str(tmp_path / "models"),
                 "--parallelism", str(status.slots_total + 1)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taskmanager.numberOfTaskSlots" in err, err
    assert f"job.parallelism={status.slots_total + 1}" in err, err
    assert cluster.jobs() == jobs_before  # nothing was submitted
    assert (cluster.conf_dir / "config.yaml").read_bytes() == cluster.config_at_start
