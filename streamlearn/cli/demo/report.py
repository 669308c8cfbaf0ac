"""The demo's report: figures as JSON, next to the plots.

The training job publishes *cumulative* prequential metrics (each event
scored before it is learned, averaged from the start) with every version.
:func:`windowed_metrics` turns two versions' cumulative figures into the
figure over the events between them, which is what shows a drift:

>>> rows = [{"events": 1000, "metrics": {"Accuracy": 0.6}},
...         {"events": 3000, "metrics": {"Accuracy": 0.7}}]
>>> windowed_metrics(rows, window=1500)[1]["Accuracy"]
0.75

(The 2000 events between the two versions were right 2100 - 600 = 1500 times.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["windowed_metrics", "between", "chance_levels", "write_json"]

METRICS = ("Accuracy", "LogLoss")


def between(earlier: dict, later: dict) -> dict[str, float]:
    """Prequential metrics over the events learned between two versions (``{}`` if none).

    >>> between({"events": 100, "metrics": {"LogLoss": 0.5}},
    ...         {"events": 300, "metrics": {"LogLoss": 0.4}})
    {'LogLoss': 0.35}
    """
    n0, n1 = earlier["events"], later["events"]
    if n1 <= n0:
        return {}
    out = {}
    for name in METRICS:
        if name in later["metrics"] and name in earlier["metrics"]:
            total = later["metrics"][name] * n1 - earlier["metrics"][name] * n0
            out[name] = round(total / (n1 - n0), 6)
    return out


def windowed_metrics(rows: Sequence[dict], window: int) -> list[dict[str, float]]:
    """For each version, its metrics over (at least) the last ``window`` events it reflects.

    ``rows`` are versions in order, each ``{"events": n, "metrics": {...}}``. A
    version with fewer than ``window`` events behind it gets its cumulative figures.
    """
    out: list[dict[str, float]] = []
    j = -1  # the latest earlier version at least `window` events behind the current one
    for k, row in enumerate(rows):
        while j + 1 < k and row["events"] - rows[j + 1]["events"] >= window:
            j += 1
        if j >= 0:
            out.append(between(rows[j], row))
        else:
            out.append({n: row["metrics"][n] for n in METRICS if n in row["metrics"]})
    return out


def chance_levels(positives: int, total: int) -> dict[str, float]:
    """What a model that knows only the base rate scores: majority accuracy, entropy log-loss.

    >>> chance_levels(25, 100)
    {'Accuracy': 0.75, 'LogLoss': 0.562335}
    """
    p = positives / total if total else 0.5
    p = min(max(p, 1e-9), 1 - 1e-9)
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    return {"Accuracy": round(max(p, 1 - p), 6), "LogLoss": round(entropy, 6)}


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as indented JSON; returns the path."""
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path
