"""``streamlearn train`` as a user runs it: a subprocess holding the terminal, on the real job.

- One line per version; a second trainer on the model is refused up front naming the
  first; the job's metrics scraped from a Prometheus reporter given with --flink-conf;
  Ctrl-C stops it in one line, releasing the model's writer lease.
- Another writer takes the model over: the trainer stops its job, saying so in one line.
- What used to be a Java stack trace is one line: a missing topic, no broker, a missing jar.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from connectors.kafka_io import create_topics
from streamlearn.generators import clicks
from streamlearn.publish import Publisher
from streamlearn.store import ModelStore
from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
MODEL = "clicks"
CLI = [str(Path(sys.executable).parent / "streamlearn")]
PROM = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def _train_args(tmp_path: Path, bootstrap: str, topic: str) -> list[str]:
    return [
        "train", "--bootstrap", bootstrap, "--topic", topic, "--store", str(tmp_path / "models"),
        "--model", MODEL, "--parallelism", "1",
        "--set", f"job.checkpoint_dir={json.dumps(str(tmp_path / 'checkpoints'))}",
        "--set", "job.checkpoint_ms=500", "--set", "job.sync_ms=300", "--set", "job.flush_ms=100",
        "--set", "features.bits=12",
    ]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STREAMLEARN_STATE_DIR": str(tmp_path / "state"), **extra}


def _cli(args: list[str], tmp_path: Path, timeout: float = 120, **env: str):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True,
        timeout=timeout, env=_env(tmp_path, **env),
    )


class Trainer:
    """``streamlearn train`` in a session of its own (as a terminal's foreground job), its
    output lines collected as they come."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True, env=_env(tmp_path),
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.proc.poll() is None, (self.lines, self.err[-30:])
            time.sleep(0.2)
        pytest.fail(f"{what} within {timeout_s:.0f} s: {self.lines} {self.err[-30:]}")

    def versions(self) -> list[str]:
        return [line for line in self.lines if line.startswith("version ")]

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal sends its foreground job
        return self.proc.wait(90)

    def kill(self) -> None:
        """Kill what is left (a failed test), and collect the last output lines."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _scrape(port: int) -> str:
    """The reporter's page, or "" while nothing answers on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return answer.read().decode()
    except OSError:
        return ""


def _learned(text: str) -> float:
    values = re.findall(r"^flink_\w+_eventsLearned\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(v) for v in values)


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_train_shows_each_version_refuses_a_second_writer_and_stops_in_one_line(
    kafka_broker, topic_name, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {topic_name: 2})
    with Publisher(bootstrap, topic_name, envelope=True, envelope_size=50) as pub:
        pub.publish_many(list(clicks(10_000, seed=5)))
    port = free_port()
    args = _train_args(tmp_path, bootstrap, topic_name)
    first = Trainer(
        [*args, "--flink-conf", f"metrics.reporter.prom.factory.class={PROM}",
         "--flink-conf", f"metrics.reporter.prom.port={port}"],
        tmp_path,
    )
    try:
        first.wait_for(lambda: first.versions(), 180, "no version line")
        writer = re.search(r"writer (train-clicks-[0-9a-f]{8})", first.lines[0]).group(1)
        line = first.versions()[0]
        assert re.fullmatch(
            r"version 1: [\d,]+ events, lag [\d,]+ messages, accuracy 0\.\d{4}, "
            r"log-loss \d\.\d{4}, newest event [\d.]+ s old", line
        ), line

        second = _cli(args, tmp_path, timeout=60)  # the same model, while the first trains
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stdout == ""
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"model '{MODEL}' has a live writer: '{writer}'" in second.stderr

        # the job's own metrics, through the reporter --flink-conf configured
        metrics = first.wait_for(
            lambda: (text := _scrape(port)) and _learned(text) >= 10_000 and text, 60,
            "no eventsLearned in the Prometheus scrape",
        )
        assert "publishedVersion" in metrics and "deltasMerged" in metrics
        first.wait_for(lambda: any(tmp_path.glob("checkpoints/*/*/chk-*/_metadata")), 60,
                       "no checkpoint")
        rc = first.ctrl_c()
    finally:
        first.kill()
    assert rc == 130, (first.lines, first.err)
    store = ModelStore(str(tmp_path / "models"), MODEL)
    latest = store.head().latest
    assert re.fullmatch(
        rf"stopped at version {latest}; resumes from checkpoint file://\S+/chk-\d+ at the next "
        rf"`streamlearn train` of model '{MODEL}'", first.lines[-1]
    ), first.lines[-1]
    assert [int(v.split()[1].rstrip(":")) for v in first.versions()] == list(range(1, latest + 1))
    assert not [e for e in first.err if "Traceback" in e or "KeyboardInterrupt" in e], first.err
    assert store.writer().writer_id == writer and store.writer().state == "released"
    events = [info.lineage.events for info in store.list()]
    assert events == sorted(events) and events[-1] == 10_000, "never backwards in events"
    assert not _processes_with(writer), "the job ended with the command"
    # the job's output and its MiniCluster's log, each a file of this start (local_logs.py)
    logs = tmp_path / "state" / "logs"
    (output,) = logs.glob(f"train-{MODEL}-*.log")
    assert output.name in first.lines[0]
    (flink_log,) = logs.glob(f"flink-train-{MODEL}-*-python-*.log")
    assert f"streamlearn-train-{MODEL}" in flink_log.read_text(errors="replace")
    stamp = output.name.removeprefix(f"train-{MODEL}-").removesuffix(".log")
    assert flink_log.name.startswith(f"flink-train-{MODEL}-{stamp}-python-"), "one start, one name"


@pytest.mark.slow
def test_a_trainer_whose_model_is_taken_over_stops_its_job_in_one_line(
    kafka_broker, topic_name, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {topic_name: 1})
    with Publisher(bootstrap, topic_name, envelope=True, envelope_size=50) as pub:
        pub.publish_many(list(clicks(2_000, seed=6)))
    trainer = Trainer(_train_args(tmp_path, bootstrap, topic_name), tmp_path)
    try:
        trainer.wait_for(lambda: trainer.versions(), 180, "no version line")
        writer = re.search(r"writer (train-clicks-[0-9a-f]{8})", trainer.lines[0]).group(1)
        store = ModelStore(str(tmp_path / "models"), MODEL)
        intruder = store.acquire_writer("intruder", force=True)  # e.g. `models unlock` + a trainer
        intruder.keep_alive()
        rc = trainer.proc.wait(60)
    finally:
        trainer.kill()
    assert rc == 1
    assert len(trainer.err) == 1, trainer.err
    assert trainer.err[0].startswith(
        f"streamlearn train: stopped the job: model '{MODEL}' was taken over by writer 'intruder'"
    ), trainer.err
    assert not _processes_with(writer), "the fenced job does not restart forever"
    intruder.release()


def test_a_missing_topic_is_one_line_naming_the_topics_there(kafka_broker, topic_name, tmp_path):
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    started = time.monotonic()
    proc = _cli(["train", "--bootstrap", kafka_broker.bootstrap, "--topic", "nosuchtopic",
                 "--store", str(tmp_path / "models")], tmp_path)
    assert time.monotonic() - started < 20
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "`kafka.topic`" in proc.stderr and "'nosuchtopic'" in proc.stderr
    assert topic_name in proc.stderr, "the topics that do exist are named"
    assert "streamlearn topics create nosuchtopic" in proc.stderr


def test_no_broker_is_one_line(tmp_path):
    port = free_port()
    proc = _cli(["train", "--bootstrap", f"127.0.0.1:{port}",
                 "--store", str(tmp_path / "models")], tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"no broker at 127.0.0.1:{port}" in proc.stderr and "streamlearn kafka start" in (
        proc.stderr
    )


def test_a_missing_jar_is_one_line_saying_what_to_do(kafka_broker, topic_name, tmp_path):
    """A project tree whose helper jar lacks the job's classes: the JVM's ClassNotFoundException,
    deep in a Python/Java trace, becomes one line, and -v shows the trace."""
    create_topics(kafka_broker.bootstrap, {topic_name: 1})
    home = tmp_path / "home"
    (home / "jvm" / "lib" / "flink").mkdir(parents=True)
    shutil.copytree(ROOT / "flink_jobs", home / "flink_jobs")
    (home / "jvm" / "lib" / "kafka").symlink_to(ROOT / "jvm" / "lib" / "kafka")
    for jar in (ROOT / "jvm" / "lib" / "flink").glob("flink-sql-connector-kafka-*.jar"):
        (home / "jvm" / "lib" / "flink" / jar.name).symlink_to(jar)
    import zipfile

    with zipfile.ZipFile(home / "jvm" / "lib" / "flink" / "streamlearn-flink.jar", "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    args = _train_args(tmp_path, kafka_broker.bootstrap, topic_name)
    proc = _cli(args, tmp_path, timeout=180, STREAMLEARN_HOME=str(home))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "a class the job needs is missing (io.streamlearn.flink." in proc.stderr
    assert "run `make jars`" in proc.stderr and "Traceback" not in proc.stderr
    verbose = _cli(["-v", *args], tmp_path, timeout=180, STREAMLEARN_HOME=str(home))
    assert verbose.returncode == 1 and "ClassNotFoundException" in verbose.stderr
    assert "has a live writer" not in verbose.stderr, "a failed start leaves no lease behind"
