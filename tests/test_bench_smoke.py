"""The benches that need no broker nor Flink job run end to end at a tiny size.

``--help`` (``tests/test_bench_help.py``) imports a bench but runs none of its code; a
helper of the library a bench calls, renamed or given another signature, would break the
bench only when someone next ran it. These runs take seconds; each writes its JSON where
it is told, and nothing else.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

RUNS = {
    "quality.py": ["--clicks", "2000", "--interactions", "2000", "--river", "1000",
                   "--streams", "clicks-weighted,interactions,sea", "--repeats", "1"],
    "quality.py --seeds": ["--seeds", "2", "--river", "1000", "--streams", "sea"],
    "learners.py": ["--events", "2000", "--river-events", "200", "--repeats", "1"],
    "merge.py": ["--strategies", "--events", "4000", "--sync", "500"],
    "merge.py --dealt": ["--dealt", "--events", "4000", "--sync", "500"],
    "merge.py --warmup": ["--warmup", "0,1000", "--events", "4000", "--sync", "500"],
}


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_an_in_process_bench_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    out = tmp_path / "out" / "result.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / script.split()[0]), *RUNS[script], "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing else written here
    report = json.loads(out.read_text())
    if script == "quality.py --seeds":
        rows = report["streams"]["sea"]["rows"]
        assert [r["seed"] for r in rows] == [0, 1] and rows[0]["vw"] != rows[1]["vw"]
        summary = report["streams"]["sea"]["summary"]["event-normalized"]
        ratios = [r["event-normalized"] for r in rows]
        assert summary["mean_vs_vw"] == pytest.approx(sum(ratios) / 2)
        assert summary["seeds_at_most_vw"] == sum(r <= 1.0 for r in ratios)
        assert _finite(report["streams"]["sea"]["summary"]["event-mixture"]["mean_vs_vw"])
    elif script == "quality.py":
        for stream in ("clicks-weighted", "interactions", "sea"):
            systems = report["streams"][stream]["systems"]
            assert _finite(systems["vw"]["log_loss"])
            assert _finite(systems["event-normalized"]["log_loss"])
            assert _finite(systems["event-mixture"]["log_loss"])
        assert report["goal_system"] == "event-mixture"
        assert set(report["goal_log_loss_at_most_vw"]) == set(report["streams"])
        assert _finite(report["streams"]["interactions"]["systems"]["fm-k4"]["log_loss"])
    elif script == "learners.py":
        assert report["events"] == 2000 and report["ours"]
    elif "--warmup" in script:
        table = report["log_loss_over_p1"]
        assert set(table) == {"0", "1000"}
        assert all(_finite(row["p4"]) and row["p4"] > 0.5 for row in table.values())
    else:
        table = report["log_loss_over_p1"]
        assert len(table) == 5
        column = "p4_dealt" if "--dealt" in script else "p4_progress"
        assert all(_finite(row[column]) and row[column] > 0.5 for row in table.values())
