"""Shared fixtures: a real Kafka broker and a real Flink cluster, started and stopped by the tests.

Both run on free loopback ports with their state in a temporary directory, so
the suite never touches a broker or cluster the user runs on the default
ports, and leaves nothing behind: each fixture stops its process in a
finaliser, also when a test fails.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: The JVMs the suite starts (PyFlink's MiniCluster gateway, Flink's scripts and
#: clients through ``JVM_ARGS``, the Kafka broker through ``KAFKA_OPTS``) compile with
#: the client compiler only: they live for seconds, and the optimising compiler's work
#: on code that runs a few thousand times costs them more than it gains (a training job
#: test: 24-27 s without, 19 s with; the suite: 700 s, then 615-645 s). A value the
#: caller set is kept.
FAST_START_JVM = "-XX:TieredStopAtLevel=1"
for _name in ("JVM_ARGS", "KAFKA_OPTS"):
    os.environ.setdefault(_name, FAST_START_JVM)


def _ephemeral_low() -> int:
    """The lowest port the system hands out to outgoing connections (Linux's
    ``ip_local_port_range``; 32768 where that cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: every port :func:`free_port` handed out in this process: never handed out twice
_GIVEN: set[int] = set()


def free_port(span: int = 1) -> int:
    """A loopback port p such that p .. p+span-1 are all free right now, and none of them
    handed out before by this process (a test takes several before binding any).

    Drawn below the system's ephemeral range: a port from that range (what binding port
    0 returns) can be taken by any outgoing connection, the suite's many Kafka clients'
    included, between this choice and a server's bind, or while a broker restarts on it.
    """
    rng = random.Random()
    high = _ephemeral_low() - span
    for _ in range(200):
        port = rng.randrange(10_000, high) if high > 10_000 else rng.randrange(1024, 65536 - span)
        ok = _GIVEN.isdisjoint(range(port, port + span))
        for extra in range(span if ok else 0):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + extra))
                except OSError:
                    ok = False
                    break
        if ok:
            _GIVEN.update(range(port, port + span))
            return port
    raise RuntimeError("no free loopback port range found")


def start_broker(directory_for: Callable[[], Path], attempts: int = 3):
    """A started ``LocalBroker`` on free ports (client and controller).

    Another process may take a port between :func:`free_port` and the broker's bind
    (the suite runs beside other work): the broker then refuses with ``PortInUse``,
    and this tries again on fresh ports, in a fresh directory.
    """
    from connectors.kafka_broker import LocalBroker
    from streamlearn.errors import PortInUse

    for attempt in range(attempts):
        broker = LocalBroker(port=free_port(2), directory=directory_for())
        try:
            broker.start()
            return broker
        except PortInUse:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real KRaft broker for the whole session (a ``LocalBroker``, running)."""
    broker = start_broker(lambda: tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture()
def topic_name() -> str:
    """A fresh, unique topic name per test."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real standalone Flink cluster, running: one job manager and one task manager,
    started with PyFlink's own ``bin/jobmanager.sh`` and ``bin/taskmanager.sh``."""
    from connectors.flink_cluster import FlinkCluster

    cluster = FlinkCluster(
        rest_port=free_port(),
        rpc_port=free_port(),
        slots=2,
        directory=tmp_path_factory.mktemp("flink"),
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
