"""Hot keys: ``Publisher(spread_hot_keys=...)`` loads the partitions evenly under a
Zipf-distributed key stream, against the real broker."""

from __future__ import annotations

from collections import Counter, defaultdict

import orjson
import pytest
from kafka.partitioner.default import murmur2

from connectors.kafka_io import consume_all, create_topics, describe_topic
from streamlearn.errors import ConfigError
from streamlearn.generators import clicks, zipf_keys
from streamlearn.publish import Publisher

pytestmark = pytest.mark.integration

N = 8000


def _events() -> list[dict]:
    # s = 1.1 over 1,000 keys: the hottest key is ~19% of the events
    return list(clicks(N, seed=5, keys=zipf_keys(seed=6, n_keys=1000)))


def _placed(bootstrap: str, topic: str, envelope: bool, messages: int) -> dict[str, Counter]:
    """key -> how many of its events landed in each partition."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in consume_all(bootstrap, topic, expected=messages):
        body = orjson.loads(r.value)
        for event in body["events"] if envelope else [body]:
            out[event["key"]][r.partition] += 1
    return out


def _max_over_mean(placed: dict[str, Counter], partitions: int) -> float:
    loads = Counter()
    for counts in placed.values():
        loads.update(counts)
    return max(loads.values()) / (sum(loads.values()) / partitions)


@pytest.mark.parametrize("envelope", [False, True], ids=["single", "envelope"])
def test_spreading_hot_keys_balances_partitions_and_keeps_cold_keys_home(
    kafka_broker, topic_name, envelope
):
    bootstrap, events = kafka_broker.bootstrap, _events()
    plain, spread = f"{topic_name}-plain", f"{topic_name}-spread"
    create_topics(bootstrap, {plain: 4, spread: 4})
    with Publisher(bootstrap, plain, envelope=envelope, envelope_size=50) as pub:
        pub.publish_many(events)
    by_key = _placed(bootstrap, plain, envelope, pub.messages)
    with Publisher(bootstrap, spread, envelope=envelope, envelope_size=50,
                   spread_hot_keys=0.02) as pub:
        pub.publish_many(events)
    assert describe_topic(bootstrap, spread).messages == pub.messages
    spread_by_key = _placed(bootstrap, spread, envelope, pub.messages)
    assert sum(sum(c.values()) for c in spread_by_key.values()) == N

    assert _max_over_mean(by_key, 4) > 1.3  # the Zipf stream's skew, by key
    assert _max_over_mean(spread_by_key, 4) < 1.02
    assert pub.partition_events == [sum(c[p] for c in spread_by_key.values()) for p in range(4)]
    share = Counter(e["key"] for e in events)
    for key, counts in spread_by_key.items():
        if share[key] < 0.01 * N:  # a cold key: all its events in its own partition
            assert dict(counts) == {(murmur2(key.encode()) & 0x7FFFFFFF) % 4: share[key]}
    assert len(spread_by_key["k1"]) == 4  # the hottest one on every partition


def test_spread_hot_keys_is_a_share(kafka_broker, topic_name):
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    for bad in (0, 1, 1.5, True, "0.1"):
        with pytest.raises(ConfigError, match="spread_hot_keys"):
            Publisher(kafka_broker.bootstrap, topic_name, spread_hot_keys=bad)
