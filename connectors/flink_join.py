"""The training job's delayed-label join, wired: ``io.streamlearn.flink.Join`` between two
Kafka topics and the training topic.

::

    <join.impressions> ─┐  (parsed in the deserializer; event time from ts, a watermark
    <join.labels> ──────┤   of join.disorder_ms bounded disorder per partition)
                        └→ key by id → Join (window state in Flink state) ──► <kafka.topic>
                              └─ duplicate, late, unmatched, bad ──► <kafka.dlq_topic>

The joined events are written to the training topic in Kafka transactions committed with
each checkpoint, and the learners read that topic ``read_committed``: the join's state, its
sources' offsets and what it wrote are one checkpoint, so after a restore nothing is joined
or learned twice, and the learners' lineage (offsets of the training topic) stays the
account of what a version reflects. Every record the join writes there names its outcome in
the header :data:`streamlearn.joining.HEADER`; each outcome that is not learned (a duplicate
label, a dropped impression, ...) is written too, as an empty tally record, so the learners
count every outcome into the lineage of the version that reflects it
(``join.<outcome>`` in its metrics). The cost is freshness: a joined event is learned after
the checkpoint that covers it (``job.checkpoint_ms``). The rules are
:mod:`streamlearn.joining`'s; ``docs/joining.md`` has the semantics.
"""

from __future__ import annotations

import json
from typing import Any

from streamlearn.training.config import TrainConfig

#: The training source's consumer setting while the job joins: only committed joined events.
READ_COMMITTED = {"isolation.level": "read_committed"}


def join_group(cfg: TrainConfig) -> str:
    """The consumer group of the join's two sources."""
    return f"{cfg.kafka.group}-join"


def add_join(env: Any, cfg: TrainConfig) -> None:
    """Add the join to ``env``'s graph: impressions and labels in, joined events out to
    ``kafka.topic`` (exactly once), rejected records to ``kafka.dlq_topic`` (exactly once)."""
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import load_java_class

    from connectors.flink_kafka import dead_letter_sink, kafka_sink, kafka_source
    from connectors.flink_train import object_array

    cls = load_java_class("io.streamlearn.flink.Join")
    # the JVM reads the configuration the Python operators read: TrainConfig.to_dict()
    config = object_array(get_gateway(), [json.dumps(cfg.to_dict())])
    join = cls.getConstructors()[0].newInstance(config)
    # restored from a checkpoint, the sources read on from its offsets; a start without one
    # reads from the beginning, which check_fresh_start allows only while nothing is joined
    impressions, labels = (
        kafka_source(
            cfg.kafka.bootstrap, topic, join_group(cfg), start="earliest",
            bounded=cfg.job.bounded, deserializer=join.records(label),
        ).get_java_function()
        for topic, label in ((cfg.join.impressions, False), (cfg.join.labels, True))
    )
    streams = join.build(env._j_stream_execution_environment, impressions, labels)
    joined, dead = DataStream(streams.get(0)), DataStream(streams.get(1))
    prefix = f"streamlearn-join-{cfg.store.model}"
    joined.sink_to(
        kafka_sink(cfg.kafka.bootstrap, cfg.kafka.topic, exactly_once=True,
                   txn_prefix=f"{prefix}-events", serializer=join.output(cfg.kafka.topic))
    ).name("joined-events").uid("joined-events")
    dead.sink_to(
        dead_letter_sink(cfg.kafka.bootstrap, cfg.kafka.dlq_topic, exactly_once=True,
                         txn_prefix=f"{prefix}-dlq")
    ).name("join-dead-letters").uid("join-dead-letters")


def check_fresh_start(cfg: TrainConfig) -> None:
    """Refuse, in one line, a join started without its checkpoint over a training topic
    that already holds joined events: it would join both topics again from the beginning
    and learn every impression a second time."""
    from connectors.kafka_io import describe_topic
    from streamlearn.errors import ConfigError

    if describe_topic(cfg.kafka.bootstrap, cfg.kafka.topic).messages:
        raise ConfigError(
            "--resume", f"a checkpoint of the join: {cfg.kafka.topic!r} holds joined events "
            "already, and a join started without its checkpoint (its windows and offsets) "
            "would join its topics again from the beginning; resume (--resume auto or a "
            "checkpoint path), or start a new model on a new kafka.topic", "no checkpoint",
        )


def ensure_joined_topic(cfg: TrainConfig) -> None:
    """Create the training topic the join writes to, when it does not exist yet: as many
    partitions as the impressions topic has, and at least ``job.parallelism``."""
    from connectors.kafka_io import create_topics, describe_topic, list_topics

    topics = set(list_topics(cfg.kafka.bootstrap))
    if cfg.kafka.topic in topics:
        return
    partitions = cfg.job.parallelism
    if cfg.join.impressions in topics:
        partitions = max(partitions, len(describe_topic(cfg.kafka.bootstrap,
                                                        cfg.join.impressions).end_offsets))
    create_topics(cfg.kafka.bootstrap, {cfg.kafka.topic: partitions})
