"""``streamlearn models``: list, inspect, pin, roll back and prune model versions."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

__all__ = ["register", "run"]

DESCRIPTION = """\
Inspect and manage the versions of a model in a model store.

A store is a directory, s3://bucket/prefix (options such as
?endpoint_override=HOST:PORT&scheme=http&region=R, credentials from the AWS_*
variables) or hdfs://...; it holds several named models.
"""

EPILOG = """\
examples:
  streamlearn models list                              versions of model `default`
  streamlearn models list --store s3://ml/models --model ctr --limit 50
  streamlearn models show 12 --model ctr               lineage of version 12
  streamlearn models pin 12 --model ctr                serve version 12 until unpin
  streamlearn models unpin --model ctr                 serve the latest again
  streamlearn models rollback 9 --model ctr            new version equal to version 9
  streamlearn models prune --keep-last 20 --model ctr  delete older versions' files
  streamlearn models names                             the models in the store
  streamlearn models writer --model ctr                who holds the model's writer lease
  streamlearn models unlock --model ctr                break the lease of a dead writer
Add --json to any of them for machine-readable output.
"""


def _common(p: argparse.ArgumentParser) -> None:
    from streamlearn.store.location import DEFAULT_STORE
    from streamlearn.store.model_store import DEFAULT_MODEL

    p.add_argument(
        "--store", default=DEFAULT_STORE, help=f"store URI or directory (default {DEFAULT_STORE})"
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, show, pin, roll back and prune model versions",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="versions with lineage summary")
    _common(p)
    p.add_argument("--limit", type=_positive, default=20, help="newest N versions (default 20)")
    p.add_argument("--all", action="store_true", help="every version, pruned ones included")

    p = actions.add_parser("show", help="one version in full (default: the current one)")
    _common(p)
    p.add_argument("version", type=_positive, nargs="?")

    p = actions.add_parser("pin", help="serve this version until unpin")
    _common(p)
    p.add_argument("version", type=_positive)

    p = actions.add_parser("unpin", help="serve the latest version again")
    _common(p)

    p = actions.add_parser("rollback", help="commit a new version equal to an older one")
    _common(p)
    p.add_argument("to", type=_positive, metavar="VERSION")

    p = actions.add_parser("prune", help="delete all but the newest versions' files")
    _common(p)
    p.add_argument("--keep-last", type=_positive, required=True, help="how many newest to keep")
    p.add_argument(
        "--no-keep-pinned", action="store_true", help="delete the pinned version too (unpins)"
    )
    p.add_argument(
        "--grace-s", type=float, default=0.0, help="keep versions superseded less than S ago"
    )

    p = actions.add_parser("names", help="the models in the store")
    _common(p)

    p = actions.add_parser("writer", help="who holds the model's writer lease (one trainer)")
    _common(p)

    p = actions.add_parser(
        "unlock",
        help="break the writer lease of a writer that died (a live one is fenced out)",
    )
    _common(p)

    parser.set_defaults(run=run)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _status(info: Any) -> str:
    flags = []
    if info.current:
        flags.append("current")
    if info.pinned:
        flags.append("pinned")
    if info.kind == "fenced":
        flags.append("discarded")  # its writer had been fenced out: never served
    elif info.available is False:
        flags.append("pruned")
    return ",".join(flags) or "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _metric(value: float, digits: int) -> str:
    """A lineage metric: a count (``rejected``, the join's ``join.*``) whole, else to
    ``digits`` significant digits.

    >>> _metric(141411.0, 4), _metric(0.38214, 4)
    ('141411', '0.3821')
    """
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _row(info: Any) -> list[str]:
    lin = info.lineage
    metrics = " ".join(f"{k}={_metric(v, 4)}" for k, v in sorted(lin.metrics.items())) or "-"
    kind = f"rollback→{info.rollback_of}" if info.kind == "rollback" else info.kind
    return [
        str(info.version),
        kind,
        _when(lin.created_at),
        str(lin.events),
        ",".join(map(str, lin.parents)) or "-",
        str(len(lin.learners)),
        _size(info.size_bytes),
        metrics,
        _status(info),
    ]


HEADER = [
    "VERSION",
    "KIND",
    "CREATED (UTC)",
    "EVENTS",
    "PARENTS",
    "LEARNERS",
    "SIZE",
    "METRICS",
    "STATUS",
]


def _show(info: Any) -> str:
    lin = info.lineage
    lines = [
        f"model       {info.model}",
        f"version     {info.version}  ({_status(info)})",
        f"kind        {info.kind}"
        + (f" of version {info.rollback_of}" if info.rollback_of else ""),
        f"created     {_when(lin.created_at)} UTC",
        f"events      {lin.events}",
        f"parents     {', '.join(map(str, lin.parents)) or '-'}",
        f"learners    {', '.join(lin.learners) or '-'}",
        f"file        {info.file} ({_size(info.size_bytes)})",
        "writer      "
        + (f"{info.writer_id} (token {info.writer_token})" if info.writer_token else "-"),
    ]
    if lin.watermark_ms is not None:
        lines.append(f"watermark   {lin.watermark_ms} ms")
    lines.append(
        "metrics     "
        + (", ".join(f"{k}={_metric(v, 6)}" for k, v in sorted(lin.metrics.items())) or "-")
    )
    if not lin.offsets:
        lines.append("offsets     -")
    else:
        lines.append("offsets     (next offset to read, per topic[partition])")
    for topic, parts in sorted(lin.offsets.items()):
        for part, offset in sorted(parts.items()):
            lines.append(f"  {topic}[{part}] = {offset}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import orjson

    from streamlearn.store import ModelStore

    store = ModelStore(args.store, model=args.model)
    out = sys.stdout

    def emit_json(obj: Any) -> None:
        out.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")

    if args.action == "names":
        names = store.models()
        if args.json:
            emit_json(names)
        else:
            out.write(("\n".join(names) if names else f"no models in {store.root}") + "\n")
        return 0
    if args.action == "writer":
        writer = store.writer()
        if args.json:
            emit_json(None if writer is None else writer.to_dict())
        elif writer is None:
            out.write(f"model {args.model!r} has never had a writer lease\n")
        else:
            state = ("live" if writer.live() else writer.state if writer.state != "held"
                     else "expired")
            out.write(f"model {args.model!r}: {state} writer {writer.describe()}\n")
        return 0
    if args.action == "unlock":
        broken = store.unlock()
        if args.json:
            emit_json({"model": args.model, "broken": None if broken is None else broken.to_dict()})
        elif broken is None:
            out.write(f"model {args.model!r}: no live writer lease; a new writer may start\n")
        else:
            out.write(
                f"model {args.model!r}: broke the lease of {broken.describe()}; "
                "if that writer is alive, its next commit is refused\n"
            )
        return 0
    if args.action == "list":
        infos = store.list()
        shown = infos if args.all else [i for i in infos if i.available][-args.limit :]
        if args.json:
            emit_json([i.to_dict() for i in shown])
        elif not infos:
            out.write(f"model {args.model!r} has no versions in {store.root}\n")
        else:
            out.write(_table([_row(i) for i in shown], HEADER) + "\n")
            hidden = len(infos) - len(shown)
            if hidden:
                out.write(f"({hidden} older or pruned version(s) not shown; use --all)\n")
        return 0
    if args.action == "show":
        info = store.info(args.version)
        if args.json:
            emit_json(info.to_dict())
        else:
            out.write(_show(info) + "\n")
        return 0
    if args.action == "pin":
        store.pin(args.version)
        result = {"model": args.model, "pinned": args.version, "latest": store.latest()}
        text = f"model {args.model!r}: serving version {args.version} (latest is {store.latest()})"
    elif args.action == "unpin":
        store.unpin()
        result = {"model": args.model, "pinned": None, "latest": store.latest()}
        text = f"model {args.model!r}: unpinned, serving the latest version {store.latest()}"
    elif args.action == "rollback":
        version = store.rollback(args.to)
        head = store.head()
        result = {
            "model": args.model,
            "version": version,
            "rollback_of": args.to,
            "pinned": head.pinned,
        }
        text = f"model {args.model!r}: version {version} restores version {args.to}"
        if head.pinned is not None:
            text += f" (still pinned to {head.pinned}: run `streamlearn models unpin`)"
    else:  # prune
        deleted = store.retain(
            keep_last=args.keep_last, keep_pinned=not args.no_keep_pinned, grace_s=args.grace_s
        )
        result = {"model": args.model, "deleted": deleted}
        text = f"model {args.model!r}: deleted {len(deleted)} version(s)" + (
            f": {', '.join(map(str, deleted))}" if deleted else ""
        )
    if args.json:
        emit_json(result)
    else:
        out.write(text + "\n")
    return 0
