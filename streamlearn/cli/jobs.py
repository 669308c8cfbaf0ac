"""``streamlearn jobs list|stop|cancel``: the jobs of a Flink cluster, through its REST API."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client is imported when a command runs, not at --help
    from connectors.flink_cluster import FlinkCluster

__all__ = ["register", "run"]

EPILOG = """\
examples:
  streamlearn jobs list                                  jobs of the cluster on 127.0.0.1:8081
  streamlearn jobs list --cluster flink-jm:8081 --json
  streamlearn jobs stop 3f2a...e1 --savepoint /data/savepoints
                                   a savepoint, then the job stops; prints the savepoint's path
  streamlearn train --cluster 127.0.0.1:8081 --from-savepoint /data/savepoints/savepoint-3f2a-...
                                   the training job again, from where the savepoint left it
  streamlearn jobs cancel 3f2a...e1                      stop now, no savepoint

stop takes a savepoint (Flink's stop-with-savepoint: the sources stop, every
operator's state is written to DIR, the job ends FINISHED); the directory is
the job manager's and task managers' (a path they all reach: a shared disk, S3).
A training job resumed from it learns every event once: the savepoint holds the
Kafka offsets and the merger's state. cancel ends a job at once; its last
retained checkpoint stays (streamlearn train resumes from it by itself).
A job is named by its id (`jobs list`) or by an unambiguous prefix of it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "jobs",
        help="list, stop (with a savepoint) or cancel the jobs of a Flink cluster",
        description="The jobs of a Flink cluster, through its REST API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("list", "stop", "cancel"))
    parser.add_argument("job", nargs="?", help="with stop and cancel: the job id (or a prefix)")
    parser.add_argument(
        "--cluster", default="127.0.0.1:8081", metavar="HOST:PORT",
        help="the cluster's REST address (default 127.0.0.1:8081)",
    )
    parser.add_argument(
        "--savepoint", metavar="DIR", help="with stop (required): where the savepoint goes"
    )
    parser.add_argument("--json", action="store_true", help="with list: one JSON object a line")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for stop or cancel (120)"
    )
    parser.set_defaults(run=run)


def cluster_of(address: str, flag: str = "--cluster") -> FlinkCluster:
    """A :class:`FlinkCluster` client for ``HOST:PORT`` (one-line error otherwise)."""
    from connectors.flink_cluster import FlinkCluster
    from streamlearn.errors import ConfigError

    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(flag, "HOST:PORT of the cluster's REST endpoint", address)
    return FlinkCluster(rest_port=int(port), host=host or "127.0.0.1")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    import urllib.error

    from streamlearn.errors import ConfigError, ServiceError

    cluster = cluster_of(args.cluster)
    if args.action != "list" and not args.job:
        raise ConfigError("job", f"a job id with {args.action} (see `streamlearn jobs list`)",
                          None)
    if args.action == "stop" and not args.savepoint:
        raise ConfigError("--savepoint", "a directory for the savepoint with stop", None)
    if args.action != "stop" and args.savepoint:
        raise ConfigError("--savepoint", "only with stop", args.savepoint)
    try:
        jobs = cluster.jobs()
    except (urllib.error.URLError, OSError, ValueError):
        raise ServiceError(cluster.not_running_message()) from None
    if args.action == "list":
        for job in sorted(jobs, key=lambda j: -j["start_ms"]):
            if args.json:
                print(json.dumps(job))
            else:
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["start_ms"] / 1e3))
                print(f"{job['id']}  {job['state']:<10} {started}  {job['name']}")
        return 0
    matches = [j for j in jobs if j["id"].startswith(args.job)]
    if len(matches) != 1:
        known = ", ".join(f"{j['id']} ({j['state']})" for j in jobs) or "none"
        raise ConfigError(
            "job", f"{'one' if not matches else 'an unambiguous'} job id of the cluster at "
            f"{cluster.address} (its jobs: {known})", args.job,
        )
    job = matches[0]
    if job["state"] not in ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"):
        raise ServiceError(f"job {job['id']} is {job['state']}: nothing to {args.action}")
    try:
        if args.action == "cancel":
            cluster.cancel(job["id"], timeout_s=args.timeout)
            print(f"cancelled job {job['id']}")
            return 0
        location = cluster.stop_with_savepoint(job["id"], args.savepoint, args.timeout)
    except urllib.error.HTTPError as exc:
        raise ServiceError(
            f"the cluster at {cluster.address} refused to {args.action} job {job['id']}: "
            f"HTTP {exc.code} {exc.read()[:300].decode(errors='replace')}"
        ) from None
    print(location)
    return 0
