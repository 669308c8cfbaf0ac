"""The local broker runner and the kafka-python helpers, against a real broker."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from connectors.kafka_broker import LocalBroker
from connectors.kafka_io import (
    DLQ_MAX_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    PRODUCER_DEFAULTS,
    KeyedProducer,
    consume_all,
    create_topics,
    describe_topic,
    list_topics,
)
from streamlearn.errors import BrokerUnavailable, ConfigError, PortInUse
from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_10k_keyed_messages_arrive_once_in_order_per_partition(kafka_broker, topic_name):
    create_topics(kafka_broker.bootstrap, {topic_name: 4})
    n, keys = 10_000, 37
    with KeyedProducer(kafka_broker.bootstrap, topic_name) as producer:
        for i in range(n):
            producer.send({"seq": i, "key": f"user-{i % keys}"}, key=f"user-{i % keys}")
    assert producer.delivered == n and producer.failed == 0

    records = consume_all(kafka_broker.bootstrap, topic_name, expected=n, timeout_s=60)
    seqs = [json.loads(r.value)["seq"] for r in records]
    assert sorted(seqs) == list(range(n)), "every message exactly once"

    partition_of_key: dict[bytes, int] = {}
    per_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        assert partition_of_key.setdefault(r.key, r.partition) == r.partition, "a key stays put"
        per_partition[r.partition].append((r.offset, json.loads(r.value)["seq"]))
    assert len(per_partition) > 1, "keys spread over partitions"
    for items in per_partition.values():
        items.sort()
        seq_in_offset_order = [s for _, s in items]
        assert seq_in_offset_order == sorted(seq_in_offset_order), "order kept per partition"
        offsets = [o for o, _ in items]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))

    info = describe_topic(kafka_broker.bootstrap, topic_name)
    assert info.partitions == 4 and info.messages == n
    assert topic_name in list_topics(kafka_broker.bootstrap)


def test_a_standard_java_client_produces_and_consumes(kafka_broker, topic_name):
    """The official Java client (kafka-clients) talks to the advertised 127.0.0.1 listener."""
    create_topics(kafka_broker.bootstrap, {topic_name: 2})
    proc = subprocess.run(
        [
            "java",
            "-cp",
            str(ROOT / "jvm" / "lib" / "kafka" / "*"),
            str(ROOT / "tests" / "java" / "JavaClientRoundTrip.java"),
            kafka_broker.bootstrap,
            topic_name,
            "500",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "consumed 500" in proc.stdout
    # and what the Java client wrote is readable by kafka-python too
    records = consume_all(kafka_broker.bootstrap, topic_name, expected=500, timeout_s=30)
    assert sorted(int(r.value) for r in records) == list(range(500))


def test_starting_twice_is_harmless(kafka_broker):
    again = LocalBroker(port=kafka_broker.port, directory=kafka_broker.dir)
    status = again.start()
    assert status.running and status.pid == kafka_broker.status().pid


def test_kafka_opts_reach_the_brokers_jvm(kafka_broker):
    """``KAFKA_OPTS`` (the suite's: tests/conftest.py) is on the running broker's command
    line, before the class path."""
    import os

    opts = os.environ["KAFKA_OPTS"].split()
    argv = Path(f"/proc/{kafka_broker.status().pid}/cmdline").read_bytes().split(b"\0")
    args = [a.decode() for a in argv]
    assert opts and all(o in args[: args.index("-cp")] for o in opts), args


def test_a_taken_port_is_named(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse, match=str(port)):
            LocalBroker(port=port, directory=tmp_path).start()


def test_status_stop_and_restart_keep_data(tmp_path):
    broker = LocalBroker(port=free_port(2), directory=tmp_path)
    assert not broker.status().running
    try:
        status = broker.start()
        assert status.running and status.pid and status.uptime_s is not None
        create_topics(broker.bootstrap, {"kept": 1})
        with KeyedProducer(broker.bootstrap, "kept") as producer:
            producer.send(b"x")
        assert broker.stop() is True
        assert not broker.status().running
        with pytest.raises(BrokerUnavailable, match=broker.bootstrap):
            list_topics(broker.bootstrap)
        broker.start()  # storage already formatted: starts again with the data
        assert describe_topic(broker.bootstrap, "kept").messages == 1
    finally:
        broker.stop()
    assert broker.stop() is False


def test_bad_settings_are_rejected_by_name(kafka_broker):
    with pytest.raises(ConfigError, match="lingerms"):
        KeyedProducer(kafka_broker.bootstrap, "x", lingerms=5)
    with pytest.raises(ConfigError, match="partitions"):
        create_topics(kafka_broker.bootstrap, {"bad": 0})


def _topic_settings(bootstrap: str, name: str) -> dict[str, dict]:
    """A topic's settings as the broker reports them: value, config_source, ..."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all"
        )
    finally:
        admin.close()
    return found["topic"][name]


def test_created_topics_carry_explicit_size_limits(kafka_broker, topic_name):
    """Not the broker's default: every topic the producers' limit, dead letters their own."""
    names = {topic_name: 2, f"{topic_name}.dlq": 1, f"{topic_name}.models": 1, "x" + topic_name: 1}
    create_topics(kafka_broker.bootstrap, names,
                  configs={"x" + topic_name: {"max.message.bytes": "5000"}})
    limits = {}
    for name in names:
        setting = _topic_settings(kafka_broker.bootstrap, name)["max.message.bytes"]
        assert setting["config_source"] == "DYNAMIC_TOPIC_CONFIG", "set on the topic itself"
        limits[name] = setting["value"]
    assert MAX_MESSAGE_BYTES == PRODUCER_DEFAULTS["max_request_size"] == 8 * 1024 * 1024
    assert limits == {
        topic_name: str(MAX_MESSAGE_BYTES),
        f"{topic_name}.dlq": str(DLQ_MAX_MESSAGE_BYTES),
        f"{topic_name}.models": str(MAX_MESSAGE_BYTES),
        "x" + topic_name: "5000",
    }
    with pytest.raises(ConfigError, match="configs"):
        create_topics(kafka_broker.bootstrap, {topic_name: 2}, configs={"other": {}})


def test_topics_create_prints_the_limits_it_set(kafka_broker, topic_name, capsys):
    from streamlearn.cli import main as cli_main

    args = ["topics", "create", topic_name, "--partitions", "2", "--bootstrap",
            kafka_broker.bootstrap]
    assert cli_main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"created  {topic_name}  (2 partition(s), max.message.bytes {MAX_MESSAGE_BYTES})",
        f"created  {topic_name}.dlq  (1 partition(s), max.message.bytes {DLQ_MAX_MESSAGE_BYTES})",
        f"created  {topic_name}.models  (1 partition(s), max.message.bytes {MAX_MESSAGE_BYTES})",
    ]
    assert _topic_settings(kafka_broker.bootstrap, f"{topic_name}.dlq")["max.message.bytes"][
        "value"
    ] == str(DLQ_MAX_MESSAGE_BYTES)
    assert cli_main(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"exists   {topic_name}  (left as it is)"


@pytest.mark.slow
def test_a_port_taken_while_the_broker_starts_is_port_in_use(tmp_path, monkeypatch):
    """Between the port check and the broker's bind another process may take the port
    (free_port in the tests has this race): the broker's exit is reported as PortInUse,
    which the test fixture answers with fresh ports, not as an opaque start failure."""
    import connectors.kafka_broker as kafka_broker

    port = free_port(2)
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", port))
        taker.listen()
        monkeypatch.setattr(kafka_broker, "port_is_free", lambda *a, **k: True)  # the race
        broker = LocalBroker(port=port, directory=tmp_path / "kafka")
        with pytest.raises(PortInUse, match=f"{port} or {port + 1}"):
            broker.start(timeout_s=120)
    assert not broker.status().running


def test_waiting_for_a_broker_where_something_else_listens_ends_in_its_time():
    """Something that accepts connections on the port but is no broker (the port taken
    while a broker starts, another service): ``wait_for_broker`` gives up within its
    ``timeout_s`` (the client's first contact alone waited 30 s) and names the address."""
    import time

    from connectors.kafka_broker import wait_for_broker

    port = free_port()
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", port))
        taker.listen()
        start = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{port}"):
            wait_for_broker(f"127.0.0.1:{port}", timeout_s=2.0)
        assert time.monotonic() - start < 10, "the timeout was not kept"


_NO_BROKER_CALLS = """
import json, sys
import connectors.kafka_io as kafka_io
from streamlearn.errors import BrokerUnavailable

kafka_io.BOOTSTRAP_TIMEOUT_MS = 500
address = sys.argv[1]
calls = {
    "list_topics": lambda: kafka_io.list_topics(address),
    "describe_topic": lambda: kafka_io.describe_topic(address, "t"),
    "consume": lambda: next(kafka_io.consume(address, "t")),
    "producer": lambda: kafka_io.KeyedProducer(address, "t"),
}
out = {}
for name, call in calls.items():
    try:
        call()
        out[name] = "no error"
    except BrokerUnavailable as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_an_address_that_is_no_broker_is_one_error_in_bounded_time():
    """Every client the project makes bounds its first contact (kafka-python waits 30 s
    by default) and names an address that accepts connections but is no Kafka broker.
    (In a process of its own: kafka-python leaves a failed client's sockets to be
    finalised whenever, which this suite's warnings-as-errors would pin on another test.)"""
    port = free_port()
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", port))
        taker.listen()
        run = subprocess.run(
            [sys.executable, "-c", _NO_BROKER_CALLS, f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    errors = json.loads(run.stdout)
    assert set(errors) == {"list_topics", "describe_topic", "consume", "producer"}
    for name, message in errors.items():
        assert message.startswith(f"127.0.0.1:{port} accepts connections but no Kafka broker"
                                  " answered there within 0.5 s"), (name, message)


def test_a_local_broker_keeps_a_bounded_disk(kafka_broker, topic_name):
    """Every topic of a local broker keeps at most its newest RETENTION_BYTES per
    partition (in SEGMENT_BYTES segments), so a loop left running fills no disk."""
    from connectors.kafka_broker import RETENTION_BYTES, SEGMENT_BYTES

    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    settings = _topic_settings(kafka_broker.bootstrap, topic_name)
    assert settings["retention.bytes"]["value"] == str(RETENTION_BYTES)
    assert settings["segment.bytes"]["value"] == str(SEGMENT_BYTES)
    assert int(settings["retention.ms"]["value"]) == 24 * 3600 * 1000
    assert SEGMENT_BYTES < RETENTION_BYTES <= 256 * 1024 * 1024
