"""``streamlearn kafka start|stop|status``: the local single-node Kafka broker."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]

EPILOG = """\
examples:
  streamlearn kafka start                 broker on 127.0.0.1:9092, data in .state/kafka/9092
  streamlearn kafka start --port 19092    another port (controller on port+1)
  streamlearn kafka status --json         {"running": true, "pid": ..., "uptime_s": ...}
  streamlearn kafka stop --port 19092    flags go before or after the action

The broker is Apache Kafka in KRaft mode, from the jars pinned in jvm/pom.xml
(`make jars` fetches them from Maven Central). It listens on loopback only,
unless --host says otherwise. Storage is formatted on the first start.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "kafka",
        help="start, stop or inspect the local Kafka broker",
        description="Run a real single-node Apache Kafka broker (KRaft) on this machine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    parser.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--heap", default="512m", help="broker JVM heap (default 512m)")
    parser.add_argument("--json", action="store_true", help="print status as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from connectors.kafka_broker import LocalBroker, start_hint

    broker = LocalBroker(port=args.port, host=args.host, heap=args.heap)
    if args.action == "start":
        status = broker.start()
    elif args.action == "stop":
        stopped = broker.stop()
        status = broker.status()
        if not args.json:
            print(f"stopped broker on {broker.bootstrap}" if stopped else
                  f"no broker was running on {broker.bootstrap}")
            return 0
    else:
        status = broker.status()
    if args.json:
        print(json.dumps(status.to_json()))
    elif status.running:
        print(f"running  {status.bootstrap}  pid {status.pid}  uptime {status.uptime_s:.0f} s"
              f"  data {status.state_dir}")
    else:
        hint = start_hint(status.bootstrap) or (
            f"streamlearn kafka start --host {status.host} --port {status.port}")
        print(f"stopped  {status.bootstrap}  (start it with `{hint}`)")
    return 0 if status.running or args.action != "status" else 3
