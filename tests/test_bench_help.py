"""Every benchmark script teaches its flags with ``--help`` and starts nothing.

The benches are not imported by the suite otherwise, so a helper renamed in one of them
(or in ``connectors``) would break another only when someone next runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


def test_the_benches_are_found():
    assert {"e2e.py", "serving.py", "job_quality.py", "skew.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage_and_starts_nothing(script, tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:"), out.stdout[:200]
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran
