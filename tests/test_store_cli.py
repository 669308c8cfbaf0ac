"""`streamlearn models ...`: tables for people, JSON for scripts, errors that say what to do."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from streamlearn.cli import main
from streamlearn.store import Lineage, ModelStore


@pytest.fixture
def store_dir(tmp_path) -> str:
    store = ModelStore(str(tmp_path / "models"), model="ctr")
    for i in range(1, 5):
        store.commit(
            pa.table({"w": [float(i)] * 3}),
            Lineage(
                offsets={"events": {0: 10 * i, 1: 11 * i}},
                events=21 * i,
                learners=("l0", "l1"),
                metrics={"log_loss": 0.5 - i / 100},
            ),
        )
    return str(tmp_path / "models")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table_and_json(store_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "list", "--store", store_dir, "--model", "ctr")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["VERSION", "KIND"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert "log_loss=0.46" in lines[4] and lines[4].rstrip().endswith("current")
    code, out, _ = cli(capsys, "list", "--store", store_dir, "--model", "ctr", "--json")
    rows = json.loads(out)
    assert [r["version"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["lineage"]["offsets"] == {"events": {"0": 40, "1": 44}}
    code, out, _ = cli(capsys, "list", "--store", store_dir, "--model", "ctr", "--limit", "2")
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["3", "4"]
    assert "2 older or pruned version(s) not shown" in out


def test_show_pin_rollback_prune(store_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--store", store_dir, "--model", "ctr"]
    code, out, _ = cli(capsys, "show", "2", *common)
    assert code == 0 and "events      42" in out and "events[1] = 22" in out
    code, out, _ = cli(capsys, "pin", "2", *common, "--json")
    assert json.loads(out) == {"model": "ctr", "pinned": 2, "latest": 4}
    code, out, _ = cli(capsys, "rollback", "1", *common)
    assert code == 0 and "version 5 restores version 1" in out and "still pinned to 2" in out
    code, out, _ = cli(capsys, "prune", "--keep-last", "1", *common, "--json")
    assert json.loads(out)["deleted"] == [1, 3, 4]
    code, out, _ = cli(capsys, "show", *common, "--json")
    assert json.loads(out)["version"] == 2 and json.loads(out)["pinned"] is True
    code, out, _ = cli(capsys, "unpin", *common)
    assert "serving the latest version 5" in out
    code, out, _ = cli(capsys, "list", "--all", *common)
    assert [line.split()[-1] for line in out.splitlines()[1:]] == [
        "pruned",
        "-",
        "pruned",
        "pruned",
        "current",
    ]
    assert ModelStore(store_dir, model="ctr").get().info.rollback_of == 1


def test_errors_name_the_problem(store_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "show", "9", "--store", store_dir, "--model", "ctr")
    assert code == 1 and "version 9 does not exist yet; the latest is 4" in err
    code, _, err = cli(capsys, "list", "--store", store_dir, "--model", "nope")
    assert code == 0
    code, _, err = cli(capsys, "pin", "1", "--store", store_dir, "--model", "nope")
    assert code == 1 and "model 'nope' has no versions" in err and "models here: ctr" in err
    with pytest.raises(SystemExit):
        main(["models", "pin", "zero", "--store", store_dir])
    assert "expected a whole number >= 1, got 'zero'" in capsys.readouterr().err
    code, out, _ = cli(capsys, "names", "--store", store_dir, "--json")
    assert json.loads(out) == ["ctr"]
