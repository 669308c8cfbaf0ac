"""``streamlearn demo`` end to end on its own broker, server and job, and its flags' errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamlearn.cli import main
from streamlearn.training.config import SCHEMA
from tests.conftest import free_port

CLI = "import sys; from streamlearn.cli import main; sys.exit(main(sys.argv[1:]))"


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--duration" in out and "--rate" in out


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--rate", "0"], "--rate"),
        (["--duration", "0.5"], "--duration"),
        (["--parallelism", "40"], "--parallelism"),
        (["--bad-share", "0.9"], "--bad-share"),
        (["--bits", "29"], "--bits"),
        (["--window-ms", "500"], "--window-ms"),  # only with --delayed-labels
        (["--delayed-labels", "--window-ms", "50"], "--window-ms"),
        (["--delayed-labels", "--mean-delay-ms", "0"], "--mean-delay-ms"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_flag(argv, field, capsys, tmp_path):
    assert main(["demo", *argv, "--report-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"`{field}`" in err[0] and "expected" in err[0]


def test_an_unknown_flag_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--speed", "3"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --speed" in capsys.readouterr().err


def test_a_missing_broker_is_one_line_saying_what_to_do(capsys, tmp_path):
    port = free_port()
    argv = ["demo", "--bootstrap", f"127.0.0.1:{port}", "--serve-port", str(free_port()),
            "--report-dir", str(tmp_path)]
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("streamlearn")]
    assert len(err) == 1
    assert f"127.0.0.1:{port}" in err[0] and "streamlearn kafka start" in err[0]


def _run(cmd: list[str], env: dict) -> str:
    """Run a demo to its end (4 minutes at most); its output, once it exited 0."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the demo stops what it started on SIGTERM
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the demo did not finish in time:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.integration
def test_demo_end_to_end_writes_a_report(tmp_path):
    """A short demo from nothing: versions served, metrics beat chance after the warm-up and
    show the drift, freshness measured for every message, and everything started is stopped."""
    kafka_port, serve_port = free_port(2), free_port()
    report = tmp_path / "report"
    env = {**os.environ, "STREAMLEARN_STATE_DIR": str(tmp_path / "state")}
    cmd = [sys.executable, "-c", CLI, "demo", "--duration", "15", "--rate", "3000",
           "--kafka-port", str(kafka_port), "--serve-port", str(serve_port),
           "--report-dir", str(report)]
    out = _run(cmd, env)

    summary = json.loads((report / "summary.json").read_text())
    assert summary["interrupted"] is False
    assert summary["run"]["started"] == ["broker", "server", "job"]
    assert summary["config"]["bits"] == SCHEMA["features"]["bits"][2]  # the training default
    stream, training = summary["stream"], summary["training"]
    assert stream["steady_events"] == 15 * 3000
    assert training["versions_served"] >= 5
    assert training["events_learned"] == stream["events_published"] - stream["malformed_events"]
    assert training["dlq_messages"] == training["rejected"] == stream["malformed_events"] > 0

    metrics = summary["metrics"]
    after, chance = metrics["after_warmup"], metrics["chance"]
    assert all(math.isfinite(v) for v in after.values())
    assert after["Accuracy"] > chance["Accuracy"] + 0.05
    assert after["LogLoss"] < chance["LogLoss"] - 0.03
    # the drift costs accuracy: the last window is worse than the window before the drift
    assert metrics["final_window"]["Accuracy"] < metrics["before_drift_window"]["Accuracy"]

    fresh = summary["freshness"]
    assert fresh["pending"] == 0 and fresh["samples"] > 100
    assert 0 < fresh["p50_ms"] <= fresh["p95_ms"] <= fresh["p99_ms"] <= fresh["max_ms"]
    samples = json.loads((report / "freshness.json").read_text())["samples"]
    assert len(samples) == fresh["samples"]
    versions = {v["version"]: v for v in json.loads((report / "versions.json").read_text())}
    for partition, offset, append_ms, served_ms, version in samples:
        assert served_ms >= append_ms
        assert versions[version]["offsets"][str(partition)] > offset  # its lineage covers it

    for name in ("metrics.png", "freshness.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "logs" / "job.log").exists()
    assert "freshness p50" in out and str(report) in out

    from connectors.ports import port_is_free

    assert port_is_free(kafka_port) and port_is_free(serve_port), "everything started is stopped"
    assert not list(Path(env["STREAMLEARN_STATE_DIR"], "demo").glob("*")), "run state removed"


@pytest.mark.integration
@pytest.mark.slow
def test_delayed_labels_demo_serves_logs_joins_learns_and_serves_again(tmp_path):
    """``--delayed-labels`` from nothing: the users' events are served by the server once
    the job has a version (logged by the users before), every served event is in the
    prediction log, every click on the labels topic; the newest version's lineage counts
    the join's outcomes (its events the joined and expired ones, few still in a window);
    later versions serve better than chance; everything started is stopped."""
    from connectors.ports import port_is_free

    kafka_port, serve_port = free_port(2), free_port()
    report = tmp_path / "report"
    env = {**os.environ, "STREAMLEARN_STATE_DIR": str(tmp_path / "state")}
    cmd = [sys.executable, "-c", CLI, "demo", "--delayed-labels", "--duration", "20",
           "--rate", "300", "--kafka-port", str(kafka_port), "--serve-port", str(serve_port),
           "--report-dir", str(report)]
    out = _run(cmd, env)

    summary = json.loads((report / "summary.json").read_text())
    users, training, quality = summary["users"], summary["training"], summary["served_quality"]
    assert users["served"] >= 20 * 300 and users["self_logged"] > 0, users
    assert users["impressions"] == users["served"] + users["self_logged"]
    assert quality["predictions_logged"] == users["served"], "every served event logged"
    assert quality["clicks_read"] == users["clicks"] > 0
    join = training["join"]
    assert training["events_learned"] == join["joined"] + join["expired"]
    assert join["joined"] > 0 and join["expired"] > 0 and join["duplicate"] > 0, join
    assert 0 <= training["in_a_window"] < 300 * 3, "only the last seconds' windows are open"
    # clicks after an exponential delay of mean 500 ms: p50 about 350 ms, 1.8% after 2 s
    assert 200 < quality["delay_ms"]["p50"] < 550, quality["delay_ms"]
    assert quality["positives_after_window"] < 0.06
    by_version = sorted((int(v), m) for v, m in quality["by_version"].items())
    later = by_version[len(by_version) // 2:]
    served_loss = sum(m["log_loss"] * m["events"] for _, m in later) / sum(
        m["events"] for _, m in later)
    assert served_loss < 0.6, by_version  # chance: 0.693
    assert "served log-loss" in out and str(report) in out
    assert port_is_free(kafka_port) and port_is_free(serve_port), "everything started is stopped"
