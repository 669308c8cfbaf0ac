"""The training job's flags, shared by ``flink_jobs/train.py`` and ``streamlearn train``."""

from __future__ import annotations

import argparse
import json
import tomllib
from typing import Any

from streamlearn.errors import ConfigError
from streamlearn.training.config import SCHEMA, TrainConfig, apply_overrides

__all__ = [
    "job_arg_parser", "add_job_args", "config_from_args", "parse_set", "parse_flink_conf"
]


def add_job_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a TOML job file (see `streamlearn train --help`)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. --set job.parallelism=4 (repeatable; TOML values)",
    )
    parser.add_argument("--bootstrap", help="shortcut for --set kafka.bootstrap=...")
    parser.add_argument("--topic", help="shortcut for --set kafka.topic=...")
    parser.add_argument("--store", help="shortcut for --set store.uri=...")
    parser.add_argument("--model", help="shortcut for --set store.model=...")
    parser.add_argument("--parallelism", type=int, help="shortcut for --set job.parallelism=N")
    parser.add_argument(
        "--bounded", action="store_true", help="stop at the end offsets seen at start"
    )
    parser.add_argument(
        "--flink-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Flink setting for the job, as it is (repeatable), e.g. "
        "--flink-conf metrics.reporter.prom.port=9249; same as a [flink] key of the config",
    )
    parser.add_argument(
        "--resume",
        default="auto",
        help="auto (the latest checkpoint of this model, if any, on this disk or S3), none, "
        "or a checkpoint directory (a path or an s3:// URI)",
    )


def job_arg_parser(description: str) -> argparse.ArgumentParser:
    """The job file's flags: those of ``streamlearn train``, and ``--config-json``."""
    parser = argparse.ArgumentParser(description=description)
    add_job_args(parser)
    parser.add_argument(
        "--config-json",
        metavar="JSON",
        help="the whole configuration, validated, as TrainConfig.to_dict() writes it (what "
        "`streamlearn train` passes the job: read once, not rebuilt from flags); no other "
        "configuration flag with it",
    )
    return parser


def parse_set(item: str) -> tuple[str, Any]:
    """``job.parallelism=4`` → ``("job.parallelism", 4)``; values are TOML (strings may be bare)."""
    key, sep, raw = item.partition("=")
    section, _, name = key.strip().partition(".")
    flink = section == "flink" and bool(name)  # any Flink setting: checked by TrainConfig
    if not sep or not flink and (section not in SCHEMA or name not in SCHEMA[section]):
        known = ", ".join(f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys)
        known += ", flink.<any Flink setting>"
        raise ConfigError("--set", f"SECTION.KEY=VALUE with a key among {known}", repr(item))
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def parse_flink_conf(item: str) -> tuple[str, str]:
    """``--flink-conf metrics.reporter.prom.port=9249`` → ``("flink.metrics...", "9249")``.

    >>> parse_flink_conf("taskmanager.memory.process.size=2g")
    ('flink.taskmanager.memory.process.size', '2g')
    """
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--flink-conf", "KEY=VALUE (a Flink setting)", repr(item))
    return f"flink.{key.strip()}", value.strip()


#: The flags that stand for one key each (``--topic X`` is ``--set kafka.topic=X``).
_SHORTCUTS = {
    "bootstrap": "kafka.bootstrap",
    "topic": "kafka.topic",
    "store": "store.uri",
    "model": "store.model",
    "parallelism": "job.parallelism",
}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if getattr(args, "config_json", None) is not None:
        return _from_json(args)
    overrides: dict[str, Any] = dict(parse_set(s) for s in args.set)
    overrides.update(parse_flink_conf(s) for s in getattr(args, "flink_conf", None) or [])
    for flag, key in _SHORTCUTS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "bounded", False):
        overrides["job.bounded"] = True
    if args.config:
        return TrainConfig.from_toml(args.config, overrides)
    return TrainConfig.from_dict(apply_overrides({}, overrides))


def _from_json(args: argparse.Namespace) -> TrainConfig:
    """``--config-json``: the whole configuration, refused beside any other of its flags."""
    given = {
        "config": args.config,
        **{flag: getattr(args, flag, None) for flag in _SHORTCUTS},
        "set": args.set or None,
        "flink-conf": getattr(args, "flink_conf", None) or None,
        "bounded": getattr(args, "bounded", False) or None,
    }
    others = [flag for flag, value in given.items() if value is not None]
    if others:
        raise ConfigError("--config-json", "the whole configuration, alone", f"also --{others[0]}")
    try:
        data = json.loads(args.config_json)
    except json.JSONDecodeError as exc:
        raise ConfigError("--config-json", "a JSON object", str(exc)) from exc
    return TrainConfig.from_dict(data)
