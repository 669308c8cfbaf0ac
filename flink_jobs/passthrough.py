"""The smallest real job: Kafka topic A → a Python operator → Kafka topic B.

Each JSON record gets a ``"seen_by"`` field naming the job and its ``value``
doubled, proving the record crossed a Python operator. Runs in the local
MiniCluster::

    python flink_jobs/passthrough.py --bootstrap 127.0.0.1:9092 --source a --sink b

and unchanged on a standalone cluster::

    streamlearn flink start
    streamlearn flink submit flink_jobs/passthrough.py -- --source a --sink b --bounded
"""

from __future__ import annotations

import argparse
import json
import sys

from connectors.flink_kafka import kafka_sink, kafka_source, stream_env


def transform(raw: str) -> str:
    """Mark a record as having passed through the job."""
    record = json.loads(raw)
    record["seen_by"] = "passthrough"
    if isinstance(record.get("value"), int | float):
        record["value"] = record["value"] * 2
    return json.dumps(record, separators=(",", ":"))


def build(args: argparse.Namespace):
    from pyflink.common import Types, WatermarkStrategy

    env = stream_env(parallelism=args.parallelism)
    source = kafka_source(
        args.bootstrap, args.source, args.group, start="earliest", bounded=args.bounded
    )
    stream = env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-source")
    stream.map(transform, output_type=Types.STRING()).name("transform").sink_to(
        kafka_sink(args.bootstrap, args.sink)
    ).name("kafka-sink")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--source", required=True, help="topic to read")
    parser.add_argument("--sink", required=True, help="topic to write")
    parser.add_argument("--group", default="streamlearn-passthrough")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument(
        "--bounded", action="store_true", help="stop at the end offsets seen at start"
    )
    args = parser.parse_args(argv)
    build(args).execute("streamlearn-passthrough")
    return 0


if __name__ == "__main__":
    sys.exit(main())
