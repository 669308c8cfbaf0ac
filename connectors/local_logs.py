"""Where local jobs log: a file per start under the state directory, bounded.

PyFlink's local gateway writes the MiniCluster's log (Flink's lines, and the
job's own Python logging in thread mode) into ``log/`` inside its install, the
venv, under one name for every job: each local job that starts rewrites it, so
the log of the run before a crash is gone once the job is started again, and two
local jobs at once share one file. :func:`route_minicluster_log`, called before a
local job's environment is made, sends it instead to
``<state>/logs/flink-<name>-<start>-python-<host>.log``, a file per start, rolled
at :data:`ROLL_MB` (one rolled file kept), with the newest :data:`KEEP_STARTS`
starts of each name kept (:func:`prune_starts`). A ``FLINK_LOG_DIR`` set by the
caller wins, as does a ``LOG4J_PROPERTIES``; a job submitted to a cluster (whose
client's JVM is the gateway, ``PYFLINK_GATEWAY_PORT``) logs where the cluster
does.

>>> import tempfile
>>> from pathlib import Path
>>> logs = Path(tempfile.mkdtemp())
>>> for start in ("20261201-100000-1", "20261202-100000-1", "20261203-100000-1"):
...     _ = (logs / f"flink-train-ctr-{start}-python-vm.log").write_text("...")
>>> _ = (logs / "flink-train-ctr-20261201-100000-1-python-vm.log.1").write_text("...")
>>> _ = (logs / "flink-train-ctr-v2-20261201-090000-7-python-vm.log").write_text("...")
>>> prune_starts(logs, "flink-train-ctr-", keep=2)  # a start's rolled file with it
['flink-train-ctr-20261201-100000-1-python-vm.log', \
'flink-train-ctr-20261201-100000-1-python-vm.log.1']
>>> sorted(p.name for p in logs.iterdir())  # model "ctr-v2" is another name
['flink-train-ctr-20261202-100000-1-python-vm.log', \
'flink-train-ctr-20261203-100000-1-python-vm.log', \
'flink-train-ctr-v2-20261201-090000-7-python-vm.log']
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["KEEP_STARTS", "ROLL_MB", "route_minicluster_log", "prune_starts", "start_stamp"]

#: the newest starts of each job name whose logs are kept
KEEP_STARTS = 5
#: a start's MiniCluster log rolls at this size; one rolled file is kept
ROLL_MB = 32

# Flink's own file layout (its log4j-cli.properties), rolled by size
_LOG4J = f"""\
# written by streamlearn (connectors/local_logs.py) for local jobs' MiniCluster logs
monitorInterval = 30
rootLogger.level = ${{env:ROOT_LOG_LEVEL:-INFO}}
rootLogger.appenderRef.file.ref = RollingFile
appender.file.name = RollingFile
appender.file.type = RollingFile
appender.file.append = true
appender.file.fileName = ${{sys:log.file}}
appender.file.filePattern = ${{sys:log.file}}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yyyy-MM-dd HH:mm:ss,SSS}} %-5p %-60c %x - %m%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = {ROLL_MB}MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 1
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
"""


def start_stamp() -> str:
    """A name for this start: its time and process id (two starts in one second differ)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def route_minicluster_log(
    name: str, environ: MutableMapping[str, str] | None = None, stamp: str | None = None
) -> Path | None:
    """Point the local MiniCluster this process is about to start at a log file of
    this start under ``<state>/logs`` (see the module's text); the directory, or
    ``None`` when the caller's ``FLINK_LOG_DIR`` or a cluster's gateway decides.
    ``environ``: where the settings go (this process's environment by default);
    ``stamp``: the start's name (:func:`start_stamp`'s now by default), for a caller
    whose other files of the same start carry it too."""
    from connectors.paths import state_dir

    env = os.environ if environ is None else environ
    if "FLINK_LOG_DIR" in env or "PYFLINK_GATEWAY_PORT" in env:
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]", "", name).strip("-.") or "job"  # a file name's part
    logs = state_dir("logs")
    prefix = f"flink-{name}-"
    prune_starts(logs, prefix, KEEP_STARTS - 1)  # room for this start's
    if "LOG4J_PROPERTIES" not in env:
        properties = logs / "log4j-local.properties"
        if not properties.is_file() or properties.read_text() != _LOG4J:
            # whole or not at all: another job's JVM may be reading it
            fd, tmp = tempfile.mkstemp(prefix=".log4j-", dir=logs)
            with os.fdopen(fd, "w") as out:
                out.write(_LOG4J)
            os.replace(tmp, properties)
        env["LOG4J_PROPERTIES"] = str(properties)
    env["FLINK_LOG_DIR"] = str(logs)
    env["FLINK_IDENT_STRING"] = f"{name}-{stamp or start_stamp()}"
    return logs


def prune_starts(logs: Path, prefix: str, keep: int) -> list[str]:
    """Delete the log files of all but the newest ``keep`` starts named ``prefix``
    then a start's stamp (:func:`start_stamp`; a start's rolled files with it); the
    names deleted, oldest first. Starts sort by their stamps, which are times."""
    named = re.compile(re.escape(prefix) + r"(\d{8}-\d{6}(?:-\d+)?)(?:-.*)?\.log(?:\.\d+)?")
    starts: dict[str, list[Path]] = {}
    for path in logs.glob(f"{prefix}*.log*"):
        match = named.fullmatch(path.name)
        if match:
            starts.setdefault(match.group(1), []).append(path)
    gone = []
    for start in sorted(starts)[: max(0, len(starts) - keep)]:
        for path in sorted(starts[start]):
            try:
                path.unlink()
            except FileNotFoundError:  # another start pruned it first
                continue
            gone.append(path.name)
    return gone
