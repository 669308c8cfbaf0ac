"""``streamlearn serve``: the live prediction service."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlearn.serving.store_source import StoreSource

__all__ = ["register", "run"]

DESCRIPTION = """\
Serve predictions over HTTP from the newest version of a model in the store.

The server watches the store and swaps to each new version (or to a pinned or
rolled-back one) within a fraction of a second, loading it off the request
path; every request is answered entirely by one version, which it names.
"""

EPILOG = """\
examples:
  streamlearn serve                        model `default` of ./.streamlearn/models
  streamlearn serve --store ./.streamlearn/models --model ctr
  streamlearn serve --store s3://bucket/models --model ctr --port 9000
  STREAMLEARN_TOKEN=s3cret streamlearn serve --store ./models --model ctr

routes:
  POST /v1/predict[?version=N]   one event, {"events": [...]}, or an Arrow IPC stream
  GET  /v1/models                versions with lineage
  GET  /v1/models/current        the version serving now
  GET  /healthz  /readyz  /metrics  /openapi.json
  KServe Open Inference Protocol v2: /v2/health/live|ready, /v2/models/NAME[/ready|/infer]
  TF Serving: POST /v1/models/NAME:predict

Until the model has a version the server answers 503 (with Retry-After) and
says which models the store holds.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve predictions over HTTP, hot-swapping new model versions",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from streamlearn.store.location import DEFAULT_STORE
    from streamlearn.store.model_store import DEFAULT_MODEL

    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="URI",
        help="model store URI or path (default: %(default)s)",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME", help="model name in the store"
        " (default: %(default)s)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--token",
        default=os.environ.get("STREAMLEARN_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on the API (default: $STREAMLEARN_TOKEN)",
    )
    parser.add_argument(
        "--poll-ms",
        type=int,
        default=20,
        help="how often to check the store for a new version, ms (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=8.0,
        help="largest request body accepted, MiB (default: %(default)s)",
    )
    parser.add_argument(
        "--max-events",
        type=int,
        default=10_000,
        help="most events in one request (default: %(default)s)",
    )
    parser.add_argument(
        "--header-timeout-s",
        type=float,
        default=5.0,
        help="seconds a client has from a request's first byte to the end of its headers;"
        " then 408 and the connection is closed (default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout-s",
        type=float,
        default=30.0,
        help="seconds a client has from the end of the headers to the end of the body"
        " (default: %(default)s)",
    )
    parser.add_argument(
        "--log-topic",
        metavar="TOPIC",
        help="log what is predicted for events with an `id` (its features, version and"
        " score) to this Kafka topic, keyed by the id, for joining labels that arrive"
        " later; off the request path: what cannot be logged is counted in /metrics"
        " (default: no log)",
    )
    parser.add_argument(
        "--log-bootstrap",
        default="127.0.0.1:9092",
        metavar="HOST:PORT",
        help="the Kafka broker of --log-topic (default: %(default)s)",
    )
    parser.add_argument(
        "--log-queue",
        type=int,
        default=100_000,
        metavar="N",
        help="records --log-topic holds while the broker is slow or away; more are"
        " dropped and counted (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamlearn.errors import ConfigError
    from streamlearn.serving import build_app, run_server
    from streamlearn.serving.store_source import StoreSource

    if not 1 <= args.poll_ms <= 200:
        raise ConfigError("--poll-ms", "milliseconds in 1..200", repr(args.poll_ms))
    if not args.max_body_mb > 0:
        raise ConfigError("--max-body-mb", "a positive number of MiB", repr(args.max_body_mb))
    for flag, value in (
        ("--header-timeout-s", args.header_timeout_s),
        ("--body-timeout-s", args.body_timeout_s),
    ):
        if not 0 < value <= 3600:
            raise ConfigError(flag, "seconds in (0, 3600]", repr(value))
    if not 1 <= args.log_queue <= 10_000_000:
        raise ConfigError("--log-queue", "records in 1..10000000", repr(args.log_queue))
    if args.log_topic is not None and not args.log_topic.strip():
        raise ConfigError("--log-topic", "a Kafka topic name", repr(args.log_topic))
    source = StoreSource(args.store, args.model)
    _say_if_missing(source, args.store)
    prediction_log = None
    if args.log_topic:
        from connectors.prediction_log import KafkaLog

        prediction_log = KafkaLog(args.log_bootstrap, args.log_topic, capacity=args.log_queue)
    app = build_app(
        source,
        token=args.token or None,
        poll_interval_s=args.poll_ms / 1000,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_events=args.max_events,
        prediction_log=prediction_log,
    )
    level = "info" if getattr(args, "verbose", False) else "warning"
    run_server(
        app,
        host=args.host,
        port=args.port,
        log_level=level,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
    )
    return 0


def _say_if_missing(source: StoreSource, store: str) -> None:
    """One line on stderr when the model has no version yet, naming the models
    the store holds (the server starts anyway and answers 503 until one comes)."""
    import sys

    from streamlearn.serving.watcher import not_serving_message

    try:
        if source.serving_version() is not None:
            return
        models = source.models()
    except Exception:  # the store unreadable: the server reports it in /readyz
        return
    if source.name in models:
        return
    message = not_serving_message(source.name, models)
    print(
        f"streamlearn serve: in store {store}: {message}; answering 503 until it has one",
        file=sys.stderr,
        flush=True,
    )
