"""PyFlink wiring shared by the jobs in ``flink_jobs/``: environment, Kafka source and sink.

pyflink is imported inside the functions: importing this module costs nothing
and needs no JVM.
"""

from __future__ import annotations

import logging
import os
import site
import sys
from pathlib import Path
from typing import Any

from connectors.local_logs import route_minicluster_log
from connectors.paths import flink_job_jars
from streamlearn.errors import ConfigError

__all__ = [
    "stream_env",
    "reporter_jars",
    "kafka_source",
    "kafka_sink",
    "dead_letter_sink",
    "check_dead_letter_topic",
    "SINK_PRODUCER",
    "DEAD_LETTER_PRODUCER",
    "DEAD_LETTER_TOPIC_MIN_BYTES",
    "record_with_offsets_type",
    "START_POSITIONS",
]

START_POSITIONS = ("earliest", "latest", "committed")

log = logging.getLogger(__name__)

#: The producer settings of every sink, set here rather than left to the client's
#: defaults: the largest request (1 MiB, what the project's JVM producers and
#: dead-letter topics allow), every record acknowledged by all in-sync replicas, and
#: every send resolved (delivered, or failed: the job then restarts from its last
#: checkpoint) within two minutes, so a broker outage shorter than that costs no restart.
SINK_PRODUCER: dict[str, str] = {
    "max.request.size": str(1024 * 1024),
    "acks": "all",
    "enable.idempotence": "true",
    "delivery.timeout.ms": "120000",
    "request.timeout.ms": "30000",
    "retry.backoff.ms": "200",
}

#: The dead-letter sink's producer: records are bounded
#: (``streamlearn.events.DEAD_LETTER_MAX_BYTES``, 96 KiB), so one always fits in a
#: request, and a batch (at most 96 KiB, or one record and its framing) always fits in
#: a topic that takes :data:`DEAD_LETTER_TOPIC_MIN_BYTES`.
DEAD_LETTER_PRODUCER: dict[str, str] = {
    **SINK_PRODUCER,
    "batch.size": str(96 * 1024),
    "linger.ms": "20",
}

#: The smallest ``max.message.bytes`` a dead-letter topic may have: a bounded record
#: (96 KiB) in its batch, with room to spare. A job refuses to start on a smaller one
#: (:func:`check_dead_letter_topic`) rather than fail on its first dead letter.
DEAD_LETTER_TOPIC_MIN_BYTES = 128 * 1024


def stream_env(
    parallelism: int = 1,
    checkpoint_ms: int | None = None,
    checkpoint_dir: str | None = None,
    config: dict[str, str] | None = None,
    log_name: str | None = None,
) -> Any:
    """A ``StreamExecutionEnvironment`` with the Kafka connector jar and this Python.

    Run locally, its MiniCluster logs to a file of this start under
    ``<state>/logs``, named by ``log_name`` (by default the job file's name; see
    :mod:`connectors.local_logs`).

    The Python workers run the interpreter that runs the job file
    (``sys.executable``): the project's venv, locally and when a standalone
    cluster on this machine runs it (``flink run -py`` uses the configured
    ``python.client.executable``); or, when the submitter ships the job's Python
    (``STREAMLEARN_WORKER_PYTHON``, set by ``FlinkCluster.submit(ship_python=True)``),
    that interpreter inside the shipped archive.
    """
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    # before anything of PyFlink's starts its gateway (``Configuration()`` does)
    route_minicluster_log(log_name or Path(sys.argv[0]).stem or "job")
    conf = Configuration()
    # a job submitted with its Python shipped (``-pyarch``, connectors.python_env) runs
    # the archive's interpreter, which has every package: nothing of this machine's
    shipped = os.environ.get("STREAMLEARN_WORKER_PYTHON")
    conf.set_string("python.executable", shipped or sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    if not shipped:
        # thread mode embeds Python in the JVM from the base interpreter, which does not
        # see a venv's packages by itself: name them (process mode ignores nothing here)
        conf.set_string("python.pythonpath", os.pathsep.join(_python_path()))
    for key, value in (config or {}).items():
        conf.set_string(key, str(value))
    if checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", checkpoint_dir)
        conf.set_string("state.checkpoints.dir", checkpoint_dir)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.add_jars(
        *(jar.resolve().as_uri() for jar in flink_job_jars()), *reporter_jars(config or {})
    )
    env.set_parallelism(parallelism)
    if checkpoint_ms:
        env.enable_checkpointing(checkpoint_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


def reporter_jars(config: dict[str, str]) -> list[str]:
    """The jars of PyFlink's bundled plugins (``pyflink/plugins/``) that hold the metrics
    reporters ``config`` names (``metrics.reporter.<name>.factory.class``), as URIs.

    A standalone cluster loads reporters from its plugins directory; the local
    MiniCluster does not (it logs ``The reporter factory ... could not be found``),
    but finds a reporter whose jar is among the job's jars, which PyFlink adds to
    the class loader the MiniCluster starts from.
    """
    import zipfile

    import pyflink

    wanted = {
        value.replace(".", "/") + ".class"
        for key, value in config.items()
        if key.startswith("metrics.reporter.") and key.endswith(".factory.class")
    }
    if not wanted:
        return []
    found = []
    for jar in sorted((Path(pyflink.__file__).parent / "plugins").glob("*/*.jar")):
        with zipfile.ZipFile(jar) as zf:
            if wanted & set(zf.namelist()):
                found.append(jar.resolve().as_uri())
    return found


def _python_path() -> list[str]:
    from connectors.paths import project_root

    return [*site.getsitepackages(), str(project_root())]


def _offsets(start: str | dict[int, int], topic: str = "") -> Any:
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaTopicPartition,
    )

    if isinstance(start, dict):
        return KafkaOffsetsInitializer.offsets(
            {KafkaTopicPartition(topic, int(p)): int(o) for p, o in start.items()},
            KafkaOffsetResetStrategy.EARLIEST,
        )
    if start == "earliest":
        return KafkaOffsetsInitializer.earliest()
    if start == "latest":
        return KafkaOffsetsInitializer.latest()
    if start == "committed":
        return KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    raise ConfigError("start", f"one of {', '.join(START_POSITIONS)}", repr(start))


def kafka_source(
    bootstrap: str,
    topic: str,
    group_id: str,
    start: str | dict[int, int] = "earliest",
    bounded: bool = False,
    value_schema: Any = None,
    properties: dict[str, str] | None = None,
    with_offsets: bool = False,
    deserializer: Any = None,
) -> Any:
    """A Flink ``KafkaSource`` reading ``topic`` (values as UTF-8 strings unless told).

    ``bounded=True`` stops at the end offsets seen at start-up, so the job
    finishes once it has read what was there: handy for tests and backfills.
    ``start`` is a position (``earliest``, ``latest``, ``committed``) or exact
    offsets per partition (partitions left out start at the earliest).
    ``with_offsets=True`` yields rows ``(partition, offset, timestamp, key,
    value, join)`` (see :func:`record_with_offsets_type`) instead of values alone;
    ``deserializer`` (a Java ``KafkaRecordDeserializationSchema``) yields what it makes.
    """
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(_offsets(start, topic))
        .set_value_only_deserializer(value_schema or SimpleStringSchema())
        .set_property("partition.discovery.interval.ms", "10000")
    )
    for key, value in (properties or {}).items():
        builder = builder.set_property(key, value)
    if with_offsets:
        from pyflink.util.java_utils import load_java_class

        deserializer = load_java_class("io.streamlearn.flink.KafkaRecordWithOffsets").newInstance()
    if deserializer is not None:
        builder._j_builder.setDeserializer(deserializer)
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def record_with_offsets_type() -> Any:
    """The row type :func:`kafka_source` yields with ``with_offsets=True``
    (``io.streamlearn.flink.KafkaRecordWithOffsets``; ``join``: the record's
    :data:`streamlearn.joining.HEADER`, or ``None``)."""
    from pyflink.common import Types

    return Types.ROW_NAMED(
        ["partition", "offset", "timestamp", "key", "value", "join"],
        [
            Types.INT(),
            Types.LONG(),
            Types.LONG(),
            Types.PRIMITIVE_ARRAY(Types.BYTE()),
            Types.PRIMITIVE_ARRAY(Types.BYTE()),
            Types.STRING(),
        ],
    )


def kafka_sink(
    bootstrap: str,
    topic: str,
    exactly_once: bool = False,
    txn_prefix: str = "",
    properties: dict[str, str] | None = None,
    serializer: Any = None,
) -> Any:
    """A Flink ``KafkaSink`` writing UTF-8 strings to ``topic``, or what the Java
    ``KafkaRecordSerializationSchema`` ``serializer`` makes of its stream's records.

    ``exactly_once`` uses Kafka transactions committed on checkpoints
    (needs checkpointing and a ``txn_prefix`` unique per job). The producer gets
    :data:`SINK_PRODUCER`, updated with ``properties``.

    A failed send fails the task, which restarts from its last checkpoint. The sink is
    ``io.streamlearn.flink.QuietCloseKafkaSink`` around the connector's: a send that
    fails after the first one, which the connector's writer raises while the failing
    task closes it, is logged rather than stopping the TaskManager (Flink takes an
    exception in a failing task's clean-up as fatal).
    """
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import load_java_class

    builder = KafkaSink.builder().set_bootstrap_servers(bootstrap)
    if serializer is None:
        builder = builder.set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
    else:  # PyFlink's setter inspects a builder-made schema's topic selector: set it in Java
        builder._j_builder.setRecordSerializer(serializer)
    for key, value in {**SINK_PRODUCER, **(properties or {})}.items():
        builder = builder.set_property(key, value)
    if exactly_once:
        builder = (
            builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(txn_prefix or f"streamlearn-{topic}")
            .set_property("transaction.timeout.ms", "600000")
        )
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    sink = builder.build()
    gateway = get_gateway()
    args = gateway.new_array(gateway.jvm.Object, 1)
    args[0] = sink.get_java_function()
    wrapped = load_java_class("io.streamlearn.flink.QuietCloseKafkaSink").getConstructors()[0]
    return KafkaSink(wrapped.newInstance(args), sink.get_transformer())


def dead_letter_sink(
    bootstrap: str, topic: str, exactly_once: bool = False, txn_prefix: str = ""
) -> Any:
    """The sink of a job's dead-letter records: :func:`kafka_sink` with
    :data:`DEAD_LETTER_PRODUCER` (see ``docs/events.md``)."""
    return kafka_sink(bootstrap, topic, exactly_once, txn_prefix, DEAD_LETTER_PRODUCER)


def check_dead_letter_topic(bootstrap: str, topic: str) -> None:
    """Refuse, in one line, a dead-letter topic that cannot take a bounded record.

    A dead-letter write refused for its size would fail the job again at every restart;
    records are bounded, so only a topic set below :data:`DEAD_LETTER_TOPIC_MIN_BYTES`
    can refuse one, and that is told before the job starts. A topic that does not exist
    yet is left to the broker (created with its defaults, or refused as any write is), and
    so is every topic while Kafka does not answer (one line is logged; the job waits for
    Kafka as for any passing fault).

    Raises :class:`~streamlearn.errors.ConfigError` naming the topic's setting.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    from connectors.kafka_io import check_reachable
    from streamlearn.errors import BrokerUnavailable

    try:
        check_reachable(bootstrap)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    except (BrokerUnavailable, KafkaError) as exc:  # the job waits for Kafka; nothing to check
        log.warning("dead-letter topic %s not checked, Kafka at %s did not answer: %s",
                    topic, bootstrap, exc)
        return
    try:
        if topic not in admin.list_topics():
            return
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})],
            config_filter="all",
        )
    finally:
        admin.close()
    entry = found.get("topic", {}).get(topic, {}).get("max.message.bytes")
    if entry is None:
        return
    limit = int(entry["value"])
    if limit < DEAD_LETTER_TOPIC_MIN_BYTES:
        raise ConfigError(
            "max.message.bytes",
            f"at least {DEAD_LETTER_TOPIC_MIN_BYTES} for a dead-letter topic (its records are "
            "up to 96 KiB; raise it with kafka-configs.sh --alter --add-config)",
            str(limit),
            f"topic {topic}",
        )


def _murmur_int(code: int) -> int:
    """Flink's ``MathUtils.murmurHash(int)`` (32-bit arithmetic)."""
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    code = (code * 0xCC9E2D51) & m
    code = rotl(code, 15)
    code = (code * 0x1B873593) & m
    code = rotl(code, 13)
    code = (code * 5 + 0xE6546B64) & m
    code ^= 4
    code ^= code >> 16
    code = (code * 0x85EBCA6B) & m
    code ^= code >> 13
    code = (code * 0xC2B2AE35) & m
    code ^= code >> 16
    signed = code - (1 << 32) if code & 0x80000000 else code
    if signed >= 0:
        return signed
    return -signed if signed != -(1 << 31) else 0


def subtask_of_int_key(key: int, parallelism: int, max_parallelism: int = 128) -> int:
    """The subtask Flink routes an ``INT`` key to (``KeyGroupRangeAssignment``)."""
    key_group = _murmur_int(key & 0xFFFFFFFF) % max_parallelism
    return key_group * parallelism // max_parallelism


def int_keys_one_per_subtask(parallelism: int, max_parallelism: int = 128) -> list[int]:
    """Integer keys ``k[i]`` that Flink routes to subtask ``i``: one learner per subtask.

    Keying learners 0..P-1 directly would let two learners share a subtask
    while another subtask idles; these keys spread them exactly.

    >>> keys = int_keys_one_per_subtask(4)
    >>> [subtask_of_int_key(k, 4) for k in keys]
    [0, 1, 2, 3]
    """
    found: dict[int, int] = {}
    candidate = 0
    while len(found) < parallelism:
        found.setdefault(subtask_of_int_key(candidate, parallelism, max_parallelism), candidate)
        candidate += 1
    return [found[i] for i in range(parallelism)]
