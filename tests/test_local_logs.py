"""Local jobs' logs: a file per start under the state directory, the newest kept.

The MiniCluster a real local job starts logs there (``tests/test_flink_passthrough.py``
checks the file); here the rules around it.
"""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from connectors import local_logs
from connectors.local_logs import KEEP_STARTS, prune_starts, route_minicluster_log


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(local_logs).failed == 0


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMLEARN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_local_start_logs_to_a_file_of_its_own_rolled_by_size(state: Path) -> None:
    env: dict[str, str] = {}
    logs = route_minicluster_log("train-ctr", env)
    assert logs == state / "logs" and env["FLINK_LOG_DIR"] == str(logs)
    assert env["FLINK_IDENT_STRING"].startswith("train-ctr-2")  # PyFlink names the file by it
    properties = Path(env["LOG4J_PROPERTIES"]).read_text()
    assert "appender.file.type = RollingFile" in properties
    assert f"policies.size.size = {local_logs.ROLL_MB}MB" in properties
    assert "strategy.max = 1" in properties


def test_a_caller_names_the_start_as_its_own_files_are_named(state: Path) -> None:
    env: dict[str, str] = {}
    route_minicluster_log("train-ctr", env, "20261206-081500-4242")
    assert env["FLINK_IDENT_STRING"] == "train-ctr-20261206-081500-4242"


def test_a_name_that_is_no_file_name_is_made_one(state: Path) -> None:
    env: dict[str, str] = {}
    route_minicluster_log("-c", env)  # sys.argv[0] of ``python -c``
    assert env["FLINK_IDENT_STRING"].startswith("c-2")
    route_minicluster_log("../x y", env := {})
    assert env["FLINK_IDENT_STRING"].startswith("xy-2")
    assert [p.name for p in (state / "logs").iterdir()] == ["log4j-local.properties"]


def test_the_callers_log_directory_or_a_clusters_gateway_decide(state: Path) -> None:
    for given in ({"FLINK_LOG_DIR": "/elsewhere"}, {"PYFLINK_GATEWAY_PORT": "40001"}):
        env = dict(given)
        assert route_minicluster_log("train-ctr", env) is None
        assert env == given
    env = {"LOG4J_PROPERTIES": "/my/log4j.properties"}
    route_minicluster_log("train-ctr", env)
    assert env["LOG4J_PROPERTIES"] == "/my/log4j.properties"


def test_each_start_keeps_the_newest_starts_of_its_name(state: Path) -> None:
    logs = state / "logs"
    logs.mkdir(parents=True)
    names = [f"flink-train-ctr-2026120{d}-100000-1-python-vm.log" for d in range(1, 9)]
    others = ["flink-train-ctr-v2-20261201-100000-1-python-vm.log", "notes.txt"]
    for name in names + others:
        (logs / name).write_text("x")
    route_minicluster_log("train-ctr", {})
    left = sorted(p.name for p in logs.glob("flink-train-ctr-2*"))
    assert left == names[-(KEEP_STARTS - 1):]  # and room for this start's own
    assert all((logs / name).exists() for name in others)


def test_pruning_counts_starts_not_files(tmp_path: Path) -> None:
    for stamp in ("20261201-100000", "20261202-100000"):
        (tmp_path / f"train-ctr-{stamp}.log").write_text("x")
    (tmp_path / "train-ctr-20261202-100000.log.1").write_text("x")  # rolled: the same start
    assert prune_starts(tmp_path, "train-ctr-", keep=1) == ["train-ctr-20261201-100000.log"]
    assert prune_starts(tmp_path, "train-ctr-", keep=1) == []
    assert prune_starts(tmp_path, "train-ctr-", keep=0) == [
        "train-ctr-20261202-100000.log", "train-ctr-20261202-100000.log.1"
    ]
