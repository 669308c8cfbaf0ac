"""Start what the demo needs and is not running; stop exactly what was started.

:class:`Services` reuses a Kafka broker that already answers on the demo's
port (or the ``--bootstrap`` one) and otherwise starts a local one; it always
starts its own training job and prediction server, as child processes in
their own process groups, with their output in the report's ``logs/``.
:meth:`Services.stop` stops them in reverse order, also after a failure or
Ctrl-C, and deletes the run's topics from a broker it did not start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streamlearn.cli.demo.config import FLUSH_MS, DemoConfig
from streamlearn.errors import PortInUse, ServiceError

if TYPE_CHECKING:
    from connectors.kafka_broker import LocalBroker

__all__ = ["Services"]

log = logging.getLogger(__name__)

# `streamlearn ARGS` with this interpreter, wherever the console script is installed
_CLI = "import sys; from streamlearn.cli import main; sys.exit(main(sys.argv[1:]))"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Services:
    """The broker, topics, training job and prediction server of one demo run.

    Parameters
    ----------
    cfg
        The demo's settings.
    topic
        The run's events topic (``<topic>.dlq`` and ``<topic>.models`` go with it).
    model
        The run's model name in the store.
    work_dir
        Where the run's model store and checkpoints live.
    log_dir
        Where the job's and the server's output go.
    """

    def __init__(
        self, cfg: DemoConfig, topic: str, model: str, work_dir: Path, log_dir: Path
    ) -> None:
        self.cfg = cfg
        self.topic = topic
        self.model = model
        self.store_uri = str(work_dir / "models")
        self.checkpoints = str(work_dir / "checkpoints")
        self.log_dir = log_dir
        self.bootstrap = cfg.bootstrap or f"127.0.0.1:{cfg.kafka_port}"
        self.server_url = f"http://127.0.0.1:{cfg.serve_port}"
        self.started: list[str] = []  # what this run started, in order
        self.topics: list[str] = []
        self._broker: LocalBroker | None = None
        self._job: subprocess.Popen | None = None
        self._server: subprocess.Popen | None = None

    # -- broker and topics ------------------------------------------------------
    def ensure_broker(self) -> str:
        """Use the broker that answers, or start a local one; returns the bootstrap address."""
        from connectors.kafka_broker import LocalBroker, wait_for_broker
        from connectors.kafka_io import check_reachable
        from connectors.ports import port_is_free

        if self.cfg.bootstrap:
            check_reachable(self.bootstrap)  # one line naming the address when nothing answers
            return self.bootstrap
        broker = LocalBroker(port=self.cfg.kafka_port)
        if broker.status().running:
            log.info("using the running Kafka broker at %s", self.bootstrap)
            return self.bootstrap
        if not port_is_free(self.cfg.kafka_port):
            try:
                wait_for_broker(self.bootstrap, timeout_s=5.0)
            except ServiceError:
                raise PortInUse(
                    f"port {self.cfg.kafka_port} is taken by something that is not a Kafka "
                    "broker; stop it, or pass --kafka-port N (or --bootstrap HOST:PORT)"
                ) from None
            log.info("using the Kafka broker already listening at %s", self.bootstrap)
            return self.bootstrap
        broker.start()
        self._broker = broker
        self.started.append("broker")
        return self.bootstrap

    def create_topics(self, more: Mapping[str, int] | None = None) -> None:
        """The run's events topic (one partition per learner), its DLQ and models topics,
        and ``more`` (name: partitions); all deleted at the end from a reused broker.

        The events topic stamps records with the broker's append time, which the
        producer's acknowledgement then reports: the ``t0`` of freshness.
        """
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        from connectors.kafka_io import create_topics

        names = {self.topic: self.cfg.parallelism, f"{self.topic}.dlq": 1,
                 f"{self.topic}.models": 1, **(more or {})}
        create_topics(self.bootstrap, names)
        self.topics = list(names)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, self.topic,
                configs={"message.timestamp.type": "LogAppendTime"},
            )])
        finally:
            admin.close()

    # -- prediction server ---------------------------------------------------------
    def start_server(self, timeout_s: float = 60.0, log_topic: str | None = None) -> str:
        """Start ``streamlearn serve`` on the run's store (logging what it serves to
        ``log_topic``, when given); returns its URL once it answers."""
        import httpx

        from connectors.ports import port_is_free

        if not port_is_free(self.cfg.serve_port):
            raise PortInUse(
                f"port {self.cfg.serve_port} is taken (another prediction server?); "
                "stop it, or pass --serve-port N"
            )
        cmd = [sys.executable, "-c", _CLI, "serve", "--store", self.store_uri,
               "--model", self.model, "--host", "127.0.0.1", "--port", str(self.cfg.serve_port)]
        if log_topic:
            cmd += ["--log-topic", log_topic, "--log-bootstrap", self.bootstrap]
        self._server = self._spawn("prediction server", cmd, self.log_dir / "server.log")
        self.started.append("server")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_child(self._server, "prediction server", "server.log")
            try:
                if httpx.get(f"{self.server_url}/healthz", timeout=1.0).status_code == 200:
                    return self.server_url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServiceError(
            f"the prediction server did not answer at {self.server_url} within "
            f"{timeout_s:.0f} s; see {self.log_dir / 'server.log'}"
        )

    # -- training job ------------------------------------------------------------------
    def start_job(self, settings: Sequence[str] = ()) -> None:
        """Start the training job (local Flink MiniCluster) as a child process; each of
        ``settings`` (``section.key=JSON``) is passed as a ``--set``."""
        from connectors.paths import flink_job_jars, project_root

        flink_job_jars()  # fails now, with what to do, when the jars are missing
        job = project_root() / "flink_jobs" / "train.py"
        cmd = [
            sys.executable, str(job),
            "--bootstrap", self.bootstrap, "--topic", self.topic,
            "--store", self.store_uri, "--model", self.model,
            "--parallelism", str(self.cfg.parallelism),
            "--set", f"job.flush_ms={min(FLUSH_MS, self.cfg.sync_ms)}",
            "--set", f"job.sync_ms={self.cfg.sync_ms}",
            "--set", f"job.checkpoint_dir={json.dumps(self.checkpoints)}",
            "--set", f"features.bits={self.cfg.bits}",
            "--resume", "none",
        ]
        for setting in settings:
            cmd += ["--set", setting]
        self._job = self._spawn("training job", cmd, self.log_dir / "job.log", cwd=project_root())
        self.started.append("job")

    def check_alive(self) -> None:
        """Raise :class:`ServiceError` naming the log when the job or the server died."""
        self._check_child(self._job, "training job", "job.log")
        self._check_child(self._server, "prediction server", "server.log")

    # -- stopping -----------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop what this run started (job, server, broker), newest first; returns their names."""
        stopped: list[str] = []
        for name, proc in (("job", self._job), ("server", self._server)):
            if proc is not None and _terminate(proc):
                stopped.append(name)
        self._job = self._server = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
            stopped.append("broker")
        elif self.topics:
            self._delete_topics()
        self.topics = []
        return stopped

    def _delete_topics(self) -> None:
        from connectors.kafka_io import delete_topics

        try:
            delete_topics(self.bootstrap, self.topics)
        except Exception as exc:  # the broker may be gone; nothing else to undo
            log.warning("could not delete the demo topics %s: %s", self.topics, exc)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- children ----------------------------------------------------------------------
    def _spawn(
        self, what: str, cmd: list[str], log_path: Path, cwd: Path | None = None
    ) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=cwd, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        log.info("started the %s (pid %d), output in %s", what, proc.pid, log_path)
        return proc

    def _check_child(self, proc: subprocess.Popen | None, what: str, log_name: str) -> None:
        if proc is not None and proc.poll() is not None:
            path = self.log_dir / log_name
            raise ServiceError(
                f"the {what} exited with code {proc.returncode}: {_tail(path, 2)} "
                f"(full output in {path})"
            )


def _terminate(proc: subprocess.Popen, timeout_s: float = 15.0) -> bool:
    """Stop a child and its process group: SIGTERM, then SIGKILL. True if it was running."""
    if proc.poll() is not None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the group may hold grandchildren (the JVM of a Flink job) that outlive the leader
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True
