"""``streamlearn predict``: ask a running prediction service."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register", "run"]

DESCRIPTION = """\
Send events to a running `streamlearn serve` and print its answer: the JSON
body of `POST /v1/predict`, exactly as the HTTP API returns it.

EVENT is one event ({"features": {...}}) or an envelope ({"events": [...]});
pass - (or nothing) to read it from standard input.
"""

EPILOG = """\
examples:
  streamlearn predict '{"features": {"age": 31, "country": "FR"}}'
  streamlearn predict --url http://127.0.0.1:9000 --version 12 '{"features": {"age": 31}}'
  cat events.json | streamlearn predict -
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="ask a running prediction service",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("event", nargs="?", default="-", metavar="EVENT", help="JSON event or -")
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="service URL (default: %(default)s)"
    )
    parser.add_argument("--version", type=int, default=None, help="ask this model version")
    parser.add_argument("--token", default=os.environ.get("STREAMLEARN_TOKEN"), help="bearer token")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from streamlearn.errors import ValidationError
    from streamlearn.serving import Client

    text = sys.stdin.read() if args.event == "-" else args.event
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(
            "EVENT", "a JSON event or envelope", f"unreadable JSON ({exc})"
        ) from None
    # sent as given, and the answer printed as the HTTP API gives it
    with Client(args.url, token=args.token, timeout=args.timeout) as client:
        answer = client.predict_raw(text.encode(), version=args.version)
    sys.stdout.write(answer.decode() + "\n")
    return 0
