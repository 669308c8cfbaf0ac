"""``streamlearn flink start|stop|status|submit``: a local standalone Flink cluster."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run", "parse_conf"]

EPILOG = """\
examples:
  streamlearn flink start                       jobmanager + taskmanager, web UI on 127.0.0.1:8081
  streamlearn flink --taskmanagers 2 start      two task managers (resource ids tm-0, tm-1)
  streamlearn flink start --port 8281 --rpc-port 6223   a second cluster beside the first
  streamlearn flink start --conf metrics.reporter.prom.port=9250-9260 \\
      --conf metrics.reporter.prom.factory.class=org.apache.flink.metrics.\\
prometheus.PrometheusReporterFactory     Prometheus metrics (docs/flink.md)
  streamlearn flink status
  streamlearn flink submit flink_jobs/passthrough.py -- --source a --sink b --bounded
  streamlearn flink stop --port 8281

The cluster is the Flink distribution inside the PyFlink wheel, started with its
own bin/jobmanager.sh and bin/taskmanager.sh; jobs go in with bin/flink run -py.
Options go before or after the action; the job's own arguments go after `--`.
Jobs submitted here run this project's Python (the .venv) on the workers, and
the Kafka connector jar is on the job classpath; `streamlearn train --cluster`
ships its own Python instead, so any cluster of this Flink version runs it.
The configuration (.state/flink/<port>/conf/config.yaml) is written when a
cluster starts and never while one runs: `start` on a running
cluster with other settings is refused (stop it first).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "flink",
        help="start, stop, inspect a local Flink cluster, or submit a job to it",
        description="Run a standalone Flink cluster from PyFlink's bin/ and submit jobs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("start", "stop", "status", "submit"))
    parser.add_argument("job", nargs="?", help="with submit: the Python job file")
    parser.add_argument(
        "job_args", nargs="*", metavar="-- JOB_ARG", help="with submit: the job's own arguments"
    )
    parser.add_argument("--port", type=int, default=8081, help="REST/web port (default 8081)")
    parser.add_argument(
        "--rpc-port", type=int, default=6123, help="jobmanager RPC port (default 6123)"
    )
    parser.add_argument(
        "--slots", type=int, default=2, help="task slots of each task manager (default 2)"
    )
    parser.add_argument(
        "--taskmanagers", type=int, default=1, help="with start: task managers (default 1)"
    )
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE",
        help="with start: a further Flink setting for config.yaml (repeatable), e.g. "
             "metrics.reporter.prom.port=9250-9260",
    )
    parser.add_argument("--detached", action="store_true", help="with submit: do not wait")
    parser.add_argument("--json", action="store_true", help="print status as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from connectors.flink_cluster import FlinkCluster
    from streamlearn.errors import ConfigError

    cluster = FlinkCluster(
        rest_port=args.port, rpc_port=args.rpc_port, slots=args.slots,
        taskmanagers=args.taskmanagers, settings=parse_conf(args.conf),
    )
    if args.action == "submit":
        if not args.job:
            raise ConfigError("job", "a job file, e.g. flink_jobs/train.py", None)
        proc = cluster.submit(args.job, args.job_args, detached=args.detached)
        print(proc.stdout.strip())
        return 0
    if args.action == "start":
        status = cluster.start()
    elif args.action == "stop":
        was = cluster.stop()
        print(f"stopped the Flink cluster on {cluster.address}" if was
              else f"no Flink cluster was running on {cluster.address}")
        return 0
    else:
        status = cluster.status()
    if args.json:
        print(json.dumps(status.to_json()))
    elif status.running:
        print(f"running  {status.rest_url}  Flink {status.flink_version}  "
              f"task managers {status.taskmanagers}  slots {status.slots_available}/"
              f"{status.slots_total} free  jobs running {status.jobs_running}")
    else:
        print(f"stopped  {status.rest_url}  (start it with `{cluster.start_command()}`)")
    return 0 if status.running else 3


def parse_conf(items: list[str]) -> dict[str, str]:
    """``--conf KEY=VALUE`` items as Flink settings (the value as written, a string)."""
    from streamlearn.errors import ConfigError

    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError("--conf", "KEY=VALUE, e.g. metrics.reporter.prom.port=9250",
                              repr(item))
        if key in _FLAG_OF:
            raise ConfigError("--conf", f"a key other than {key} (it is {_FLAG_OF[key]})",
                              repr(item))
        settings[key] = value
    return settings


#: Flink settings this command has flags for.
_FLAG_OF = {"rest.port": "--port", "jobmanager.rpc.port": "--rpc-port",
            "taskmanager.numberOfTaskSlots": "--slots"}
