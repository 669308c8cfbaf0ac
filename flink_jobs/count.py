"""The bare reference job: read a topic with the training job's source, count, discard.

::

    KafkaSource (partition, offset, timestamp, key, value)   the same source as train.py
      → Count (a Python flat_map that adds one and emits nothing)
      → print (receives nothing)

It measures what a PyFlink job pays to move Kafka records into Python and
nothing else, so ``bench/e2e.py`` can report the training job as a share of
it. With ``--report-dir`` each subtask writes its count to a file there when
its input ends; with ``--bounded`` the job stops once the topic is drained,
and prints one JSON line with the job's net runtime (``JobExecutionResult``)::

    python flink_jobs/count.py --bootstrap 127.0.0.1:9092 --topic events --bounded \\
        [--parallelism 2] [--execution-mode process] [--report-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import FlatMapFunction, RuntimeContext

from connectors.flink_kafka import kafka_source, record_with_offsets_type, stream_env


class Count(FlatMapFunction):
    """Count records; emit none; when the input ends, write the count and the wall-clock
    times of the first and last record to a file in ``report_dir``.

    (A file, because the Python workers' stdout/stderr do not reach the job's
    console in thread mode.)
    """

    def __init__(self, report_dir: str = "") -> None:
        self.report_dir = report_dir

    def open(self, ctx: RuntimeContext) -> None:
        self.records = 0
        self.first = self.last = 0.0

    def flat_map(self, value):
        self.last = time.time()
        if not self.records:
            self.first = self.last
        self.records += 1
        return ()

    def close(self) -> None:
        if self.report_dir:
            path = Path(self.report_dir) / f"count-{uuid.uuid4().hex}.txt"
            path.write_text(f"{self.records} {self.first} {self.last}\n")


def build(args: argparse.Namespace):
    """Wire source → count → print for ``args``; returns the execution environment."""
    env = stream_env(
        parallelism=args.parallelism,
        config={"python.execution-mode": args.execution_mode},
    )
    source = kafka_source(
        args.bootstrap, args.topic, args.group, start="earliest", bounded=args.bounded,
        with_offsets=True,
    )
    rows = env.from_source(
        source, WatermarkStrategy.no_watermarks(), "kafka-source",
        type_info=record_with_offsets_type(),
    )
    rows.flat_map(Count(args.report_dir or ""), output_type=Types.INT()).name("count").print()
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True, help="topic to read")
    parser.add_argument("--group", default="streamlearn-count")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--execution-mode", choices=("thread", "process"), default="thread")
    parser.add_argument("--report-dir", help="each subtask writes its count to a file here")
    parser.add_argument(
        "--bounded", action="store_true", help="stop at the end offsets seen at start"
    )
    args = parser.parse_args(argv)
    result = build(args).execute("streamlearn-count")
    print(json.dumps({"job": "count", "net_runtime_ms": result.get_net_runtime()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
