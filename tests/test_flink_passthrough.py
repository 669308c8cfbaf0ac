"""The first real Flink job (Kafka A → Python map → Kafka B): MiniCluster and standalone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.kafka_io import KeyedProducer, consume_all, create_topics

pytestmark = pytest.mark.integration

JOB = Path(__file__).resolve().parent.parent / "flink_jobs" / "passthrough.py"
N = 2_000


def _fill(bootstrap: str, source: str, sink: str) -> None:
    create_topics(bootstrap, {source: 2, sink: 2})
    with KeyedProducer(bootstrap, source) as producer:
        for i in range(N):
            producer.send({"i": i, "value": i}, key=f"k{i % 11}")


def _check(bootstrap: str, sink: str) -> None:
    records = consume_all(bootstrap, sink, expected=N, timeout_s=60)
    rows = [json.loads(r.value) for r in records]
    assert sorted(r["i"] for r in rows) == list(range(N)), "every record exactly once"
    assert all(r["seen_by"] == "passthrough" and r["value"] == 2 * r["i"] for r in rows)


def test_job_in_the_local_minicluster(kafka_broker, topic_name, tmp_path):
    source, sink = f"{topic_name}-a", f"{topic_name}-b"
    _fill(kafka_broker.bootstrap, source, sink)
    proc = subprocess.run(
        [sys.executable, str(JOB), "--bootstrap", kafka_broker.bootstrap,
         "--source", source, "--sink", sink, "--bounded", "--parallelism", "2"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "STREAMLEARN_STATE_DIR": str(tmp_path / "state")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(kafka_broker.bootstrap, sink)
    # the MiniCluster logged to a file of this start in the state directory
    # (connectors/local_logs.py), not to PyFlink's one file in the venv
    (log,) = (tmp_path / "state" / "logs").glob("flink-passthrough-*-python-*.log")
    assert "switched from RUNNING to FINISHED" in log.read_text(errors="replace")


def test_same_job_file_on_a_standalone_cluster(kafka_broker, flink_cluster, topic_name):
    source, sink = f"{topic_name}-a", f"{topic_name}-b"
    _fill(kafka_broker.bootstrap, source, sink)
    proc = flink_cluster.submit(
        JOB, ["--bootstrap", kafka_broker.bootstrap, "--source", source, "--sink", sink,
              "--bounded"], timeout_s=300,
    )
    assert "has finished" in proc.stdout
    _check(kafka_broker.bootstrap, sink)
    jobs = flink_cluster.jobs()
    assert any(j["name"] == "streamlearn-passthrough" and j["state"] == "FINISHED" for j in jobs)
