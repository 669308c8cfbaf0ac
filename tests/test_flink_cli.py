"""``streamlearn flink`` on a real standalone cluster, run as a user runs it.

Flags after the action, extra Flink settings with ``--conf`` (a Prometheus reporter,
scraped), and a running cluster's ``config.yaml`` never rewritten: neither by a
submission (the path ``train --cluster`` and ``score --cluster`` take) nor by a second
``start`` with other settings, which is refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [str(Path(sys.executable).parent / "streamlearn")]
PROMETHEUS = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def _scrape(ports: list[int], timeout_s: float = 60.0) -> str:
    """The Prometheus reporters' pages (a reporter binds the first free port of the
    range: the job manager's and the task manager's may be either)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pages = []
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    pages.append(r.read().decode())
            except OSError:
                pass
        text = "\n".join(pages)
        if "flink_jobmanager_" in text or time.monotonic() > deadline:
            return text
        time.sleep(1)


def test_start_with_conf_then_no_rewrite_and_stop_with_flag_after_action(tmp_path: Path):
    state = tmp_path / "state"
    env = {**os.environ, "STREAMLEARN_STATE_DIR": str(state)}

    def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    rest, rpc, prom = free_port(), free_port(), free_port(2)
    started = cli("flink", "start", "--port", str(rest), "--rpc-port", str(rpc), "--slots", "1",
                  "--conf", f"metrics.reporter.prom.factory.class={PROMETHEUS}",
                  "--conf", f"metrics.reporter.prom.port={prom}-{prom + 1}")
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        conf = state / "flink" / str(rest) / "conf" / "config.yaml"
        written = conf.read_bytes()
        settings = json.loads(written)
        assert settings["jobmanager.rpc.port"] == rpc and settings["rest.port"] == rest
        assert settings["taskmanager.numberOfTaskSlots"] == 1

        # the reporter plugin (PyFlink's plugins/metrics-prometheus) serves the job manager's
        page = _scrape([prom, prom + 1])
        assert "flink_jobmanager_numRegisteredTaskManagers" in page, page[:500]

        # a second start with other settings (the default RPC port and slots): one line
        again = cli("flink", "start", "--port", str(rest))
        assert again.returncode == 1
        assert again.stderr.count("\n") == 1, again.stderr
        assert f"jobmanager.rpc.port {rpc} (asked 6123)" in again.stderr
        assert "taskmanager.numberOfTaskSlots 1 (asked 2)" in again.stderr
        assert f"streamlearn flink stop --port {rest}" in again.stderr
        # its own settings again (flags on both sides of the action): running, left alone
        same = cli("flink", "--slots", "1", "--rpc-port", str(rpc), "start", "--port", str(rest),
                   "--json")
        assert same.returncode == 0, same.stderr
        assert json.loads(same.stdout)["slots_total"] == 1
        assert conf.read_bytes() == written

        # a submission (what `train --cluster` does) reads the configuration, never writes it
        job = tmp_path / "hello.py"
        job.write_text("print('hello from a job file')\n")
        cli("flink", "submit", str(job), "--port", str(rest), "--", "--any", "arg")
        assert conf.read_bytes() == written
    finally:
        stopped = cli("flink", "stop", "--port", str(rest))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped the Flink cluster on 127.0.0.1:{rest}"
    after = cli("flink", "status", "--port", str(rest))
    assert after.returncode == 3
    assert f"start it with `streamlearn flink start --port {rest}`" in after.stdout
