"""The scoring job: Kafka events → a predictions topic, with the newest model version.

Each event gets one JSON prediction record (its ``id`` and ``key``, the source
partition and offset, the prediction and the version that made it); bad events
go to the dead-letter topic (``<source>.dlq`` unless ``--dlq`` says otherwise)
as bounded records with the reason (``docs/events.md``). Every parallel instance
follows the model store and swaps to each new version (pin, else latest) without
stopping. All of the per-message work is :class:`streamlearn.serving.stream_scoring.Scorer`;
this file only wires it into Flink.

In the local MiniCluster::

    python flink_jobs/score.py --bootstrap 127.0.0.1:9092 --source events \\
        --sink predictions --store ./.streamlearn/models --model ctr

On a standalone cluster (or through ``streamlearn score --cluster HOST:PORT``)::

    streamlearn flink submit flink_jobs/score.py -- --source events --sink predictions \\
        --store ./.streamlearn/models --model ctr
"""

from __future__ import annotations

import argparse
import sys

from connectors.flink_kafka import (
    START_POSITIONS,
    check_dead_letter_topic,
    dead_letter_sink,
    kafka_sink,
    kafka_source,
    record_with_offsets_type,
    stream_env,
)

JOB_NAME = "streamlearn-score"


def _score_function(args: argparse.Namespace, dead_letters):
    from pyflink.datastream import ProcessFunction

    class ScoreMessages(ProcessFunction):
        """One Kafka row in; its prediction records out, bad events to the side output."""

        def __init__(self) -> None:
            self.scorer = None

        def open(self, runtime_context) -> None:
            from streamlearn.serving.stream_scoring import Scorer

            self.scorer = Scorer.from_store(
                args.store, args.model, topic=args.source, wait_s=args.wait_s,
                interval_s=args.poll_s,
            )
            self.scorer.start()

        def close(self) -> None:
            if self.scorer is not None:
                self.scorer.close()

        def process_element(self, row, ctx):
            out = self.scorer.score(row[4], partition=row[0], offset=row[1], key=row[3])
            yield from out.predictions
            for record in out.dead:
                yield dead_letters, record

    return ScoreMessages()


def _source(args: argparse.Namespace):
    """Kafka rows ``(partition, offset, timestamp, key, value)`` of the source topic."""
    return kafka_source(
        args.bootstrap, args.source, args.group, start=args.start, bounded=args.bounded,
        with_offsets=True,
    )


def build(args: argparse.Namespace):
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream import OutputTag

    check_dead_letter_topic(args.bootstrap, args.dlq)
    env = stream_env(
        parallelism=args.parallelism,
        checkpoint_ms=args.checkpoint_ms,
        config={"python.execution-mode": args.execution_mode},
        log_name=f"score-{args.model}",
    )
    rows = env.from_source(
        _source(args), WatermarkStrategy.no_watermarks(), "kafka-events",
        type_info=record_with_offsets_type(),
    ).name("kafka-events")
    dead_letters = OutputTag("dead-letters", Types.STRING())
    scored = rows.process(_score_function(args, dead_letters), output_type=Types.STRING()).name(
        "score"
    )
    exactly_once = bool(args.checkpoint_ms) and args.exactly_once
    scored.sink_to(
        kafka_sink(args.bootstrap, args.sink, exactly_once, f"{JOB_NAME}-{args.sink}")
    ).name("kafka-predictions")
    scored.get_side_output(dead_letters).sink_to(
        dead_letter_sink(args.bootstrap, args.dlq, exactly_once, f"{JOB_NAME}-{args.dlq}")
    ).name("kafka-dead-letters")
    return env


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--source", required=True, help="topic of events to score")
    p.add_argument("--sink", required=True, help="topic the prediction records go to")
    p.add_argument("--dlq", default=None, help="dead-letter topic (default <source>.dlq)")
    p.add_argument("--store", required=True, help="model store URI or directory")
    p.add_argument("--model", required=True, help="the model's name in the store")
    p.add_argument("--group", default=JOB_NAME, help=f"Kafka consumer group (default {JOB_NAME})")
    p.add_argument("--start", choices=START_POSITIONS, default="earliest",
                   help="where to start reading without a checkpoint (default earliest)")
    p.add_argument("--bounded", action="store_true",
                   help="stop at the end offsets seen at start (backfills, tests)")
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--checkpoint-ms", type=int, default=None,
                   help="checkpoint interval; with --exactly-once, Kafka transactions")
    p.add_argument("--exactly-once", action="store_true",
                   help="transactional sinks committed on checkpoints (needs --checkpoint-ms)")
    p.add_argument("--wait-s", type=float, default=120.0,
                   help="how long to wait for a first model version (default 120)")
    p.add_argument("--poll-s", type=float, default=0.05,
                   help="seconds between two looks at the store's head (default 0.05)")
    p.add_argument("--execution-mode", choices=("thread", "process"), default="thread",
                   help="PyFlink's python.execution-mode (default thread)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dlq is None:
        args.dlq = f"{args.source}.dlq"
    build(args).execute(JOB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
