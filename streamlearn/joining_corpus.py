"""The join's conformance corpus: impressions and labels in the order they arrive, and the
outcome :func:`streamlearn.joining.join` (the reference) gives them.

The training job's join (``io.streamlearn.flink.JoinLogic``, in event time: a label decided
when the watermark passes it, a window closed when the watermark passes its end) replays
every case in ``joining_corpus.jsonl`` (``JoinCorpusTest``, run by Maven in the test
command) and must reach the same outcome. The watermark of a case is Flink's bounded
disorder: the largest ``ts`` seen minus ``disorder_ms`` minus 1; no record of a case arrives
behind it (checked here), which is where the two readings must agree.

One case per line::

    {"name": ..., "settings": {"window_ms", "remember_ms", "default" (null: drop),
     "disorder_ms", "keep"}, "records": [{"label": false, "record": {...}}, ...],
     "learned": [[id, label, how], ...], "dropped": [id, ...],
     "rejected": [[label, id, ts, reason], ...]}

``learned``, ``dropped`` and ``rejected`` are sorted (the order of outcomes is not part of
the rules). Regenerate after a change of the rules::

    python -m streamlearn.joining_corpus --write
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from streamlearn.joining import event_time, join

__all__ = ["PATH", "cases", "generate", "main"]

PATH = Path(__file__).with_name("joining_corpus.jsonl")


def _imp(id_: Any, ts: int, **extra: Any) -> dict:
    return {"label": False, "record": {"id": id_, "ts": ts, "features": {"x": 1}, **extra}}


def _lab(id_: Any, ts: int, label: Any = 1) -> dict:
    return {"label": True, "record": {"id": id_, "label": label, "ts": ts}}


def _settings(window_ms: int = 100, remember_ms: int = 100, default: Any = 0,
              disorder_ms: int = 10, keep: str = "first") -> dict:
    return {"window_ms": window_ms, "remember_ms": remember_ms, "default": default,
            "disorder_ms": disorder_ms, "keep": keep}


def _random(seed: int, n: int, default: Any, keep: str = "first") -> tuple[dict, list[dict]]:
    """``n`` impressions a few ms apart, clicks after random delays (some after the window,
    some twice, some before their impression), labels of ids never served; arrival order
    is event time jittered within half the disorder."""
    rng = random.Random(seed)
    s = _settings(window_ms=200, remember_ms=150, default=default, disorder_ms=40, keep=keep)
    records, ts = [], 0
    for i in range(n):
        ts += rng.randint(0, 6)
        records.append(_imp(f"i{i}", ts))
        if rng.random() < 0.03:
            records.append(_imp(f"i{i}", ts + rng.randint(0, 30)))  # served twice
        if rng.random() < 0.5:
            delay = int(rng.expovariate(1 / 120))
            records.append(_lab(f"i{i}", ts + delay, rng.choice([0, 1, 1])))
            if rng.random() < 0.1:
                records.append(_lab(f"i{i}", ts + delay + rng.randint(0, 60), 0))
        if rng.random() < 0.02:
            records.append(_lab(f"i{i}", ts - rng.randint(1, 20)))  # before its impression
        if rng.random() < 0.02:
            records.append(_lab(f"stranger{i}", ts))
    jitter = s["disorder_ms"] // 2
    keyed = [(r["record"]["ts"] + rng.randint(0, jitter), i, r) for i, r in enumerate(records)]
    return s, [r for _, _, r in sorted(keyed, key=lambda k: (k[0], k[1]))]


def cases() -> list[tuple[str, dict, list[dict]]]:
    """Every case: (name, settings, records in arrival order)."""
    out = [
        ("a label in the window joins", _settings(), [_imp("a", 0), _lab("a", 50)]),
        ("the window's last millisecond joins", _settings(), [_imp("a", 0), _lab("a", 100)]),
        ("no label: the default when the window closes", _settings(), [_imp("a", 0)]),
        ("no label, expire = drop: dropped", _settings(default=None), [_imp("a", 0)]),
        ("after the window: late, the impression expired", _settings(),
         [_imp("a", 0), _lab("a", 101)]),
        ("after window and memory: unmatched", _settings(), [_imp("a", 0), _lab("a", 201)]),
        ("memory 0: after the window is unmatched", _settings(remember_ms=0),
         [_imp("a", 0), _lab("a", 150)]),
        ("a second label: duplicate", _settings(),
         [_imp("a", 0), _lab("a", 40, 1), _lab("a", 60, 0)]),
        ("the earlier label wins though it arrives second", _settings(),
         [_imp("a", 0), _lab("a", 45, 0), _lab("a", 40, 1)]),
        ("equal times: the first to arrive wins", _settings(),
         [_imp("a", 0), _lab("a", 40, 0), _lab("a", 40, 1)]),
        ("a label before its impression arrives joins", _settings(),
         [_lab("a", 8), _imp("a", 5)]),
        ("a label earlier than its impression: unmatched", _settings(),
         [_imp("a", 5), _lab("a", 3)]),
        ("a label for an id never served: unmatched", _settings(), [_lab("z", 5)]),
        ("a second impression of an id", _settings(), [_imp("a", 0), _imp("a", 3), _lab("a", 9)]),
        ("the prediction log's at_ms is the impression's time", _settings(),
         [{"label": False, "record": {"id": "p", "at_ms": 1000, "features": {"x": 1},
                                      "version": 3, "prediction": 0.4}},
          _lab("p", 1090)]),
        ("integer ids", _settings(), [_imp(7, 0), _lab(7, 10), _lab(8, 10)]),
        ("a class name as the default label", _settings(default="none"),
         [_imp("a", 0), _imp("b", 0), _lab("b", 5, "buy")]),
        ("keep last: the later label in the window wins", _settings(keep="last"),
         [_imp("a", 0), _lab("a", 40, 1), _lab("a", 60, 0)]),
        ("keep last: the later label wins though it arrives first", _settings(keep="last"),
         [_imp("a", 0), _lab("a", 60, 0), _lab("a", 55, 1)]),
        ("keep last: equal times, the last to arrive wins", _settings(keep="last"),
         [_imp("a", 0), _lab("a", 40, 0), _lab("a", 40, 1)]),
        ("keep last: the window's last label, not the one after it", _settings(keep="last"),
         [_imp("a", 0), _lab("a", 50, 1), _lab("a", 100, 0), _lab("a", 101, 1)]),
        ("keep last: no label, the default", _settings(keep="last"), [_imp("a", 0)]),
        ("keep last, expire = drop: the last label joins, no label drops",
         _settings(keep="last", default=None),
         [_imp("a", 0), _imp("b", 0), _lab("a", 30), _lab("a", 31, 0)]),
    ]
    for seed, n, default, keep in ((1, 400, 0, "first"), (2, 400, None, "first"),
                                   (3, 800, 0, "first"), (4, 600, 0, "last")):
        out.append((f"random stream {seed}", *_random(seed, n, default, keep)))
    return out


def _check_order(name: str, settings: dict, records: list[dict]) -> None:
    """No record arrives behind the watermark (where reference and stream must agree)."""
    high = None
    for r in records:
        ts = event_time(r["record"])
        if high is not None and ts <= high - settings["disorder_ms"] - 1:
            raise AssertionError(f"{name}: {r} arrives behind the watermark")
        high = ts if high is None else max(high, ts)


def generate() -> list[dict]:
    """The corpus, from the reference."""
    out = []
    for name, settings, records in cases():
        _check_order(name, settings, records)
        impressions = [r["record"] for r in records if not r["label"]]
        labels = [r["record"] for r in records if r["label"]]
        got = join(impressions, labels, window_ms=settings["window_ms"],
                   default=settings["default"], remember_ms=settings["remember_ms"],
                   keep=settings["keep"])
        rejected = []
        for rec, why in got.rejected:
            rejected.append([why != "impression_duplicate", rec["id"], event_time(rec), why])
        out.append({
            "name": name, "settings": settings, "records": records,
            "learned": sorted(([e["id"], e["label"], how] for e, how in got.learned), key=_order),
            "dropped": sorted((e["id"] for e in got.dropped), key=str),
            "rejected": sorted(rejected, key=_order),
        })
    return out


def _order(row: list) -> str:
    return json.dumps(row)


def render() -> str:
    """The corpus file's text."""
    return "".join(json.dumps(case, separators=(",", ":")) + "\n" for case in generate())


def main(argv: list[str] | None = None) -> int:
    """``--write``: regenerate the file; otherwise exit 1 when it is stale."""
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--write" in argv:
        PATH.write_text(text)
        return 0
    if not PATH.exists() or PATH.read_text() != text:
        print(f"{PATH} is stale: run python -m streamlearn.joining_corpus --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
