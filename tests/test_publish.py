"""The publishing SDK and `streamlearn publish`, against the real broker."""

from __future__ import annotations

import io
import json

import orjson
import pytest

from connectors.kafka_io import consume_all, create_topics, describe_topic
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
