"""``streamlearn score``: run the Kafka→Kafka scoring job, locally or on a Flink cluster."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

__all__ = ["register", "run", "job_arguments", "JOB_FILE"]

#: The job file this command runs (``flink_jobs/score.py`` of the checkout).
JOB_FILE = Path(__file__).resolve().parents[2] / "flink_jobs" / "score.py"

DESCRIPTION = """\
Score a topic of events with the newest model version and write one JSON
prediction record per event to another topic; bad events go to the
dead-letter topic (<source>.dlq unless --dlq says otherwise). The job follows
the store and swaps to each new version (the pinned one, else the latest)
while it runs.
"""

EPILOG = """\
examples:
  streamlearn score --source events --sink predictions --model ctr
        run in a local Flink MiniCluster until interrupted
  streamlearn score --source events --sink predictions --model ctr --bounded
        score what the topic holds now, then stop (a backfill)
  streamlearn score --source events --sink predictions --model ctr --cluster 127.0.0.1:8081 \\
        --detached --parallelism 2
        submit to a standalone cluster (`streamlearn flink start`) and return
  streamlearn score --source events --sink predictions --store s3://ml/models --model ctr \\
        --checkpoint-ms 5000 --exactly-once
        transactional output: each event's record committed exactly once

A prediction record: {"id", "key", "partition", "offset", "index", "version",
"prediction", and for a classifier "classes" and "probabilities"}; see
docs/scoring.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from streamlearn.store.location import DEFAULT_STORE
    from streamlearn.store.model_store import DEFAULT_MODEL

    p = sub.add_parser(
        "score",
        help="score a Kafka topic of events into a predictions topic (a Flink job)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bootstrap", default="127.0.0.1:9092",
                   help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--source", required=True, help="topic of events to score")
    p.add_argument("--sink", required=True, help="topic the prediction records go to")
    p.add_argument("--dlq", default=None, help="dead-letter topic (default <source>.dlq)")
    p.add_argument("--store", default=DEFAULT_STORE,
                   help=f"model store URI or directory (default {DEFAULT_STORE})")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"the model's name in the store (default {DEFAULT_MODEL})")
    p.add_argument("--group", default="streamlearn-score",
                   help="Kafka consumer group (default streamlearn-score)")
    p.add_argument("--start", choices=("earliest", "latest", "committed"), default="earliest",
                   help="where to start reading (default earliest)")
    p.add_argument("--bounded", action="store_true",
                   help="stop at the end offsets seen at start")
    p.add_argument("--parallelism", type=int, default=1, help="parallel scorers (default 1)")
    p.add_argument("--checkpoint-ms", type=int, default=None, help="checkpoint interval")
    p.add_argument("--exactly-once", action="store_true",
                   help="transactional output committed on checkpoints (needs --checkpoint-ms)")
    p.add_argument("--wait-s", type=float, default=120.0,
                   help="how long to wait for a first model version (default 120)")
    p.add_argument("--execution-mode", choices=("thread", "process"), default="thread",
                   help="PyFlink Python execution mode (default thread)")
    p.add_argument("--cluster", metavar="HOST:PORT", default=None,
                   help="submit to the Flink cluster whose REST API is at HOST:PORT")
    p.add_argument("--detached", action="store_true",
                   help="with --cluster: return once the job is submitted")
    p.set_defaults(run=run)


def _cluster_address(value: str) -> tuple[str, int]:
    from streamlearn.errors import ConfigError

    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError("--cluster", "HOST:PORT of a Flink REST API, e.g. 127.0.0.1:8081",
                          repr(value))
    return host, int(port)


def job_arguments(args: argparse.Namespace) -> list[str]:
    """Check the flags and turn them into ``flink_jobs/score.py``'s arguments.

    A local store directory is made absolute, so that workers started
    elsewhere (a cluster's task manager) find the same directory.
    """
    from streamlearn.errors import ConfigError

    for name in ("source", "sink", "model", "bootstrap", "group"):
        value = getattr(args, name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"--{name}", "a non-empty string", repr(value))
    if args.parallelism < 1:
        raise ConfigError("--parallelism", "an integer >= 1", args.parallelism)
    if args.checkpoint_ms is not None and args.checkpoint_ms < 100:
        raise ConfigError("--checkpoint-ms", "an interval of at least 100 ms", args.checkpoint_ms)
    if args.exactly_once and args.checkpoint_ms is None:
        raise ConfigError("--exactly-once", "--checkpoint-ms too (transactions commit on "
                          "checkpoints)", "no --checkpoint-ms")
    if args.wait_s < 0:
        raise ConfigError("--wait-s", "a number of seconds >= 0", args.wait_s)
    if args.detached and not args.cluster:
        raise ConfigError("--detached", "--cluster HOST:PORT too (a local run is attached)",
                          "no --cluster")
    if args.cluster:
        _cluster_address(args.cluster)
    if args.sink == args.source:
        raise ConfigError("--sink", "a topic other than --source", repr(args.sink))
    store = args.store if "://" in args.store else str(Path(args.store).resolve())
    out = ["--bootstrap", args.bootstrap, "--source", args.source, "--sink", args.sink,
           "--store", store, "--model", args.model, "--group", args.group,
           "--start", args.start, "--parallelism", str(args.parallelism),
           "--wait-s", str(args.wait_s), "--execution-mode", args.execution_mode]
    if args.dlq:
        out += ["--dlq", args.dlq]
    if args.bounded:
        out.append("--bounded")
    if args.checkpoint_ms is not None:
        out += ["--checkpoint-ms", str(args.checkpoint_ms)]
    if args.exactly_once:
        out.append("--exactly-once")
    return out


def run(args: argparse.Namespace) -> int:
    job_args = job_arguments(args)
    if args.cluster:
        from connectors.flink_cluster import FlinkCluster

        host, port = _cluster_address(args.cluster)
        cluster = FlinkCluster(rest_port=port, host=host)
        proc = cluster.submit(JOB_FILE, job_args, detached=args.detached,
                              parallelism=args.parallelism)
        print(proc.stdout.strip())
        return 0
    return subprocess.run([sys.executable, str(JOB_FILE), *job_args]).returncode
