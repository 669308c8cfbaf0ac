"""PyFlink wiring shared by the jobs in ``flink_jobs/``: environment, Kafka source and sink.

pyflink is imported inside the functions: importing this module costs nothing
and needs no JVM.
"""

from __future__ import annotations

import sys
from typing import Any

from connectors.paths import flink_job_jars
from streamlearn.errors import ConfigError

__all__ = [
    "stream_env",
    "kafka_source",
    "kafka_sink",
    "record_with_offsets_type",
    "START_POSITIONS",
]

START_POSITIONS = ("earliest", "latest", "committed")


def stream_env(
    parallelism: int = 1,
    checkpoint_ms: int | None = None,
    checkpoint_dir: str | None = None,
    config: dict[str, str] | None = None,
) -> Any:
    """A ``StreamExecutionEnvironment`` with the Kafka connector jar and this Python.

    The Python workers run the interpreter that runs the job file
    (``sys.executable``): the project's venv, locally and when a standalone
    cluster on this machine runs it (``flink run -py`` uses the configured
    ``python.client.executable``).
    """
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    for key, value in (config or {}).items():
        conf.set_string(key, str(value))
    if checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", checkpoint_dir)
        conf.set_string("state.checkpoints.dir", checkpoint_dir)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.add_jars(*(jar.resolve().as_uri() for jar in flink_job_jars()))
    env.set_parallelism(parallelism)
    if checkpoint_ms:
        env.enable_checkpointing(checkpoint_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


def _offsets(start: str) -> Any:
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
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
    start: str = "earliest",
    bounded: bool = False,
    value_schema: Any = None,
    properties: dict[str, str] | None = None,
    with_offsets: bool = False,
) -> Any:
    """A Flink ``KafkaSource`` reading ``topic`` (values as UTF-8 strings unless told).

    ``bounded=True`` stops at the end offsets seen at start-up, so the job
    finishes once it has read what was there: handy for tests and backfills.
    ``with_offsets=True`` yields rows ``(partition, offset, timestamp, key,
    value)`` (see :func:`record_with_offsets_type`) instead of values alone.
    """
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(_offsets(start))
        .set_value_only_deserializer(value_schema or SimpleStringSchema())
        .set_property("partition.discovery.interval.ms", "10000")
    )
    for key, value in (properties or {}).items():
        builder = builder.set_property(key, value)
    if with_offsets:
        from pyflink.util.java_utils import load_java_class

        deserializer = load_java_class("io.streamlearn.flink.KafkaRecordWithOffsets")()
        builder._j_builder.setDeserializer(deserializer)
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def record_with_offsets_type() -> Any:
    """The row type :func:`kafka_source` yields with ``with_offsets=True``."""
    from pyflink.common import Types

    return Types.ROW_NAMED(
        ["partition", "offset", "timestamp", "key", "value"],
        [
            Types.INT(),
            Types.LONG(),
            Types.LONG(),
            Types.PRIMITIVE_ARRAY(Types.BYTE()),
            Types.PRIMITIVE_ARRAY(Types.BYTE()),
        ],
    )


def kafka_sink(bootstrap: str, topic: str, exactly_once: bool = False, txn_prefix: str = "") -> Any:
    """A Flink ``KafkaSink`` writing UTF-8 strings to ``topic``.

    ``exactly_once`` uses Kafka transactions committed on checkpoints
    (needs checkpointing and a ``txn_prefix`` unique per job).
    """
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
    )
    if exactly_once:
        builder = (
            builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(txn_prefix or f"streamlearn-{topic}")
            .set_property("transaction.timeout.ms", "600000")
        )
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()
