"""``streamlearn delays`` on the real broker: the delay-aware report of the logged
predictions equals a recomputation here from the same records."""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest

from connectors.kafka_io import create_topics
from streamlearn.cli import main
from streamlearn.generators import delayed_clicks
from streamlearn.joining import delay_report

pytestmark = pytest.mark.integration

WINDOW_MS = 60_000


def test_delays_scores_what_was_served_against_the_labels_that_came(
    kafka_broker, topic_name, capsys
):
    from kafka import KafkaProducer

    rng = random.Random(3)
    served, clicks = [], []
    for kind, e in delayed_clicks(3_000, seed=8, rate_per_s=100.0, mean_delay_s=30.0):
        if kind == "impression":  # as the prediction log writes it: at_ms, no ts
            p = rng.uniform(0.05, 0.95)
            served.append({"id": e["id"], "features": e["features"], "model": "m",
                           "version": 1 + len(served) % 3, "prediction": int(p > 0.5),
                           "probabilities": [1 - p, p], "at_ms": e["ts"]})
        else:
            clicks.append(e)
    # one click in ten taken back half a second later: --keep last joins the correction
    clicks = sorted(clicks + [{**c, "label": 0, "ts": c["ts"] + 500} for c in clicks[::10]],
                    key=lambda c: c["ts"])
    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {f"{topic_name}.served": 2, f"{topic_name}.labels": 2})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for rec in served:
        producer.send(f"{topic_name}.served", orjson.dumps(rec), key=rec["id"].encode())
    producer.send(f"{topic_name}.served", b"not json")  # skipped, as any foreign record
    half = len(clicks) // 2
    for rec in clicks[:half]:
        producer.send(f"{topic_name}.labels", orjson.dumps(rec), key=rec["id"].encode())
    for i in range(half, len(clicks), 7):  # the rest in envelopes, as the join takes them too
        producer.send(f"{topic_name}.labels", orjson.dumps({"events": clicks[i:i + 7]}))
    producer.flush()
    producer.close()

    assert main(["delays", "--bootstrap", bootstrap, "--predictions", f"{topic_name}.served",
                 "--labels", f"{topic_name}.labels", "--window-ms", str(WINDOW_MS),
                 "--idle-s", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["read"] == {"predictions": len(served), "labels": len(clicks)}

    # the same, recomputed here: the first click within the window, else 0
    first = {}
    for c in sorted(clicks, key=lambda c: c["ts"]):
        first.setdefault(c["id"], c)
    for version in (1, 2, 3):
        mine = [r for r in served if r["version"] == version]
        losses = []
        for r in mine:
            c = first.get(r["id"])
            clicked = c is not None and 0 <= c["ts"] - r["at_ms"] <= WINDOW_MS
            losses.append(-math.log(r["probabilities"][1 if clicked else 0]))
        got = report["by_version"][str(version)]
        assert got["events"] == len(mine)
        assert got["log_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    delays = sorted(first[r["id"]]["ts"] - r["at_ms"] for r in served
                    if r["id"] in first and first[r["id"]]["ts"] - r["at_ms"] <= WINDOW_MS)
    assert report["delay_ms"]["joined"] == len(delays)
    assert report["delay_ms"]["p50"] == delays[math.ceil(0.5 * len(delays)) - 1]
    late = sum(first[i]["ts"] - r["at_ms"] > WINDOW_MS for r in served if (i := r["id"]) in first)
    assert report["positives_after_window"] == pytest.approx(late / len(first))

    # --keep last: the window's last click, as the job's join.keep = "last" joins
    assert main(["delays", "--bootstrap", bootstrap, "--predictions", f"{topic_name}.served",
                 "--labels", f"{topic_name}.labels", "--window-ms", str(WINDOW_MS),
                 "--idle-s", "2", "--keep", "last", "--json"]) == 0
    last = json.loads(capsys.readouterr().out)
    want = delay_report(served, clicks, window_ms=WINDOW_MS, keep="last")
    assert last["delay_ms"] == want["delay_ms"] != report["delay_ms"]
    for version, m in want["by_version"].items():  # summed in another order: to rounding
        got = last["by_version"][str(version)]
        assert got["events"] == m["events"]
        assert got["log_loss"] == pytest.approx(m["log_loss"], rel=1e-12)
        assert got["log_loss"] != pytest.approx(report["by_version"][str(version)]["log_loss"])

    # bounded: at most --limit records of each topic are read (and held)
    assert main(["delays", "--bootstrap", bootstrap, "--predictions", f"{topic_name}.served",
                 "--labels", f"{topic_name}.labels", "--window-ms", str(WINDOW_MS),
                 "--idle-s", "2", "--limit", "500", "--json"]) == 0
    read = json.loads(capsys.readouterr().out)["read"]
    assert read["predictions"] == 500 and 500 <= read["labels"] <= 7 * 500


@pytest.mark.parametrize(("flag", "value"), [("--default", "zero"), ("--limit", "0"),
                                            ("--window-ms", "-1")])
def test_delays_refuses_a_bad_flag_before_reading_anything(flag, value, capsys) -> None:
    argv = ["delays", "--predictions", "p", "--labels", "l", "--window-ms", "5",
            "--bootstrap", "127.0.0.1:1", flag, value]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert f"`{flag}`" in err and err.count("\n") == 1
