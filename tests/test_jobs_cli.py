"""``streamlearn jobs`` and ``train --from-savepoint``: wrong input is one line, before any JVM.

The commands against a real cluster (list, stop with a savepoint, cancel, resume) are in
``tests/test_cluster_shipped.py``.
"""

from __future__ import annotations

import pytest

from streamlearn.cli import main
from tests.conftest import free_port


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["jobs", "stop", "abc"],
         "field `--savepoint`: expected a directory for the savepoint with stop, got None"),
        (["jobs", "cancel"],
         "field `job`: expected a job id with cancel (see `streamlearn jobs list`), got None"),
        (["jobs", "cancel", "abc", "--savepoint", "/tmp/x"],
         "field `--savepoint`: expected only with stop, got /tmp/x"),
        (["jobs", "list", "--cluster", "localhost"],
         "field `--cluster`: expected HOST:PORT of the cluster's REST endpoint, got localhost"),
    ],
)
def test_jobs_refuses_wrong_input_in_one_line(argv, message, capsys) -> None:
    assert main([*argv]) == 1
    err = capsys.readouterr().err
    assert err == f"streamlearn jobs: {message}\n"


def test_jobs_names_the_cluster_that_does_not_answer(capsys) -> None:
    port = free_port()
    assert main(["jobs", "list", "--cluster", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err == (
        f"streamlearn jobs: no Flink cluster answers at 127.0.0.1:{port}; "
        f"start one with `streamlearn flink start --port {port}`\n"
    )


def test_from_savepoint_must_be_a_savepoint_and_not_beside_resume(tmp_path, capsys) -> None:
    not_one = tmp_path / "empty"
    not_one.mkdir()
    assert main(["train", "--cluster", f"127.0.0.1:{free_port()}",
                 "--from-savepoint", str(not_one)]) == 1
    assert capsys.readouterr().err == (
        "streamlearn train: field `--from-savepoint`: expected a savepoint directory holding "
        "_metadata (the path `streamlearn jobs stop --savepoint DIR` prints), "
        f"got {not_one}\n"
    )
    (not_one / "_metadata").write_bytes(b"")
    assert main(["train", "--from-savepoint", str(not_one), "--resume", "none"]) == 1
    assert capsys.readouterr().err == (
        "streamlearn train: field `--from-savepoint`: expected not with --resume (one of them), "
        f"got {not_one}\n"
    )
