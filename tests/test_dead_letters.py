"""Poison events on the real training job: rejected into bounded dead letters, never a stop.

Three kinds of message a broker accepts once made the job's dead-letter records exceed
the producer's 1 MiB limit, so the sink failed and the job died on the same record at
every restart: an event with 100k features, 900 KB that is not UTF-8, and 900 KB of
escaped quotes with a bad label. Here they are mixed into a stream of good events on the
real broker and the real job (local MiniCluster); the job finishes the bounded stream,
learns every good event (also those after a poison one) and dead-letters each poison one
once, in a record no longer than ``DEAD_LETTER_MAX_BYTES`` that says where to read it again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from connectors.flink_kafka import DEAD_LETTER_TOPIC_MIN_BYTES, check_dead_letter_topic
from connectors.kafka_io import consume, describe_topic
from streamlearn.errors import ConfigError
from streamlearn.events import DEAD_LETTER_MAX_BYTES, DEAD_LETTER_VALUE_BYTES
from streamlearn.generators import clicks
from streamlearn.publish import Publisher
from streamlearn.store import ModelStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "flink_jobs" / "train.py"
PARTITIONS = 2
TOPIC_BYTES = 4 * 1024 * 1024  # the source topic takes what a broker allows by default and more
DLQ_BYTES = 1024 * 1024  # a dead-letter topic's limit (a broker's own default)

POISON = {
    "100k features": (
        b'{"features": {' + b", ".join(b'"f%d": %d' % (i, i) for i in range(100_000))
        + b'}, "label": 1}',
        "features",
    ),
    "900 KB not UTF-8": (b"\xff\xfe" * 450_000, "message"),
    "900 KB escaped quotes, bad label": (
        b'{"features": {"x": "' + b'\\"' * 450_000 + b'"}, "label": "yes"}',
        "label",
    ),
}


def _create_topics(bootstrap: str, topic: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([
            NewTopic(topic, PARTITIONS, 1, topic_configs={"max.message.bytes": str(TOPIC_BYTES)}),
            NewTopic(f"{topic}.dlq", 1, 1, topic_configs={"max.message.bytes": str(DLQ_BYTES)}),
        ])
    finally:
        admin.close()


def _publish(bootstrap: str, topic: str, good: list[dict]) -> dict[tuple[int, int], bytes]:
    """Good events over both partitions, each poison kind in each partition with good events
    after it; returns the poison messages by (partition, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=TOPIC_BYTES,
                             linger_ms=5, acks="all")
    futures = []
    poison = list(POISON.values())
    per_part = len(good) // PARTITIONS
    every = per_part // (len(poison) + 1)
    for p in range(PARTITIONS):
        events = good[p * per_part:(p + 1) * per_part]
        for i, event in enumerate(events):
            if i and i % every == 0 and i // every <= len(poison):
                message = poison[i // every - 1][0]
                futures.append((message, producer.send(topic, message, partition=p)))
            producer.send(topic, orjson.dumps(event), partition=p)
    producer.flush()
    producer.close()
    return {(f.get().partition, f.get().offset): message for message, f in futures}


def _args(bootstrap: str, topic: str, tmp_path: Path) -> list[str]:
    """The training job on ``topic``, bounded, one learner."""
    return [
        "--bootstrap", bootstrap, "--topic", topic, "--store", str(tmp_path / "models"),
        "--model", "m", "--set", f"job.checkpoint_dir={json.dumps(str(tmp_path / 'chk'))}",
        "--set", "features.bits=16", "--set", "job.parallelism=1", "--set", "job.bounded=true",
        "--set", "job.checkpoint_ms=1000", "--set", "job.sync_ms=200",
    ]


def test_poison_events_go_to_bounded_dead_letters_and_the_job_learns_on(
    kafka_broker, topic_name, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    _create_topics(bootstrap, topic_name)
    good = list(clicks(1_200, seed=5))
    poison_at = _publish(bootstrap, topic_name, good)
    assert len(poison_at) == PARTITIONS * len(POISON)

    proc = subprocess.run([sys.executable, str(JOB), *_args(bootstrap, topic_name, tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]  # the job finished the bounded stream

    latest = ModelStore(str(tmp_path / "models"), "m").get()
    assert latest.lineage.events == len(good), "every good event learned, after poison too"
    assert latest.lineage.metrics["rejected"] == len(poison_at)
    ends = describe_topic(bootstrap, topic_name).end_offsets
    assert {int(p): o for p, o in latest.lineage.offsets[topic_name].items()} == ends

    # the job has ended, its sinks flushed: the topic holds all it will ever get
    letters = list(consume(bootstrap, f"{topic_name}.dlq", idle_timeout_s=3))
    assert len(letters) == len(poison_at), "each poison event dead-lettered, once"
    fields = {message: field for message, field in POISON.values()}
    seen = set()
    for letter in letters:
        assert len(letter.value) <= DEAD_LETTER_MAX_BYTES
        doc = orjson.loads(letter.value)
        where = (doc["partition"], doc["offset"])
        original = poison_at[where]  # topic, partition and offset name the source message
        seen.add(where)
        assert (doc["stage"], doc["topic"], doc["index"]) == ("train", topic_name, None)
        assert doc["field"] == fields[original] and f"`{doc['field']}`" in doc["reason"]
        assert doc["truncated"] is True and doc["size"] == len(original)
        assert doc["sha256"] == hashlib.sha256(original).hexdigest()
        assert base64.b64decode(doc["value_b64"]) == original[:DEAD_LETTER_VALUE_BYTES]
    assert seen == set(poison_at)



def test_a_dead_letter_topic_too_small_for_a_record_is_refused_before_the_job_starts(
    kafka_broker, topic_name, tmp_path
):
    """A dead-letter write refused for its size would fail the job again at every restart:
    a topic below DEAD_LETTER_TOPIC_MIN_BYTES is named in one line and the job never runs."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    bootstrap = kafka_broker.bootstrap
    small, fine = f"{topic_name}.small", f"{topic_name}.fine"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([
            NewTopic(topic_name, 1, 1),
            NewTopic(small, 1, 1, topic_configs={
                "max.message.bytes": str(DEAD_LETTER_TOPIC_MIN_BYTES - 1)}),
            NewTopic(fine, 1, 1, topic_configs={
                "max.message.bytes": str(DEAD_LETTER_TOPIC_MIN_BYTES)}),
        ])
    finally:
        admin.close()
    assert DEAD_LETTER_TOPIC_MIN_BYTES > DEAD_LETTER_MAX_BYTES
    check_dead_letter_topic(bootstrap, fine)
    check_dead_letter_topic(bootstrap, f"{topic_name}.not-yet")  # the broker's defaults apply
    with pytest.raises(ConfigError) as info:
        check_dead_letter_topic(bootstrap, small)
    assert info.value.field == "max.message.bytes" and info.value.where == f"topic {small}"
    assert str(DEAD_LETTER_TOPIC_MIN_BYTES - 1) in str(info.value)

    proc = subprocess.run(
        [sys.executable, str(JOB), *_args(bootstrap, topic_name, tmp_path), "--set",
         f"kafka.dlq_topic={json.dumps(small)}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert f"field `max.message.bytes` of topic {small}: expected at least" in proc.stderr
    assert not (tmp_path / "models").exists() or not ModelStore(
        str(tmp_path / "models"), "m").head().latest


def test_the_dead_letter_topic_check_waits_for_no_broker(caplog) -> None:
    """With Kafka down the check says so in one line and lets the job start, which then
    waits for Kafka as for any passing fault."""
    from tests.conftest import free_port

    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="connectors.flink_kafka"):
        check_dead_letter_topic(nobody, "events.dlq")
    assert time.monotonic() - started < 10
    assert [r.getMessage() for r in caplog.records if nobody in r.getMessage()]


def _set_max_message_bytes(bootstrap: str, topic: str, limit: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                            configs={"max.message.bytes": str(limit)})])
    finally:
        admin.close()


def _log_lines(log_dir: Path, needle: str) -> list[str]:
    """Lines of the local MiniCluster's log (in ``log_dir``, the job's ``FLINK_LOG_DIR``)
    holding ``needle``."""
    lines = []
    for log in log_dir.glob("*.log"):
        lines += [line for line in log.read_text(errors="replace").splitlines() if needle in line]
    return lines


def _switches(log_dir: Path, job_name: str) -> list[str]:
    """The state changes of the job named ``job_name``."""
    return [s for s in _log_lines(log_dir, f"Job {job_name} (") if "switched from state" in s]


def _wait(predicate, job: subprocess.Popen, log_path: Path, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, log_path.read_text()[-3000:]
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout_s:.0f} s")


def test_a_failed_dead_letter_write_restarts_the_job_which_resumes_losing_nothing(
    kafka_broker, topic_name, tmp_path
):
    """A dead-letter write that fails (here the topic is set, while the job runs, to refuse
    records of 1,000 bytes or more): the job restarts from its last checkpoint with back-off,
    again while the fault lasts, never stops, and once the topic takes the records again
    it resumes: every good event learned once, every bad one dead-lettered."""
    bootstrap = kafka_broker.bootstrap
    _create_topics(bootstrap, topic_name)
    dlq = f"{topic_name}.dlq"
    model = f"m-{topic_name}"
    good = list(clicks(2_000, seed=8))
    with Publisher(bootstrap, topic_name, envelope=True, envelope_size=100) as pub:
        pub.publish_many(good[:1_000])
    args = [
        "--bootstrap", bootstrap, "--topic", topic_name, "--store", str(tmp_path / "models"),
        "--model", model, "--set", f"job.checkpoint_dir={json.dumps(str(tmp_path / 'chk'))}",
        "--set", "features.bits=16", "--set", "job.parallelism=1",
        "--set", "job.checkpoint_ms=500", "--set", "job.flush_ms=50", "--set", "job.sync_ms=200",
        "--set", "job.restart_max_ms=2000",
    ]
    store = ModelStore(str(tmp_path / "models"), model)
    log_path, flink_logs = tmp_path / "job.log", tmp_path / "flink-log"
    # the local cluster's log in a directory of its own: PyFlink's shared one is rewritten
    # by any other job that starts meanwhile (another test worker's)
    env = {**os.environ, "FLINK_LOG_DIR": str(flink_logs)}
    with open(log_path, "w") as log:
        job = subprocess.Popen([sys.executable, str(JOB), *args], stdout=log, stderr=log,
                               start_new_session=True, env=env)
    job_name = f"streamlearn-train-{model}"

    def restarts() -> int:
        return sum("to RESTARTING" in s for s in _switches(flink_logs, job_name))

    try:
        _wait(lambda: (v := store.head().latest) and store.get(v).lineage.events == 1_000,
              job, log_path, 240, "the first events were not learned")
        _set_max_message_bytes(bootstrap, dlq, 1_000)  # a dead letter of a poison event: ~88 KB
        poison_at = _publish(bootstrap, topic_name, good[1_000:])
        # the failed write restarts the job; restored, it fails again on the same records
        _wait(lambda: restarts() >= 2, job, log_path, 120,
              "the failed dead-letter write did not restart the job, twice")
        _set_max_message_bytes(bootstrap, dlq, DLQ_BYTES)
        _wait(lambda: (v := store.head().latest) and store.get(v).lineage.events == len(good),
              job, log_path, 180, "the job did not resume and learn every good event")
        time.sleep(1.5)  # a few more sync intervals: nothing more may be counted
        final = store.get()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert restarts() >= 2, "the job restarted again while the fault lasted"
    failed = _log_lines(flink_logs, f"Failed to send data to Kafka {dlq}-")
    assert failed, "the dead-letter write failed"
    assert final.lineage.events == len(good), "every good event learned, none twice"
    letters = [orjson.loads(r.value) for r in consume(bootstrap, dlq, idle_timeout_s=3)]
    assert {(d["partition"], d["offset"]) for d in letters} == set(poison_at), "nothing lost"
    assert all(d["stage"] == "train" and d["truncated"] for d in letters)
    assert max(len(r.value) for r in consume(bootstrap, dlq, idle_timeout_s=1)) <= (
        DEAD_LETTER_MAX_BYTES)


def test_a_burst_of_failed_dead_letter_writes_fails_the_task_never_the_task_manager(
    kafka_broker, topic_name, tmp_path
):
    """Dead letters in several batches, all refused: the first failed send fails the task,
    and a later one, kept by the connector's writer, was raised again when the failing task
    closed the writer. Flink takes an exception in a failing task's clean-up as fatal: the
    TaskManager stopped, and the job, without a slot, waited for one instead of restarting
    (``io.streamlearn.flink.QuietCloseKafkaSink`` logs it instead). Here the job restarts,
    again and again, and no TaskManager stops."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    bootstrap = kafka_broker.bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic_name, 1, 1, topic_configs={
            "max.message.bytes": "1000"})])
    finally:
        admin.close()
    log_path, flink_logs = tmp_path / "job.log", tmp_path / "flink-log"
    env = {**os.environ, "FLINK_LOG_DIR": str(flink_logs)}
    # ten records of 60 KB: one a batch (dead-letter batches are up to 96 KiB), five in flight
    with open(log_path, "w") as log:
        job = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "refused_dead_letters_job.py"), bootstrap,
             topic_name, "10", str(60_000)],
            stdout=log, stderr=log, start_new_session=True, env=env,
        )

    def restarted_or_fatal() -> bool:
        fatal = _log_lines(flink_logs, "FATAL")
        assert not fatal, fatal[0]
        restarts = _switches(flink_logs, "streamlearn-refused-dead-letters")
        return sum("to RESTARTING" in s for s in restarts) >= 8

    try:
        _wait(restarted_or_fatal, job, log_path, 180,
              "the job did not restart 8 times after failed dead-letter writes")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert _log_lines(flink_logs, f"Failed to send data to Kafka {topic_name}-")
