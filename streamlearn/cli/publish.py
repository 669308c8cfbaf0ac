"""``streamlearn publish``: events to Kafka from a file, stdin or a built-in generator."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import time
from collections.abc import Iterator
from typing import IO

__all__ = ["register", "run", "read_jsonl", "read_csv"]

EPILOG = """\
examples:
  streamlearn publish --generator clicks --count 100000 --rate 10000
  streamlearn publish --generator clicks --drift-at 50000 --envelope      # fast path
  streamlearn publish --file events.jsonl --topic events
  streamlearn publish --generator sea --topic sea --create-topic --partitions 2
  cat events.jsonl | streamlearn publish --file -
  streamlearn publish --csv data.csv --label clicked --key user_id
  streamlearn publish --generator sea --count 100000

JSONL lines are events ({"key", "features", "label", "ts", "id", "weight"}) or envelopes
({"events": [...]}). CSV: --label names the label column, --key the key column,
every other column is a feature (numbers become numbers, the rest categories);
--features a,b,c keeps only those. A progress bar shows events/s; a summary
ends the run. Bad events are refused before sending with --validate.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "publish",
        help="publish events to Kafka (file, stdin, CSV or a generator)",
        description="Publish events to a Kafka topic, one per message or in envelopes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="a JSONL file of events or envelopes ('-' for stdin)")
    src.add_argument("--csv", help="a CSV file with a header row")
    src.add_argument(
        "--generator", choices=("clicks", "sea", "hyperplane"), help="a built-in seeded stream"
    )
    parser.add_argument(
        "--topic", default="events", help="target topic, which must exist (default events)"
    )
    parser.add_argument(
        "--create-topic",
        action="store_true",
        help="create the topic if it does not exist (else a missing topic is refused)",
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="with --create-topic: partitions (default 4)"
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="broker (host:port)")
    parser.add_argument("--count", type=int, help="stop after N events")
    parser.add_argument(
        "--rate", type=float, help="events per second (default: as fast as possible)"
    )
    parser.add_argument("--envelope", action="store_true", help="group events into envelopes")
    parser.add_argument("--envelope-size", type=int, default=500, help="events per envelope")
    parser.add_argument("--validate", action="store_true", help="check events before sending")
    parser.add_argument(
        "--task",
        default="binary",
        choices=("binary", "multiclass", "regression"),
        help="with --validate: what a valid label is",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--drift-at", type=int, help="clicks generator: change the concept here")
    parser.add_argument("--label", help="CSV: the label column")
    parser.add_argument("--key", help="CSV: the key column")
    parser.add_argument(
        "--features", help="CSV: comma-separated feature columns (default: the rest)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def read_jsonl(stream: IO[str]) -> Iterator[dict]:
    """Events from JSON lines; an envelope line yields its events."""
    import orjson

    from streamlearn.errors import EventError

    for lineno, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EventError(
                "line", "a JSON object", f"bad JSON ({exc})", f"line {lineno}"
            ) from None
        if isinstance(doc, dict) and isinstance(doc.get("events"), list):
            yield from doc["events"]
        else:
            yield doc


def _cell(text: str) -> object:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def read_csv(
    stream: IO[str], label: str | None, key: str | None, features: list[str] | None
) -> Iterator[dict]:
    """Events from CSV rows: one column the label, one the key, the others features."""
    from streamlearn.errors import ConfigError

    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    for name, flag in (
        (label, "--label"),
        (key, "--key"),
        *((f, "--features") for f in features or []),
    ):
        if name is not None and name not in header:
            raise ConfigError(flag, f"a column of the CSV header ({', '.join(header)})", repr(name))
    cols = features or [c for c in header if c not in (label, key)]
    for i, row in enumerate(reader):
        event: dict = {"features": {c: _cell(row[c]) for c in cols if row[c] != ""}, "id": f"r{i}"}
        if label is not None:
            event["label"] = _cell(row[label])
        if key is not None:
            event["key"] = row[key]
        yield event


def _source(args: argparse.Namespace, files: contextlib.ExitStack) -> Iterator[dict]:
    from streamlearn.generators import make_stream

    if args.generator:
        return make_stream(args.generator, args.count, seed=args.seed, drift_at=args.drift_at)
    if args.csv:
        feats = args.features.split(",") if args.features else None
        return read_csv(
            files.enter_context(open(args.csv, newline="")), args.label, args.key, feats
        )
    if args.file == "-":
        return read_jsonl(sys.stdin)
    return read_jsonl(files.enter_context(open(args.file)))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streamlearn.errors import ConfigError
    from streamlearn.publish import Publisher

    if args.count is not None and args.count < 1:
        raise ConfigError("--count", "an integer >= 1", args.count)
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate", "a number > 0 (events per second)", args.rate)
    for flag, path in (("--file", args.file), ("--csv", args.csv)):
        if path and path != "-" and not os.path.isfile(path):
            raise ConfigError(flag, "an existing file", repr(path))
    files = contextlib.ExitStack()
    events = _source(args, files)
    start = time.monotonic()
    with (
        files,
        Publisher(
            args.bootstrap,
            args.topic,
            create_topic=args.create_topic,
            partitions=args.partitions,
            envelope=args.envelope,
            envelope_size=args.envelope_size,
            validate=args.validate,
            task=args.task,
        ) as pub,
    ):
        bar = tqdm(
            total=args.count,
            unit="ev",
            disable=args.quiet,
            unit_scale=True,
            desc=f"publish → {args.topic}",
            file=sys.stderr,
        )
        for n, event in enumerate(events, 1):
            if args.count is not None and n > args.count:
                break
            pub.publish(event)
            if n % 500 == 0:
                bar.update(500)
                if args.rate:
                    ahead = n / args.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        bar.update(pub.events - bar.n)
        bar.close()
    elapsed = time.monotonic() - start
    print(
        f"published {pub.events} events in {pub.messages} messages to {args.topic} "
        f"in {elapsed:.1f} s ({pub.events / max(elapsed, 1e-9):,.0f} events/s); "
        f"{pub.delivered} messages delivered"
    )
    return 0
