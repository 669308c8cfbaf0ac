"""A real single-node Apache Kafka broker (KRaft mode) on loopback.

The broker runs from the jars that ``jvm/pom.xml`` pins (``make jars``), as
one JVM that is both controller and broker. Its data, logs, generated
``server.properties`` and pid file live under ``.state/kafka/<port>/``.

>>> broker = LocalBroker(port=9092)          # doctest: +SKIP
>>> broker.start()  # formats storage on first start   # doctest: +SKIP
>>> broker.status().running                  # doctest: +SKIP
True
>>> broker.stop()                            # doctest: +SKIP

Starting a broker that is already running is harmless (it returns the
running one's status); a port taken by another process raises
:class:`~streamlearn.errors.PortInUse` naming the port.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from connectors.paths import kafka_classpath, state_dir
from connectors.ports import LOOPBACK, port_is_free
from streamlearn.errors import BrokerUnavailable, ConfigError, PortInUse, ServiceError

__all__ = ["LocalBroker", "BrokerStatus", "start_hint", "wait_for_broker"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
DEFAULT_HOST = LOOPBACK

#: Disk a local broker keeps per partition: the newest 256 MiB of its log, in
#: segments of 64 MiB (Kafka deletes whole closed segments, so a partition
#: holds at most RETENTION_BYTES + SEGMENT_BYTES).
RETENTION_BYTES = 256 * 1024 * 1024
SEGMENT_BYTES = 64 * 1024 * 1024

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``streamlearn kafka status`` reports."""

    running: bool
    port: int
    host: str = DEFAULT_HOST
    pid: int | None = None
    uptime_s: float | None = None
    state_dir: str = ""

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict:
        return {**asdict(self), "bootstrap": self.bootstrap}


def start_hint(bootstrap: str) -> str:
    """The command that starts a local broker at ``bootstrap`` (its port, when not
    the default), for messages; empty for a broker on another machine."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in (DEFAULT_HOST, "localhost", "") or not port.isdigit():
        return ""
    return "streamlearn kafka start" + ("" if int(port) == DEFAULT_PORT else f" --port {port}")


def wait_for_broker(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Block until a broker at ``bootstrap`` answers a metadata request.

    Raises :class:`BrokerUnavailable` naming the address when it does not.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        try:
            # a plain TCP probe first: the admin client logs every refused connection
            socket.create_connection((host, int(port)), timeout=1.0).close()
            # the client's own first contact waits 30 s by default whatever the request
            # timeout says (something that accepts connections but is no broker kept a
            # start waiting that long): both bounded by what is left of timeout_s
            bound_ms = max(500, min(3000, int((deadline - time.monotonic()) * 1000)))
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=bound_ms,
                bootstrap_timeout_ms=bound_ms,
            )
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.25)
    hint = start_hint(bootstrap)
    raise BrokerUnavailable(
        f"no broker answered at {bootstrap} within {timeout_s:.0f} s ({last})"
        + (f"; start one with `{hint}`" if hint else "")
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class LocalBroker:
    """One KRaft broker+controller JVM on ``host:port`` (controller on ``port+1``).

    Parameters
    ----------
    port
        The client listener port (default 9092). The controller listens on
        ``controller_port`` (default ``port + 1``).
    host
        The address to listen on and advertise; loopback unless told otherwise.
    directory
        Where data, logs and the pid file go (default ``.state/kafka/<port>``).
    heap
        The JVM heap (``-Xmx``), e.g. ``"512m"``.
    partitions
        Default partition count for auto-created topics.

    The environment's ``KAFKA_OPTS`` (extra JVM options, as Kafka's own scripts take
    them) is passed to the JVM after the options here.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        host: str = DEFAULT_HOST,
        directory: str | os.PathLike[str] | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        partitions: int = 1,
    ) -> None:
        if not 1 <= int(port) <= 65535:
            raise ConfigError("port", "an integer in 1..65535", port)
        self.port = int(port)
        self.host = host
        self.controller_port = int(controller_port or self.port + 1)
        if not 1 <= self.controller_port <= 65535 or self.controller_port == self.port:
            raise ConfigError(
                "controller_port", "a port in 1..65535 other than the client port", controller_port
            )
        self.dir = Path(directory) if directory else state_dir("kafka", str(self.port))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self.partitions = int(partitions)
        self._proc: subprocess.Popen | None = None

    # -- files -------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def _pidfile(self) -> Path:
        return self.dir / "broker.json"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def _write_config(self) -> Path:
        data = self.dir / "data"
        self.log_dir.mkdir(exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "message.max.bytes": str(16 * 1024 * 1024),
            # a local broker keeps a bounded disk: each partition's log is cut to
            # its newest RETENTION_BYTES (checked every minute) and a day at most
            "log.retention.bytes": str(RETENTION_BYTES),
            "log.segment.bytes": str(SEGMENT_BYTES),
            "log.retention.hours": "24",
            "log.retention.check.interval.ms": "60000",
        }
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(log_dir=self.log_dir))
        return path

    def _java(self) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            *shlex.split(os.environ.get("KAFKA_OPTS", "")),
            "-cp",
            kafka_classpath(),
        ]

    def _format_storage(self, config: Path) -> None:
        if (self.dir / "data" / "meta.properties").exists():
            return
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        log.info("formatting Kafka storage in %s (cluster id %s)", self.dir / "data", cid)
        proc = subprocess.run(
            [*self._java(), "kafka.tools.StorageTool", "format",
             f"--cluster-id={cid}", "--config", str(config)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ServiceError(
                f"formatting Kafka storage in {self.dir / 'data'} failed: "
                f"{(proc.stderr or proc.stdout).strip()[-500:]}"
            )

    # -- lifecycle ---------------------------------------------------------
    def _recorded(self) -> dict | None:
        try:
            rec = json.loads(self._pidfile.read_text())
        except (OSError, ValueError):
            return None
        pid = rec.get("pid")
        if isinstance(pid, int) and _pid_alive(pid) and "kafka.Kafka" in _cmdline(pid):
            return rec
        return None

    def status(self) -> BrokerStatus:
        """The truth about this broker: running or not, pid, port, uptime."""
        rec = self._recorded()
        if rec is None:
            return BrokerStatus(False, self.port, self.host, state_dir=str(self.dir))
        return BrokerStatus(
            True,
            self.port,
            self.host,
            pid=rec["pid"],
            uptime_s=round(time.time() - rec["started_at"], 1),
            state_dir=str(self.dir),
        )

    def start(self, timeout_s: float = 90.0) -> BrokerStatus:
        """Start the broker (formatting storage first if new) and wait until it answers.

        Already running: returns its status. Port taken by something else:
        raises :class:`PortInUse`.
        """
        current = self.status()
        if current.running:
            log.info("Kafka broker already running at %s (pid %s)", self.bootstrap, current.pid)
            return current
        for name, port in (("port", self.port), ("controller port", self.controller_port)):
            if not port_is_free(port, self.host):
                raise PortInUse(
                    f"{name} {port} on {self.host} is already in use by another process; "
                    f"stop it or choose another port (`streamlearn kafka start --port N`)"
                )
        config = self._write_config()
        self._format_storage(config)
        out = open(self.log_dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [*self._java(), "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        self._proc = proc  # keep the handle: dropping a running Popen warns, and we reap it
        self._pidfile.write_text(
            json.dumps({"pid": proc.pid, "port": self.port, "started_at": time.time()})
        )
        log.info("starting Kafka broker on %s (pid %d)", self.bootstrap, proc.pid)
        try:
            self._wait_started(proc, timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka broker ready on %s", self.bootstrap)
        return self.status()

    def _wait_started(self, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(
                    _tail(self.log_dir / name) for name in ("stdout.log", "server.log")
                )
                if "Address already in use" in tail:  # taken since the check in start()
                    raise PortInUse(
                        f"a port of the Kafka broker on {self.host} ({self.port} or "
                        f"{self.controller_port}) was taken by another process while it "
                        "started; choose another port (`streamlearn kafka start --port N`)"
                    )
                raise ServiceError(
                    f"the Kafka broker exited with code {proc.returncode} while starting; "
                    f"see {self.log_dir}: {tail.strip()[-800:]}"
                )
            try:
                wait_for_broker(self.bootstrap, timeout_s=2.0)
                break
            except BrokerUnavailable:
                continue
        else:
            raise BrokerUnavailable(
                f"the Kafka broker on {self.bootstrap} did not answer within {timeout_s:.0f} s; "
                f"see {self.log_dir}/server.log"
            )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns True when a running broker was stopped, False when none ran.
        """
        rec = self._recorded()
        if rec is None:
            self._pidfile.unlink(missing_ok=True)
            return False
        pid = rec["pid"]
        log.info("stopping Kafka broker on %s (pid %d)", self.bootstrap, pid)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if _pid_alive(pid):
            log.warning("Kafka broker pid %d ignored SIGTERM for %.0f s; killing it", pid,
                        timeout_s)
            _signal_group(pid, signal.SIGKILL)
            while _pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        self._pidfile.unlink(missing_ok=True)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        return True

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
