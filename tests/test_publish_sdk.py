"""The Publisher SDK as a user meets it: defaults, numpy values, missing topics, deliveries."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.kafka_io import DeliveryError, consume_all, create_topics, describe_topic
from connectors.kafka_io import list_topics as topics_at
from streamlearn.cli import build_parser
from streamlearn.errors import ConfigError, EventError
from streamlearn.publish import Delivered, Delivery, Publisher

CLI = str(Path(sys.executable).parent / "streamlearn")


def test_defaults_are_the_cli_defaults() -> None:
    params = inspect.signature(Publisher).parameters
    args = build_parser().parse_args(["publish", "--generator", "clicks"])
    assert params["bootstrap"].default == args.bootstrap == "127.0.0.1:9092"
    assert params["topic"].default == args.topic == "events"
    assert params["create_topic"].default is False and args.create_topic is False


def test_kafka_python_computes_checksums_with_the_c_crc32c() -> None:
    """kafka-python picks ``crc32c`` up when it is importable; the pure-Python
    fallback is ~1000x slower and was most of a publisher's CPU time."""
    import crc32c
    import kafka.record.default_records as default_records
    import kafka.record.util as util
    from kafka.record._crc32c import crc as pure_python

    assert util.crc32c_c is crc32c.crc32c
    # the function the record builder calls, and the implementation it bound
    assert default_records.calc_crc32c is util.calc_crc32c
    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)
    data = os.urandom(64 * 1024)
    assert util.calc_crc32c(memoryview(data)) == pure_python(data)
    t0 = time.perf_counter()
    pure_python(data)
    slow = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(10):
        util.calc_crc32c(memoryview(data))
    fast = (time.perf_counter() - t0) / 10
    assert fast * 20 < slow, (fast, slow)


@pytest.mark.integration
def test_numpy_scalars_are_sent_as_the_numbers_they_are(kafka_broker, topic_name) -> None:
    create_topics(kafka_broker.bootstrap, {topic_name: 2})
    event = {
        "key": np.int64(7),
        "features": {"f32": np.float32(0.25), "f64": np.float64(1.5), "i8": np.int8(-3),
                     "u64": np.uint64(2**40), "flag": np.bool_(True)},
        "label": np.int32(1),
    }
    for options in ({}, {"validate": True}, {"envelope": True, "envelope_size": 2}):
        with Publisher(kafka_broker.bootstrap, topic_name, **options) as pub:
            pub.publish(event)
            pub.publish({**event, "label": np.bool_(False)})
    docs = []
    for r in consume_all(kafka_broker.bootstrap, topic_name, expected=5):
        doc = orjson.loads(r.value)
        docs.extend(doc["events"] if "events" in doc else [doc])
    assert len(docs) == 6
    assert all(
        d["features"] == {"f32": 0.25, "f64": 1.5, "i8": -3, "u64": 2**40, "flag": True}
        and d["key"] == 7
        for d in docs
    )
    assert sorted(d["label"] for d in docs) == [0, 0, 0, 1, 1, 1]


@pytest.mark.integration
def test_integer_feature_names_are_sent_as_their_text(kafka_broker, topic_name) -> None:
    """River's streams name features by integers: sent as the names the contract reads
    (their decimal text), with or without validation, the caller's event left as given;
    a name of another type is refused naming the rule."""
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    event = {"features": {0: 1.5, 7: "red", "b": 2}, "label": 1}
    for options in ({}, {"validate": True}):
        with Publisher(kafka_broker.bootstrap, topic_name, **options) as pub:
            pub.publish(event)
            with pytest.raises(EventError, match="convert others with str"):
                pub.publish({"features": {1.5: 1.0}, "label": 0})
    assert event == {"features": {0: 1.5, 7: "red", "b": 2}, "label": 1}
    docs = [orjson.loads(r.value) for r in consume_all(kafka_broker.bootstrap, topic_name,
                                                          expected=2)]
    assert [d["features"] for d in docs] == [{"0": 1.5, "7": "red", "b": 2}] * 2


@pytest.mark.integration
def test_a_value_json_cannot_hold_is_refused_naming_the_field(kafka_broker, topic_name) -> None:
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    for envelope in (False, True):
        with Publisher(kafka_broker.bootstrap, topic_name, envelope=envelope) as pub:
            pub.publish({"features": {"x": 1.0}, "label": 1})
            with pytest.raises(EventError) as err:
                pub.publish({"features": {"x": 1.0, "price": Decimal("9.99")}, "label": 0})
            assert err.value.field == "features.price"
            assert str(err.value) == (
                "field `features.price` of event 1: expected a number (Python or numpy), a "
                "string, true/false, null, a list or an object, got Decimal Decimal('9.99')"
            )
            assert pub.events == 1  # the refused event is not counted, nor sent
    assert describe_topic(kafka_broker.bootstrap, topic_name).messages == 2


@pytest.mark.integration
def test_a_missing_topic_is_refused_not_created(kafka_broker, topic_name) -> None:
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    typo = topic_name + "x"
    with pytest.raises(ConfigError) as err:
        Publisher(kafka_broker.bootstrap, typo)
    text = str(err.value)
    assert "\n" not in text and err.value.field == "topic"
    where = kafka_broker.bootstrap
    assert text.startswith(f"field `topic`: expected a topic that exists at {where}")
    assert topic_name in text and text.endswith(f"got '{typo}'")
    assert "create_topic=True" in text and "--create-topic" in text
    assert typo not in topics_at(kafka_broker.bootstrap), "refused, and not created by the asking"
    with Publisher(kafka_broker.bootstrap, typo, create_topic=True, partitions=3) as pub:
        pub.publish({"key": "a", "features": {"x": 1.0}, "label": 1})
    assert describe_topic(kafka_broker.bootstrap, typo).partitions == 3


@pytest.mark.integration
def test_the_cli_refuses_a_missing_topic_unless_told_to_create_it(kafka_broker, topic_name):
    common = ["publish", "--generator", "clicks", "--count", "10", "--quiet",
              "--bootstrap", kafka_broker.bootstrap, "--topic", topic_name]
    out = subprocess.run([CLI, *common], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"got '{topic_name}'" in out.stderr and "--create-topic" in out.stderr
    assert topic_name not in topics_at(kafka_broker.bootstrap)
    out = subprocess.run([CLI, *common, "--create-topic", "--partitions", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert describe_topic(kafka_broker.bootstrap, topic_name).messages == 10


@pytest.mark.integration
def test_publish_returns_a_delivery_of_our_own(kafka_broker, topic_name) -> None:
    create_topics(kafka_broker.bootstrap, {topic_name: 3},
                  configs={topic_name: {"max.message.bytes": "3000"}})
    with Publisher(kafka_broker.bootstrap, topic_name, max_request_size=3000) as pub:
        deliveries = [
            pub.publish({"id": f"e{i}", "key": f"u{i}", "features": {"x": i}, "label": 1})
            for i in range(6)
        ]
        assert all(type(d) is Delivery for d in deliveries)
        got = [d.wait(timeout_s=60) for d in deliveries]
        assert all(type(g) is Delivered and g.topic == topic_name and g.events == 1 for g in got)
        assert [g.partition for g in got] == [pub.partition_of(f"u{i}") for i in range(6)]
        big = {"id": "big", "key": "u0", "features": {"blob": "z" * 5000}, "label": 0}
        failing = pub.publish(big)
        with pytest.raises(DeliveryError) as err:
            failing.wait(timeout_s=60)
        assert err.value.failed == (big,) and not err.value.retriable
        with pytest.raises(DeliveryError) as flushed:  # the flush reports it as well
            pub.flush()
        assert flushed.value.failed == (big,)
    at = {(r.partition, r.offset): orjson.loads(r.value)["id"]
          for r in consume_all(kafka_broker.bootstrap, topic_name, expected=6)}
    assert [at[(g.partition, g.offset)] for g in got] == [f"e{i}" for i in range(6)]

    with Publisher(kafka_broker.bootstrap, topic_name, envelope=True, envelope_size=3) as pub:
        results = [pub.publish({"key": "same", "features": {"x": i}}) for i in range(3)]
        assert results[:2] == [None, None]  # buffered into the envelope
        acked: list[Delivered] = []
        results[2].on_delivered(acked.append)
        sent = results[2].wait(timeout_s=60)
        assert sent.events == 3 and sent.partition == pub.partition_of("same")
        pub.flush()
        assert acked == [sent]  # the callback saw what wait() returns, once
