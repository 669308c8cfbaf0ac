"""A standalone Flink cluster started from the PyFlink distribution's own ``bin/``.

The PyFlink wheel is a whole Flink distribution. This module writes a
``config.yaml`` under ``.state/flink/conf`` (loopback addresses, the
project's Python for the workers, the Kafka connector on the classpath) and
runs ``bin/start-cluster.sh`` / ``bin/stop-cluster.sh`` with it; jobs are
submitted with ``bin/flink run -py``, exactly as on any other cluster.

>>> cluster = FlinkCluster(rest_port=8081)       # doctest: +SKIP
>>> cluster.start()                               # jobmanager + one taskmanager
>>> cluster.submit("flink_jobs/passthrough.py", ["--source", "a", "--sink", "b", "--bounded"])
>>> cluster.stop()
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from connectors.kafka_broker import port_is_free
from connectors.paths import flink_job_jars, state_dir
from streamlearn.errors import ConfigError, PortInUse, ServiceError

__all__ = ["FlinkCluster", "ClusterStatus", "pyflink_home"]

log = logging.getLogger(__name__)


def pyflink_home() -> Path:
    """The Flink distribution inside the installed PyFlink wheel (has ``bin/``, ``lib/``)."""
    import importlib.util

    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("PyFlink is not installed in this Python: run `make venv`")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ClusterStatus:
    running: bool
    rest_url: str
    taskmanagers: int = 0
    slots_total: int = 0
    slots_available: int = 0
    jobs_running: int = 0
    flink_version: str = ""
    uptime_s: float | None = None
    state_dir: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class FlinkCluster:
    """One jobmanager and one taskmanager on loopback.

    Parameters
    ----------
    rest_port
        The REST/web port (default 8081); the job manager RPC port is 6123
        unless ``rpc_port`` says otherwise.
    slots
        Task slots of the task manager.
    python
        The Python the workers run (default: this interpreter, the project venv).
    """

    def __init__(
        self,
        rest_port: int = 8081,
        rpc_port: int = 6123,
        slots: int = 2,
        taskmanager_memory: str = "1728m",
        jobmanager_memory: str = "1024m",
        python: str | None = None,
        host: str = "127.0.0.1",
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, port in (("rest_port", rest_port), ("rpc_port", rpc_port)):
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(name, "an integer in 1..65535", port)
        if not isinstance(slots, int) or slots < 1:
            raise ConfigError("slots", "an integer >= 1", slots)
        self.rest_port = rest_port
        self.rpc_port = rpc_port
        self.slots = slots
        self.tm_memory = taskmanager_memory
        self.jm_memory = jobmanager_memory
        self.python = python or sys.executable
        self.host = host
        self.dir = Path(directory) if directory else state_dir("flink", str(rest_port))
        self.home = pyflink_home()

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.rest_port}"

    # -- configuration ------------------------------------------------------
    def _conf_dir(self) -> Path:
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
            shutil.copyfile(self.home / "conf" / name, conf / name)
        (conf / "masters").write_text(f"{self.host}:{self.rest_port}\n")
        (conf / "workers").write_text("localhost\n")
        java_opts = _default_java_opts(self.home)
        checkpoints = (self.dir / "checkpoints").resolve().as_uri()
        conf_yaml = {
            "env": {"java": {"opts": {"all": java_opts}}, "log": {"dir": str(self.dir / "log")}},
            "jobmanager": {
                "bind-host": self.host,
                "rpc": {"address": self.host, "port": self.rpc_port},
                "memory": {"process": {"size": self.jm_memory}},
                "execution": {"failover-strategy": "region"},
            },
            "taskmanager": {
                "bind-host": self.host,
                "host": self.host,
                "numberOfTaskSlots": self.slots,
                "memory": {"process": {"size": self.tm_memory}},
            },
            "parallelism": {"default": 1},
            "rest": {"address": self.host, "bind-address": self.host, "port": self.rest_port},
            "python": {"executable": self.python, "client": {"executable": self.python}},
            "pipeline": {"jars": [jar.resolve().as_uri() for jar in flink_job_jars()]},
            "classloader": {"parent-first-patterns": {"additional": ["pemja."]}},
            "execution": {"checkpointing": {"dir": checkpoints}},
            "restart-strategy": {
                "type": "fixed-delay",
                "fixed-delay": {"attempts": 20, "delay": "2 s"},
            },
        }
        # JSON is valid YAML 1.2: no YAML writer needed, and no ambiguity in quoting.
        (conf / "config.yaml").write_text(json.dumps(conf_yaml, indent=2) + "\n")
        return conf

    def _lib_dir(self) -> Path:
        """The distribution's ``lib/`` plus ``opt/flink-python``, as links.

        With flink-python (and the pemja inside it) on the task managers' own
        classpath, loaded parent-first, every Python job in thread mode shares one
        embedded interpreter library. Shipped per job instead, a second job's
        copy fails to load the native library again (``loadedLibraryNames``).
        """
        lib = self.dir / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        wanted = [*sorted((self.home / "lib").glob("*.jar")),
                  *sorted((self.home / "opt").glob("flink-python-*.jar"))]
        for jar in wanted:
            link = lib / jar.name
            if not link.exists():
                link.symlink_to(jar)
        return lib

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLINK_CONF_DIR"] = str(self._conf_dir())
        env["FLINK_LIB_DIR"] = str(self._lib_dir())
        env["FLINK_LOG_DIR"] = str(self.dir / "log")
        env["FLINK_PID_DIR"] = str(self.dir / "pid")
        env["PYFLINK_CLIENT_EXECUTABLE"] = self.python
        # the scripts find java through JAVA_HOME or PATH; keep the venv first on PATH
        env["PATH"] = f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
        (self.dir / "log").mkdir(parents=True, exist_ok=True)
        (self.dir / "pid").mkdir(parents=True, exist_ok=True)
        return env

    def _script(self, name: str) -> list[str]:
        path = self.home / "bin" / name
        return ["bash", str(path)]

    # -- REST ----------------------------------------------------------------
    def _get(self, path: str, timeout_s: float = 2.0) -> dict:
        with urllib.request.urlopen(self.rest_url + path, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def status(self) -> ClusterStatus:
        """What the cluster's REST API says (or not running)."""
        try:
            overview = self._get("/overview")
        except (urllib.error.URLError, OSError, ValueError):
            return ClusterStatus(False, self.rest_url, state_dir=str(self.dir))
        started = None
        try:
            started = (self.dir / "started_at").read_text()
        except OSError:
            pass
        return ClusterStatus(
            True,
            self.rest_url,
            taskmanagers=overview.get("taskmanagers", 0),
            slots_total=overview.get("slots-total", 0),
            slots_available=overview.get("slots-available", 0),
            jobs_running=overview.get("jobs-running", 0),
            flink_version=overview.get("flink-version", ""),
            uptime_s=round(time.time() - float(started), 1) if started else None,
            state_dir=str(self.dir),
        )

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout_s: float = 90.0) -> ClusterStatus:
        """Start the jobmanager and taskmanager; wait until all slots registered."""
        current = self.status()
        if current.running:
            log.info("Flink cluster already running at %s", self.rest_url)
            return current
        for name, port in (("REST port", self.rest_port), ("RPC port", self.rpc_port)):
            if not port_is_free(port, self.host):
                raise PortInUse(
                    f"Flink {name} {port} on {self.host} is already in use by another process; "
                    "stop it or choose another port (`streamlearn flink start --port N`)"
                )
        env = self._env()
        log.info("starting Flink cluster at %s (conf %s)", self.rest_url, env["FLINK_CONF_DIR"])
        proc = subprocess.run(
            self._script("start-cluster.sh"), env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise ServiceError(f"start-cluster.sh failed: {(proc.stderr or proc.stdout)[-800:]}")
        (self.dir / "started_at").write_text(str(time.time()))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            if status.running and status.slots_total >= self.slots:
                log.info("Flink cluster ready: %d slots", status.slots_total)
                return status
            time.sleep(0.5)
        self.stop()
        raise ServiceError(
            f"the Flink cluster did not come up at {self.rest_url} within {timeout_s:.0f} s; "
            f"see the logs in {self.dir / 'log'}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the cluster's processes. Returns True when something was running."""
        was = self.status().running or any((self.dir / "pid").glob("*.pid"))
        env = self._env()
        subprocess.run(self._script("stop-cluster.sh"), env=env, capture_output=True, text=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._pids_alive():
            time.sleep(0.2)
        for pid in self._pids_alive():  # the scripts gave up: make sure
            log.warning("Flink process %d did not stop; killing it", pid)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for pidfile in (self.dir / "pid").glob("*.pid"):
            pidfile.unlink(missing_ok=True)
        (self.dir / "started_at").unlink(missing_ok=True)
        return was

    def _pids_alive(self) -> list[int]:
        alive = []
        for pidfile in (self.dir / "pid").glob("*.pid"):
            for line in pidfile.read_text().split():
                try:
                    pid = int(line)
                    os.kill(pid, 0)
                    alive.append(pid)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass
        return alive

    def taskmanager_pids(self) -> list[int]:
        """The task manager JVMs' pids (for crash tests)."""
        pids = []
        for pidfile in (self.dir / "pid").glob("*taskexecutor*.pid"):
            pids.extend(int(x) for x in pidfile.read_text().split() if x.isdigit())
        return pids

    def submit(
        self,
        job_file: str | os.PathLike[str],
        job_args: list[str] | None = None,
        detached: bool = False,
        parallelism: int | None = None,
        timeout_s: float | None = None,
    ) -> subprocess.CompletedProcess:
        """``flink run -py JOB_FILE [args]`` against this cluster.

        Attached (default) waits until the job ends; ``detached`` returns once
        submitted (the output holds the job id).
        """
        job = Path(job_file).resolve()
        if not job.is_file():
            raise ConfigError("job_file", "an existing Python job file", str(job_file))
        cmd = [*self._script("flink"), "run", "-m", self.address, "-py", str(job)]
        cmd += ["-pyexec", self.python, "-pyclientexec", self.python]
        if parallelism:
            cmd += ["-p", str(parallelism)]
        if detached:
            cmd.append("-d")
        cmd += list(job_args or [])
        log.info("submitting %s to %s", job.name, self.rest_url)
        proc = subprocess.run(
            cmd, env=self._env(), capture_output=True, text=True, timeout=timeout_s
        )
        if proc.returncode != 0:
            raise ServiceError(
                f"`flink run` of {job.name} failed with code {proc.returncode}: "
                f"{_failure_excerpt(proc.stdout + proc.stderr)}"
            )
        return proc

    def jobs(self) -> list[dict]:
        """Jobs the cluster knows: id, name, state."""
        overview = self._get("/jobs/overview")
        return [
            {"id": j["jid"], "name": j["name"], "state": j["state"]} for j in overview["jobs"]
        ]

    def __enter__(self) -> FlinkCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _failure_excerpt(output: str, limit: int = 3000) -> str:
    """The part of ``flink run`` output that explains a failure.

    The job's own Python traceback, and the root cause of a failed job, come
    before the client's Java stack trace, which says only that Python exited.
    """
    lines = [ln for ln in output.splitlines() if not ln.lstrip().startswith("at ")]
    keep = [
        ln for ln in lines
        if "Traceback" in ln or "Error" in ln or "Exception" in ln or ln.startswith("  File")
        or "Caused by" in ln
    ]
    text = "\n".join(keep) or "\n".join(lines)
    return text[-limit:]


def _default_java_opts(home: Path) -> str:
    """The distribution's own ``env.java.opts.all`` (module opens Flink needs on JDK 17)."""
    for line in (home / "conf" / "config.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("all:"):
            return stripped[len("all:") :].strip()
    return ""
