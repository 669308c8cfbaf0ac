"""``streamlearn topics create|list|describe``: Kafka topics."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]

EPILOG = """\
examples:
  streamlearn topics create events --partitions 4     also creates events.dlq and events.models
  streamlearn topics list

Topics created here carry explicit size limits (max.message.bytes): 8 MiB, the
producers' largest request; 1 MiB for dead-letter topics (<topic>.dlq). An
existing topic is left as it is.
  streamlearn topics describe events --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "topics",
        help="create, list or describe Kafka topics",
        description="Manage the Kafka topics streamlearn reads and writes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("create", "list", "describe"))
    parser.add_argument("topic", nargs="?", help="topic name (create, describe)")
    parser.add_argument("--partitions", type=int, default=4, help="with create (default 4)")
    parser.add_argument(
        "--only", action="store_true", help="with create: not the .dlq and .models companions"
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="broker (host:port)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from connectors.kafka_io import create_topics, describe_topic, list_topics, topic_config
    from streamlearn.errors import ConfigError

    if args.action == "list":
        names = list_topics(args.bootstrap)
        print(json.dumps(names) if args.json else "\n".join(names))
        return 0
    if not args.topic:
        raise ConfigError("topic", f"a topic name for `topics {args.action}`", None)
    if args.action == "create":
        wanted = {args.topic: args.partitions}
        if not args.only:
            wanted.update({f"{args.topic}.dlq": 1, f"{args.topic}.models": 1})
        created = create_topics(args.bootstrap, wanted)
        for name in wanted:
            if name in created:
                limit = topic_config(name)["max.message.bytes"]
                print(f"created  {name}  ({wanted[name]} partition(s), "
                      f"max.message.bytes {limit})")
            else:
                print(f"exists   {name}  (left as it is)")
        return 0
    info = describe_topic(args.bootstrap, args.topic)
    if args.json:
        print(
            json.dumps(
                {
                    "topic": info.name,
                    "partitions": info.partitions,
                    "end_offsets": info.end_offsets,
                    "messages": info.messages,
                }
            )
        )
    else:
        print(f"{info.name}: {info.partitions} partition(s), {info.messages} message(s)")
        for p, end in sorted(info.end_offsets.items()):
            print(f"  partition {p}: end offset {end}")
    return 0
