"""Checkpoints on S3, as a cluster of several machines keeps them: the newest found for
``--resume auto``, a path checked for ``--resume PATH``, earlier runs pruned.

Against moto's S3 server on loopback; the client is configured as on a cluster's
machines, from the ``AWS_*`` variables (Flink's S3 plugin reads the same).
"""

from __future__ import annotations

import time
import uuid

import pyarrow.fs as pafs
import pytest

from streamlearn.cli.train import _savepoint
from streamlearn.errors import ConfigError, ServiceError
from streamlearn.training.checkpoints import latest_checkpoint, prune_runs, resolve_recovery
from streamlearn.training.config import TrainConfig
from tests.s3_server import (  # noqa: F401  (s3_server: a pytest fixture)
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    S3Server,
    _free_port,
    s3_server,
)


def _aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """This process's S3 client settings, as a cluster machine's environment has them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:  # noqa: F811
    _aws_env(monkeypatch, s3_server.endpoint)
    return s3_server


def _cfg(tmp_path, checkpoint_dir: str) -> TrainConfig:
    return TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m"},
        "job": {"checkpoint_dir": checkpoint_dir},
    })


def test_the_newest_checkpoint_on_s3_is_found_and_earlier_runs_pruned(s3_env, tmp_path):
    prefix = f"ck-{uuid.uuid4().hex[:8]}"
    cfg = _cfg(tmp_path, f"s3://{s3_env.bucket}/{prefix}/")
    assert latest_checkpoint(cfg) is None and prune_runs(cfg, None) == []  # nothing yet
    fs = s3_env.filesystem()
    model = f"{s3_env.bucket}/{prefix}/m"
    runs = [f"{i:032x}" for i in range(3)]  # run 0 the oldest
    for i, run in enumerate(runs):
        if i:
            time.sleep(1.1)  # S3 times objects to the second
        for chk in (3, 12) if i == 1 else (2,):
            with fs.open_output_stream(f"{model}/{run}/chk-{chk}/_metadata") as out:
                out.write(b"x")
        with fs.open_output_stream(f"{model}/{run}/shared/state") as out:
            out.write(b"y")
    with fs.open_output_stream(f"{model}/{runs[2]}/chk-9/part") as out:  # no _metadata yet
        out.write(b"z")
    with fs.open_output_stream(f"{model}/notes/readme") as out:  # not a Flink job's
        out.write(b"n")
    uri = f"s3://{s3_env.bucket}/{prefix}/m"
    assert latest_checkpoint(cfg) == f"{uri}/{runs[2]}/chk-2"
    assert resolve_recovery(cfg, "auto") == f"{uri}/{runs[2]}/chk-2"
    resumed = f"{uri}/{runs[0]}/chk-2/"
    assert resolve_recovery(cfg, resumed) == resumed.rstrip("/")
    with pytest.raises(ConfigError, match="--resume"):
        resolve_recovery(cfg, f"{uri}/{runs[2]}/chk-9")
    # a savepoint on S3 (`streamlearn jobs stop --savepoint s3://...`), as --from-savepoint
    assert _savepoint(resumed, "auto") == resumed.rstrip("/")
    with pytest.raises(ConfigError, match="--from-savepoint"):
        _savepoint(f"{uri}/{runs[2]}/chk-9", "auto")
    assert prune_runs(cfg, resumed, keep=1) == [f"{uri}/{runs[1]}"]  # 2 newest, 0 resumed
    left = {i.base_name for i in fs.get_file_info(pafs.FileSelector(model))}
    assert left == {runs[0], runs[2], "notes"}
    assert prune_runs(cfg, None, keep=1) == [f"{uri}/{runs[0]}"]
    # Flink's other name for the same file system, s3a://
    s3a = _cfg(tmp_path, f"s3a://{s3_env.bucket}/{prefix}")
    assert latest_checkpoint(s3a) == f"s3a://{s3_env.bucket}/{prefix}/m/{runs[2]}/chk-2"
    # a run resumed by the other name is the same run: kept
    with fs.open_output_stream(f"{model}/{runs[1]}/chk-4/_metadata") as out:
        out.write(b"x")
    time.sleep(1.1)
    with fs.open_output_stream(f"{model}/{runs[2]}/chk-5/_metadata") as out:
        out.write(b"x")
    older = f"s3a://{s3_env.bucket}/{prefix}/m/{runs[1]}/chk-4"
    assert prune_runs(cfg, older, keep=0) == [f"{uri}/{runs[2]}"]
    assert {i.base_name for i in fs.get_file_info(pafs.FileSelector(model))} == {
        runs[1], "notes"}


def test_checkpoints_this_machine_cannot_read_are_one_line_naming_them(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _aws_env(monkeypatch, f"127.0.0.1:{_free_port()}")  # a port nothing listens on
    cfg = _cfg(tmp_path, "s3://nowhere/ck")
    with pytest.raises(ServiceError) as caught:
        resolve_recovery(cfg, "auto")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("cannot read the checkpoints under "
                                                      "s3://nowhere/ck/m")
    assert message.endswith("--resume none")
    assert resolve_recovery(cfg, "none") is None
    assert prune_runs(cfg, None) == []  # housekeeping: logged, the start goes on
