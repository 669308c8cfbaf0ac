"""The publishing SDK and `streamlearn publish`, against the real broker."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from connectors.kafka_io import DeliveryError, consume_all, create_topics, describe_topic
from streamlearn.cli import main as cli_main
from streamlearn.cli.publish import read_csv, read_jsonl
from streamlearn.errors import ConfigError, EventError
from streamlearn.generators import clicks
from streamlearn.publish import Publisher

pytestmark = pytest.mark.integration


def test_envelopes_land_where_single_keyed_messages_land(kafka_broker, topic_name):
    single, env = f"{topic_name}-s", f"{topic_name}-e"
    create_topics(kafka_broker.bootstrap, {single: 4, env: 4})
    events = list(clicks(2000, seed=4))
    with Publisher(kafka_broker.bootstrap, single) as pub:
        pub.publish_many(events)
    with Publisher(kafka_broker.bootstrap, env, envelope=True, envelope_size=64) as pub:
        pub.publish_many(events)
    assert pub.events == 2000 and pub.messages < 2000 / 32

    by_key = {}
    for r in consume_all(kafka_broker.bootstrap, single, expected=2000):
        by_key[orjson.loads(r.value)["key"]] = r.partition
    seen = 0
    for r in consume_all(kafka_broker.bootstrap, env, expected=pub.messages):
        for event in orjson.loads(r.value)["events"]:
            assert by_key[event["key"]] == r.partition, "an envelope goes to its keys' partition"
            seen += 1
    assert seen == 2000


def test_validation_before_send_names_the_field(kafka_broker, topic_name):
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    with Publisher(kafka_broker.bootstrap, topic_name, validate=True) as pub:
        with pytest.raises(EventError, match="label"):
            pub.publish({"features": {"x": 1.0}, "label": "maybe"})
        pub.publish({"features": {"x": 1.0}, "label": 1})
    assert describe_topic(kafka_broker.bootstrap, topic_name).messages == 1


def test_cli_publishes_a_jsonl_file_and_a_generator(kafka_broker, topic_name, tmp_path, capsys):
    create_topics(kafka_broker.bootstrap, {topic_name: 2})
    path = tmp_path / "events.jsonl"
    events = list(clicks(30, seed=1))
    path.write_text(
        "\n".join(json.dumps(e) for e in events[:20])
        + "\n"
        + json.dumps({"events": events[20:]})
        + "\n"
    )
    assert (
        cli_main(
            [
                "publish",
                "--file",
                str(path),
                "--topic",
                topic_name,
                "--bootstrap",
                kafka_broker.bootstrap,
                "--quiet",
            ]
        )
        == 0
    )
    assert "published 30 events" in capsys.readouterr().out
    assert (
        cli_main(
            [
                "publish",
                "--generator",
                "sea",
                "--count",
                "70",
                "--envelope",
                "--topic",
                topic_name,
                "--bootstrap",
                kafka_broker.bootstrap,
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "published 70 events" in out
    total = describe_topic(kafka_broker.bootstrap, topic_name).messages
    assert 30 < total < 100


def _ids_in(bootstrap: str, topic: str, messages: int) -> list[str]:
    """Event ids in ``topic``: single events and the events of envelopes alike."""
    ids = []
    for r in consume_all(bootstrap, topic, expected=messages):
        doc = orjson.loads(r.value)
        ids.extend(e["id"] for e in doc["events"]) if "events" in doc else ids.append(doc["id"])
    return ids


def _mixed(n: int, big_every: int, start: int = 0) -> list[dict]:
    """Small events and, every ``big_every``-th, one too large for a 3,000-byte topic."""
    return [
        {"id": f"e{i}", "key": f"k{i % 7}", "label": 1,
         "features": {"x": float(i), **({"blob": "z" * 5000} if i % big_every == 0 else {})}}
        for i in range(start, start + n)
    ]


@pytest.mark.parametrize("envelope", [False, True], ids=["single", "envelope"])
def test_flush_reports_exactly_the_failed_events_then_starts_clean(
    kafka_broker, topic_name, envelope
):
    """Messages over the limit fail; each flush names exactly the events that failed."""
    create_topics(kafka_broker.bootstrap, {topic_name: 2},
                  configs={topic_name: {"max.message.bytes": "3000"}})
    first = _mixed(120, big_every=25)
    later = _mixed(60, big_every=10**9, start=1000)  # nothing too large
    # the producer's limit matches the topic's, as create_topics sets them
    with Publisher(kafka_broker.bootstrap, topic_name, envelope=envelope, envelope_size=4,
                   batch_size=1500, max_request_size=3000) as pub:
        pub.publish_many(first)
        with pytest.raises(DeliveryError, match=r" of 120 events .* were not delivered") as err:
            pub.flush()
        pub.publish_many(later)
        pub.flush()  # starts clean: the earlier failures are not reported again
        pub.flush()
    reported = [e["id"] for e in err.value.failed]
    assert len(reported) == err.value.count == len(set(reported))
    big = {e["id"] for e in first if "blob" in e["features"]}
    if envelope:  # a failed envelope: all its events, the small ones beside a big one too
        assert big < set(reported) and len(reported) <= 4 * len(big)
    else:
        assert set(reported) == big
    assert not err.value.retriable  # too large stays too large
    assert "MessageSizeTooLarge" in " ".join(err.value.reasons)

    landed = _ids_in(kafka_broker.bootstrap, topic_name, pub.delivered)
    assert len(landed) == len(set(landed)), "nothing twice"
    assert set(reported) == {e["id"] for e in first + later} - set(landed), (
        "the failures reported are exactly the events not in the topic"
    )


def test_a_producer_left_dead_by_a_refusal_is_replaced(kafka_broker, topic_name):
    """A topic whose limit is below the producer's: the broker refuses a message.

    kafka-python (3.0) then puts its idempotent producer in a fatal state that
    fails every later batch, and fails the batches in flight beside the refused
    one even when the broker took them. The publisher replaces such a producer;
    nothing is lost unreported.
    """
    create_topics(kafka_broker.bootstrap, {topic_name: 1},
                  configs={topic_name: {"max.message.bytes": "3000"}})
    first, later = _mixed(40, big_every=10), _mixed(20, big_every=10**9, start=1000)
    with Publisher(kafka_broker.bootstrap, topic_name, batch_size=1500) as pub:
        pub.publish_many(first)
        with pytest.raises(DeliveryError) as err:
            pub.flush()
        pub.publish_many(later)
        pub.flush()
    reported = {e["id"] for e in err.value.failed}
    assert {e["id"] for e in first if "blob" in e["features"]} <= reported
    landed = set(_ids_in(kafka_broker.bootstrap, topic_name, pub.delivered))
    assert {e["id"] for e in later} <= landed
    assert {e["id"] for e in first} - landed <= reported, "nothing lost unreported"


def test_resending_what_flush_reports_delivers_each_event_once(kafka_broker, topic_name):
    create_topics(kafka_broker.bootstrap, {topic_name: 1},
                  configs={topic_name: {"max.message.bytes": "3000"}})
    events = _mixed(40, big_every=10)
    with Publisher(kafka_broker.bootstrap, topic_name, batch_size=1500,
                   max_request_size=3000) as pub:
        pub.publish_many(events)
        with pytest.raises(DeliveryError) as err:
            pub.flush()
        # a re-send of exactly what was reported (the big ones trimmed, or they fail again)
        pub.publish_many({**e, "features": {"x": e["features"]["x"]}} for e in err.value.failed)
    landed = _ids_in(kafka_broker.bootstrap, topic_name, pub.delivered)
    assert sorted(landed) == sorted(e["id"] for e in events)


def test_cli_names_how_many_events_were_not_delivered(kafka_broker, topic_name, tmp_path):
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    events = _mixed(30, big_every=10**9)
    for e in events[5], events[17]:  # over the producer's and the topic's 8 MiB
        e["features"]["blob"] = "z" * (8 * 1024 * 1024 + 10)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    cli = str(Path(sys.executable).parent / "streamlearn")  # as a user runs it
    out = subprocess.run([cli, "publish", "--file", str(path), "--topic", topic_name,
                          "--bootstrap", kafka_broker.bootstrap, "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"streamlearn publish: 2 of 30 events published to {topic_name} at "
        rf"{kafka_broker.bootstrap} since the last flush were not delivered "
        r"\(MessageSizeTooLargeError ×2; first: .*8388\d+ bytes.*\); "
        r"re-send exactly DeliveryError.failed",
        lines[0],
    ), lines[0]
    assert describe_topic(kafka_broker.bootstrap, topic_name).messages == 28


def test_readers_map_csv_columns_and_refuse_bad_lines():
    rows = list(
        read_csv(
            io.StringIO("user,clicked,age,country\nu1,1,31,FR\nu2,0,,DE\n"),
            label="clicked",
            key="user",
            features=None,
        )
    )
    assert rows[0] == {
        "features": {"age": 31, "country": "FR"},
        "id": "r0",
        "label": 1,
        "key": "u1",
    }
    assert rows[1]["features"] == {"country": "DE"}
    with pytest.raises(ConfigError, match="--label"):
        list(read_csv(io.StringIO("a,b\n1,2\n"), label="nope", key=None, features=None))
    with pytest.raises(EventError, match="line 2"):
        list(read_jsonl(io.StringIO('{"features": {"x": 1}}\n{broken\n')))
