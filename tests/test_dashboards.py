"""The Grafana dashboards of docs/dashboards query only metrics that exist: the
server's as its /metrics exposes them, the training job's as it registers them
(connectors/flink_train.py) and Flink's Prometheus reporter names them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_serving_conventions import EVENTS, app_for, call, post_one, trained

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "docs" / "dashboards"
# the scope Flink's Prometheus reporter puts before an operator's own metrics
FLINK_OPERATOR = "flink_taskmanager_job_task_operator_"
PROMQL_WORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label matchers,
    groupings, ranges and strings left out)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    # Grafana's label_values(metric, label) of a template variable: the metric
    expr = re.sub(r"\blabel_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    found = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {name for name in found if name not in PROMQL_WORDS}


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"$job"}[5m])))'
        " / ignoring(x) time() - b_total * 2^30"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}
    assert metric_names("label_values(c_total, job)") == {"c_total"}


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]] + [
        v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]


def server_sample_names() -> set[str]:
    """Every sample name a live app's /metrics shows, after a few requests."""
    _model, served = trained("binary")
    app = app_for(served)
    post_one(app, EVENTS[0])
    call(app, "POST", "/v1/predict", json={"features": 1})
    text = call(app, "GET", "/metrics").text
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def job_metric_names() -> set[str]:
    """The metrics the training job registers, as the reporter names them."""
    source = (ROOT / "connectors" / "flink_train.py").read_text()
    registered = re.findall(r"\.(?:counter|gauge|meter|histogram)\(\s*\"(\w+)\"", source)
    assert registered, "no metric found in connectors/flink_train.py"
    return {FLINK_OPERATOR + name for name in registered}


@pytest.mark.parametrize("name", ["streamlearn-server.json", "streamlearn-training-job.json"])
def test_dashboards_are_grafana_documents(name: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_the_server_dashboard_queries_only_what_the_server_exposes() -> None:
    exposed = server_sample_names()
    queried = set().union(*(metric_names(q) for q in queries(load("streamlearn-server.json"))))
    assert queried <= exposed, queried - exposed
    # and it shows what the issue asks: rate, latency, errors, version and age
    for name in (
        "streamlearn_requests_total",
        "streamlearn_request_duration_seconds_bucket",
        "streamlearn_model_version",
        "streamlearn_model_age_seconds",
    ):
        assert name in queried, name


def test_the_job_dashboard_queries_only_what_the_job_registers() -> None:
    registered = job_metric_names()
    queried = set().union(
        *(metric_names(q) for q in queries(load("streamlearn-training-job.json")))
    )
    assert queried <= registered, queried - registered
    assert queried == registered  # every metric of the job is on the dashboard
