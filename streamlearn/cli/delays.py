"""``streamlearn delays``: delay-aware quality of what was served, from Kafka topics."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["read_topic", "register", "run"]

EPILOG = """\
examples:
  streamlearn delays --predictions clicks.served --labels clicks.feedback --window-ms 60000
  streamlearn delays --predictions clicks.served --labels clicks.feedback --json

Reads both topics from their beginning until neither has a new record for --idle-s
seconds: the prediction log's records (`streamlearn serve --log-topic`: id, version,
probabilities, at_ms) and the labels ({"id", "label", "ts"}). Each prediction is scored
against the label the join's rules give it (the first label within --window-ms of it,
else --default), per model version: the log-loss of what was served, not of what the
model would answer now. Also: the delays of the labels that joined (p50, p99) and the
share of positive labels that arrived after their window. See docs/joining.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "delays",
        help="delay-aware quality of served predictions (prediction log + labels topics)",
        description="Score the logged predictions against the labels that arrived for them, "
        "per model version.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--predictions", required=True,
                        help="the prediction log's topic (serve --log-topic)")
    parser.add_argument("--labels", required=True, help="the labels' topic")
    parser.add_argument("--window-ms", type=int, required=True,
                        help="a label counts if at most this long after its prediction")
    parser.add_argument("--default", default="0",
                        help="the label of a prediction none came for, as JSON (default 0); "
                        "'none': not scored")
    parser.add_argument("--positive", default="1",
                        help="the positive class, as JSON (default 1)")
    parser.add_argument("--keep", choices=("first", "last"), default="first",
                        help="of several labels in a window, the one a prediction gets, as "
                        "the training job's join.keep (default first)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="broker (host:port)")
    parser.add_argument("--idle-s", type=float, default=3.0,
                        help="stop reading a topic after this long without a record (default 3)")
    parser.add_argument("--limit", type=int, default=1_000_000,
                        help="read at most this many records of each topic, the first ones "
                        "(default 1,000,000: the report holds them in memory)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def _json_flag(name: str, text: str) -> Any:
    from streamlearn.errors import ConfigError

    if text == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(name, "a JSON value (0, 1, \"buy\") or none", repr(text)) from None


def read_topic(bootstrap: str, topic: str, idle_s: float, what: tuple[str, ...],
               limit: int) -> list[dict]:
    """The JSON objects of ``topic`` (committed records, at most ``limit``; the events
    of an envelope ``{"events": [...]}`` each) with an ``id`` and every field of
    ``what``; others are skipped."""
    import orjson

    from connectors.kafka_io import consume

    out = []
    for record in consume(bootstrap, topic, idle_timeout_s=idle_s, read_committed=True,
                          max_records=limit):
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        items = value.get("events") if isinstance(value, dict) and "id" not in value else None
        for item in items if isinstance(items, list) else [value]:
            if isinstance(item, dict) and "id" in item and all(k in item for k in what):
                out.append(item)
    return out


def run(args: argparse.Namespace) -> int:
    from streamlearn.errors import ConfigError
    from streamlearn.joining import delay_report

    if args.window_ms < 0:
        raise ConfigError("--window-ms", "an integer number of milliseconds >= 0", args.window_ms)
    if args.limit < 1:
        raise ConfigError("--limit", "an integer >= 1", args.limit)
    default = _json_flag("--default", args.default)
    positive = _json_flag("--positive", args.positive)
    predictions = read_topic(args.bootstrap, args.predictions, args.idle_s,
                        ("version", "probabilities"), args.limit)
    labels = read_topic(args.bootstrap, args.labels, args.idle_s, ("label", "ts"), args.limit)
    predictions = [p for p in predictions if "ts" in p or "at_ms" in p]
    report = delay_report(predictions, labels, window_ms=args.window_ms, default=default,
                          positive=positive, keep=args.keep)
    report["read"] = {"predictions": len(predictions), "labels": len(labels)}
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(f"{len(predictions):,} predictions, {len(labels):,} labels "
          f"(window {args.window_ms} ms)")
    print(f"{'version':>8} {'scored':>10} {'log-loss':>10}")
    for version, m in report["by_version"].items():
        print(f"{version!s:>8} {m['events']:>10,} {m['log_loss']:>10.5f}")
    delay = report["delay_ms"]
    print(f"label delays: p50 {delay['p50']} ms, p99 {delay['p99']} ms "
          f"({delay['joined']:,} joined)")
    after = report["positives_after_window"]
    print("positives after the window: " + ("none seen" if after is None else f"{after:.2%}"))
    print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in report["counts"].items()))
    return 0
