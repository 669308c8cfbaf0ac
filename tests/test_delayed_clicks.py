"""``streamlearn.generators.delayed_clicks``: impressions now, clicks later, in time order,
with the delay distribution it states (what a delayed-label join is tested and measured on)."""

from __future__ import annotations

import math

import pytest

from streamlearn.errors import ConfigError
from streamlearn.generators import clicks, delayed_clicks


def test_every_click_comes_once_after_its_impression_with_exponential_delays() -> None:
    got = list(delayed_clicks(20_000, seed=3, rate_per_s=500.0, mean_delay_s=30.0))
    served = {e["id"]: e for kind, e in got if kind == "impression"}
    labels = [e for kind, e in got if kind == "label"]
    truth = {e["id"] for e in clicks(20_000, seed=3) if e["label"]}
    assert len(served) == 20_000 and {e["id"] for e in labels} == truth
    assert len(labels) == len(truth), "one label per click"
    assert all(a[1]["ts"] <= b[1]["ts"] for a, b in zip(got, got[1:], strict=False))
    assert all("label" not in e for e in served.values())
    delays = [(e["ts"] - served[e["id"]]["ts"]) / 1000 for e in labels]
    assert min(delays) >= 0
    assert sum(delays) / len(delays) == pytest.approx(30.0, rel=0.1)
    late = sum(d > 60 for d in delays) / len(delays)
    assert late == pytest.approx(math.exp(-2), abs=0.03), "past a 60 s window"
    assert served["e1"]["ts"] - served["e0"]["ts"] == 2  # 500 a second


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="mean_delay_s"):
        next(delayed_clicks(10, mean_delay_s=0))
    with pytest.raises(ConfigError, match="rate_per_s"):
        next(delayed_clicks(10, rate_per_s=-1))
