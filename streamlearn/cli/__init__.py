"""The one ``streamlearn`` command.

Each subcommand lives in its own module of this package (the demo in a
package of its own, :mod:`streamlearn.cli.demo`, beside its orchestrator) and
exposes ``register(subparsers)``, which adds its parser and sets ``run`` (a
function ``run(args) -> int``) as the parser default. Modules import their heavy
dependencies inside ``run`` so that ``streamlearn --help`` stays fast. Modules
not in :data:`COMMANDS` are the commands' helpers (:mod:`streamlearn.cli.train_foreground`).

The command line sits on top: it may import the library and ``connectors``;
the library never imports it (``docs/architecture.md``).

A command's flags go before or after its action (``flink stop --port 8281`` is
``flink --port 8281 stop``): each command's arguments are parsed intermixed, and
the flags all actions of a command share are the command's too.

Tests call :func:`main` with an argument list and read the exit code.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from streamlearn.errors import StreamlearnError

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order --help lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "kafka",
    "flink",
    "topics",
    "publish",
    "train",
    "jobs",
    "models",
    "serve",
    "predict",
    "score",
    "delays",
)

#: Loggers of the project itself: INFO by default; every other logger says
#: only warnings unless ``-v``.
OWN_LOGGERS: tuple[str, ...] = ("streamlearn", "connectors", "flink_jobs")

DESCRIPTION = """\
streamlearn: streaming online learning on Kafka and PyFlink.

Publish events to Kafka, train parallel learners in a Flink job that merges
them into versioned models, and serve predictions from the newest version.
"""

EPILOG = """\
examples:
  streamlearn demo                        the whole loop, end to end, in about two minutes
  streamlearn kafka start                 start a local Kafka broker on 127.0.0.1:9092
  streamlearn topics create events        the events topic (+ events.dlq, events.models)
  streamlearn publish --generator clicks --rate 10000
  streamlearn train --parallelism 2       the training job in the local Flink MiniCluster
  streamlearn models list                 versions in ./.streamlearn/models
  streamlearn serve                       predictions on 127.0.0.1:8000, hot-swapping versions
  streamlearn predict '{"features": {"country": "FR"}}'

Run `streamlearn COMMAND --help` for the flags of one command.
"""


class _Parser(argparse.ArgumentParser):
    """Reports a wrong flag in one line that says what to do (subcommands inherit it),
    and lets a command's flags come before or after its action (:class:`_Commands`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


class _Commands(argparse._SubParsersAction):
    """Parses the chosen command's arguments intermixed: flags and positionals in any
    order, so ``flink stop --port 8281`` and ``flink --port 8281 stop`` mean the same.

    Plain argparse fills an optional positional (``topics create [TOPIC]``) with
    nothing as soon as a flag follows the action, and leaves the positional after the
    flag unrecognised; intermixed parsing reads all flags first, then the positionals.
    A command with actions of its own (``models list``) is parsed plainly: its flags
    are also its parent's (:func:`_share_action_flags`), so they too go either side.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        name, arg_strings = values[0], values[1:]
        if self.dest is not argparse.SUPPRESS:
            setattr(namespace, self.dest, name)
        try:
            chosen = self._name_parser_map[name]
        except KeyError:
            choices = ", ".join(map(repr, self._name_parser_map))
            raise argparse.ArgumentError(
                self, f"invalid choice: {name!r} (choose from {choices})"
            ) from None
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER)
                     for a in chosen._get_positional_actions())
        parse = chosen.parse_known_args if nested else chosen.parse_known_intermixed_args
        sub_namespace, rest = parse(arg_strings, None)
        for key, value in vars(sub_namespace).items():
            setattr(namespace, key, value)
        if rest:
            vars(namespace).setdefault(argparse._UNRECOGNIZED_ARGS_ATTR, [])
            getattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR).extend(rest)


def _share_action_flags(command: argparse.ArgumentParser) -> None:
    """A flag every action of ``command`` has (``models list --store X``) is also
    accepted before the action (``models --store X list``).

    The command parser gets a copy that holds the default; the actions' own copies
    default to nothing (``SUPPRESS``), so one given after the action overrides one
    given before it, and one given nowhere keeps the default.
    """
    actions = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return
    parsers = list({id(p): p for p in actions[0]._name_parser_map.values()}.values())
    if not parsers:
        return

    def flags(p: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.Action]:
        return {tuple(a.option_strings): a for a in p._actions
                if a.option_strings and not isinstance(a, argparse._HelpAction)}

    shared = set(flags(parsers[0]))
    for p in parsers[1:]:
        shared &= set(flags(p))
    known = {s for a in command._actions for s in a.option_strings}
    for strings in sorted(shared):
        if known.intersection(strings):
            continue
        first = flags(parsers[0])[strings]
        hoisted = copy.copy(first)
        command._add_action(hoisted)
        for p in parsers:
            flags(p)[strings].default = argparse.SUPPRESS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamlearn",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="log at DEBUG level, and show the INFO lines of the libraries underneath",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}",
        help="print streamlearn's version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"streamlearn.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"streamlearn.cli.{name}":
                raise
            continue
        module.register(sub)
    for command in sub._name_parser_map.values():
        _share_action_flags(command)
    return parser


def _version() -> str:
    """The installed distribution's version (the one in pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamlearn")
    except PackageNotFoundError:  # pragma: no cover - running from a tree never installed
        return "unknown (not installed)"


def configure_logging(verbose: bool) -> None:
    """streamlearn's own loggers at INFO (DEBUG with ``-v``); the libraries
    underneath (kafka-python, uvicorn, ...) only say warnings unless ``-v``.

    Where logging is configured already (``main()`` called by a program that
    set up its own handlers, or by a test runner), it is left as it is.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except StreamlearnError as exc:
        print(f"streamlearn {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
