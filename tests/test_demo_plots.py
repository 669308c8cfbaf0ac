"""The demo's plots: drawn with matplotlib when it is there; without it (the ``demo``
extra not installed), one line naming the extra, and the report goes on without them."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from streamlearn.cli.demo.display import LiveDisplay
from streamlearn.cli.demo.runner import draw_plots

FRESH = {"p50_ms": 400, "p95_ms": 700, "p99_ms": 900}


def _draw(report_dir: Path) -> tuple[list[Path], str]:
    out = io.StringIO()
    drawn = draw_plots(
        report_dir, LiveDisplay(out),
        metrics=([1.0, 2.0, 3.0],
                 [{"Accuracy": 0.6, "LogLoss": 0.7}] * 3,
                 [{"Accuracy": 0.55, "LogLoss": 0.72}] * 3),
        drift_s=2.0, chance={"Accuracy": 0.5}, metrics_title="metrics",
        latencies_ms=[300.0, 400.0, 900.0], sent_s=[0.5, 1.0, 1.5], fresh=FRESH,
    )
    return drawn, out.getvalue()


def test_plots_are_drawn_with_matplotlib(tmp_path: Path) -> None:
    drawn, said = _draw(tmp_path)
    assert [p.name for p in drawn] == ["metrics.png", "freshness.png"]
    assert all(p.stat().st_size > 1000 for p in drawn)
    assert said == ""


def test_without_matplotlib_one_line_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    drawn, said = _draw(tmp_path)
    assert drawn == []
    assert list(tmp_path.iterdir()) == []
    assert said.count("\n") == 1
    assert "pip install 'streamlearn[demo]'" in said


def test_the_demo_package_imports_no_matplotlib_until_it_draws() -> None:
    """Building the command line and importing the demo's modules loads no matplotlib."""
    import subprocess

    code = (
        "import sys\n"
        "from streamlearn.cli import build_parser\n"
        "build_parser()\n"
        "import streamlearn.cli.demo.runner, streamlearn.cli.demo.plots\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
