"""The demo's paced stream on the real broker: acknowledgements reach the
freshness clock, and a failure before it starts leaves its clean-up working."""

from __future__ import annotations

import pytest

from connectors.kafka_io import create_topics
from streamlearn.cli.demo.stream import PacedStream
from streamlearn.generators import clicks

pytestmark = pytest.mark.integration


def test_warm_up_acks_reach_the_clock_and_an_unstarted_stream_cleans_up(kafka_broker, topic_name):
    create_topics(kafka_broker.bootstrap, {topic_name: 2})
    acks: list[tuple[int, int, int]] = []
    stream = PacedStream(kafka_broker.bootstrap, topic_name, iter(clicks(None, seed=1)),
                         rate=1000, total=100, envelope_size=10,
                         on_ack=lambda p, o, t: acks.append((p, o, t)))
    stream.publish_now(50)  # the warm-up, in this thread; flushed
    assert stream.published == 50
    # full envelopes (10 events of one partition) are acknowledged with where they
    # landed; the partial ones the flush sends carry no callback
    full = sum(n // 10 for n in _per_partition(stream, 50))
    assert len(acks) == len({(p, o) for p, o, _ in acks}) == full > 0
    assert all(p in (0, 1) and o >= 0 and t > 0 for p, o, t in acks)
    # the runner's clean-up after a failed warm-up: the thread never started
    stream.stop()
    stream.join(1)
    stream.close()


def _per_partition(stream: PacedStream, n: int) -> list[int]:
    """How many of the first ``n`` events of seed 1 each partition got."""
    counts = [0, 0]
    for event in clicks(n, seed=1):
        counts[stream._publisher.partition_of(event.get("key"))] += 1
    return counts
