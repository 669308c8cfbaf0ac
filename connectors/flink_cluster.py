"""A standalone Flink cluster started from the PyFlink distribution's own ``bin/``.

The PyFlink wheel is a whole Flink distribution. When it starts a cluster,
this module writes a ``config.yaml`` under ``.state/flink/<port>/conf``
(loopback addresses, the project's Python for the workers, the Kafka connector
on the classpath, and any further ``settings``) and runs ``bin/jobmanager.sh``
and ``bin/taskmanager.sh`` with it; jobs are submitted with ``bin/flink run
-py``, exactly as on any other cluster. A running cluster's ``config.yaml`` is
never written again: submitting reads it, and starting over a running cluster
with other settings is refused.

>>> cluster = FlinkCluster(rest_port=8081)       # doctest: +SKIP
>>> cluster.start()                               # doctest: +SKIP
>>> cluster.submit("flink_jobs/passthrough.py", ["--source", "a", "--sink", "b", "--bounded"])
... # doctest: +SKIP
>>> cluster.stop()                                # doctest: +SKIP

Every task manager gets a resource id of its own (``tm-0``, ``tm-1``, ...), the
one the REST API reports for it, so a test can find which task manager runs
which part of a job (:meth:`FlinkCluster.vertex_taskmanagers`), kill that one
(:meth:`FlinkCluster.kill_taskmanager`) and start a replacement
(:meth:`FlinkCluster.start_taskmanager`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from connectors.paths import flink_job_jars, pyflink_home, state_dir
from connectors.ports import LOOPBACK, port_is_free
from streamlearn.errors import ConfigError, PortInUse, ServiceError

__all__ = ["FlinkCluster", "ClusterStatus"]

log = logging.getLogger(__name__)

DEFAULT_REST_PORT = 8081
DEFAULT_RPC_PORT = 6123

#: Settings with a parameter (and a ``streamlearn flink`` flag) of their own.
_OWN_PARAMETER = {
    "rest.port": "rest_port (--port)",
    "jobmanager.rpc.port": "rpc_port (--rpc-port)",
    "taskmanager.numberOfTaskSlots": "slots (--slots)",
}


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
    """One jobmanager and ``taskmanagers`` task managers on loopback.

    Parameters
    ----------
    rest_port
        The REST/web port (default 8081); the job manager RPC port is 6123
        unless ``rpc_port`` says otherwise.
    slots
        Task slots of each task manager.
    python
        The Python the workers run when a job does not ship its own (default: this
        interpreter, the project venv); ``streamlearn train --cluster`` ships one
        (:mod:`connectors.python_env`), so the task managers need none.
    taskmanagers
        How many task managers :meth:`start` starts (more can join later).
    settings
        Further Flink settings for ``config.yaml``, flat keys (``heartbeat.timeout``,
        ``metrics.reporter.prom.port``); they override this class's defaults. They are
        written when the cluster starts, never while it runs: :meth:`start` on a running
        cluster whose settings differ is refused, naming the differences.
    flink_home
        The Flink distribution whose ``bin/``, ``lib/``, ``opt/`` and ``conf/`` the
        cluster runs (default: the one inside the installed PyFlink wheel).
    environment
        The environment the cluster's processes start with (default: this process's);
        the distribution's scripts need ``java`` on its ``PATH`` or ``JAVA_HOME``.
    workdir
        The working directory of the cluster's processes (default: this process's).
    """

    def __init__(
        self,
        rest_port: int = DEFAULT_REST_PORT,
        rpc_port: int = DEFAULT_RPC_PORT,
        slots: int = 2,
        taskmanager_memory: str = "1728m",
        jobmanager_memory: str = "1024m",
        python: str | None = None,
        host: str = LOOPBACK,
        directory: str | os.PathLike[str] | None = None,
        taskmanagers: int = 1,
        settings: Mapping[str, object] | None = None,
        flink_home: str | os.PathLike[str] | None = None,
        environment: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, port in (("rest_port", rest_port), ("rpc_port", rpc_port)):
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(name, "an integer in 1..65535", port)
        if not isinstance(slots, int) or slots < 1:
            raise ConfigError("slots", "an integer >= 1", slots)
        if not isinstance(taskmanagers, int) or taskmanagers < 1:
            raise ConfigError("taskmanagers", "an integer >= 1", taskmanagers)
        for key in settings or {}:
            if not isinstance(key, str) or "." not in key:
                raise ConfigError("settings", "flat Flink keys such as heartbeat.timeout", key)
            if key in _OWN_PARAMETER:
                raise ConfigError("settings", f"no {key} (set it with {_OWN_PARAMETER[key]})",
                                  key)
        self.taskmanager_count = taskmanagers
        self.settings = dict(settings or {})
        self.rest_port = rest_port
        self.rpc_port = rpc_port
        self.slots = slots
        self.tm_memory = taskmanager_memory
        self.jm_memory = jobmanager_memory
        self.python = python or sys.executable
        self.host = host
        self.dir = Path(directory) if directory else state_dir("flink", str(rest_port))
        self.home = Path(flink_home) if flink_home else pyflink_home()
        self.environment = dict(environment) if environment is not None else None
        self.workdir = Path(workdir) if workdir else None

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.rest_port}"

    # -- configuration ------------------------------------------------------
    def start_command(self) -> str:
        """The command that starts this cluster (the hint in messages)."""
        return "streamlearn flink start" + self._port_flags()

    def stop_command(self) -> str:
        return "streamlearn flink stop" + self._port_flags()

    def _port_flags(self) -> str:
        flags = "" if self.rest_port == DEFAULT_REST_PORT else f" --port {self.rest_port}"
        if self.rpc_port != DEFAULT_RPC_PORT:
            flags += f" --rpc-port {self.rpc_port}"
        return flags

    def config(self) -> dict[str, object]:
        """The ``config.yaml`` :meth:`start` writes, as flat Flink keys (``settings`` last,
        so they override the defaults here)."""
        checkpoints = (self.dir / "checkpoints").resolve().as_uri()
        conf: dict[str, object] = {
            "env.java.opts.all": _default_java_opts(self.home),
            "env.log.dir": str(self.dir / "log"),
            "jobmanager.bind-host": self.host,
            "jobmanager.rpc.address": self.host,
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.memory.process.size": self.jm_memory,
            "jobmanager.execution.failover-strategy": "region",
            "taskmanager.bind-host": self.host,
            "taskmanager.host": self.host,
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": self.tm_memory,
            # the task managers' working directories (tm_<resource id>) inside the cluster's
            # own: under /tmp, two clusters on one host with the same ids shared them, and
            # the second one's task managers hung creating their blob caches
            "process.working-dir": str((self.dir / "work").resolve()),
            "parallelism.default": 1,
            "rest.address": self.host,
            "rest.bind-address": self.host,
            "rest.port": self.rest_port,
            "python.executable": self.python,
            "python.client.executable": self.python,
            "pipeline.jars": [jar.resolve().as_uri() for jar in flink_job_jars()],
            "classloader.parent-first-patterns.additional": ["pemja."],
            "execution.checkpointing.dir": checkpoints,
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 20,
            "restart-strategy.fixed-delay.delay": "2 s",
        }
        conf.update(self.settings)
        return conf

    def _write_conf(self, conf: Path) -> Path:
        """Write ``config.yaml`` and its companions into ``conf`` (only ever for a cluster
        that is not running, or for a client of one started elsewhere)."""
        conf.mkdir(parents=True, exist_ok=True)
        for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
            shutil.copyfile(self.home / "conf" / name, conf / name)
        (conf / "masters").write_text(f"{self.host}:{self.rest_port}\n")
        (conf / "workers").write_text("localhost\n")
        # JSON is valid YAML 1.2: no YAML writer needed, and no ambiguity in quoting.
        (conf / "config.yaml").write_text(json.dumps(self.config(), indent=2) + "\n")
        return conf

    @property
    def conf_dir(self) -> Path:
        """The cluster's configuration directory (``config.yaml``), written by :meth:`start`."""
        return self.dir / "conf"

    def _client_conf_dir(self) -> Path:
        """The configuration ``flink run`` reads: the cluster's own when it was started
        from this directory, read as it is; else (a cluster started elsewhere) a client
        copy beside it, so a submission never rewrites a running cluster's file."""
        if (self.conf_dir / "config.yaml").is_file():
            return self.conf_dir
        return self._write_conf(self.dir / "client-conf")

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

    def _env(self, conf: Path, client: bool = False) -> dict[str, str]:
        """The scripts' environment: the cluster's own (``environment``), or this
        process's for a client (``flink run``)."""
        base = self.environment if self.environment is not None and not client else os.environ
        env = dict(base)
        env["FLINK_CONF_DIR"] = str(conf)
        env["FLINK_LIB_DIR"] = str(self._lib_dir())
        env["FLINK_LOG_DIR"] = str(self.dir / "log")
        env["FLINK_PID_DIR"] = str(self.dir / "pid")
        env["PYFLINK_CLIENT_EXECUTABLE"] = self.python
        # the scripts find java through JAVA_HOME or PATH; keep the venv first on PATH
        if Path(self.python).is_absolute():
            env["PATH"] = f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
        (self.dir / "log").mkdir(parents=True, exist_ok=True)
        (self.dir / "pid").mkdir(parents=True, exist_ok=True)
        return env

    def _script(self, name: str) -> list[str]:
        path = self.home / "bin" / name
        return ["bash", str(path)]

    # -- REST ----------------------------------------------------------------
    def _get(self, path: str, timeout_s: float = 2.0, method: str = "GET") -> dict:
        request = urllib.request.Request(self.rest_url + path, method=method)
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            body = resp.read()
        return json.loads(body) if body else {}

    def not_running_message(self) -> str:
        """One line: no cluster answers here, and (on this machine) how to start one."""
        message = f"no Flink cluster answers at {self.address}"
        if self.host in ("127.0.0.1", "localhost", "::1"):
            message += f"; start one with `{self.start_command()}`"
        return message

    def _differences(self, running: ClusterStatus) -> list[str]:
        """How the running cluster's settings differ from this one's: RPC port, slots,
        task managers and every ``settings`` key, as its job manager reports them."""
        try:
            reported = {e["key"]: e["value"] for e in self._get("/jobmanager/config")}
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            reported = {}
        wanted: dict[str, object] = {
            "jobmanager.rpc.port": self.rpc_port,
            "taskmanager.numberOfTaskSlots": self.slots,
            **self.settings,
        }
        out = []
        if running.taskmanagers != self.taskmanager_count:
            out.append(f"task managers {running.taskmanagers} (asked {self.taskmanager_count})")
        for key, value in wanted.items():
            have = reported.get(key)
            if have is None and key not in self.settings:
                continue  # an older Flink that does not report it: nothing to compare
            if _setting_text(value) != have:
                out.append(f"{key} {have if have is not None else '(unset)'} "
                           f"(asked {_setting_text(value)})")
        return out

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
            differences = self._differences(current)
            if differences:
                raise ServiceError(
                    f"a Flink cluster already runs on {self.address} with other settings: "
                    f"{'; '.join(differences)}; stop it first (`{self.stop_command()}`) "
                    "or start it with its own settings"
                )
            log.info("Flink cluster already running at %s", self.rest_url)
            return current
        for name, port in (("REST port", self.rest_port), ("RPC port", self.rpc_port)):
            if not port_is_free(port, self.host):
                raise PortInUse(
                    f"Flink {name} {port} on {self.host} is already in use by another process; "
                    "stop it or choose another port (`streamlearn flink start --port N`)"
                )
        env = self._env(self._write_conf(self.conf_dir))
        log.info("starting Flink cluster at %s (conf %s)", self.rest_url, env["FLINK_CONF_DIR"])
        # all at once: the task managers retry until the job manager answers
        scripts = [("jobmanager.sh", self._script_run("jobmanager.sh", ["start"], env))]
        scripts += [
            ("taskmanager.sh", self._launch_taskmanager(env, n))
            for n in range(self.taskmanager_count)
        ]
        for name, proc in scripts:
            output, _ = proc.communicate()
            if proc.returncode != 0:
                raise ServiceError(f"{name} failed: {output[-800:]}")
        (self.dir / "started_at").write_text(str(time.time()))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            if status.running and status.slots_total >= self.slots * self.taskmanager_count:
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
        for pid in self._pids_alive():  # what bin/*.sh stop-all does, to all at once
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._pids_alive():
            time.sleep(0.2)
        for pid in self._pids_alive():  # SIGTERM was not enough: make sure
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
        """Pids in the pid files that still run a Flink JVM (a crashed one's pid may
        since belong to another process, which is left alone)."""
        alive = []
        for pidfile in (self.dir / "pid").glob("*.pid"):
            for line in pidfile.read_text().split():
                try:
                    pid = int(line)
                    os.kill(pid, 0)
                except (ValueError, ProcessLookupError, PermissionError):
                    continue
                if Path("/proc").is_dir():  # elsewhere: trust the pid file
                    try:
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue  # exited meanwhile
                    if b"org.apache.flink" not in cmdline:
                        continue
                alive.append(pid)
        return alive

    def taskmanager_pids(self) -> list[int]:
        """The task manager JVMs' pids (for crash tests)."""
        pids = []
        for pidfile in (self.dir / "pid").glob("*taskexecutor*.pid"):
            pids.extend(int(x) for x in pidfile.read_text().split() if x.isdigit())
        return pids

    # -- task managers -----------------------------------------------------------
    def _script_run(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            [*self._script(name), *args], env=env, text=True, cwd=self.workdir,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def _launch_taskmanager(self, env: dict[str, str], n: int) -> subprocess.Popen:
        """``taskmanager.sh start`` for task manager ``tm-<n>``: that resource id, and its
        own pid and log files (``FLINK_IDENT_STRING``), so several can start at once."""
        resource_id = f"tm-{n}"
        env = {**env, "FLINK_IDENT_STRING": resource_id}
        return self._script_run(
            "taskmanager.sh", ["start", "-D", f"taskmanager.resource-id={resource_id}"], env
        )

    def _taskmanager_pid(self, resource_id: str) -> int | None:
        pidfile = self.dir / "pid" / f"flink-{resource_id}-taskexecutor.pid"
        if not pidfile.exists():
            return None
        pids = [int(x) for x in pidfile.read_text().split() if x.isdigit()]
        return pids[-1] if pids else None

    def taskmanagers(self) -> list[dict]:
        """Task managers registered with the job manager: resource id, slots, free slots."""
        return [
            {"id": tm["id"], "slots": tm["slotsNumber"], "free_slots": tm["freeSlots"]}
            for tm in self._get("/taskmanagers")["taskmanagers"]
        ]

    def start_taskmanager(self, timeout_s: float = 90.0) -> str:
        """Start one more task manager; returns its resource id once it has registered."""
        n = len(list((self.dir / "pid").glob("flink-tm-*-taskexecutor.pid")))
        resource_id = f"tm-{n}"
        proc = self._launch_taskmanager(self._env(self._client_conf_dir()), n)
        output, _ = proc.communicate()
        if proc.returncode != 0:
            raise ServiceError(f"taskmanager.sh failed: {output[-800:]}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if any(tm["id"] == resource_id for tm in self.taskmanagers()):
                    log.info("task manager %s registered", resource_id)
                    return resource_id
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.3)
        raise ServiceError(
            f"task manager {resource_id} did not register within {timeout_s:.0f} s; "
            f"see the logs in {self.dir / 'log'}"
        )

    def kill_taskmanager(self, resource_id: str) -> int:
        """``kill -9`` the task manager ``resource_id`` (a crash, for tests); returns its pid."""
        pid = self._taskmanager_pid(resource_id)
        if pid is None:
            raise ConfigError("resource_id", "a task manager this cluster started", resource_id)
        os.kill(pid, signal.SIGKILL)
        return pid

    # -- jobs ------------------------------------------------------------------------
    def vertex_taskmanagers(self, job_id: str) -> dict[str, set[str]]:
        """Each vertex (operator chain) of a running job → the task managers running it."""
        out: dict[str, set[str]] = {}
        for vertex in self._get(f"/jobs/{job_id}")["vertices"]:
            info = self._get(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            out[vertex["name"]] = {tm["taskmanager-id"] for tm in info["taskmanagers"]}
        return out

    def job(self, job_id: str) -> dict:
        """A job's details as the REST API gives them (``state``, ``vertices``, ...)."""
        return self._get(f"/jobs/{job_id}")

    def cancel(self, job_id: str, timeout_s: float = 60.0) -> None:
        """Cancel a job and wait until it is CANCELED (or otherwise ended)."""
        self._get(f"/jobs/{job_id}?mode=cancel", method="PATCH")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.job(job_id)["state"] in ("CANCELED", "FAILED", "FINISHED"):
                return
            time.sleep(0.3)
        raise ServiceError(f"job {job_id} did not stop within {timeout_s:.0f} s of its cancel")

    def submit(
        self,
        job_file: str | os.PathLike[str],
        job_args: list[str] | None = None,
        detached: bool = False,
        parallelism: int | None = None,
        timeout_s: float | None = None,
        ship_python: bool = False,
    ) -> subprocess.CompletedProcess:
        """``flink run -py JOB_FILE [args]`` against this cluster.

        Attached (default) waits until the job ends; ``detached`` returns once
        submitted (the output holds the job id). With ``ship_python`` the job takes
        its Python with it (:func:`connectors.python_env.python_env_archive`, shipped
        with ``-pyarch``, run with ``-pyexec``): the task managers need neither this
        machine's venv nor the project tree. The submission's own configuration goes
        in a client directory of its own; the cluster's ``config.yaml`` is never written.
        """
        job = Path(job_file).resolve()
        if not job.is_file():
            raise ConfigError("job_file", "an existing Python job file", str(job_file))
        if not self.status().running:
            raise ServiceError(self.not_running_message())
        cmd = [*self._script("flink"), "run", "-m", self.address, "-py", str(job)]
        if ship_python:
            from connectors.python_env import ARCHIVE_NAME, WORKER_PYTHON, python_env_archive

            archive = python_env_archive()
            cmd += ["-pyarch", f"{archive}#{ARCHIVE_NAME}", "-pyexec", WORKER_PYTHON,
                    "-pyclientexec", sys.executable]
            env = self._env(self._submit_conf_dir(), client=True)
            # the job file (flink_jobs/*.py, run by this Python) names the workers' Python
            env["STREAMLEARN_WORKER_PYTHON"] = WORKER_PYTHON
        else:
            cmd += ["-pyexec", self.python, "-pyclientexec", self.python]
            env = self._env(self._client_conf_dir(), client=True)
        if parallelism:
            cmd += ["-p", str(parallelism)]
        if detached:
            cmd.append("-d")
        cmd += list(job_args or [])
        log.info("submitting %s to %s", job.name, self.rest_url)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise ServiceError(
                f"`flink run` of {job.name} failed with code {proc.returncode}: "
                f"{_failure_excerpt(proc.stdout + proc.stderr)}"
            )
        return proc

    def _submit_conf_dir(self) -> Path:
        """A client configuration for a job that ships its Python: the REST address and
        the JVM options, nothing of this machine's Python (written beside the cluster's
        files, never over them)."""
        conf = self.dir / "submit-conf"
        conf.mkdir(parents=True, exist_ok=True)
        for name in ("log4j-cli.properties", "log4j-console.properties", "log4j.properties"):
            shutil.copyfile(self.home / "conf" / name, conf / name)
        settings = {
            "env.java.opts.all": _default_java_opts(self.home),
            "rest.address": self.host,
            "rest.port": self.rest_port,
            "jobmanager.rpc.address": self.host,
        }
        (conf / "config.yaml").write_text(json.dumps(settings, indent=2) + "\n")
        return conf

    def check_fits(self, parallelism: int) -> ClusterStatus:
        """The running cluster, as it is, can run a job of ``parallelism``: it answers,
        runs this Flink version, and has that many free task slots. Else one line
        naming the setting; nothing of the cluster is changed."""
        from importlib.metadata import version

        status = self.status()
        if not status.running:
            raise ServiceError(self.not_running_message())
        ours = version("apache-flink")
        if status.flink_version and status.flink_version != ours:
            raise ServiceError(
                f"the Flink cluster at {self.address} runs Flink {status.flink_version}; "
                f"this job is built for Flink {ours} (PyFlink {ours}): submit to a "
                f"Flink {ours} cluster"
            )
        if status.slots_available < parallelism:
            raise ServiceError(
                f"the Flink cluster at {self.address} has {status.slots_available} free task "
                f"slots ({status.slots_total} in all on {status.taskmanagers} task managers: "
                f"taskmanager.numberOfTaskSlots); the job needs job.parallelism={parallelism}: "
                "start more task managers or slots, or lower --parallelism"
            )
        return status

    def stop_with_savepoint(
        self, job_id: str, directory: str, timeout_s: float = 120.0
    ) -> str:
        """Stop a job with a savepoint into ``directory``; returns the savepoint's path."""
        body = json.dumps({"targetDirectory": directory, "drain": False}).encode()
        request = urllib.request.Request(
            f"{self.rest_url}/jobs/{job_id}/stop", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            trigger = json.loads(resp.read())["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self._get(f"/jobs/{job_id}/savepoints/{trigger}", timeout_s=10)
            if info.get("status", {}).get("id") == "COMPLETED":
                operation = info.get("operation") or {}
                if "location" in operation:
                    return str(operation["location"])
                cause = operation.get("failure-cause") or {}
                text = cause.get("stack-trace") or cause.get("class") or str(operation)
                raise ServiceError(
                    f"the savepoint of job {job_id} failed: {text.strip().splitlines()[0]}"
                )
            time.sleep(0.3)
        raise ServiceError(f"job {job_id} took no savepoint within {timeout_s:.0f} s")

    def jobs(self) -> list[dict]:
        """Jobs the cluster knows: id, name, state, start time (ms), duration (ms)."""
        overview = self._get("/jobs/overview")
        return [
            {"id": j["jid"], "name": j["name"], "state": j["state"],
             "start_ms": j.get("start-time", -1), "duration_ms": j.get("duration", -1)}
            for j in overview["jobs"]
        ]

    def __enter__(self) -> FlinkCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _setting_text(value: object) -> str:
    """A setting as Flink reports it back (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
